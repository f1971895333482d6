//! The one mapping between the event service's shared types (`nines_core::evt`) and their wire
//! form, used by the service and the SDK alike.

use nines_core::evt::{Filter, FilterKind, Limits};
use nines_core::{AisError, ErrorCode};

use crate::evt::v1 as pb;

impl From<FilterKind> for pb::FilterKind {
    fn from(kind: FilterKind) -> Self {
        match kind {
            FilterKind::Prefix => pb::FilterKind::Prefix,
            FilterKind::Suffix => pb::FilterKind::Suffix,
            FilterKind::Exact => pb::FilterKind::Exact,
            FilterKind::PassAll => pb::FilterKind::PassAll,
        }
    }
}

impl From<&Filter> for pb::Filter {
    fn from(f: &Filter) -> Self {
        pb::Filter {
            kind: pb::FilterKind::from(f.kind) as i32,
            pattern: f.pattern.clone(),
            name: f.name.clone(),
        }
    }
}

impl TryFrom<pb::Filter> for Filter {
    type Error = AisError;

    /// # Errors
    /// INVALID_PARAM for an unspecified or unknown kind.
    fn try_from(f: pb::Filter) -> Result<Self, AisError> {
        let kind = match pb::FilterKind::try_from(f.kind) {
            Ok(pb::FilterKind::Prefix) => FilterKind::Prefix,
            Ok(pb::FilterKind::Suffix) => FilterKind::Suffix,
            Ok(pb::FilterKind::Exact) => FilterKind::Exact,
            Ok(pb::FilterKind::PassAll) => FilterKind::PassAll,
            Ok(pb::FilterKind::Unspecified) | Err(_) => {
                return Err(AisError::new(
                    ErrorCode::InvalidParam,
                    format!(
                        "filter kind {} is not prefix, suffix, exact or pass-all",
                        f.kind
                    ),
                ))
            }
        };
        Ok(Filter {
            kind,
            pattern: f.pattern,
            name: f.name,
        })
    }
}

impl From<&Limits> for pb::Limits {
    fn from(l: &Limits) -> Self {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        pb::Limits {
            patterns_max: n(l.patterns_max),
            pattern_bytes_max: n(l.pattern_bytes_max),
            data_bytes_max: n(l.data_bytes_max),
            channels_max: n(l.channels_max),
            channel_name_bytes_max: n(l.channel_name_bytes_max),
            publisher_bytes_max: n(l.publisher_bytes_max),
            retained_per_channel_max: n(l.retained_per_channel_max),
            retained_bytes_max: l.retained_bytes_max,
            retention_ms_max: l.retention_ms_max,
            recent_events_max: n(l.recent_events_max),
            recent_bytes_max: l.recent_bytes_max,
        }
    }
}

impl TryFrom<pb::Limits> for Limits {
    type Error = AisError;

    /// # Errors
    /// INVALID_PARAM for a count this platform cannot hold (only where usize is 32 bits). The
    /// limits are not checked here: [`Limits::check`] is the service's to run.
    fn try_from(l: pb::Limits) -> Result<Self, AisError> {
        let n = |name: &str, v: u64| {
            usize::try_from(v).map_err(|_| {
                AisError::new(
                    ErrorCode::InvalidParam,
                    format!("event limit {name} {v} is too large for this platform"),
                )
            })
        };
        Ok(Limits {
            patterns_max: n("patterns_max", l.patterns_max)?,
            pattern_bytes_max: n("pattern_bytes_max", l.pattern_bytes_max)?,
            data_bytes_max: n("data_bytes_max", l.data_bytes_max)?,
            channels_max: n("channels_max", l.channels_max)?,
            channel_name_bytes_max: n("channel_name_bytes_max", l.channel_name_bytes_max)?,
            publisher_bytes_max: n("publisher_bytes_max", l.publisher_bytes_max)?,
            retained_per_channel_max: n("retained_per_channel_max", l.retained_per_channel_max)?,
            retained_bytes_max: l.retained_bytes_max,
            retention_ms_max: l.retention_ms_max,
            recent_events_max: n("recent_events_max", l.recent_events_max)?,
            recent_bytes_max: l.recent_bytes_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_limits_cross_the_wire_unchanged() {
        for f in [
            Filter::prefix("a"),
            Filter::suffix("z").named("n"),
            Filter::exact(vec![0, 0xff]),
            Filter::pass_all().named("sev"),
        ] {
            assert_eq!(Filter::try_from(pb::Filter::from(&f)), Ok(f));
        }
        let bad = pb::Filter {
            kind: 0,
            ..pb::Filter::from(&Filter::pass_all())
        };
        let e = Filter::try_from(bad).expect_err("unspecified kind");
        assert_eq!(e.code, ErrorCode::InvalidParam);
        let limits = Limits {
            patterns_max: 32,
            retention_ms_max: 1,
            ..Limits::default()
        };
        assert_eq!(Limits::try_from(pb::Limits::from(&limits)), Ok(limits));
    }
}
