//! Time-based expiry: the two ordered deadline indexes (retention of unopened checkpoints,
//! section expiration) and removal of checkpoints and sections with their index entries.

use super::checkpoint::Checkpoint;
use super::CkptState;

impl CkptState {
    /// Delete every checkpoint whose retention deadline and every section whose expiration is
    /// ≤ `now_ms`, earliest first (a section before a checkpoint due at the same time). Returns
    /// (checkpoints, sections) deleted; sections deleted with their checkpoint are not counted.
    pub(super) fn expire_due(&mut self, now_ms: u64) -> (u32, u32) {
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
    pub(super) fn remove_checkpoint(&mut self, name: &str) -> Checkpoint {
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
    pub(super) fn remove_section(&mut self, ckpt_name: &str, id: &str) {
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

#[cfg(test)]
mod tests {
    use crate::command::{CkptCommand, CkptResponse};
    use crate::state::test_support::{ctx, open};
    use crate::state::CkptState;

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
}
