//! [`EventStream`]: a subscription that reconnects and resumes where it left off, and the pure
//! bookkeeping of where that is (`Resume`).

use std::collections::BTreeSet;

use nines_core::{AisError, ErrorCode};
use nines_proto::{
    ais_from_status,
    evt::v1::{self as pb, subscribe_item::Item},
    AIS_CODE_HEADER,
};
use tonic::Streaming;

use super::{
    types::{Delivery, Event, Subscription},
    EventClient, PRIORITY_LOWEST,
};
use crate::{call::prefixed, error::Result};

/// A subscription, from [`EventClient::subscribe`]: call [`EventStream::next`] in a loop.
///
/// # When the stream breaks
/// When the agent stops, the connection drops (or goes silent past the keep-alive), or the
/// agent ends the stream with `TRY_AGAIN` / `UNAVAILABLE`, the stream reconnects — to the next
/// endpoint first, the broken one last, with a backoff between rounds, for at most the client's
/// deadline — and resumes where it left off ([`EventStream::resume_from`]): the agent sends every
/// later event it still keeps and a [`Delivery::Lost`] for those it no longer keeps, and the
/// stream skips the ones it delivered already. So a subscriber never sees an id twice and never
/// has a silent gap. If no agent can be reached within the deadline, [`EventStream::next`]
/// returns a retryable error; calling it again tries again.
///
/// Events are delivered by priority among those waiting at the agent, so ids can arrive out of
/// order (a waiting lower-priority event is overtaken by later, higher-priority ones). The
/// stream therefore resumes not simply after the highest id delivered but after the highest id
/// below which nothing can still be waiting: the last lowest-priority (3) event delivered, or
/// [`REORDER_WINDOW_IDS`] below the highest id, whichever is higher.
///
/// Limits of resuming, all from what an agent can know:
/// - Before the first event is delivered, a subscription from id 0 resumes from id 0 again (the
///   retained events, then new ones): events published while it was reconnecting that were not
///   retained are missed.
/// - An event overtaken by more than [`REORDER_WINDOW_IDS`] later events while it waited at the
///   agent, and still waiting when the stream broke, is not delivered after the resume.
/// - Resuming from below the highest id re-reads up to [`REORDER_WINDOW_IDS`] events from the
///   agent's ring of recent events; if the ring no longer holds them (large events), the agent's
///   lost notice may count events this stream did deliver (an over-count, never a silent gap).
///
/// Dropping the stream ends the subscription.
#[derive(Debug)]
pub struct EventStream {
    client: EventClient,
    /// "subscribe to channel 'x'", for errors.
    what: String,
    subscription: Subscription,
    /// Index of the endpoint the stream is open on.
    at: usize,
    stream: Option<Streaming<pb::SubscribeItem>>,
    /// What was delivered: where a reconnection resumes, and what it must not deliver again.
    resume: Resume,
    ended: bool,
    reconnects: u64,
}

impl EventStream {
    /// The stream of a subscription just opened on endpoint `at`.
    pub(super) fn new(
        client: EventClient,
        what: String,
        subscription: Subscription,
        at: usize,
        stream: Streaming<pb::SubscribeItem>,
    ) -> Self {
        Self {
            client,
            what,
            at,
            stream: Some(stream),
            resume: Resume::new(subscription.from_id),
            subscription,
            ended: false,
            reconnects: 0,
        }
    }

    /// The next delivery; waits as long as no event comes.
    ///
    /// - `Some(Ok(Delivery::Event(e)))`: an event that passed the filters.
    /// - `Some(Ok(Delivery::Lost(n)))`: `n` events this subscriber will never see.
    /// - `Some(Err(e))` with `e.is_retryable()`: the stream broke and no agent could be reached
    ///   within the client's deadline; calling `next` again tries again.
    /// - `Some(Err(e))` otherwise: an answer retrying cannot fix (say, the channel was
    ///   unlinked); the stream has ended and every later call returns `None`.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(stream) = self.stream.as_mut() {
                match stream.message().await {
                    Ok(Some(item)) => match self.accept(item) {
                        Some(d) => return Some(Ok(d)),
                        None => continue,
                    },
                    Ok(None) => tracing::debug!(
                        endpoint = %self.endpoint(),
                        "the agent ended the subscription; reconnecting"
                    ),
                    Err(status) => {
                        if let Some(e) = final_error(&status) {
                            self.ended = true;
                            self.stream = None;
                            return Some(Err(prefixed(&self.what, e)));
                        }
                        tracing::debug!(
                            endpoint = %self.endpoint(),
                            %status,
                            "the subscription broke; reconnecting"
                        );
                    }
                }
                self.stream = None;
                self.reconnects += 1;
            }
            if let Err(e) = self.reconnect().await {
                if !e.is_retryable() {
                    self.ended = true;
                }
                return Some(Err(e));
            }
        }
    }

    /// The delivery for `item`, or `None` for an item to skip (an id already delivered, an
    /// item kind unknown to this SDK).
    fn accept(&mut self, item: pb::SubscribeItem) -> Option<Delivery> {
        match item.item? {
            Item::Event(e) => {
                if self.resume.delivered(e.id) {
                    tracing::debug!(id = e.id, "skipping an event delivered already");
                    return None;
                }
                let e = Event::from(e);
                self.resume.record(e.id, e.priority);
                Some(Delivery::Event(e))
            }
            Item::Lost(0) => None,
            Item::Lost(n) => Some(Delivery::Lost(n)),
        }
    }

    /// Open the stream again where it left off, the next endpoint first.
    async fn reconnect(&mut self) -> Result<()> {
        let n = self.client.inner.targets.len();
        let start = (self.at + 1) % n;
        let from_id = self.resume.resume_id();
        let (at, stream) = self
            .client
            .open_stream(&self.what, &self.subscription, from_id, start, true)
            .await?;
        tracing::debug!(endpoint = %self.client.inner.targets[at].addr, from_id, "resumed");
        self.at = at;
        self.stream = Some(stream);
        Ok(())
    }

    /// Where a reconnection resumes (the `from_id` it sends): every event at or below it was
    /// delivered or announced lost. Equal to the highest id delivered while events come in id
    /// order; see the type docs for when it lags behind.
    pub fn resume_from(&self) -> u64 {
        self.resume.floor
    }

    /// The highest event id delivered, if any: what to pass as
    /// [`Subscription::from_id`](Subscription#structfield.from_id) to resume in a later process
    /// (with one priority per channel; see the type docs).
    pub fn last_id(&self) -> Option<u64> {
        self.resume.last
    }

    /// The endpoint the stream is (or was last) open on.
    pub fn endpoint(&self) -> &str {
        &self.client.inner.targets[self.at].addr
    }

    /// How many times the stream broke and reconnected (or tried to).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }
}

/// The error that ends a broken stream for good: an answer from the service (an AIS code) that
/// retrying cannot fix. `None`: reconnect (transport failures, `TRY_AGAIN`, `UNAVAILABLE`, the
/// agent going away).
fn final_error(status: &tonic::Status) -> Option<AisError> {
    // No AIS code: the transport failed or the agent went away.
    status.metadata().get(AIS_CODE_HEADER)?;
    let e = ais_from_status(status);
    match e.code {
        ErrorCode::TryAgain | ErrorCode::Unavailable => None,
        _ => Some(e),
    }
}

/// How far (in ids) below the highest id delivered a resume may start, for lower-priority events
/// still waiting at the agent behind later, higher-priority ones.
pub const REORDER_WINDOW_IDS: u64 = 256;

/// Where a broken subscription resumes, and which ids it delivered already. Pure: ids and
/// priorities in, decisions out.
///
/// # Correctness
/// The agent offers a subscriber's events to its queue in id order and delivers the waiting ones
/// by (priority, id). So when an event of the lowest priority with id `j` is delivered, every
/// event with a lower id that the same stream offered was delivered (or announced lost) before
/// it: `j` is a safe resume point. Short of that, the resume point trails the highest id by
/// [`REORDER_WINDOW_IDS`] (a bound on reordering that holds unless a lower-priority event is
/// starved that long). Ids above the resume point that were delivered are remembered (at most
/// the window's worth) and skipped when the agent sends them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Every matching event with an id at or below it was delivered or announced lost.
    floor: u64,
    /// Ids delivered above `floor`.
    above: BTreeSet<u64>,
    /// The highest id delivered.
    last: Option<u64>,
}

impl Resume {
    /// Nothing delivered yet; the subscription started after `from_id`.
    pub(crate) fn new(from_id: u64) -> Self {
        Self {
            floor: from_id,
            above: BTreeSet::new(),
            last: None,
        }
    }

    /// Whether event `id` was delivered already (the agent sent it again after a resume).
    pub(crate) fn delivered(&self, id: u64) -> bool {
        id <= self.floor || self.above.contains(&id)
    }

    /// Event `id` of `priority` was delivered.
    pub(crate) fn record(&mut self, id: u64, priority: u8) {
        assert!(!self.delivered(id), "event {id} delivered twice");
        self.above.insert(id);
        let last = self.last.map_or(id, |l| l.max(id));
        self.last = Some(last);
        let mut floor = last.saturating_sub(REORDER_WINDOW_IDS);
        if priority >= PRIORITY_LOWEST {
            floor = floor.max(id);
        }
        if floor > self.floor {
            self.floor = floor;
            self.above = self.above.split_off(&(floor + 1));
        }
        assert!(
            self.above.len() as u64 <= REORDER_WINDOW_IDS,
            "the delivered ids kept are bounded by the window"
        );
    }

    /// The `from_id` a reconnection sends.
    pub(crate) fn resume_id(&self) -> u64 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_lowest_priority_events_resume_after_the_last() {
        let mut r = Resume::new(10);
        assert!(r.delivered(10) && !r.delivered(11));
        for id in 11..=20 {
            r.record(id, PRIORITY_LOWEST);
        }
        assert_eq!((r.resume_id(), r.last), (20, Some(20)));
        assert!(r.above.is_empty());
        assert!(r.delivered(15) && !r.delivered(21));
    }

    #[test]
    fn overtaken_events_keep_the_resume_point_below_them() {
        // Waiting: 1 (p2), 2 (p0), 3 (p1): delivered 2, 3, then 1.
        let mut r = Resume::new(0);
        r.record(2, 0);
        r.record(3, 1);
        assert_eq!(r.resume_id(), 0, "1 may still be waiting");
        assert!(!r.delivered(1) && r.delivered(2) && r.delivered(3));
        r.record(1, 2);
        assert_eq!(r.resume_id(), 0);
        // A lowest-priority event settles everything below it.
        r.record(4, 3);
        assert_eq!(r.resume_id(), 4);
        assert!(r.above.is_empty());
    }

    #[test]
    fn high_priority_streams_resume_a_window_behind_and_stay_bounded() {
        let mut r = Resume::new(0);
        for id in 1..=1_000 {
            r.record(id, 0);
        }
        assert_eq!(r.resume_id(), 1_000 - REORDER_WINDOW_IDS);
        assert_eq!(r.above.len() as u64, REORDER_WINDOW_IDS);
        assert!(
            r.delivered(1_000 - REORDER_WINDOW_IDS + 1),
            "remembered above the floor"
        );
        assert_eq!(r.last, Some(1_000));
    }
}
