//! The full-scan invariant check `apply` runs after every command in debug builds.

use super::EvtState;
use crate::limits::PRIORITY_LOWEST;

impl EvtState {
    /// Check every internal invariant by a full scan; panics on the first broken one.
    pub(super) fn check_invariants(&self) {
        let limits = &self.limits;
        assert!(
            self.channels.len() <= limits.channels_max,
            "too many channels"
        );
        let (mut retained_bytes, mut retained) = (0u64, 0usize);
        for (name, channel) in &self.channels {
            assert!(channel.next_id >= 1, "'{name}' ids start at 1");
            assert!(channel.retained.len() <= limits.retained_per_channel_max);
            for (id, event) in &channel.retained {
                assert_eq!((*id, &event.channel), (event.id, name), "retained key");
                assert!(
                    *id < channel.next_id,
                    "'{name}' retains unpublished id {id}"
                );
                let deadline = event
                    .retention_deadline_ms()
                    .expect("retained has retention");
                let key = (deadline, name.clone(), *id);
                assert!(
                    self.deadlines.contains(&key),
                    "deadline index lacks {key:?}"
                );
                retained_bytes += event.size_bytes();
            }
            retained += channel.retained.len();
            assert!(channel.recent.len() <= limits.recent_events_max);
            assert_eq!(
                channel.recent.is_empty(),
                channel.last_id() == 0,
                "'{name}' ring"
            );
            let mut recent_bytes = 0u64;
            let mut previous = 0u64;
            for event in &channel.recent {
                assert!(event.id > previous, "'{name}' ring out of id order");
                assert!(event.priority <= PRIORITY_LOWEST);
                previous = event.id;
                recent_bytes += event.size_bytes();
            }
            assert_eq!(
                previous,
                channel.last_id(),
                "'{name}' ring ends at the last id"
            );
            assert_eq!(channel.recent_bytes, recent_bytes, "'{name}' recent bytes");
            assert!(recent_bytes <= limits.recent_bytes_max || channel.recent.len() == 1);
        }
        assert_eq!(self.deadlines.len(), retained, "deadline index size");
        assert_eq!(self.retained_bytes, retained_bytes, "retained bytes");
        assert!(
            retained_bytes <= limits.retained_bytes_max,
            "retained bytes over limit"
        );
    }
}
