//! The failure detector's configuration and its validation.

use serde::{Deserialize, Serialize};

/// Default heartbeat interval: ten heartbeats a second keep detection of a lost node within a
/// few hundred milliseconds (promise 3) at a negligible network cost.
pub const INTERVAL_MS_DEFAULT: u64 = 100;

/// Default silence after which a node is down: five missed heartbeats, so one or two lost
/// datagrams or a scheduling hiccup never take a node down, yet a lost node is detected in
/// half a second.
pub const TIMEOUT_MS_DEFAULT: u64 = 500;

/// Default flap window: three recoveries in 30 s is far more than a healthy node shows (a reboot
/// alone takes longer than that), so it marks a flapping node.
pub const FLAP_WINDOW_MS_DEFAULT: u64 = 30_000;

/// Default number of recoveries (down → up) allowed within the flap window before damping.
pub const FLAP_THRESHOLD_DEFAULT: u32 = 3;

/// Default hold-down: 5 s (50 heartbeat intervals) of continuous contact before a damped node
/// is reported up again.
pub const HOLD_DOWN_MS_DEFAULT: u64 = 5_000;

/// Largest duration any setting may take (one hour). Keeps every deadline sum far from `u64`
/// overflow and catches unit mistakes (seconds typed as milliseconds × 1000).
pub const DURATION_MS_MAX: u64 = 3_600_000;

/// Largest flap threshold; it bounds the per-node recovery history the detector keeps.
pub const FLAP_THRESHOLD_MAX: u32 = 64;

/// Failure detector settings. Build one with [`DetectorConfig::default`] and change fields, or
/// deserialize it from the agent's TOML (left-out fields take the defaults).
///
/// [`FailureDetector::new`](crate::FailureDetector::new) validates it; see
/// [`DetectorConfig::validate`] for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// How often peers send heartbeats (and how often the driver should tick).
    pub interval_ms: u64,
    /// Silence longer than this makes a node down.
    pub timeout_ms: u64,
    /// Silence longer than this makes an up node suspect; `None` means 2 × `interval_ms`.
    pub suspect_after_ms: Option<u64>,
    /// The window over which recoveries (down → up) are counted for flap damping.
    pub flap_window_ms: u64,
    /// Recoveries allowed within `flap_window_ms`; one more and the node is held down.
    pub flap_threshold: u32,
    /// How long a held-down node must be heard continuously before it is reported up again.
    pub hold_down_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            interval_ms: INTERVAL_MS_DEFAULT,
            timeout_ms: TIMEOUT_MS_DEFAULT,
            suspect_after_ms: None,
            flap_window_ms: FLAP_WINDOW_MS_DEFAULT,
            flap_threshold: FLAP_THRESHOLD_DEFAULT,
            hold_down_ms: HOLD_DOWN_MS_DEFAULT,
        }
    }
}

/// A setting that failed validation: names the field, its value and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} = {value}: {rule}")]
pub struct ConfigError {
    /// The offending field's name as written in the config file.
    pub field: &'static str,
    /// The value it had.
    pub value: u64,
    /// The rule it broke, with the values it was compared with.
    pub rule: String,
}

/// A validated configuration with every default resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) timeout_ms: u64,
    pub(crate) suspect_after_ms: u64,
    pub(crate) flap_window_ms: u64,
    pub(crate) flap_threshold: u32,
    pub(crate) hold_down_ms: u64,
}

impl DetectorConfig {
    /// The suspicion threshold in effect: `suspect_after_ms`, or 2 × `interval_ms` if unset.
    pub fn suspect_after_ms(&self) -> u64 {
        self.suspect_after_ms
            .unwrap_or(self.interval_ms.saturating_mul(2))
    }

    /// Checks the settings.
    ///
    /// Rules: every duration is at most [`DURATION_MS_MAX`]; `interval_ms` ≥ 1;
    /// `timeout_ms` > `interval_ms`; `interval_ms` ≤ suspect threshold < `timeout_ms` (a node is
    /// never suspected before it could have missed a heartbeat, and suspicion comes before
    /// down); `flap_window_ms` > `timeout_ms` (a window shorter than one outage counts nothing);
    /// 1 ≤ `flap_threshold` ≤ [`FLAP_THRESHOLD_MAX`]; `hold_down_ms` ≥ `timeout_ms` (being
    /// heard for less than a timeout proves nothing).
    ///
    /// # Errors
    /// The first broken rule, as a [`ConfigError`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(|_| ())
    }

    pub(crate) fn resolve(&self) -> Result<Resolved, ConfigError> {
        let suspect_after_ms = self.suspect_after_ms();
        for (field, value) in [
            ("interval_ms", self.interval_ms),
            ("timeout_ms", self.timeout_ms),
            ("suspect_after_ms", suspect_after_ms),
            ("flap_window_ms", self.flap_window_ms),
            ("hold_down_ms", self.hold_down_ms),
        ] {
            check(field, value, value <= DURATION_MS_MAX, || {
                format!("must be at most {DURATION_MS_MAX} ms (one hour)")
            })?;
        }
        check(
            "interval_ms",
            self.interval_ms,
            self.interval_ms >= 1,
            || "must be at least 1 ms".to_string(),
        )?;
        check(
            "timeout_ms",
            self.timeout_ms,
            self.timeout_ms > self.interval_ms,
            || format!("must be greater than interval_ms ({})", self.interval_ms),
        )?;
        let suspect_ok = suspect_after_ms >= self.interval_ms && suspect_after_ms < self.timeout_ms;
        check("suspect_after_ms", suspect_after_ms, suspect_ok, || {
            format!(
                "must be at least interval_ms ({}) and less than timeout_ms ({})",
                self.interval_ms, self.timeout_ms
            )
        })?;
        check(
            "flap_window_ms",
            self.flap_window_ms,
            self.flap_window_ms > self.timeout_ms,
            || format!("must be greater than timeout_ms ({})", self.timeout_ms),
        )?;
        let threshold = self.flap_threshold;
        let threshold_ok = (1..=FLAP_THRESHOLD_MAX).contains(&threshold);
        check("flap_threshold", u64::from(threshold), threshold_ok, || {
            format!("must be between 1 and {FLAP_THRESHOLD_MAX}")
        })?;
        check(
            "hold_down_ms",
            self.hold_down_ms,
            self.hold_down_ms >= self.timeout_ms,
            || format!("must be at least timeout_ms ({})", self.timeout_ms),
        )?;
        Ok(Resolved {
            timeout_ms: self.timeout_ms,
            suspect_after_ms,
            flap_window_ms: self.flap_window_ms,
            flap_threshold: threshold,
            hold_down_ms: self.hold_down_ms,
        })
    }
}

fn check(
    field: &'static str,
    value: u64,
    ok: bool,
    rule: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            value,
            rule: rule(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(cfg: DetectorConfig) -> &'static str {
        cfg.validate().expect_err("config should be refused").field
    }

    #[test]
    fn defaults_are_valid_and_resolve_suspicion_to_two_intervals() {
        let cfg = DetectorConfig::default();
        cfg.validate().expect("defaults are valid");
        assert_eq!(cfg.suspect_after_ms(), 2 * INTERVAL_MS_DEFAULT);
        let fast = DetectorConfig {
            interval_ms: 50,
            ..DetectorConfig::default()
        };
        assert_eq!(fast.suspect_after_ms(), 100);
    }

    #[test]
    fn each_rule_names_its_field() {
        let d = DetectorConfig::default;
        assert_eq!(
            field_of(DetectorConfig {
                interval_ms: 0,
                ..d()
            }),
            "interval_ms"
        );
        assert_eq!(
            field_of(DetectorConfig {
                timeout_ms: 100,
                ..d()
            }),
            "timeout_ms"
        );
        assert_eq!(
            field_of(DetectorConfig {
                suspect_after_ms: Some(99),
                ..d()
            }),
            "suspect_after_ms"
        );
        assert_eq!(
            field_of(DetectorConfig {
                suspect_after_ms: Some(500),
                ..d()
            }),
            "suspect_after_ms"
        );
        assert_eq!(
            field_of(DetectorConfig {
                flap_window_ms: 500,
                ..d()
            }),
            "flap_window_ms"
        );
        assert_eq!(
            field_of(DetectorConfig {
                flap_threshold: 0,
                ..d()
            }),
            "flap_threshold"
        );
        assert_eq!(
            field_of(DetectorConfig {
                flap_threshold: 65,
                ..d()
            }),
            "flap_threshold"
        );
        assert_eq!(
            field_of(DetectorConfig {
                hold_down_ms: 499,
                ..d()
            }),
            "hold_down_ms"
        );
        assert_eq!(
            field_of(DetectorConfig {
                timeout_ms: DURATION_MS_MAX + 1,
                ..d()
            }),
            "timeout_ms"
        );
    }

    #[test]
    fn message_says_what_and_why() {
        let err = DetectorConfig {
            timeout_ms: 80,
            ..DetectorConfig::default()
        }
        .validate()
        .expect_err("timeout below interval");
        assert_eq!(
            err.to_string(),
            "invalid timeout_ms = 80: must be greater than interval_ms (100)"
        );
    }

    #[test]
    fn toml_fields_left_out_take_defaults() {
        let cfg: DetectorConfig =
            toml::from_str("interval_ms = 50\ntimeout_ms = 300").expect("valid toml");
        assert_eq!(cfg.suspect_after_ms(), 100);
        assert_eq!(cfg.hold_down_ms, HOLD_DOWN_MS_DEFAULT);
        cfg.validate().expect("valid");
    }
}
