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
/// When the queue is full, an incoming event is dropped, unless it has a higher priority than
/// the lowest-priority waiting event: then that one (the newest of the lowest priority) is
/// evicted instead. Either way one event is counted as lost.
#[derive(Debug, Clone)]
pub struct SubscriberQueue {
    /// Waiting events by (priority, id): the first entry is the next to deliver, the last the
    /// first to evict.
    waiting: BTreeMap<(u8, u64), Event>,
    /// Most waiting events (≥ 1).
    capacity: usize,
    /// Events lost since the last [`Delivery::Lost`], announced before the next event.
    lost_pending: u64,
    /// Events lost over the queue's life (for metrics).
    lost_total: u64,
}

impl SubscriberQueue {
    /// An empty queue holding at most `capacity` events.
    ///
    /// # Panics
    /// If `capacity` is 0 (a queue that can hold nothing would lose every event).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a subscriber queue needs room for one event");
        Self {
            waiting: BTreeMap::new(),
            capacity,
            lost_pending: 0,
            lost_total: 0,
        }
    }

    /// Queue `event`, dropping or evicting one if full (see the type docs). An event whose
    /// (priority, id) is already waiting is a duplicate and is ignored.
    pub fn push(&mut self, event: Event) {
        let key = (event.priority, event.id);
        if self.waiting.contains_key(&key) {
            return;
        }
        if self.waiting.len() >= self.capacity {
            self.count_lost(1);
            let (&lowest, _) = self
                .waiting
                .last_key_value()
                .expect("a full queue is not empty");
            if event.priority >= lowest.0 {
                return;
            }
            self.waiting.remove(&lowest);
        }
        self.waiting.insert(key, event);
        assert!(self.waiting.len() <= self.capacity, "queue over capacity");
    }

    /// The next delivery: a pending lost notice first, then the highest-priority, lowest-id
    /// waiting event; `None` if there is neither.
    pub fn pop(&mut self) -> Option<Delivery> {
        if self.lost_pending > 0 {
            let count = std::mem::take(&mut self.lost_pending);
            return Some(Delivery::Lost { count });
        }
        self.waiting
            .pop_first()
            .map(|(_, event)| Delivery::Event(event))
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
