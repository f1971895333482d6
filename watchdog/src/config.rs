//! The `[watchdog]` section of the agent's configuration: the node watchdog device.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::device::TIMEOUT_SECS_MAX;

/// Default device timeout: 1 s, the common hardware minimum; it fits inside the default lease
/// (1.5 s) plus fence reaction (200 ms) with room for kicks (see nines-heartbeat's `lease`).
pub const TIMEOUT_SECS_DEFAULT: u32 = 1;

/// Default kick interval: the default heartbeat interval, 100 ms.
pub const KICK_INTERVAL_MS_DEFAULT: u64 = 100;

/// A `[watchdog]` setting that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("[watchdog] {field} = {value} is invalid: {rule}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Its value.
    pub value: u64,
    /// The rule it breaks, and what to do.
    pub rule: String,
}

/// The node watchdog settings. Off unless `device` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeWatchdogConfig {
    /// The watchdog device (e.g. `/dev/watchdog`); `None`, the default, leaves it off.
    pub device: Option<PathBuf>,
    /// The reset timeout asked of the device, in seconds.
    pub timeout_secs: u32,
    /// How often the agent kicks the device, in milliseconds.
    pub kick_interval_ms: u64,
}

impl Default for NodeWatchdogConfig {
    fn default() -> Self {
        NodeWatchdogConfig {
            device: None,
            timeout_secs: TIMEOUT_SECS_DEFAULT,
            kick_interval_ms: KICK_INTERVAL_MS_DEFAULT,
        }
    }
}

impl NodeWatchdogConfig {
    /// Checks `timeout_secs` is 1 to [`TIMEOUT_SECS_MAX`] and `kick_interval_ms` is at least 1
    /// and at most half the timeout (so one late kick never resets a healthy node).
    ///
    /// # Errors
    /// The first broken rule, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let timeout_secs = self.timeout_secs;
        if !(1..=TIMEOUT_SECS_MAX).contains(&timeout_secs) {
            return Err(ConfigError {
                field: "timeout_secs",
                value: u64::from(timeout_secs),
                rule: format!("must be 1 to {TIMEOUT_SECS_MAX} s"),
            });
        }
        let half_timeout_ms = u64::from(timeout_secs) * 500;
        if !(1..=half_timeout_ms).contains(&self.kick_interval_ms) {
            return Err(ConfigError {
                field: "kick_interval_ms",
                value: self.kick_interval_ms,
                rule: format!("must be 1 to {half_timeout_ms} ms (half of timeout_secs)"),
            });
        }
        Ok(())
    }

    /// Checks the timeout against the node lease: `timeout_secs × 1000` must be below
    /// `lease_ms + fence_reaction_ms`, or the agent may never kick after a renewal
    /// (`SelfLease::may_kick_watchdog`) and the node resets while healthy. Real devices may
    /// round the timeout: check again with `NodeWatchdog::timeout_ms`.
    ///
    /// # Errors
    /// A [`ConfigError`] on `timeout_secs` saying how the lease bounds it.
    pub fn validate_for_lease(
        &self,
        lease_ms: u64,
        fence_reaction_ms: u64,
    ) -> Result<(), ConfigError> {
        let bound_ms = lease_ms.saturating_add(fence_reaction_ms);
        if u64::from(self.timeout_secs) * 1_000 >= bound_ms {
            return Err(ConfigError {
                field: "timeout_secs",
                value: u64::from(self.timeout_secs),
                rule: format!(
                    "must be below lease_ms + fence_reaction_ms ({bound_ms} ms): lower it or \
                     lengthen the lease"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_valid_and_fit_the_default_lease() {
        let cfg = NodeWatchdogConfig::default();
        assert_eq!(cfg.device, None);
        cfg.validate().expect("defaults are valid");
        cfg.validate_for_lease(1_500, 200).expect("fits");
    }

    #[test]
    fn errors_name_the_field() {
        let d = NodeWatchdogConfig::default;
        let field = |c: NodeWatchdogConfig| c.validate().expect_err("refused").field;
        let zero = NodeWatchdogConfig {
            timeout_secs: 0,
            ..d()
        };
        assert_eq!(field(zero), "timeout_secs");
        let slow = NodeWatchdogConfig {
            kick_interval_ms: 501,
            ..d()
        };
        assert_eq!(field(slow), "kick_interval_ms");
        let long = NodeWatchdogConfig {
            timeout_secs: 2,
            ..d()
        };
        let err = long.validate_for_lease(1_500, 200).expect_err("too long");
        assert!(err.to_string().contains("1700 ms"), "{err}");
    }
}
