//! Named limits of the event service, with the AIS defaults where AIS names one.
//!
//! The constants are the defaults of [`Limits`], which the cluster configuration may change (the
//! issue asks for configurable pattern limits). The limits are part of the replicated
//! [`EvtState`](crate::EvtState): every node must start with the same ones, and a snapshot carries
//! them, so a restored node applies with the leader's limits.
//!
//! A publish beyond a size limit is TOO_BIG; a bad priority, too many patterns or too long a
//! retention is INVALID_PARAM; running out of channels or of retained-event room is NO_SPACE.
//!
//! # The memory budget
//! The whole state travels in one snapshot message, so its worst case is bounded:
//! `channels_max × recent_bytes_max + retained_bytes_max` must stay within [`STATE_BYTES_MAX`]
//! ([`Limits::check`] enforces it; with the defaults it is 64 × 512 KiB + 8 MiB = 40 MiB).

use nines_core::{AisError, ErrorCode};
use serde::{Deserialize, Serialize};

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
/// Bytes of retained events ([`Event::size_bytes`](crate::Event::size_bytes)) over all channels.
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

/// The event service's limits; [`Limits::default`] gives the named constants of this module.
///
/// # Correctness
/// Part of the replicated state: every node must use the same limits, or `apply` diverges.
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
    /// Check that the limits make sense and keep the state within [`STATE_BYTES_MAX`].
    ///
    /// # Errors
    /// INVALID_PARAM naming the first bad limit.
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
        let worst = u64::try_from(self.channels_max)
            .unwrap_or(u64::MAX)
            .saturating_mul(self.recent_bytes_max)
            .saturating_add(self.retained_bytes_max);
        if worst > STATE_BYTES_MAX {
            return Err(invalid(format!(
                "event limits allow {worst} bytes of state (channels_max {} × recent_bytes_max \
                 {} + retained_bytes_max {}), more than the {STATE_BYTES_MAX} one snapshot may \
                 hold; lower one of them",
                self.channels_max, self.recent_bytes_max, self.retained_bytes_max
            )));
        }
        Ok(())
    }
}

/// An INVALID_PARAM error.
fn invalid(message: String) -> AisError {
    AisError::new(ErrorCode::InvalidParam, message)
}

const _: () = assert!(
    (CHANNELS_MAX as u64) * RECENT_BYTES_MAX + RETAINED_BYTES_MAX <= STATE_BYTES_MAX,
    "the default limits must fit the state budget"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_an_oversized_budget_is_refused() {
        assert_eq!(Limits::default().check(), Ok(()));
        let big = Limits {
            recent_bytes_max: STATE_BYTES_MAX,
            ..Limits::default()
        };
        assert_eq!(big.check().unwrap_err().code, ErrorCode::InvalidParam);
        let zero = Limits {
            recent_events_max: 0,
            ..Limits::default()
        };
        let err = zero.check().unwrap_err();
        assert!(err.message.contains("recent_events_max"), "{err}");
    }
}
