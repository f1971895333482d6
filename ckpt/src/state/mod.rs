//! The checkpoint state machine: pure and deterministic.
//!
//! Every node applies the same committed [`CkptCommand`]s in log order to its [`CkptState`] and
//! gets the same state and the same [`CkptResponse`]. Nothing here reads a clock, draws a random
//! number or does I/O; the only time is the leader's stamp on the entry
//! ([`ApplyContext::time_ms`]), and every collection is ordered (`BTreeMap`/`BTreeSet`), so
//! iteration order is the same everywhere.
//!
//! Each `apply` first expires what is due as of the entry's time stamp (checkpoints whose
//! retention ran out, sections whose expiration passed), walking two ordered deadline indexes so
//! the cost is O(expired · log n), then runs the command. A refused command is a
//! [`CkptResponse::Error`] and changes nothing (beyond that expiry).

mod checkpoint;
mod expiry;
mod invariants;
mod open_close;
mod sections;
#[cfg(test)]
mod test_support;
mod validate;
mod write;

use std::collections::{BTreeMap, BTreeSet};

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::command::{Attributes, CkptCommand, CkptResponse};

use self::checkpoint::{Checkpoint, Section};
use self::validate::{checkpoint_not_exist, to_usize};

/// A byte range of one section to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionRead {
    /// The section id.
    pub section: String,
    /// First byte to read (≤ the section's size).
    pub offset: u64,
    /// Most bytes to read; 0 = to the end of the section.
    pub len: u64,
}

/// What a section listing says about one section (no data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionInfo {
    /// The section id.
    pub section: String,
    /// Its size in bytes.
    pub size: u64,
    /// Absolute expiration time (ms since the epoch); 0 = never.
    pub expires_at_ms: u64,
    /// Log index of the last command that changed it (data or expiration).
    pub last_update_index: u64,
}

/// A checkpoint's attributes and usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// The checkpoint's name.
    pub name: String,
    /// Its creation attributes.
    pub attributes: Attributes,
    /// Sections it holds.
    pub sections_used: u32,
    /// Bytes over all its sections.
    pub bytes_used: u64,
    /// Handles open on it.
    pub open_handles: u32,
    /// Highest fencing epoch it accepted (0 = none yet).
    pub max_epoch: u64,
    /// When retention deletes it (ms since the epoch); 0 = not scheduled (open, or kept until
    /// unlinked).
    pub retention_deadline_ms: u64,
}

/// The checkpoint service's replicated state.
///
/// # Correctness
/// Deterministic: the same commands with the same [`ApplyContext`]s give the same state and
/// responses on every node. It round-trips through serde (the node snapshots it with postcard);
/// the deadline and handle indexes are part of it, so a restored state is identical.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CkptState {
    /// Checkpoints by name.
    checkpoints: BTreeMap<String, Checkpoint>,
    /// Every open handle → its checkpoint's name.
    handles: BTreeMap<u64, String>,
    /// (retention deadline, checkpoint) for every scheduled retention.
    retention_queue: BTreeSet<(u64, String)>,
    /// (expires_at_ms, checkpoint, section) for every section that expires.
    expiry_queue: BTreeSet<(u64, String, String)>,
    /// Bytes of section data over all checkpoints (≤ `limits::TOTAL_BYTES_MAX`).
    total_bytes: u64,
}

impl CkptState {
    /// Apply one committed command: expire what is due as of `ctx.time_ms`, then run `cmd`.
    ///
    /// A refused command returns [`CkptResponse::Error`] and changes nothing beyond the
    /// expiry. A broken internal invariant panics: the state is corrupt and must not spread.
    pub fn apply(&mut self, ctx: ApplyContext, cmd: CkptCommand) -> CkptResponse {
        let (checkpoints, sections) = self.expire_due(ctx.time_ms);
        let result = match cmd {
            CkptCommand::Expire => Ok(CkptResponse::Expired {
                checkpoints,
                sections,
            }),
            CkptCommand::Open { name, create } => self.open(ctx, name, create),
            CkptCommand::Close { handle } => self.close(ctx, handle),
            CkptCommand::Unlink { name } => self.unlink(ctx, &name),
            CkptCommand::CreateSection {
                ckpt,
                section,
                data,
                expires_at_ms,
                epoch,
            } => self.create_section(ctx, &ckpt, section, data, expires_at_ms, epoch),
            CkptCommand::DeleteSection {
                ckpt,
                section,
                epoch,
            } => self.delete_section(ctx, &ckpt, &section, epoch),
            CkptCommand::Write {
                ckpt,
                writes,
                epoch,
            } => self.write(ctx, &ckpt, writes, epoch),
            CkptCommand::SetExpiration {
                ckpt,
                section,
                expires_at_ms,
                epoch,
            } => self.set_expiration(ctx, &ckpt, &section, expires_at_ms, epoch),
        };
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        result.unwrap_or_else(CkptResponse::Error)
    }

    /// Read byte ranges of sections of `ckpt`, as `(section, bytes)` in request order.
    ///
    /// # Errors
    /// NOT_EXIST for a missing checkpoint or section; INVALID_PARAM for an offset beyond a
    /// section's end. Expired sections not yet purged by an `apply` are still readable.
    pub fn read(
        &self,
        ckpt: &str,
        reads: &[SectionRead],
    ) -> Result<Vec<(String, Vec<u8>)>, AisError> {
        let checkpoint = self.checkpoint(ckpt)?;
        let mut out = Vec::with_capacity(reads.len());
        for read in reads {
            let section = checkpoint.section(ckpt, &read.section)?;
            let size = section.size();
            if read.offset > size {
                return Err(AisError::new(
                    ErrorCode::InvalidParam,
                    format!(
                        "read offset {} is beyond the end of section '{}' of checkpoint '{ckpt}' \
                         ({size} bytes); read at an offset ≤ the section's size",
                        read.offset, read.section
                    ),
                ));
            }
            let end = match read.len {
                0 => size,
                len => size.min(read.offset.saturating_add(len)),
            };
            let range = to_usize(read.offset)..to_usize(end);
            out.push((read.section.clone(), section.data[range].to_vec()));
        }
        Ok(out)
    }

    /// The sections of `ckpt` sorted by id; with `expiring_before_ms = Some(t)`, only those that
    /// expire (`expires_at_ms != 0`) at or before `t`.
    ///
    /// # Errors
    /// NOT_EXIST if the checkpoint does not exist.
    pub fn sections(
        &self,
        ckpt: &str,
        expiring_before_ms: Option<u64>,
    ) -> Result<Vec<SectionInfo>, AisError> {
        let checkpoint = self.checkpoint(ckpt)?;
        let wanted = |s: &Section| match expiring_before_ms {
            None => true,
            Some(t) => s.expires_at_ms != 0 && s.expires_at_ms <= t,
        };
        Ok(checkpoint
            .sections
            .iter()
            .filter(|(_, s)| wanted(s))
            .map(|(id, s)| SectionInfo {
                section: id.clone(),
                size: s.size(),
                expires_at_ms: s.expires_at_ms,
                last_update_index: s.last_update_index,
            })
            .collect())
    }

    /// The status of checkpoint `name`.
    ///
    /// # Errors
    /// NOT_EXIST if it does not exist.
    pub fn status(&self, name: &str) -> Result<CheckpointStatus, AisError> {
        Ok(self.checkpoint(name)?.status(name))
    }

    /// Every checkpoint's status, in name order.
    pub fn list(&self) -> Vec<CheckpointStatus> {
        self.checkpoints
            .iter()
            .map(|(name, c)| c.status(name))
            .collect()
    }

    /// The attributes of checkpoint `name`, if it exists (the service pre-checks limits with
    /// them before proposing).
    pub fn attributes(&self, name: &str) -> Option<&Attributes> {
        self.checkpoints.get(name).map(|c| &c.attributes)
    }

    /// The highest fencing epoch checkpoint `name` accepted (0 = none), if it exists.
    pub fn max_epoch(&self, name: &str) -> Option<u64> {
        self.checkpoints.get(name).map(|c| c.max_epoch)
    }

    /// The earliest pending deadline (a retention deadline or a section expiration), if any:
    /// the leader's janitor proposes [`CkptCommand::Expire`] once it has passed.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let retention = self.retention_queue.first().map(|(t, _)| *t);
        let expiry = self.expiry_queue.first().map(|(t, _, _)| *t);
        match (retention, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The checkpoint `name`, or NOT_EXIST.
    fn checkpoint(&self, name: &str) -> Result<&Checkpoint, AisError> {
        self.checkpoints
            .get(name)
            .ok_or_else(|| checkpoint_not_exist(name))
    }

    /// The checkpoint `name` for a command that was validated to find it.
    fn checkpoint_mut(&mut self, name: &str) -> &mut Checkpoint {
        self.checkpoints
            .get_mut(name)
            .expect("a validated command names an existing checkpoint")
    }
}
