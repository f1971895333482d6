//! One channel: its id sequence, its retained events and its ring of recent events.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::Event;
use crate::limits::Limits;

/// A channel's replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Channel {
    /// Log index of the command that created this incarnation of the channel (tells a resuming
    /// subscriber whether the ids it holds belong to it).
    pub(super) created_index: u64,
    /// The id the next published event gets (ids start at 1).
    pub(super) next_id: u64,
    /// Retained events by id, until their retention runs out or is cleared.
    pub(super) retained: BTreeMap<u64, Event>,
    /// The newest events, oldest first, ids strictly increasing (for resume by id).
    pub(super) recent: VecDeque<Event>,
    /// Sum of `size_bytes` over `recent`.
    pub(super) recent_bytes: u64,
}

impl Channel {
    /// A new, empty channel created at log index `index`.
    pub(super) fn new(index: u64) -> Self {
        Self {
            created_index: index,
            next_id: 1,
            retained: BTreeMap::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
        }
    }

    /// The id of the last published event; 0 if none yet.
    pub(super) fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Append `event` to the ring of recent events, then drop the oldest until the ring is within
    /// `recent_events_max` and `recent_bytes_max` (always keeping the newest).
    pub(super) fn remember(&mut self, event: Event, limits: &Limits) {
        assert!(
            self.recent.back().is_none_or(|last| last.id < event.id),
            "recent events are appended in id order"
        );
        self.recent_bytes += event.size_bytes();
        self.recent.push_back(event);
        self.trim(limits);
    }

    /// Drop the oldest recent events until the ring is within `recent_events_max` and
    /// `recent_bytes_max` (always keeping the newest).
    pub(super) fn trim(&mut self, limits: &Limits) {
        while self.recent.len() > limits.recent_events_max
            || (self.recent_bytes > limits.recent_bytes_max && self.recent.len() > 1)
        {
            let dropped = self
                .recent
                .pop_front()
                .expect("a ring over its limits is not empty");
            self.recent_bytes = self
                .recent_bytes
                .checked_sub(dropped.size_bytes())
                .expect("recent bytes cover every recent event");
        }
    }
}
