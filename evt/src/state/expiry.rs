//! Retention: the ordered deadline index and dropping retained events whose retention ran out.

use super::EvtState;
use crate::command::Event;

impl EvtState {
    /// Drop every retained event whose retention deadline is ≤ `now_ms`, earliest first; returns
    /// how many. The events stay in their channel's ring of recent events (that is history, not
    /// retention).
    pub(super) fn expire_due(&mut self, now_ms: u64) -> u64 {
        let mut expired = 0u64;
        while let Some((deadline, channel, id)) = self.deadlines.first().cloned() {
            if deadline > now_ms {
                break;
            }
            let event = self
                .channels
                .get_mut(&channel)
                .and_then(|c| c.retained.remove(&id))
                .unwrap_or_else(|| panic!("deadline index names a missing event {channel}/{id}"));
            self.forget_retained(&event);
            expired += 1;
        }
        expired
    }

    /// Remove a retained `event` (already taken out of its channel) from the deadline index and
    /// the retained-bytes total.
    pub(super) fn forget_retained(&mut self, event: &Event) {
        let deadline = event
            .retention_deadline_ms()
            .expect("only events with retention are retained");
        let key = (deadline, event.channel.clone(), event.id);
        assert!(self.deadlines.remove(&key), "deadline index lost {key:?}");
        self.retained_bytes = self
            .retained_bytes
            .checked_sub(event.size_bytes())
            .expect("retained bytes cover every retained event");
    }
}
