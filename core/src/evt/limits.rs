//! Named limits of the event service, with the AIS defaults where AIS names one.
//!
//! The constants are the defaults of [`Limits`]. The limits are part of the event service's
//! replicated state: every node applies with the same ones, a snapshot carries them, and the
//! operator changes them only through the log (`nines evt limits set`, the service's
//! `SetLimits`), never from a node's own configuration.
//!
//! A publish beyond a size limit is TOO_BIG; a bad priority, too many patterns or too long a
//! retention is INVALID_PARAM; running out of channels or of retained-event room is NO_SPACE.
//!
//! # The memory budget
//! The whole state travels in one snapshot message, so its worst case is bounded, whatever the
//! operator sets: [`Limits::check`] refuses limits under which
//! - one event could outgrow [`EVENT_BYTES_MAX`] (it must fit one proposal);
//! - the events held at once could outnumber [`EVENTS_HELD_MAX`] (each costs more than its bytes);
//! - `channels_max × max(recent_bytes_max, largest event) + retained_bytes_max` could exceed
//!   [`STATE_BYTES_MAX`] (a channel's ring always keeps its newest event, however large). With
//!   the defaults it is 64 × 512 KiB + 8 MiB = 40 MiB.

use serde::{Deserialize, Serialize};

use crate::limits::PROPOSAL_BYTES_MAX;
use crate::{AisError, ErrorCode};

/// Most patterns in one event (AIS default).
pub const PATTERNS_MAX: usize = 20;
/// Longest pattern name and longest pattern value, each (AIS default).
pub const PATTERN_BYTES_MAX: usize = 256;
/// Largest event payload.
pub const DATA_BYTES_MAX: usize = 64 * 1024;
/// Most channels in the cluster.
pub const CHANNELS_MAX: usize = 64;
/// Longest channel name.
pub const CHANNEL_NAME_BYTES_MAX: usize = 256;
/// Longest publisher name.
pub const PUBLISHER_BYTES_MAX: usize = 256;
/// Most retained events per channel.
pub const RETAINED_PER_CHANNEL_MAX: usize = 1_024;
/// Bytes of retained events (as the service counts an event's bytes) over all channels.
pub const RETAINED_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Longest retention time: 7 days.
pub const RETENTION_MS_MAX: u64 = 7 * 24 * 60 * 60 * 1000;
/// Most events of a channel's ring of recent events, kept so a subscriber can resume by id.
pub const RECENT_EVENTS_MAX: usize = 4_096;
/// Most bytes of a channel's ring of recent events (the ring drops its oldest events to stay
/// within both this and [`RECENT_EVENTS_MAX`]).
pub const RECENT_BYTES_MAX: u64 = 512 * 1024;
/// The lowest priority; 0 is the highest.
pub const PRIORITY_LOWEST: u8 = 3;
/// Worst-case bytes of event data the state may hold (it travels in one snapshot message).
pub const STATE_BYTES_MAX: u64 = 48 * 1024 * 1024;
/// The highest `patterns_max` any limits may set: every pattern costs memory and encoding beyond
/// its bytes, which the byte budget does not count.
pub const PATTERNS_CEILING: usize = 1_024;
/// The largest event any limits may allow (payload, pattern names and values, publisher and
/// channel name): half a proposal, leaving room for the rest of the command's encoding.
pub const EVENT_BYTES_MAX: u64 = PROPOSAL_BYTES_MAX as u64 / 2;
/// Most events the state may hold at once, `channels_max × (recent_events_max +
/// retained_per_channel_max)`: each costs memory and encoding beyond its bytes. It is what the
/// defaults hold, 64 × (4 096 + 1 024); raising one of them means lowering another.
pub const EVENTS_HELD_MAX: u64 = 327_680;

/// The event service's limits; [`Limits::default`] gives the named constants of this module.
///
/// # Correctness
/// Part of the replicated state: every node must use the same limits, or `apply` diverges. They
/// change only through the replicated log, after [`Limits::check`]. Snapshots and `SetLimits`
/// log entries encode the fields in order (postcard), so a new field is a format change: it
/// needs a new data-format version, not just a new field at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most patterns in one event.
    pub patterns_max: usize,
    /// Longest pattern name and longest pattern value (also bounds a filter's pattern).
    pub pattern_bytes_max: usize,
    /// Largest event payload.
    pub data_bytes_max: usize,
    /// Most channels.
    pub channels_max: usize,
    /// Longest channel name.
    pub channel_name_bytes_max: usize,
    /// Longest publisher name.
    pub publisher_bytes_max: usize,
    /// Most retained events per channel.
    pub retained_per_channel_max: usize,
    /// Bytes of retained events over all channels.
    pub retained_bytes_max: u64,
    /// Longest retention time.
    pub retention_ms_max: u64,
    /// Most events in a channel's ring of recent events (≥ 1).
    pub recent_events_max: usize,
    /// Most bytes in a channel's ring of recent events (the newest event is always kept).
    pub recent_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            patterns_max: PATTERNS_MAX,
            pattern_bytes_max: PATTERN_BYTES_MAX,
            data_bytes_max: DATA_BYTES_MAX,
            channels_max: CHANNELS_MAX,
            channel_name_bytes_max: CHANNEL_NAME_BYTES_MAX,
            publisher_bytes_max: PUBLISHER_BYTES_MAX,
            retained_per_channel_max: RETAINED_PER_CHANNEL_MAX,
            retained_bytes_max: RETAINED_BYTES_MAX,
            retention_ms_max: RETENTION_MS_MAX,
            recent_events_max: RECENT_EVENTS_MAX,
            recent_bytes_max: RECENT_BYTES_MAX,
        }
    }
}

impl Limits {
    /// Check that the limits make sense and keep the state within the memory budget (see the
    /// module docs).
    ///
    /// # Errors
    /// INVALID_PARAM naming the first bad limit, why it is bad, and what to do.
    pub fn check(&self) -> Result<(), AisError> {
        let positive = [
            ("channels_max", self.channels_max),
            ("channel_name_bytes_max", self.channel_name_bytes_max),
            ("publisher_bytes_max", self.publisher_bytes_max),
            ("recent_events_max", self.recent_events_max),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(format!("event limit {name} is 0; it must be ≥ 1")));
        }
        if self.patterns_max > PATTERNS_CEILING {
            return Err(invalid(format!(
                "event limit patterns_max {} is above the {PATTERNS_CEILING} any limits may set",
                self.patterns_max
            )));
        }
        let event = self.event_bytes_max();
        if event > EVENT_BYTES_MAX {
            return Err(invalid(format!(
                "event limits allow a {event}-byte event (data_bytes_max {} + patterns_max {} × 2 \
                 × pattern_bytes_max {} + publisher_bytes_max {} + channel_name_bytes_max {}), \
                 more than the {EVENT_BYTES_MAX} one event may have; lower one of them",
                self.data_bytes_max,
                self.patterns_max,
                self.pattern_bytes_max,
                self.publisher_bytes_max,
                self.channel_name_bytes_max
            )));
        }
        let held = wide(self.channels_max).saturating_mul(
            wide(self.recent_events_max).saturating_add(wide(self.retained_per_channel_max)),
        );
        if held > EVENTS_HELD_MAX {
            return Err(invalid(format!(
                "event limits let the state hold {held} events (channels_max {} × \
                 (recent_events_max {} + retained_per_channel_max {})), more than the \
                 {EVENTS_HELD_MAX} allowed; lower one of them",
                self.channels_max, self.recent_events_max, self.retained_per_channel_max
            )));
        }
        let worst = wide(self.channels_max)
            .saturating_mul(self.recent_bytes_max.max(event))
            .saturating_add(self.retained_bytes_max);
        if worst > STATE_BYTES_MAX {
            return Err(invalid(format!(
                "event limits allow {worst} bytes of state (channels_max {} × the larger of \
                 recent_bytes_max {} and the largest event {event} + retained_bytes_max {}), \
                 more than the {STATE_BYTES_MAX} one snapshot may hold; lower one of them",
                self.channels_max, self.recent_bytes_max, self.retained_bytes_max
            )));
        }
        Ok(())
    }

    /// The largest event a publish may make under these limits, as the service counts an
    /// event's bytes: payload, pattern names and values, publisher and channel name.
    pub fn event_bytes_max(&self) -> u64 {
        let patterns = wide(self.patterns_max)
            .saturating_mul(2)
            .saturating_mul(wide(self.pattern_bytes_max));
        wide(self.data_bytes_max)
            .saturating_add(patterns)
            .saturating_add(wide(self.publisher_bytes_max))
            .saturating_add(wide(self.channel_name_bytes_max))
    }
}

/// A count as u64 (saturating on a platform where usize is wider).
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// An INVALID_PARAM error.
fn invalid(message: String) -> AisError {
    AisError::new(ErrorCode::InvalidParam, message)
}

const _: () = assert!(
    (CHANNELS_MAX as u64) * RECENT_BYTES_MAX + RETAINED_BYTES_MAX <= STATE_BYTES_MAX,
    "the default limits must fit the state budget"
);
const _: () = assert!(
    (CHANNELS_MAX as u64) * (RECENT_EVENTS_MAX + RETAINED_PER_CHANNEL_MAX) as u64
        <= EVENTS_HELD_MAX,
    "the default limits must fit the event count budget"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(limits: Limits, words: &str) {
        let err = limits.check().expect_err(words);
        assert_eq!(err.code, ErrorCode::InvalidParam, "{err}");
        assert!(err.message.contains(words), "'{err}' lacks '{words}'");
    }

    #[test]
    fn defaults_pass_and_each_budget_is_enforced() {
        assert_eq!(Limits::default().check(), Ok(()));
        let d = Limits::default;
        refused(
            Limits {
                recent_bytes_max: STATE_BYTES_MAX,
                ..d()
            },
            "recent_bytes_max",
        );
        refused(
            Limits {
                recent_events_max: 0,
                ..d()
            },
            "recent_events_max is 0",
        );
        refused(
            Limits {
                patterns_max: PATTERNS_CEILING + 1,
                ..d()
            },
            "patterns_max",
        );
        refused(
            Limits {
                data_bytes_max: PROPOSAL_BYTES_MAX,
                ..d()
            },
            "data_bytes_max",
        );
        refused(
            Limits {
                recent_events_max: RECENT_EVENTS_MAX + 1,
                ..d()
            },
            "recent_events_max 4097",
        );
        // Events larger than the ring's bytes count at their own size: 64 × 1 MiB is too much.
        refused(
            Limits {
                data_bytes_max: 1024 * 1024,
                ..d()
            },
            "the largest event",
        );
        let fewer_channels = Limits {
            channels_max: 16,
            recent_events_max: 4 * RECENT_EVENTS_MAX,
            data_bytes_max: 1024 * 1024,
            ..d()
        };
        assert_eq!(fewer_channels.check(), Ok(()), "trading channels for room");
        assert_eq!(d().event_bytes_max(), 64 * 1024 + 20 * 2 * 256 + 256 + 256);
    }
}
