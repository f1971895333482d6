//! The full-scan invariant check `apply` runs after every command in debug builds.

use super::validate::to_usize;
use super::CkptState;
use crate::limits;

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

#[cfg(test)]
mod tests {
    use crate::command::CkptCommand;
    use crate::state::test_support::{ctx, open};
    use crate::state::CkptState;

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
}
