//! The replicated commands of the event service, their outcomes, and the event itself.

use nines_core::AisError;
use serde::{Deserialize, Serialize};

/// One entry of an event's pattern array: a name that identifies it and a value that filters
/// match against. Both are bytes (at most `Limits::pattern_bytes_max` each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pattern {
    /// What the pattern is (e.g. `b"severity"`); filters may name it to guard their position.
    pub name: Vec<u8>,
    /// The value filters match against (e.g. `b"critical"`).
    pub value: Vec<u8>,
}

impl Pattern {
    /// A pattern from anything byte-like.
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A replicated event-service command. Every command first drops the retained events whose
/// retention ran out at the entry's time stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvtCommand {
    /// Create `channel` if missing (AIS open with the CREATE flag); an existing channel is left
    /// as it is and reported with `existed: true`.
    Create {
        /// The channel's name (1..=`channel_name_bytes_max` bytes).
        channel: String,
    },
    /// Delete `channel` now, with its retained and recent events (NOT_EXIST if missing).
    Unlink {
        /// The channel's name.
        channel: String,
    },
    /// Publish one event; the response carries its id.
    Publish {
        /// The channel.
        channel: String,
        /// Create the channel first if it is missing (else NOT_EXIST).
        create: bool,
        /// The pattern array subscribers' filters match against.
        patterns: Vec<Pattern>,
        /// 0 (highest) ..= `limits::PRIORITY_LOWEST` (lowest).
        priority: u8,
        /// How long the event is kept for later subscribers; 0 = not retained.
        retention_ms: u64,
        /// Who published it.
        publisher: String,
        /// The payload.
        data: Vec<u8>,
    },
    /// Stop retaining event `event_id` of `channel` before its retention runs out.
    ClearRetention {
        /// The channel.
        channel: String,
        /// The event's id.
        event_id: u64,
    },
    /// Drop the retained events whose retention ran out at the entry's time stamp (the leader's
    /// janitor proposes it once [`EvtState::next_deadline_ms`](crate::EvtState::next_deadline_ms)
    /// has passed).
    Expire,
}

/// A command's outcome. Business refusals are values ([`EvtResponse::Refused`]), never failures
/// of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvtResponse {
    /// `Create` succeeded.
    Created {
        /// The channel was there already (nothing changed).
        existed: bool,
    },
    /// `Unlink` succeeded.
    Unlinked,
    /// `Publish` succeeded.
    Published {
        /// The event's id in its channel.
        event_id: u64,
    },
    /// `ClearRetention` succeeded.
    RetentionCleared,
    /// `Expire` ran.
    Expired {
        /// Retained events dropped because their retention ran out.
        events: u64,
    },
    /// Refused; nothing changed (beyond the expiry every command runs first).
    Refused(AisError),
}

/// A published event, as stored, retained and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The channel it was published on.
    pub channel: String,
    /// Its id: 1, 2, 3, … in publish order within the channel's current incarnation.
    pub id: u64,
    /// 0 (highest) ..= `limits::PRIORITY_LOWEST` (lowest).
    pub priority: u8,
    /// Its pattern array.
    pub patterns: Vec<Pattern>,
    /// Who published it.
    pub publisher: String,
    /// When it was published (ms since the epoch): the leader's stamp on the entry.
    pub published_at_ms: u64,
    /// How long it is retained after `published_at_ms`; 0 = not retained.
    pub retention_ms: u64,
    /// The payload.
    pub data: Vec<u8>,
}

impl Event {
    /// The bytes it accounts for against the memory limits: payload, pattern names and values,
    /// publisher and channel name.
    pub fn size_bytes(&self) -> u64 {
        let patterns: usize = self
            .patterns
            .iter()
            .map(|p| p.name.len() + p.value.len())
            .sum();
        let total = self.data.len() + patterns + self.publisher.len() + self.channel.len();
        u64::try_from(total).expect("an event's size fits in u64")
    }

    /// When its retention runs out (ms since the epoch), if it is retained.
    pub fn retention_deadline_ms(&self) -> Option<u64> {
        (self.retention_ms > 0).then(|| self.published_at_ms.saturating_add(self.retention_ms))
    }
}
