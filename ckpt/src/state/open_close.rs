//! `Open`, `Close` and `Unlink`: handles, checkpoint creation and retention scheduling.

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};

use super::checkpoint::Checkpoint;
use super::validate::{validate_attributes, validate_name};
use super::CkptState;
use crate::command::{Attributes, CkptResponse, UpdateMode};
use crate::limits;

impl CkptState {
    /// `Open`: create the checkpoint if asked and missing, then add a handle (its log index).
    pub(super) fn open(
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
                        "checkpoint '{name}' exists with other attributes: {}; create it with \
                         the existing attributes, open it without any, or unlink it first",
                        differences(&existing.attributes, attributes)
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
    pub(super) fn close(
        &mut self,
        ctx: ApplyContext,
        handle: u64,
    ) -> Result<CkptResponse, AisError> {
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
    pub(super) fn unlink(
        &mut self,
        ctx: ApplyContext,
        name: &str,
    ) -> Result<CkptResponse, AisError> {
        self.checkpoint(name)?;
        self.remove_checkpoint(name);
        Ok(CkptResponse::Done { index: ctx.index })
    }
}

/// What `asked` changes of `existing`, for the EXIST error: "sections_max 3 (asked 4), ...".
fn differences(existing: &Attributes, asked: &Attributes) -> String {
    // No `..`: a new attribute must be added here, or this stops compiling.
    let Attributes {
        update_mode,
        sections_max,
        section_size_max,
        checkpoint_size_max,
        retention_ms,
    } = existing;
    fn note<T: PartialEq + std::fmt::Display>(
        out: &mut Vec<String>,
        field: &str,
        has: T,
        wanted: T,
    ) {
        if has != wanted {
            out.push(format!("{field} {has} (asked {wanted})"));
        }
    }
    let mode = |m: UpdateMode| match m {
        UpdateMode::Sync => "sync",
        UpdateMode::Async => "async",
    };
    let mut out = Vec::new();
    note(
        &mut out,
        "update mode",
        mode(*update_mode),
        mode(asked.update_mode),
    );
    note(&mut out, "sections_max", sections_max, &asked.sections_max);
    note(
        &mut out,
        "section_size_max",
        section_size_max,
        &asked.section_size_max,
    );
    note(
        &mut out,
        "checkpoint_size_max",
        checkpoint_size_max,
        &asked.checkpoint_size_max,
    );
    note(&mut out, "retention_ms", retention_ms, &asked.retention_ms);
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use nines_core::ErrorCode;

    use crate::command::{CkptCommand, CkptResponse};
    use crate::limits;
    use crate::state::checkpoint::Checkpoint;
    use crate::state::test_support::{attrs, code, ctx, open};
    use crate::state::CkptState;

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
}
