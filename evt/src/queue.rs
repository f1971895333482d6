//! A bounded per-subscriber delivery queue: priority order, and a lost-event notice instead of a
//! silent gap.
//!
//! Each subscriber gets its own queue, so a slow one loses its own events and slows nobody
//! else. The driver pushes every event that passed the subscriber's filters and pops whenever
//! the subscriber can take one.

use std::collections::BTreeMap;

use crate::command::Event;

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An event.
    Event(Event),
    /// `count` events were lost since the last delivery (queue overflow or upstream lag).
    Lost {
        /// How many.
        count: u64,
    },
}

/// A bounded queue of events waiting for one subscriber.
///
/// # Order
/// Among waiting events, higher priority (lower number) first, then lower id. A drop is counted
/// and announced by a [`Delivery::Lost`] before the next event, so a gap is never silent.
///
/// # Overflow
/// The queue is bounded twice: in events and in bytes ([`event_cost`]). When an incoming event
/// does not fit, it is dropped, unless it has a higher priority than the lowest-priority waiting
/// event: then waiting events (the newest of the lowest priority first) are evicted until it
/// fits, as long as they have a lower priority than it. Every dropped or evicted event is
/// counted as lost.
#[derive(Debug, Clone)]
pub struct SubscriberQueue {
    /// Waiting events by (priority, id): the first entry is the next to deliver, the last the
    /// first to evict.
    waiting: BTreeMap<(u8, u64), Event>,
    /// Most waiting events (≥ 1).
    capacity: usize,
    /// Most waiting bytes, by [`event_cost`]; one event is always let in, whatever its cost.
    bytes_max: usize,
    /// Bytes waiting, by [`event_cost`].
    bytes: usize,
    /// Events lost since the last [`Delivery::Lost`], announced before the next event.
    lost_pending: u64,
    /// Events lost over the queue's life (for metrics).
    lost_total: u64,
}

/// What one waiting event counts against a queue's byte bound: its data, patterns, channel and
/// publisher, plus a fixed 64 bytes for the rest.
pub fn event_cost(e: &Event) -> usize {
    let patterns: usize = e
        .patterns
        .iter()
        .map(|p| p.name.len() + p.value.len())
        .sum();
    64 + e.data.len() + patterns + e.channel.len() + e.publisher.len()
}

impl SubscriberQueue {
    /// An empty queue holding at most `capacity` events, with no byte bound.
    ///
    /// # Panics
    /// If `capacity` is 0 (a queue that can hold nothing would lose every event).
    pub fn new(capacity: usize) -> Self {
        Self::bounded(capacity, usize::MAX)
    }

    /// An empty queue holding at most `capacity` events and `bytes_max` bytes of them (by
    /// [`event_cost`]; a single event bigger than that is still let in alone).
    ///
    /// # Panics
    /// If `capacity` is 0 (a queue that can hold nothing would lose every event).
    pub fn bounded(capacity: usize, bytes_max: usize) -> Self {
        assert!(capacity > 0, "a subscriber queue needs room for one event");
        Self {
            waiting: BTreeMap::new(),
            capacity,
            bytes_max,
            bytes: 0,
            lost_pending: 0,
            lost_total: 0,
        }
    }

    fn fits(&self, cost: usize) -> bool {
        self.waiting.is_empty()
            || (self.waiting.len() < self.capacity
                && self.bytes.saturating_add(cost) <= self.bytes_max)
    }

    /// Queue `event`, dropping it or evicting lower-priority ones if full (see the type docs).
    /// An event whose (priority, id) is already waiting is a duplicate and is ignored.
    pub fn push(&mut self, event: Event) {
        let key = (event.priority, event.id);
        if self.waiting.contains_key(&key) {
            return;
        }
        let cost = event_cost(&event);
        while !self.fits(cost) {
            let Some((&lowest, _)) = self.waiting.last_key_value() else {
                break;
            };
            if event.priority >= lowest.0 {
                self.count_lost(1);
                return;
            }
            if let Some(evicted) = self.waiting.remove(&lowest) {
                self.bytes -= event_cost(&evicted);
            }
            self.count_lost(1);
        }
        self.bytes += cost;
        self.waiting.insert(key, event);
        debug_assert!(self.waiting.len() <= self.capacity, "queue over capacity");
    }

    /// Bytes waiting, by [`event_cost`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next delivery: a pending lost notice first, then the highest-priority, lowest-id
    /// waiting event; `None` if there is neither.
    pub fn pop(&mut self) -> Option<Delivery> {
        if self.lost_pending > 0 {
            let count = std::mem::take(&mut self.lost_pending);
            return Some(Delivery::Lost { count });
        }
        let (_, event) = self.waiting.pop_first()?;
        self.bytes -= event_cost(&event);
        Some(Delivery::Event(event))
    }

    /// Count `n` events the subscriber missed upstream (e.g. the broadcast it reads from lagged)
    /// as lost; they are announced before the next event.
    pub fn lag(&mut self, n: u64) {
        self.count_lost(n);
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// No event waiting (a lost notice may still be pending).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Most waiting events.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Lost events not yet announced.
    pub fn lost_pending(&self) -> u64 {
        self.lost_pending
    }

    /// Events lost over the queue's life.
    pub fn lost_total(&self) -> u64 {
        self.lost_total
    }

    /// Add `n` to both lost counters.
    fn count_lost(&mut self, n: u64) {
        self.lost_pending = self.lost_pending.saturating_add(n);
        self.lost_total = self.lost_total.saturating_add(n);
    }
}
