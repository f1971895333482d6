//! `Write`: an atomic batch of section writes, validated as a whole against a scratch view of
//! sizes before any of it is applied.

use std::collections::BTreeMap;

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};

use super::checkpoint::{Checkpoint, Section};
use super::validate::{
    check_checkpoint_size, check_epoch, check_section_size, check_sections_max, check_total_bytes,
    len_u64, section_not_exist, to_usize, validate_section_id,
};
use super::CkptState;
use crate::command::{Attributes, CkptResponse, SectionWrite, WriteKind};
use crate::limits;

impl CkptState {
    /// `Write`: validate every section write against a scratch view of sizes, then apply them
    /// all in order; on any error nothing changes.
    pub(super) fn write(
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
