//! The event service's plain types: what is published ([`Publish`]), subscribed to
//! ([`Subscription`]) and received ([`Event`], [`Delivery`], [`ChannelInfo`]), and their
//! conversions to and from the wire (`nines.evt.v1`). [`Filter`] and the limits are
//! `nines_core::evt`'s, the very types the service matches and checks with.

use std::time::Duration;

use nines_core::evt::{limits::PRIORITY_LOWEST, Filter};
use nines_proto::evt::v1 as pb;

/// One event to publish: build it with [`Publish::new`] and the setters.
///
/// Defaults: no patterns, priority [`PRIORITY_LOWEST`], not retained, no publisher name, and
/// the channel must exist (set [`Publish::create`] to create it if missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The channel to publish on.
    pub channel: String,
    /// Create the channel if it does not exist (AIS's CREATE open flag).
    pub create: bool,
    /// The pattern array, name → value, in order: subscribers' filters match it by position.
    pub patterns: Vec<(Vec<u8>, Vec<u8>)>,
    /// 0 highest … 3 lowest: among events waiting for a subscriber, higher priority goes first.
    pub priority: u8,
    /// How long later subscribers still receive the event; zero = not retained.
    pub retention: Duration,
    /// Who published it, for the subscribers.
    pub publisher: String,
    /// The event's data.
    pub data: Vec<u8>,
}

impl Publish {
    /// An event with `data` for `channel`, with the defaults of the type.
    pub fn new(channel: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self {
            channel: channel.into(),
            create: false,
            patterns: Vec::new(),
            priority: PRIORITY_LOWEST,
            retention: Duration::ZERO,
            publisher: String::new(),
            data: data.into(),
        }
    }

    /// Append a pattern `name` → `value` to the pattern array.
    #[must_use]
    pub fn pattern(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.patterns.push((name.into(), value.into()));
        self
    }

    /// Set the priority: 0 highest … 3 lowest (a higher number is refused by
    /// [`crate::EventClient::publish`]).
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Retain the event for `retention` (zero: not retained).
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Name the publisher.
    #[must_use]
    pub fn publisher(mut self, publisher: impl Into<String>) -> Self {
        self.publisher = publisher.into();
        self
    }

    /// Create the channel if it does not exist.
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    pub(super) fn to_wire(&self) -> pb::PublishRequest {
        pb::PublishRequest {
            channel: self.channel.clone(),
            create: self.create,
            patterns: self
                .patterns
                .iter()
                .map(|(name, value)| pb::Pattern {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            priority: u32::from(self.priority),
            retention_ms: duration_ms(self.retention),
            publisher: self.publisher.clone(),
            data: self.data.clone(),
        }
    }
}

/// What to subscribe to: build it with [`Subscription::new`] and the setters.
///
/// Defaults: no filters (every event passes), start with the retained events (`from_id` 0),
/// and the channel must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The channel.
    pub channel: String,
    /// The filter array, matched by position against each event's patterns.
    pub filters: Vec<Filter>,
    /// 0: start with the events still retained, then the new ones. Otherwise: every event with
    /// a greater id that the service still keeps (a [`Delivery::Lost`] says how many it no
    /// longer keeps), then the new ones — how a subscriber resumes from the last id it saw.
    pub from_id: u64,
    /// Create the channel if it does not exist.
    pub create: bool,
}

impl Subscription {
    /// Every event of `channel`, starting with the retained ones.
    pub fn new(channel: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
            filters: Vec::new(),
            from_id: 0,
            create: false,
        }
    }

    /// Append `filter` to the filter array.
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Resume after event `id` (see [`Subscription::from_id`](Self#structfield.from_id)).
    #[must_use]
    pub fn from_id(mut self, id: u64) -> Self {
        self.from_id = id;
        self
    }

    /// Create the channel if it does not exist.
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    pub(super) fn to_wire(&self, from_id: u64) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            channel: self.channel.clone(),
            filters: self.filters.iter().map(pb::Filter::from).collect(),
            from_id,
            create: self.create,
        }
    }
}

/// An event, as a subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The channel it was published on.
    pub channel: String,
    /// Its id: the channel's total order, starting at 1.
    pub id: u64,
    /// 0 highest … 3 lowest.
    pub priority: u8,
    /// Its pattern array, name → value.
    pub patterns: Vec<(Vec<u8>, Vec<u8>)>,
    /// Who published it.
    pub publisher: String,
    /// When it was published (the leader's clock), ms since the Unix epoch.
    pub published_at_ms: u64,
    /// How long it is retained, ms (0: not retained).
    pub retention_ms: u64,
    /// Its data.
    pub data: Vec<u8>,
}

impl From<pb::Event> for Event {
    fn from(e: pb::Event) -> Self {
        Event {
            channel: e.channel,
            id: e.id,
            // A priority beyond the range (a newer agent) reads as the lowest.
            priority: u8::try_from(e.priority)
                .unwrap_or(PRIORITY_LOWEST)
                .min(PRIORITY_LOWEST),
            patterns: e.patterns.into_iter().map(|p| (p.name, p.value)).collect(),
            publisher: e.publisher,
            published_at_ms: e.published_at_ms,
            retention_ms: e.retention_ms,
            data: e.data,
        }
    }
}

/// One item of an [`EventStream`](crate::EventStream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An event that passed the filters.
    Event(Event),
    /// This many events will never be delivered to this subscriber: it fell behind (its queue
    /// at the agent overflowed), or, on resuming, they are no longer kept.
    Lost(u64),
}

/// A channel, as [`crate::EventClient::channels`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Its name.
    pub name: String,
    /// The id of its last event (0: none yet).
    pub last_id: u64,
    /// Events it still retains.
    pub retained: u64,
}

impl From<pb::ChannelInfo> for ChannelInfo {
    fn from(c: pb::ChannelInfo) -> Self {
        Self {
            name: c.name,
            last_id: c.last_id,
            retained: c.retained,
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_core::evt::FilterKind;

    fn wire_event(id: u64) -> pb::Event {
        pb::Event {
            channel: "ch".into(),
            id,
            priority: 1,
            patterns: vec![pb::Pattern {
                name: b"kind".to_vec(),
                value: b"link-down".to_vec(),
            }],
            publisher: "p".into(),
            published_at_ms: 1_700_000_000_000 + id,
            retention_ms: 0,
            data: format!("e{id}").into_bytes(),
        }
    }

    #[test]
    fn publish_builds_the_wire_request() {
        let p = Publish::new("alarms", "down")
            .pattern("kind", "link")
            .pattern(vec![0u8], vec![1u8, 2])
            .priority(0)
            .retention(Duration::from_secs(60))
            .publisher("mon")
            .create(true);
        let w = p.to_wire();
        assert_eq!(w.channel, "alarms");
        assert!(w.create);
        assert_eq!(w.patterns.len(), 2);
        assert_eq!(w.patterns[1].value, [1, 2]);
        assert_eq!((w.priority, w.retention_ms), (0, 60_000));
        assert_eq!(
            (w.publisher.as_str(), w.data.as_slice()),
            ("mon", &b"down"[..])
        );
        let d = Publish::new("c", "x").to_wire();
        assert_eq!((d.priority, d.retention_ms, d.create), (3, 0, false));
    }

    #[test]
    fn subscriptions_and_filters_convert() {
        let s = Subscription::new("c")
            .filter(Filter::prefix("a"))
            .filter(Filter::pass_all())
            .filter(Filter::suffix("z"))
            .filter(Filter::exact("e").named("n"))
            .from_id(7)
            .create(true);
        let w = s.to_wire(9);
        assert_eq!(w.from_id, 9, "the resume point, not the original one");
        assert!(w.create);
        let kinds: Vec<i32> = w.filters.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                pb::FilterKind::Prefix as i32,
                pb::FilterKind::PassAll as i32,
                pb::FilterKind::Suffix as i32,
                pb::FilterKind::Exact as i32
            ]
        );
        assert_eq!(w.filters[3].name, b"n");
        assert!(w.filters[0].name.is_empty(), "no name: any name");
        assert_eq!(FilterKind::PassAll.to_string(), "all");
    }

    #[test]
    fn events_convert_and_out_of_range_priorities_read_as_lowest() {
        let e = Event::from(wire_event(4));
        assert_eq!((e.id, e.priority, e.data.as_slice()), (4, 1, &b"e4"[..]));
        assert_eq!(e.patterns, vec![(b"kind".to_vec(), b"link-down".to_vec())]);
        let odd = Event::from(pb::Event {
            priority: 900,
            ..wire_event(1)
        });
        assert_eq!(odd.priority, 3);
    }
}
