//! Alarms as events, pure: severities and their priorities, the pattern array, filters, and
//! reading an event back as an alarm. No I/O.

use std::fmt;
use std::time::Duration;

use nines_sdk::{Event, Filter, Publish};

/// Pattern names, by position: the subscribers' filters match by position.
pub const PATTERNS: [&str; 3] = ["severity", "source", "clears"];
/// How long a raised alarm is retained by default (until it is cleared).
pub const RETENTION_DEFAULT: Duration = Duration::from_secs(3600);
/// Longest alarm source or text, in bytes (well inside the event service's limits).
pub const FIELD_BYTES_MAX: usize = 256;

/// An alarm's perceived severity (ITU-T X.733), `Cleared` for the event that ends an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Service is down.
    Critical,
    /// Service is degraded.
    Major,
    /// Not yet service-affecting.
    Minor,
    /// Something to look at.
    Warning,
    /// A previous alarm is over.
    Cleared,
}

impl Severity {
    /// Every severity, most severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::Major,
        Severity::Minor,
        Severity::Warning,
        Severity::Cleared,
    ];

    /// Its name, lowercase (the pattern value).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
            Severity::Cleared => "cleared",
        }
    }

    /// The event priority (0 highest … 3 lowest): a critical alarm overtakes waiting minor
    /// ones at a slow subscriber. A clear goes with the majors, so a console learns promptly
    /// that an alarm is over.
    pub fn priority(self) -> u8 {
        match self {
            Severity::Critical => 0,
            Severity::Major | Severity::Cleared => 1,
            Severity::Minor => 2,
            Severity::Warning => 3,
        }
    }

    /// From its name (any case).
    ///
    /// # Errors
    /// An unknown name; the message lists the known ones.
    pub fn parse(name: &str) -> Result<Severity, String> {
        Severity::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!(
                    "unknown severity '{name}'; use one of critical, major, minor, warning, \
                     cleared"
                )
            })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refuse an empty or oversized field.
fn check_field(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > FIELD_BYTES_MAX {
        return Err(format!(
            "the {what} has 1 to {FIELD_BYTES_MAX} bytes, '{value}' has {}",
            value.len()
        ));
    }
    Ok(())
}

/// The event that raises an alarm: patterns `severity`, `source`; retained for `retention`
/// (so a console that starts later still sees it) unless cleared first.
///
/// # Errors
/// `Cleared` is not a severity to raise; an empty or oversized source.
pub fn raise(
    channel: &str,
    severity: Severity,
    source: &str,
    text: &str,
    retention: Duration,
) -> Result<Publish, String> {
    if severity == Severity::Cleared {
        return Err("'cleared' ends an alarm: use --clear <id> instead of a severity".into());
    }
    check_field("source", source)?;
    Ok(Publish::new(channel, text)
        .create(true)
        .pattern(PATTERNS[0], severity.as_str())
        .pattern(PATTERNS[1], source)
        .priority(severity.priority())
        .retention(retention))
}

/// The event that ends alarm `id` of `source` (severity `cleared`, pattern `clears=<id>`; not
/// retained: a console that starts later simply no longer sees the alarm).
///
/// # Errors
/// An empty or oversized source.
pub fn clear(channel: &str, id: u64, source: &str, text: &str) -> Result<Publish, String> {
    check_field("source", source)?;
    Ok(Publish::new(channel, text)
        .create(true)
        .pattern(PATTERNS[0], Severity::Cleared.as_str())
        .pattern(PATTERNS[1], source)
        .pattern(PATTERNS[2], id.to_string())
        .priority(Severity::Cleared.priority()))
}

/// A filter on one field: `value` matches exactly, `value*` matches as a prefix, `*` matches
/// anything. The filter also requires the pattern's name, so non-alarm events do not match.
pub fn field_filter(name: &str, value: &str) -> Filter {
    let f = match value.strip_suffix('*') {
        Some("") => Filter::pass_all(),
        Some(prefix) => Filter::prefix(prefix),
        None => Filter::exact(value),
    };
    f.named(name)
}

/// The filter array for a subscription: by severity and/or source (positions 0 and 1).
pub fn filters(severity: Option<&str>, source: Option<&str>) -> Vec<Filter> {
    let mut out = Vec::new();
    if severity.is_some() || source.is_some() {
        out.push(field_filter(PATTERNS[0], severity.unwrap_or("*")));
    }
    if let Some(s) = source {
        out.push(field_filter(PATTERNS[1], s));
    }
    out
}

/// An alarm, as a subscriber reads it from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// The event's id (the channel's order).
    pub id: u64,
    /// Its severity.
    pub severity: Severity,
    /// What raised it.
    pub source: String,
    /// For a clear: the alarm it ends.
    pub clears: Option<u64>,
    /// The event's data, as text.
    pub text: String,
    /// The event priority.
    pub priority: u8,
    /// Retained (an active alarm a later subscriber also gets).
    pub retained: bool,
    /// Who published it.
    pub publisher: String,
    /// When it was published, ms since the Unix epoch.
    pub published_at_ms: u64,
}

impl Alarm {
    /// Read `event` as an alarm.
    ///
    /// # Errors
    /// The event's patterns are not an alarm's (someone else published on the channel).
    pub fn from_event(event: &Event) -> Result<Alarm, String> {
        let field = |i: usize| {
            event
                .patterns
                .get(i)
                .filter(|(name, _)| name.as_slice() == PATTERNS[i].as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).to_string())
        };
        let not_alarm = || {
            format!(
                "event #{} is not an alarm (no severity and source)",
                event.id
            )
        };
        let severity = Severity::parse(&field(0).ok_or_else(not_alarm)?)?;
        let source = field(1).ok_or_else(not_alarm)?;
        let clears = match field(2) {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("event #{}: clears '{v}' is not an id", event.id))?,
            ),
            None => None,
        };
        Ok(Alarm {
            id: event.id,
            severity,
            source,
            clears,
            text: String::from_utf8_lossy(&event.data).to_string(),
            priority: event.priority,
            retained: event.retention_ms > 0,
            publisher: event.publisher.clone(),
            published_at_ms: event.published_at_ms,
        })
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let what = match self.clears {
            Some(id) => format!("clears #{id}: {}", self.text),
            None => self.text.clone(),
        };
        format!(
            "#{:<5} {:<9} {:<12} {what}",
            self.id,
            self.severity.as_str(),
            self.source
        )
    }

    /// One JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "severity": self.severity.as_str(),
            "priority": self.priority,
            "source": self.source,
            "clears": self.clears,
            "text": self.text,
            "retained": self.retained,
            "publisher": self.publisher,
            "published_at_ms": self.published_at_ms,
        })
    }
}

/// Parse a duration such as `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
///
/// # Errors
/// Anything else.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{text}' is not a duration; write e.g. 500ms, 30s, 5m, 1h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("'{text}' is not a duration; write e.g. 500ms, 30s, 5m, 1h"))?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_sdk::FilterKind;

    fn event_of(p: &Publish, id: u64) -> Event {
        Event {
            channel: p.channel.clone(),
            id,
            priority: p.priority,
            patterns: p.patterns.clone(),
            publisher: "t".into(),
            published_at_ms: 1,
            retention_ms: p.retention.as_millis() as u64,
            data: p.data.clone(),
        }
    }

    #[test]
    fn alarms_round_trip_through_events() {
        let p = raise(
            "alarms",
            Severity::Major,
            "eth0",
            "link down",
            RETENTION_DEFAULT,
        )
        .expect("raise");
        assert_eq!(p.priority, 1);
        let a = Alarm::from_event(&event_of(&p, 7)).expect("an alarm");
        assert_eq!(
            (a.id, a.severity, a.source.as_str()),
            (7, Severity::Major, "eth0")
        );
        assert_eq!((a.clears, a.retained), (None, true));
        let c = clear("alarms", 7, "eth0", "link up").expect("clear");
        let a = Alarm::from_event(&event_of(&c, 8)).expect("a clear");
        assert_eq!(
            (a.severity, a.clears, a.retained),
            (Severity::Cleared, Some(7), false)
        );
        assert!(a.line().contains("clears #7"));
        assert!(raise("a", Severity::Cleared, "x", "", RETENTION_DEFAULT).is_err());
        assert!(raise("a", Severity::Minor, "", "", RETENTION_DEFAULT).is_err());
        let other = Publish::new("alarms", "x").pattern("kind", "link");
        assert!(Alarm::from_event(&event_of(&other, 9)).is_err());
    }

    #[test]
    fn priorities_follow_severity() {
        let p: Vec<u8> = Severity::ALL.iter().map(|s| s.priority()).collect();
        assert_eq!(p, [0, 1, 2, 3, 1]);
        assert_eq!(Severity::parse("MAJOR"), Ok(Severity::Major));
        assert!(Severity::parse("bad").is_err());
    }

    #[test]
    fn filters_are_exact_prefix_or_any_by_position() {
        assert!(filters(None, None).is_empty());
        let f = filters(Some("major"), None);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].kind, f[0].pattern.as_slice()),
            (FilterKind::Exact, &b"major"[..])
        );
        assert_eq!(f[0].name, b"severity");
        let f = filters(None, Some("eth*"));
        assert_eq!(f[0].kind, FilterKind::PassAll);
        assert_eq!(
            (f[1].kind, f[1].pattern.as_slice()),
            (FilterKind::Prefix, &b"eth"[..])
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
    }
}
