//! The replicated commands of the event service, their outcomes, and the event itself.
//!
//! Both enums are append-only: entries already in logs and snapshots must keep decoding, so a new
//! command or outcome goes at the end and none is removed or reordered.

use nines_core::AisError;
use serde::{Deserialize, Serialize};

use crate::{Limits, Pattern};

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
        #[serde(with = "nines_core::bytes")]
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
    /// Replace the limits every later command is checked against (the operator's `nines evt
    /// limits set`). Refused, changing nothing, when `limits` fail [`Limits::check`]
    /// (INVALID_PARAM), when `expected` is given and differs from the current limits
    /// (BAD_OPERATION: someone changed them since they were read), or when the state already
    /// holds more than the new limits allow — channels, retained events or retained bytes
    /// (NO_SPACE). Rings of recent events are trimmed to the new bounds (that is history, not a
    /// promise); existing channels and events beyond the new size limits are kept.
    SetLimits {
        /// The new limits, whole.
        limits: Limits,
        /// Replace only if the current limits are exactly these (a read-modify-write that must
        /// not undo a concurrent change, nor zero a limit the writer does not know of).
        expected: Option<Limits>,
    },
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
    /// `SetLimits` succeeded: later commands are checked against the new limits.
    LimitsSet,
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
    #[serde(with = "nines_core::bytes")]
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
