//! [`Checkpoint`]: one checkpoint's sections — write, read, list, expire — through a client.

use std::time::Duration;

use nines_core::{AisError, ErrorCode};
use nines_proto::ckpt::v1 as pb;

use crate::{
    client::CheckpointClient,
    error::{Result, SdkError},
    retry::Idempotency,
    types::{Attributes, CheckpointStatus, SectionData, SectionInfo, SectionRead, SectionWrite},
};

/// One checkpoint, opened ([`CheckpointClient::open`]) or not ([`CheckpointClient::checkpoint`]).
///
/// Writes carry the fencing epoch set with [`Checkpoint::with_epoch`]: once any write carried
/// epoch `e`, writes with a lower epoch fail with `BAD_OPERATION`, so a deposed active cannot
/// overwrite its successor's state. Reads are linearizable unless
/// [`Checkpoint::with_stale_reads`] is set.
///
/// Close an opened checkpoint with [`Checkpoint::close`]; dropping it closes the handle in the
/// background, best effort (only inside a tokio runtime, errors only logged).
#[derive(Debug)]
pub struct Checkpoint {
    client: CheckpointClient,
    name: String,
    /// The open handle; `None` when not opened, or once closed.
    handle: Option<u64>,
    created: bool,
    attributes: Option<Attributes>,
    epoch: u64,
    stale_reads: bool,
}

impl Checkpoint {
    pub(crate) fn opened(client: CheckpointClient, name: &str, r: pb::OpenResponse) -> Self {
        Self {
            client,
            name: name.to_string(),
            handle: Some(r.handle),
            created: r.created,
            attributes: r.attributes.as_ref().map(Attributes::from_wire),
            epoch: 0,
            stale_reads: false,
        }
    }

    pub(crate) fn unopened(client: CheckpointClient, name: &str) -> Self {
        Self {
            client,
            name: name.to_string(),
            handle: None,
            created: false,
            attributes: None,
            epoch: 0,
            stale_reads: false,
        }
    }

    /// The same checkpoint, with every write carrying fencing `epoch` (0 = none).
    #[must_use]
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The same checkpoint, with reads, section lists and status served from the answering
    /// agent's state without a ReadIndex round: faster, possibly behind.
    #[must_use]
    pub fn with_stale_reads(mut self, stale: bool) -> Self {
        self.stale_reads = stale;
        self
    }

    /// The same checkpoint, with another deadline per call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.clone().with_timeout(timeout);
        self
    }

    /// The checkpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open handle, if opened and not yet closed.
    pub fn handle(&self) -> Option<u64> {
        self.handle
    }

    /// Whether the open created the checkpoint (false: it existed, or it was not opened).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The creation attributes the open returned (`None` if not opened).
    pub fn attributes(&self) -> Option<Attributes> {
        self.attributes
    }

    /// The fencing epoch writes carry.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Replace section `section`'s data, creating the section if missing. Returns the log index
    /// the write was applied at (0 for an asynchronous checkpoint).
    ///
    /// # Errors
    /// `NOT_EXIST` (no such checkpoint), `TOO_BIG` (beyond `section_size_max`), `NO_SPACE`
    /// (`sections_max` or `checkpoint_size_max` reached), `BAD_OPERATION` (stale epoch),
    /// `TIMEOUT` (outcome unknown).
    pub async fn write(&self, section: &str, data: impl Into<Vec<u8>>) -> Result<u64> {
        self.write_wire(vec![pb::SectionWrite {
            section: section.to_string(),
            kind: pb::WriteKind::Upsert as i32,
            offset: 0,
            data: data.into(),
        }])
        .await
    }

    /// Apply several section writes in one atomic step: all or none. Returns the log index.
    ///
    /// # Errors
    /// As [`Checkpoint::write`]; one failing part fails them all. An empty list is
    /// [`SdkError::InvalidArgument`].
    pub async fn write_many(&self, writes: &[SectionWrite]) -> Result<u64> {
        if writes.is_empty() {
            return Err(SdkError::InvalidArgument(format!(
                "write to checkpoint '{}': no section writes given",
                self.name
            )));
        }
        self.write_wire(writes.iter().map(SectionWrite::to_wire).collect())
            .await
    }

    /// Refuse, without sending it, a fenced request while the lease of the session holding this
    /// epoch has run out (see [`Session`](crate::Session): the component must not act).
    fn lease_check(&self, what: &str) -> Result<()> {
        match crate::session::write_refusal(self.epoch) {
            None => Ok(()),
            Some(why) => Err(SdkError::Ais(nines_core::AisError::new(
                nines_core::ErrorCode::BadOperation,
                format!("{what}: {why}"),
            ))),
        }
    }

    async fn write_wire(&self, writes: Vec<pb::SectionWrite>) -> Result<u64> {
        let what = match writes.as_slice() {
            [one] => format!(
                "write section '{}' of checkpoint '{}'",
                one.section, self.name
            ),
            many => format!(
                "write {} sections of checkpoint '{}'",
                many.len(),
                self.name
            ),
        };
        self.lease_check(&what)?;
        let req = pb::WriteRequest {
            checkpoint: self.name.clone(),
            writes,
            epoch: self.epoch,
            options: None,
        };
        let r = self
            .client
            .call(&what, Idempotency::Mutating, req, |mut c, r| async move {
                c.write(r).await
            })
            .await?;
        Ok(r.index)
    }

    /// Section `section`'s whole data.
    ///
    /// # Errors
    /// `NOT_EXIST` if the checkpoint or the section does not exist.
    pub async fn read(&self, section: &str) -> Result<Vec<u8>> {
        let mut got = self.read_many(&[SectionRead::whole(section)]).await?;
        match got.iter().position(|d| d.section == section) {
            Some(i) => Ok(got.swap_remove(i).data),
            None => Err(SdkError::Ais(AisError::new(
                ErrorCode::Library,
                format!(
                    "read section '{section}' of checkpoint '{}': the service answered without \
                     it; report this as a bug",
                    self.name
                ),
            ))),
        }
    }

    /// Several sections (or byte ranges of them), read at one point in time, in request order.
    ///
    /// # Errors
    /// `NOT_EXIST` if the checkpoint or any section does not exist.
    pub async fn read_many(&self, reads: &[SectionRead]) -> Result<Vec<SectionData>> {
        let what = match reads {
            [one] => format!(
                "read section '{}' of checkpoint '{}'",
                one.section, self.name
            ),
            many => format!("read {} sections of checkpoint '{}'", many.len(), self.name),
        };
        let req = pb::ReadRequest {
            checkpoint: self.name.clone(),
            reads: reads.iter().map(SectionRead::to_wire).collect(),
            stale: self.stale_reads,
            options: None,
        };
        let r = self
            .client
            .call(&what, Idempotency::Idempotent, req, |mut c, r| async move {
                c.read(r).await
            })
            .await?;
        Ok(r.sections.into_iter().map(SectionData::from).collect())
    }

    /// Every section: id, size, expiration.
    ///
    /// # Errors
    /// `NOT_EXIST` if the checkpoint does not exist.
    pub async fn sections(&self) -> Result<Vec<SectionInfo>> {
        self.sections_wire(0).await
    }

    /// The sections expiring at or before `t_ms` (ms since the Unix epoch).
    ///
    /// # Errors
    /// As [`Checkpoint::sections`].
    pub async fn sections_expiring_before(&self, t_ms: u64) -> Result<Vec<SectionInfo>> {
        self.sections_wire(t_ms.max(1)).await
    }

    async fn sections_wire(&self, expiring_before_ms: u64) -> Result<Vec<SectionInfo>> {
        let what = format!("list the sections of checkpoint '{}'", self.name);
        let req = pb::SectionsRequest {
            checkpoint: self.name.clone(),
            expiring_before_ms,
            stale: self.stale_reads,
            options: None,
        };
        let r = self
            .client
            .call(&what, Idempotency::Idempotent, req, |mut c, r| async move {
                c.sections(r).await
            })
            .await?;
        Ok(r.sections.into_iter().map(SectionInfo::from).collect())
    }

    /// Create a section holding `data`, with id `section` (or one the service generates when
    /// `None`), deleted by the service at `expires_at_ms` (ms since the Unix epoch; `None` =
    /// never). Returns the section's id.
    ///
    /// # Errors
    /// `EXIST` if the section exists; otherwise as [`Checkpoint::write`].
    pub async fn create_section(
        &self,
        section: Option<&str>,
        data: impl Into<Vec<u8>>,
        expires_at_ms: Option<u64>,
    ) -> Result<String> {
        let what = match section {
            Some(s) => format!("create section '{s}' of checkpoint '{}'", self.name),
            None => format!("create a section of checkpoint '{}'", self.name),
        };
        self.lease_check(&what)?;
        let req = pb::CreateSectionRequest {
            checkpoint: self.name.clone(),
            section: section.unwrap_or_default().to_string(),
            data: data.into(),
            expires_at_ms: expires_at_ms.unwrap_or(0),
            epoch: self.epoch,
            options: None,
        };
        let r = self
            .client
            .call(&what, Idempotency::Mutating, req, |mut c, r| async move {
                c.create_section(r).await
            })
            .await?;
        Ok(r.section)
    }

    /// Delete section `section`.
    ///
    /// # Errors
    /// `NOT_EXIST` if the checkpoint or the section does not exist; `BAD_OPERATION` for a stale
    /// epoch.
    pub async fn delete_section(&self, section: &str) -> Result<()> {
        let what = format!("delete section '{section}' of checkpoint '{}'", self.name);
        self.lease_check(&what)?;
        let req = pb::DeleteSectionRequest {
            checkpoint: self.name.clone(),
            section: section.to_string(),
            epoch: self.epoch,
            options: None,
        };
        self.client
            .call(&what, Idempotency::Mutating, req, |mut c, r| async move {
                c.delete_section(r).await
            })
            .await?;
        Ok(())
    }

    /// Set when the service deletes section `section`: at `expires_at_ms` (ms since the Unix
    /// epoch), or never (`None`).
    ///
    /// # Errors
    /// As [`Checkpoint::delete_section`].
    pub async fn set_expiration(&self, section: &str, expires_at_ms: Option<u64>) -> Result<()> {
        let what = format!(
            "set the expiration of section '{section}' of checkpoint '{}'",
            self.name
        );
        self.lease_check(&what)?;
        let req = pb::SetExpirationRequest {
            checkpoint: self.name.clone(),
            section: section.to_string(),
            expires_at_ms: expires_at_ms.unwrap_or(0),
            epoch: self.epoch,
            options: None,
        };
        self.client
            .call(&what, Idempotency::Mutating, req, |mut c, r| async move {
                c.set_expiration(r).await
            })
            .await?;
        Ok(())
    }

    /// The checkpoint's attributes and usage.
    ///
    /// # Errors
    /// `NOT_EXIST` if the checkpoint does not exist.
    pub async fn status(&self) -> Result<CheckpointStatus> {
        let what = format!("status of checkpoint '{}'", self.name);
        let req = pb::StatusRequest {
            name: self.name.clone(),
            stale: self.stale_reads,
            options: None,
        };
        let r = self
            .client
            .call(&what, Idempotency::Idempotent, req, |mut c, r| async move {
                c.status(r).await
            })
            .await?;
        Ok(CheckpointStatus::from(r))
    }

    /// Close the handle (a no-op for a checkpoint that was not opened). When the last handle
    /// closes, the checkpoint's retention timer starts.
    ///
    /// # Errors
    /// `BAD_HANDLE` if the service no longer knows the handle (e.g. the checkpoint was
    /// unlinked).
    pub async fn close(mut self) -> Result<()> {
        match self.handle.take() {
            Some(h) => self.client.close_handle(&self.name, h).await,
            None => Ok(()),
        }
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(checkpoint = %self.name, handle, "dropped outside a runtime: not closed");
            return;
        };
        let client = self.client.clone();
        let name = std::mem::take(&mut self.name);
        rt.spawn(async move {
            if let Err(e) = client.close_handle(&name, handle).await {
                tracing::debug!(error = %e, "closing a dropped checkpoint handle failed");
            }
        });
    }
}
