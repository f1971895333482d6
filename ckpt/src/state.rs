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

use std::collections::{BTreeMap, BTreeSet};

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::command::{Attributes, CkptCommand, CkptResponse, SectionWrite, WriteKind};
use crate::limits;

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

/// One section: its bytes and its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Section {
    /// The data; serialized as one byte string so snapshots copy it instead of encoding it
    /// byte by byte.
    #[serde(with = "bytes")]
    data: Vec<u8>,
    /// Absolute expiration time; 0 = never. Non-zero values are mirrored in
    /// [`CkptState::expiry_queue`].
    expires_at_ms: u64,
    /// Log index of the last change.
    last_update_index: u64,
}

impl Section {
    /// The data's length in bytes.
    fn size(&self) -> u64 {
        len_u64(&self.data)
    }
}

/// One checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    /// Creation attributes, fixed for its life.
    attributes: Attributes,
    /// Sections by id (ordered, so listings are sorted).
    sections: BTreeMap<String, Section>,
    /// Sum of the sections' sizes, kept so limit checks are O(1).
    bytes_used: u64,
    /// Open handles; mirrored in [`CkptState::handles`].
    handles: BTreeSet<u64>,
    /// Highest fencing epoch accepted; 0 = never fenced.
    max_epoch: u64,
    /// When retention deletes it; 0 = not scheduled. Non-zero values are mirrored in
    /// [`CkptState::retention_queue`].
    retention_deadline_ms: u64,
    /// The N of the last generated section id `s<N>`.
    last_generated_id: u64,
}

impl Checkpoint {
    /// A new, empty checkpoint.
    fn new(attributes: Attributes) -> Self {
        Self {
            attributes,
            sections: BTreeMap::new(),
            bytes_used: 0,
            handles: BTreeSet::new(),
            max_epoch: 0,
            retention_deadline_ms: 0,
            last_generated_id: 0,
        }
    }

    /// The next free generated id and the counter value that produced it. Skips ids a caller
    /// chose; ends within `sections.len() + 1` tries.
    fn next_generated_id(&self) -> (String, u64) {
        let mut n = self.last_generated_id;
        loop {
            n = n.checked_add(1).expect("section id counter below u64::MAX");
            let id = format!("s{n}");
            if !self.sections.contains_key(&id) {
                return (id, n);
            }
        }
    }

    /// This checkpoint's status under `name`.
    fn status(&self, name: &str) -> CheckpointStatus {
        CheckpointStatus {
            name: name.to_owned(),
            attributes: self.attributes.clone(),
            sections_used: count_u32(self.sections.len()),
            bytes_used: self.bytes_used,
            open_handles: count_u32(self.handles.len()),
            max_epoch: self.max_epoch,
            retention_deadline_ms: self.retention_deadline_ms,
        }
    }

    /// The section `id`, or NOT_EXIST.
    fn section(&self, ckpt: &str, id: &str) -> Result<&Section, AisError> {
        self.sections
            .get(id)
            .ok_or_else(|| section_not_exist(ckpt, id))
    }
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

// ---- Expiry ----------------------------------------------------------------------------------

impl CkptState {
    /// Delete every checkpoint whose retention deadline and every section whose expiration is
    /// ≤ `now_ms`, earliest first (a section before a checkpoint due at the same time). Returns
    /// (checkpoints, sections) deleted; sections deleted with their checkpoint are not counted.
    fn expire_due(&mut self, now_ms: u64) -> (u32, u32) {
        let (mut checkpoints, mut sections) = (0u32, 0u32);
        loop {
            let retention = self.retention_queue.first().map(|(t, _)| *t);
            let expiry = self.expiry_queue.first().map(|(t, _, _)| *t);
            let retention_first = match (retention, expiry) {
                (Some(r), Some(e)) if r.min(e) <= now_ms => r < e,
                (Some(r), None) if r <= now_ms => true,
                (None, Some(e)) if e <= now_ms => false,
                _ => break,
            };
            if retention_first {
                let (_, name) = self
                    .retention_queue
                    .first()
                    .cloned()
                    .expect("the retention queue is not empty");
                let removed = self.remove_checkpoint(&name);
                assert!(
                    removed.handles.is_empty(),
                    "retention deleted checkpoint '{name}' while it had open handles"
                );
                checkpoints = checkpoints.saturating_add(1);
            } else {
                let (_, ckpt, section) = self
                    .expiry_queue
                    .first()
                    .cloned()
                    .expect("the expiry queue is not empty");
                self.remove_section(&ckpt, &section);
                sections = sections.saturating_add(1);
            }
        }
        (checkpoints, sections)
    }

    /// Remove checkpoint `name` with its sections, handles and index entries.
    fn remove_checkpoint(&mut self, name: &str) -> Checkpoint {
        let ckpt = self
            .checkpoints
            .remove(name)
            .expect("only existing checkpoints are removed");
        for handle in &ckpt.handles {
            let owner = self.handles.remove(handle);
            assert_eq!(
                owner.as_deref(),
                Some(name),
                "handle {handle} index is corrupt"
            );
        }
        for (id, section) in &ckpt.sections {
            if section.expires_at_ms != 0 {
                let key = (section.expires_at_ms, name.to_owned(), id.clone());
                assert!(self.expiry_queue.remove(&key), "expiry index lost {key:?}");
            }
        }
        if ckpt.retention_deadline_ms != 0 {
            let key = (ckpt.retention_deadline_ms, name.to_owned());
            assert!(
                self.retention_queue.remove(&key),
                "retention index lost {key:?}"
            );
        }
        self.total_bytes = self
            .total_bytes
            .checked_sub(ckpt.bytes_used)
            .expect("total bytes cover every checkpoint's bytes");
        ckpt
    }

    /// Remove section `id` of checkpoint `ckpt_name` with its index entry and its bytes.
    fn remove_section(&mut self, ckpt_name: &str, id: &str) {
        let ckpt = self
            .checkpoints
            .get_mut(ckpt_name)
            .expect("only sections of existing checkpoints are removed");
        let section = ckpt
            .sections
            .remove(id)
            .expect("only existing sections are removed");
        if section.expires_at_ms != 0 {
            let key = (section.expires_at_ms, ckpt_name.to_owned(), id.to_owned());
            assert!(self.expiry_queue.remove(&key), "expiry index lost {key:?}");
        }
        let size = section.size();
        ckpt.bytes_used = ckpt
            .bytes_used
            .checked_sub(size)
            .expect("checkpoint bytes cover each of its sections");
        self.total_bytes = self
            .total_bytes
            .checked_sub(size)
            .expect("total bytes cover each section");
    }
}

// ---- Open, Close, Unlink ---------------------------------------------------------------------

impl CkptState {
    /// `Open`: create the checkpoint if asked and missing, then add a handle (its log index).
    fn open(
        &mut self,
        ctx: ApplyContext,
        name: String,
        create: Option<Attributes>,
    ) -> Result<CkptResponse, AisError> {
        validate_name(&name)?;
        let created = match (self.checkpoints.get(&name), &create) {
            (None, None) => {
                return Err(AisError::new(
                    ErrorCode::NotExist,
                    format!(
                        "checkpoint '{name}' does not exist; open it with creation attributes \
                         to create it"
                    ),
                ))
            }
            (None, Some(attributes)) => {
                validate_attributes(&name, attributes)?;
                self.check_checkpoints_max(&name)?;
                true
            }
            (Some(existing), Some(attributes)) if existing.attributes != *attributes => {
                return Err(AisError::new(
                    ErrorCode::Exist,
                    format!(
                        "checkpoint '{name}' exists with other attributes: {:?}; open it \
                         without creation attributes or with these",
                        existing.attributes
                    ),
                ))
            }
            (Some(_), _) => false,
        };
        if self.handles.len() >= limits::HANDLES_MAX {
            return Err(AisError::new(
                ErrorCode::NoSpace,
                format!(
                    "cannot open checkpoint '{name}': the cluster has {} open handles, the \
                     most it allows; close some first",
                    limits::HANDLES_MAX
                ),
            ));
        }
        if let (true, Some(attributes)) = (created, create) {
            self.checkpoints
                .insert(name.clone(), Checkpoint::new(attributes));
        }
        let handle = ctx.index;
        let previous = self.handles.insert(handle, name.clone());
        assert!(previous.is_none(), "handle {handle} (a log index) reused");
        let ckpt = self
            .checkpoints
            .get_mut(&name)
            .expect("the checkpoint exists or was just created");
        ckpt.handles.insert(handle);
        if ckpt.retention_deadline_ms != 0 {
            let key = (std::mem::take(&mut ckpt.retention_deadline_ms), name);
            assert!(
                self.retention_queue.remove(&key),
                "retention index lost {key:?}"
            );
        }
        Ok(CkptResponse::Opened {
            handle,
            created,
            attributes: ckpt.attributes.clone(),
        })
    }

    /// NO_SPACE if the cluster holds `limits::CHECKPOINTS_MAX` checkpoints already.
    fn check_checkpoints_max(&self, name: &str) -> Result<(), AisError> {
        if self.checkpoints.len() >= limits::CHECKPOINTS_MAX {
            return Err(AisError::new(
                ErrorCode::NoSpace,
                format!(
                    "cannot create checkpoint '{name}': the cluster holds {} checkpoints, the \
                     most it allows; unlink some first",
                    limits::CHECKPOINTS_MAX
                ),
            ));
        }
        Ok(())
    }

    /// `Close`: drop a handle; the last close of a checkpoint with retention schedules its
    /// deletion at `ctx.time_ms + retention_ms`.
    fn close(&mut self, ctx: ApplyContext, handle: u64) -> Result<CkptResponse, AisError> {
        let name = self.handles.remove(&handle).ok_or_else(|| {
            AisError::new(
                ErrorCode::BadHandle,
                format!(
                    "handle {handle} is not open: it was closed, never opened, or its \
                     checkpoint was unlinked or expired"
                ),
            )
        })?;
        let ckpt = self
            .checkpoints
            .get_mut(&name)
            .expect("an open handle's checkpoint exists");
        assert!(
            ckpt.handles.remove(&handle),
            "handle {handle} index is corrupt"
        );
        let retention_ms = ckpt.attributes.retention_ms;
        if ckpt.handles.is_empty() && retention_ms > 0 {
            assert_eq!(
                ckpt.retention_deadline_ms, 0,
                "'{name}' was open yet scheduled"
            );
            let deadline_ms = ctx.time_ms.saturating_add(retention_ms);
            ckpt.retention_deadline_ms = deadline_ms;
            self.retention_queue.insert((deadline_ms, name));
        }
        Ok(CkptResponse::Done { index: ctx.index })
    }

    /// `Unlink`: delete a checkpoint now; its handles become unknown.
    fn unlink(&mut self, ctx: ApplyContext, name: &str) -> Result<CkptResponse, AisError> {
        self.checkpoint(name)?;
        self.remove_checkpoint(name);
        Ok(CkptResponse::Done { index: ctx.index })
    }
}

// ---- Sections --------------------------------------------------------------------------------

impl CkptState {
    /// `CreateSection`: add a section with its initial data.
    fn create_section(
        &mut self,
        ctx: ApplyContext,
        ckpt_name: &str,
        id: Option<String>,
        data: Vec<u8>,
        expires_at_ms: u64,
        epoch: u64,
    ) -> Result<CkptResponse, AisError> {
        let ckpt = self.checkpoint(ckpt_name)?;
        let max_epoch = check_epoch(ckpt_name, ckpt.max_epoch, epoch)?;
        let (id, last_generated_id) = match id {
            None => ckpt.next_generated_id(),
            Some(id) => {
                validate_section_id(ckpt_name, &id)?;
                if ckpt.sections.contains_key(&id) {
                    return Err(AisError::new(
                        ErrorCode::Exist,
                        format!("section '{id}' of checkpoint '{ckpt_name}' exists already"),
                    ));
                }
                (id, ckpt.last_generated_id)
            }
        };
        check_sections_max(ckpt_name, &ckpt.attributes, ckpt.sections.len())?;
        let len = len_u64(&data);
        check_section_size(ckpt_name, &id, &ckpt.attributes, len)?;
        check_checkpoint_size(
            ckpt_name,
            &ckpt.attributes,
            ckpt.bytes_used.saturating_add(len),
        )?;
        check_total_bytes(ckpt_name, self.total_bytes.saturating_add(len))?;

        let ckpt = self.checkpoints.get_mut(ckpt_name).expect("found above");
        ckpt.max_epoch = max_epoch;
        ckpt.last_generated_id = last_generated_id;
        ckpt.bytes_used += len;
        self.total_bytes += len;
        let section = Section {
            data,
            expires_at_ms,
            last_update_index: ctx.index,
        };
        assert!(ckpt.sections.insert(id.clone(), section).is_none());
        if expires_at_ms != 0 {
            self.expiry_queue
                .insert((expires_at_ms, ckpt_name.to_owned(), id.clone()));
        }
        Ok(CkptResponse::SectionCreated { section: id })
    }

    /// `DeleteSection`.
    fn delete_section(
        &mut self,
        ctx: ApplyContext,
        ckpt_name: &str,
        id: &str,
        epoch: u64,
    ) -> Result<CkptResponse, AisError> {
        let ckpt = self.checkpoint(ckpt_name)?;
        let max_epoch = check_epoch(ckpt_name, ckpt.max_epoch, epoch)?;
        ckpt.section(ckpt_name, id)?;
        self.remove_section(ckpt_name, id);
        self.checkpoint_mut(ckpt_name).max_epoch = max_epoch;
        Ok(CkptResponse::Done { index: ctx.index })
    }

    /// `SetExpiration`: move a section's expiration (0 = never).
    fn set_expiration(
        &mut self,
        ctx: ApplyContext,
        ckpt_name: &str,
        id: &str,
        expires_at_ms: u64,
        epoch: u64,
    ) -> Result<CkptResponse, AisError> {
        let ckpt = self.checkpoint(ckpt_name)?;
        let max_epoch = check_epoch(ckpt_name, ckpt.max_epoch, epoch)?;
        ckpt.section(ckpt_name, id)?;

        let ckpt = self.checkpoints.get_mut(ckpt_name).expect("found above");
        ckpt.max_epoch = max_epoch;
        let section = ckpt.sections.get_mut(id).expect("found above");
        let old_ms = std::mem::replace(&mut section.expires_at_ms, expires_at_ms);
        section.last_update_index = ctx.index;
        if old_ms != 0 {
            let key = (old_ms, ckpt_name.to_owned(), id.to_owned());
            assert!(self.expiry_queue.remove(&key), "expiry index lost {key:?}");
        }
        if expires_at_ms != 0 {
            self.expiry_queue
                .insert((expires_at_ms, ckpt_name.to_owned(), id.to_owned()));
        }
        Ok(CkptResponse::Done { index: ctx.index })
    }
}

// ---- Write -----------------------------------------------------------------------------------

impl CkptState {
    /// `Write`: validate every section write against a scratch view of sizes, then apply them
    /// all in order; on any error nothing changes.
    fn write(
        &mut self,
        ctx: ApplyContext,
        ckpt_name: &str,
        writes: Vec<SectionWrite>,
        epoch: u64,
    ) -> Result<CkptResponse, AisError> {
        let ckpt = self.checkpoint(ckpt_name)?;
        let max_epoch = check_epoch(ckpt_name, ckpt.max_epoch, epoch)?;
        if writes.is_empty() {
            return Err(AisError::new(
                ErrorCode::InvalidParam,
                format!("write to checkpoint '{ckpt_name}' has no section writes"),
            ));
        }
        if writes.len() > limits::WRITES_PER_CALL_MAX {
            return Err(AisError::new(
                ErrorCode::TooBig,
                format!(
                    "write to checkpoint '{ckpt_name}' has {} section writes, more than the {} \
                     one call may carry; split it",
                    writes.len(),
                    limits::WRITES_PER_CALL_MAX
                ),
            ));
        }
        validate_writes(ckpt_name, ckpt, self.total_bytes, &writes)?;

        for write in writes {
            self.apply_section_write(ctx, ckpt_name, write);
        }
        self.checkpoint_mut(ckpt_name).max_epoch = max_epoch;
        Ok(CkptResponse::Done { index: ctx.index })
    }

    /// Apply one section write that [`validate_writes`] accepted.
    fn apply_section_write(&mut self, ctx: ApplyContext, ckpt_name: &str, write: SectionWrite) {
        let ckpt = self
            .checkpoints
            .get_mut(ckpt_name)
            .expect("a validated write names an existing checkpoint");
        let section = ckpt.sections.entry(write.section).or_insert_with(|| {
            assert_eq!(
                write.kind,
                WriteKind::Upsert,
                "validation let a missing section by"
            );
            Section {
                data: Vec::new(),
                expires_at_ms: 0,
                last_update_index: ctx.index,
            }
        });
        let old_size = section.size();
        match write.kind {
            WriteKind::Write => {
                let start = to_usize(write.offset);
                let end = start + write.data.len();
                if end > section.data.len() {
                    section.data.resize(end, 0);
                }
                section.data[start..end].copy_from_slice(&write.data);
            }
            WriteKind::Overwrite | WriteKind::Upsert => section.data = write.data,
        }
        section.last_update_index = ctx.index;
        let new_size = section.size();
        assert!(new_size <= ckpt.attributes.section_size_max);
        ckpt.bytes_used = ckpt.bytes_used - old_size + new_size;
        self.total_bytes = self.total_bytes - old_size + new_size;
        assert!(ckpt.bytes_used <= ckpt.attributes.checkpoint_size_max);
        assert!(self.total_bytes <= limits::TOTAL_BYTES_MAX);
    }
}

/// Check a whole atomic write against a scratch view: every section write in order, with
/// earlier writes' sizes (and upsert-created sections) visible to later ones. The checkpoint
/// and cluster byte limits hold after every single write, as if applied one by one.
fn validate_writes(
    ckpt_name: &str,
    ckpt: &Checkpoint,
    total_bytes: u64,
    writes: &[SectionWrite],
) -> Result<(), AisError> {
    let attributes = &ckpt.attributes;
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sections_used = ckpt.sections.len();
    let (mut bytes_used, mut total_bytes) = (ckpt.bytes_used, total_bytes);
    for (i, write) in writes.iter().enumerate() {
        let id = write.section.as_str();
        let current = sizes
            .get(id)
            .copied()
            .or_else(|| ckpt.sections.get(id).map(Section::size));
        let new_size = plan_section_write(ckpt_name, attributes, i, write, current)?;
        if current.is_none() {
            validate_section_id(ckpt_name, id)?;
            check_sections_max(ckpt_name, attributes, sections_used)?;
            sections_used += 1;
        }
        let old_size = current.unwrap_or(0);
        bytes_used = bytes_used - old_size + new_size;
        total_bytes = total_bytes - old_size + new_size;
        check_checkpoint_size(ckpt_name, attributes, bytes_used)?;
        check_total_bytes(ckpt_name, total_bytes)?;
        sizes.insert(id, new_size);
    }
    Ok(())
}

/// The size section write `writes[i]` leaves its section at, given its current size (`None`:
/// missing). NOT_EXIST, INVALID_PARAM (offset) or TOO_BIG if it cannot be applied.
fn plan_section_write(
    ckpt_name: &str,
    attributes: &Attributes,
    i: usize,
    write: &SectionWrite,
    current: Option<u64>,
) -> Result<u64, AisError> {
    let id = &write.section;
    let len = len_u64(&write.data);
    let existing = || {
        current.ok_or_else(|| {
            let e = section_not_exist(ckpt_name, id);
            AisError::new(
                e.code,
                format!("writes[{i}]: {}; upsert creates it", e.message),
            )
        })
    };
    let new_size = match write.kind {
        WriteKind::Write => {
            let size = existing()?;
            if write.offset > size {
                return Err(AisError::new(
                    ErrorCode::InvalidParam,
                    format!(
                        "writes[{i}]: offset {} is beyond the end of section '{id}' of \
                         checkpoint '{ckpt_name}' ({size} bytes); write at an offset ≤ its size",
                        write.offset
                    ),
                ));
            }
            size.max(write.offset.saturating_add(len))
        }
        WriteKind::Overwrite => {
            existing()?;
            len
        }
        WriteKind::Upsert => len,
    };
    check_section_size(ckpt_name, id, attributes, new_size)
        .map_err(|e| AisError::new(e.code, format!("writes[{i}]: {}", e.message)))?;
    Ok(new_size)
}

// ---- Validation helpers ----------------------------------------------------------------------

/// The fencing check: the checkpoint's max epoch after accepting `epoch`, or BAD_OPERATION for a
/// stale epoch or an unfenced command on a fenced checkpoint.
fn check_epoch(ckpt_name: &str, max_epoch: u64, epoch: u64) -> Result<u64, AisError> {
    if epoch != 0 && epoch < max_epoch {
        return Err(AisError::new(
            ErrorCode::BadOperation,
            format!(
                "stale epoch {epoch}: checkpoint '{ckpt_name}' has accepted epoch {max_epoch}; \
                 a newer writer has fenced this one off"
            ),
        ));
    }
    if epoch == 0 && max_epoch != 0 {
        return Err(AisError::new(
            ErrorCode::BadOperation,
            format!(
                "unfenced write refused: checkpoint '{ckpt_name}' has accepted epoch \
                 {max_epoch}; pass an epoch ≥ {max_epoch}"
            ),
        ));
    }
    Ok(max_epoch.max(epoch))
}

/// INVALID_PARAM unless `name` has 1..=`NAME_BYTES_MAX` bytes.
fn validate_name(name: &str) -> Result<(), AisError> {
    if name.is_empty() || name.len() > limits::NAME_BYTES_MAX {
        return Err(AisError::new(
            ErrorCode::InvalidParam,
            format!(
                "checkpoint name has {} bytes; it must have 1..={}",
                name.len(),
                limits::NAME_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// INVALID_PARAM unless section id `id` has 1..=`SECTION_ID_BYTES_MAX` bytes.
fn validate_section_id(ckpt_name: &str, id: &str) -> Result<(), AisError> {
    if id.is_empty() || id.len() > limits::SECTION_ID_BYTES_MAX {
        return Err(AisError::new(
            ErrorCode::InvalidParam,
            format!(
                "section id for checkpoint '{ckpt_name}' has {} bytes; it must have 1..={}",
                id.len(),
                limits::SECTION_ID_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// INVALID_PARAM naming the first attribute outside its range.
fn validate_attributes(name: &str, attributes: &Attributes) -> Result<(), AisError> {
    let bad = |attribute: &str, value: u64, range: String| {
        Err(AisError::new(
            ErrorCode::InvalidParam,
            format!("cannot create checkpoint '{name}': {attribute} {value} is outside {range}"),
        ))
    };
    let sections_max = attributes.sections_max;
    if !(1..=limits::SECTIONS_MAX_LIMIT).contains(&sections_max) {
        let range = format!("1..={}", limits::SECTIONS_MAX_LIMIT);
        return bad("sections_max", u64::from(sections_max), range);
    }
    let section_size_max = attributes.section_size_max;
    if !(1..=limits::SECTION_SIZE_MAX_LIMIT).contains(&section_size_max) {
        let range = format!("1..={}", limits::SECTION_SIZE_MAX_LIMIT);
        return bad("section_size_max", section_size_max, range);
    }
    let checkpoint_size_max = attributes.checkpoint_size_max;
    if !(section_size_max..=limits::CHECKPOINT_SIZE_MAX_LIMIT).contains(&checkpoint_size_max) {
        let range = format!(
            "section_size_max..={} ({section_size_max}..={})",
            limits::CHECKPOINT_SIZE_MAX_LIMIT,
            limits::CHECKPOINT_SIZE_MAX_LIMIT
        );
        return bad("checkpoint_size_max", checkpoint_size_max, range);
    }
    Ok(())
}

/// NO_SPACE if a checkpoint holding `sections_used` sections cannot take another.
fn check_sections_max(
    ckpt_name: &str,
    attributes: &Attributes,
    sections_used: usize,
) -> Result<(), AisError> {
    if sections_used >= to_usize(u64::from(attributes.sections_max)) {
        return Err(AisError::new(
            ErrorCode::NoSpace,
            format!(
                "checkpoint '{ckpt_name}' holds {sections_used} sections, its sections_max; \
                 delete one first"
            ),
        ));
    }
    Ok(())
}

/// TOO_BIG if a section of `size` bytes exceeds the checkpoint's `section_size_max`.
fn check_section_size(
    ckpt_name: &str,
    id: &str,
    attributes: &Attributes,
    size: u64,
) -> Result<(), AisError> {
    if size > attributes.section_size_max {
        return Err(AisError::new(
            ErrorCode::TooBig,
            format!(
                "section '{id}' of checkpoint '{ckpt_name}' would hold {size} bytes, more than \
                 its section_size_max {}",
                attributes.section_size_max
            ),
        ));
    }
    Ok(())
}

/// NO_SPACE if `bytes_used` exceeds the checkpoint's `checkpoint_size_max`.
fn check_checkpoint_size(
    ckpt_name: &str,
    attributes: &Attributes,
    bytes_used: u64,
) -> Result<(), AisError> {
    if bytes_used > attributes.checkpoint_size_max {
        return Err(AisError::new(
            ErrorCode::NoSpace,
            format!(
                "checkpoint '{ckpt_name}' would hold {bytes_used} bytes, more than its \
                 checkpoint_size_max {}; delete or shrink sections first",
                attributes.checkpoint_size_max
            ),
        ));
    }
    Ok(())
}

/// NO_SPACE if the cluster would hold more than `TOTAL_BYTES_MAX` bytes of section data.
fn check_total_bytes(ckpt_name: &str, total_bytes: u64) -> Result<(), AisError> {
    if total_bytes > limits::TOTAL_BYTES_MAX {
        return Err(AisError::new(
            ErrorCode::NoSpace,
            format!(
                "writing to checkpoint '{ckpt_name}' would bring the cluster's section data to \
                 {total_bytes} bytes, more than the {} it may hold; unlink or shrink \
                 checkpoints first",
                limits::TOTAL_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// NOT_EXIST for checkpoint `name`.
fn checkpoint_not_exist(name: &str) -> AisError {
    AisError::new(
        ErrorCode::NotExist,
        format!("checkpoint '{name}' does not exist"),
    )
}

/// NOT_EXIST for section `id` of checkpoint `ckpt`.
fn section_not_exist(ckpt: &str, id: &str) -> AisError {
    AisError::new(
        ErrorCode::NotExist,
        format!("section '{id}' of checkpoint '{ckpt}' does not exist"),
    )
}

/// A byte count as u64 (lossless: usize is at most 64 bits on every supported target).
fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).expect("usize fits in u64")
}

/// A size or offset already bounded by the limits, as usize.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("sizes bounded by the limits fit in usize")
}

/// A count bounded by the limits (sections_max, HANDLES_MAX), as u32.
fn count_u32(n: usize) -> u32 {
    u32::try_from(n).expect("counts bounded by the limits fit in u32")
}

// ---- Invariants ------------------------------------------------------------------------------

impl CkptState {
    /// Check every internal invariant by a full scan; panics on the first broken one. `apply`
    /// runs it after every command in debug builds (release builds keep the O(1) asserts).
    pub(crate) fn check_invariants(&self) {
        assert!(self.checkpoints.len() <= limits::CHECKPOINTS_MAX);
        assert!(self.handles.len() <= limits::HANDLES_MAX);
        let (mut total_bytes, mut handles, mut scheduled, mut expiring) = (0u64, 0usize, 0, 0);
        for (name, ckpt) in &self.checkpoints {
            let attributes = &ckpt.attributes;
            let mut bytes_used = 0u64;
            for (id, section) in &ckpt.sections {
                assert!(
                    section.size() <= attributes.section_size_max,
                    "'{name}'/'{id}' too big"
                );
                bytes_used += section.size();
                if section.expires_at_ms != 0 {
                    let key = (section.expires_at_ms, name.clone(), id.clone());
                    assert!(
                        self.expiry_queue.contains(&key),
                        "expiry index lacks {key:?}"
                    );
                    expiring += 1;
                }
            }
            assert_eq!(ckpt.bytes_used, bytes_used, "'{name}' bytes_used");
            assert!(
                bytes_used <= attributes.checkpoint_size_max,
                "'{name}' over its size"
            );
            assert!(ckpt.sections.len() <= to_usize(u64::from(attributes.sections_max)));
            for handle in &ckpt.handles {
                assert_eq!(
                    self.handles.get(handle),
                    Some(name),
                    "handle {handle} index"
                );
            }
            handles += ckpt.handles.len();
            if ckpt.retention_deadline_ms != 0 {
                assert!(ckpt.handles.is_empty(), "'{name}' is open yet scheduled");
                let key = (ckpt.retention_deadline_ms, name.clone());
                assert!(
                    self.retention_queue.contains(&key),
                    "retention index lacks {key:?}"
                );
                scheduled += 1;
            }
            total_bytes += bytes_used;
        }
        assert_eq!(self.total_bytes, total_bytes, "total_bytes");
        assert!(total_bytes <= limits::TOTAL_BYTES_MAX);
        assert_eq!(self.handles.len(), handles, "handle index has strays");
        assert_eq!(
            self.retention_queue.len(),
            scheduled,
            "retention index has strays"
        );
        assert_eq!(self.expiry_queue.len(), expiring, "expiry index has strays");
    }
}

/// Serde for section data as one byte string (postcard: a length and the bytes, the same
/// encoding as a sequence of u8, but copied rather than encoded byte by byte).
mod bytes {
    use std::fmt;

    use serde::{de, Deserializer, Serializer};

    /// Serialize `data` as bytes.
    pub(super) fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(data)
    }

    /// Deserialize bytes (or, from self-describing formats, a sequence of u8).
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    /// Accepts every way a format may hand over bytes.
    struct BytesVisitor;

    impl<'de> de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("section data bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::UpdateMode;

    fn ctx(index: u64, time_ms: u64) -> ApplyContext {
        ApplyContext {
            index,
            term: 1,
            time_ms,
        }
    }

    fn attrs() -> Attributes {
        Attributes {
            update_mode: UpdateMode::Sync,
            sections_max: 4,
            section_size_max: 8,
            checkpoint_size_max: 16,
            retention_ms: 0,
        }
    }

    fn open(name: &str) -> CkptCommand {
        CkptCommand::Open {
            name: name.into(),
            create: Some(attrs()),
        }
    }

    fn code(response: CkptResponse) -> Option<ErrorCode> {
        match response {
            CkptResponse::Error(e) => Some(e.code),
            _ => None,
        }
    }

    #[test]
    fn handles_max_is_no_space_until_one_closes() {
        let mut state = CkptState::default();
        assert_eq!(code(state.apply(ctx(1, 0), open("a"))), None);
        // Fill the handle table directly: opening 100k times with the debug invariant scan
        // after each apply would be quadratic.
        let ckpt = state.checkpoints.get_mut("a").expect("created");
        for handle in 2..=limits::HANDLES_MAX as u64 {
            ckpt.handles.insert(handle);
            state.handles.insert(handle, "a".into());
        }
        state.check_invariants();
        let next = limits::HANDLES_MAX as u64 + 1;
        let refused = state.apply(ctx(next, 0), open("a"));
        assert_eq!(code(refused), Some(ErrorCode::NoSpace));
        assert_eq!(state.handles.len(), limits::HANDLES_MAX);
        let closed = state.apply(ctx(next + 1, 0), CkptCommand::Close { handle: 7 });
        assert_eq!(code(closed), None);
        assert_eq!(code(state.apply(ctx(next + 2, 0), open("a"))), None);
    }

    #[test]
    fn checkpoints_max_is_no_space_for_creation_only() {
        let mut state = CkptState::default();
        for n in 0..limits::CHECKPOINTS_MAX {
            let name = format!("c{n:05}");
            state.checkpoints.insert(name, Checkpoint::new(attrs()));
        }
        let refused = state.apply(ctx(1, 0), open("new"));
        assert_eq!(code(refused), Some(ErrorCode::NoSpace));
        assert!(state.attributes("new").is_none());
        let existing = state.apply(ctx(2, 0), open("c00000"));
        assert!(matches!(
            existing,
            CkptResponse::Opened { created: false, .. }
        ));
    }

    #[test]
    fn generated_ids_skip_taken_ones() {
        let mut ckpt = Checkpoint::new(attrs());
        let section = Section {
            data: Vec::new(),
            expires_at_ms: 0,
            last_update_index: 1,
        };
        ckpt.sections.insert("s1".into(), section.clone());
        ckpt.sections.insert("s2".into(), section);
        assert_eq!(ckpt.next_generated_id(), ("s3".to_owned(), 3));
        ckpt.last_generated_id = 3;
        assert_eq!(ckpt.next_generated_id(), ("s4".to_owned(), 4));
    }

    #[test]
    fn epoch_rules() {
        assert_eq!(check_epoch("c", 0, 0), Ok(0));
        assert_eq!(check_epoch("c", 0, 3), Ok(3));
        assert_eq!(check_epoch("c", 3, 3), Ok(3));
        assert_eq!(check_epoch("c", 3, 4), Ok(4));
        let stale = check_epoch("c", 3, 2).expect_err("stale");
        assert_eq!(stale.code, ErrorCode::BadOperation);
        let unfenced = check_epoch("c", 3, 0).expect_err("unfenced");
        assert!(
            unfenced.message.starts_with("unfenced write refused"),
            "{unfenced}"
        );
    }

    #[test]
    fn expiry_pops_only_what_is_due_and_empties_the_indexes() {
        let mut state = CkptState::default();
        state.apply(ctx(1, 0), open("a"));
        for (i, t) in [(2u64, 30u64), (3, 10), (4, 20)] {
            let cmd = CkptCommand::CreateSection {
                ckpt: "a".into(),
                section: None,
                data: vec![1],
                expires_at_ms: t,
                epoch: 0,
            };
            state.apply(ctx(i, 0), cmd);
        }
        assert_eq!(state.next_deadline_ms(), Some(10));
        let expired = state.apply(ctx(5, 20), CkptCommand::Expire);
        assert_eq!(
            expired,
            CkptResponse::Expired {
                checkpoints: 0,
                sections: 2
            }
        );
        assert_eq!(state.next_deadline_ms(), Some(30));
        assert_eq!(state.total_bytes, 1);
        state.apply(ctx(6, 0), CkptCommand::Unlink { name: "a".into() });
        assert_eq!(state.next_deadline_ms(), None);
        assert_eq!(state, CkptState::default());
    }

    #[test]
    #[should_panic(expected = "bytes_used")]
    fn a_broken_byte_count_panics() {
        let mut state = CkptState::default();
        state.apply(ctx(1, 0), open("a"));
        state.checkpoint_mut("a").bytes_used = 3;
        state.check_invariants();
    }

    #[test]
    #[should_panic(expected = "expiry index")]
    fn a_lost_index_entry_panics() {
        let mut state = CkptState::default();
        state.apply(ctx(1, 0), open("a"));
        let cmd = CkptCommand::CreateSection {
            ckpt: "a".into(),
            section: Some("x".into()),
            data: Vec::new(),
            expires_at_ms: 50,
            epoch: 0,
        };
        state.apply(ctx(2, 0), cmd);
        state.expiry_queue.clear();
        state.check_invariants();
    }

    #[test]
    fn section_bytes_encode_like_a_byte_vector() {
        let section = Section {
            data: vec![0, 1, 2, 255],
            expires_at_ms: 7,
            last_update_index: 9,
        };
        let plain = (vec![0u8, 1, 2, 255], 7u64, 9u64);
        let bytes = postcard::to_allocvec(&section).expect("serializes");
        assert_eq!(bytes, postcard::to_allocvec(&plain).expect("serializes"));
        let back: Section = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, section);
        // Self-describing formats hand bytes over as a sequence.
        let json = serde_json::to_string(&section).expect("serializes");
        let back: Section = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, section);
    }
}
