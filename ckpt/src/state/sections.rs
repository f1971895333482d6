//! `CreateSection`, `DeleteSection` and `SetExpiration`.

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};

use super::checkpoint::Section;
use super::validate::{
    check_checkpoint_size, check_epoch, check_section_size, check_sections_max, check_total_bytes,
    len_u64, validate_section_id,
};
use super::CkptState;
use crate::command::CkptResponse;

impl CkptState {
    /// `CreateSection`: add a section with its initial data.
    pub(super) fn create_section(
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
    pub(super) fn delete_section(
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
    pub(super) fn set_expiration(
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
