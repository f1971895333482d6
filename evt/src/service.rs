//! `nines.evt.v1.Events`: publishing goes through the replicated log (acknowledged after quorum
//! commit + fsync); subscriptions are served by the contacted agent from what it has applied:
//! first the backlog (retained events, or everything kept after `from_id`), then each event as
//! this agent applies it, through a bounded per-subscriber queue that reports losses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nines_consensus::metrics::Counter;
use nines_consensus::{ProposeError, ReadMode, ServiceHandle, StateMachine};
use nines_core::{limits as core_limits, AisError, ErrorCode};
use nines_proto::{evt::v1 as pb, status_from_ais};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    matches, validate_filters, Delivery, Event, EvtCommand, EvtResponse, EvtState, Filter, Limits,
    Pattern, SubscriberQueue,
};

/// The event service's counters on this agent (process-wide; the agent renders them).
#[derive(Debug)]
pub struct EvtMetrics {
    /// Events published through this agent (committed).
    pub published: Counter,
    /// Events delivered to this agent's subscribers.
    pub delivered: Counter,
    /// Events this agent's subscribers lost (announced to them in lost notices).
    pub lost: Counter,
    /// Subscriptions refused because the agent serves [`SUBSCRIBERS_MAX`] already.
    pub subscribers_refused: Counter,
}

/// This process's event service metrics.
pub static METRICS: EvtMetrics = EvtMetrics {
    published: Counter::new(),
    delivered: Counter::new(),
    lost: Counter::new(),
    subscribers_refused: Counter::new(),
};

/// Subscribers this agent serves now (at most [`SUBSCRIBERS_MAX`]).
static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);

/// How many subscribers this agent serves now.
pub fn subscribers() -> usize {
    SUBSCRIBERS.load(Ordering::Relaxed)
}

/// One subscriber's place under [`SUBSCRIBERS_MAX`], given back when its pump ends.
struct SubscriberSlot;

impl SubscriberSlot {
    fn take() -> Option<SubscriberSlot> {
        SUBSCRIBERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < SUBSCRIBERS_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| SubscriberSlot)
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        SUBSCRIBERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The event service's view of the replicated state.
pub type EvtHandle<M> = ServiceHandle<M, EvtCommand, EvtResponse, EvtState>;

/// Events waiting in one subscriber's queue before the oldest lowest-priority ones are lost.
pub const SUBSCRIBER_QUEUE_LEN: usize = 1_024;
/// Bytes of events (by `queue::event_cost`) waiting in one subscriber's queue before the
/// lowest-priority ones are lost: a subscriber that does not read gets a lost notice, and costs
/// the agent at most this much, plus [`STREAM_BUFFER_LEN`] events on their way to it.
pub const SUBSCRIBER_QUEUE_BYTES_MAX: usize = 1024 * 1024;
/// Items buffered between a subscriber's pump and its gRPC stream.
const STREAM_BUFFER_LEN: usize = 4;
/// Most subscribers one agent serves at once (each costs up to about
/// [`SUBSCRIBER_QUEUE_BYTES_MAX`] plus a few events: 128 bound the agent's subscriber memory to
/// about 160 MiB). Another is refused with NO_SPACE until one ends.
pub const SUBSCRIBERS_MAX: usize = 128;

/// The gRPC service. Generic over the composite state machine it lives in.
pub struct EvtService<M: StateMachine> {
    handle: EvtHandle<M>,
    events: broadcast::Sender<Event>,
}

impl<M: StateMachine> EvtService<M> {
    /// The service over `handle`; `events` is the sender the state machine announces applied
    /// events on (see [`EvtState::set_events`]).
    pub fn new(handle: EvtHandle<M>, events: broadcast::Sender<Event>) -> Self {
        Self { handle, events }
    }

    /// The limits in force, read linearizably: a subscriber checked right after a
    /// `SetLimits` is checked against the new limits, whichever agent it called.
    async fn limits(&self) -> Result<Limits, Status> {
        let timeout = Duration::from_millis(core_limits::CLIENT_TIMEOUT_MS);
        self.handle
            .read(ReadMode::Linearizable, timeout, |s| s.limits().clone())
            .await
            .map_err(propose_err)
    }

    async fn propose(&self, cmd: EvtCommand) -> Result<EvtResponse, Status> {
        let timeout = Duration::from_millis(core_limits::CLIENT_TIMEOUT_MS);
        match self.handle.propose(cmd, timeout).await {
            Ok(EvtResponse::Refused(e)) => Err(status_from_ais(&e)),
            Ok(r) => Ok(r),
            Err(e) => Err(propose_err(e)),
        }
    }
}

fn propose_err(e: ProposeError) -> Status {
    status_from_ais(&e.into())
}

fn unexpected(r: EvtResponse) -> Status {
    status_from_ais(&AisError::new(
        ErrorCode::Library,
        format!("unexpected answer from the event service: {r:?}"),
    ))
}

fn pattern_from_pb(p: pb::Pattern) -> Pattern {
    Pattern {
        name: p.name,
        value: p.value,
    }
}

fn pattern_to_pb(p: &Pattern) -> pb::Pattern {
    pb::Pattern {
        name: p.name.clone(),
        value: p.value.clone(),
    }
}

/// The wire form of an event.
pub fn event_to_pb(e: &Event) -> pb::Event {
    pb::Event {
        channel: e.channel.clone(),
        id: e.id,
        priority: u32::from(e.priority),
        patterns: e.patterns.iter().map(pattern_to_pb).collect(),
        publisher: e.publisher.clone(),
        published_at_ms: e.published_at_ms,
        retention_ms: e.retention_ms,
        data: e.data.clone(),
    }
}

/// A request's limits, or INVALID_PARAM naming the missing field.
fn limits_from_pb(limits: Option<pb::Limits>, field: &str) -> Result<Limits, Status> {
    let limits = limits.ok_or_else(|| {
        status_from_ais(&AisError::new(
            ErrorCode::InvalidParam,
            format!("{field} is missing; give the limits, whole"),
        ))
    })?;
    Limits::try_from(limits).map_err(|e| status_from_ais(&e))
}

type ItemStream = ReceiverStream<Result<pb::SubscribeItem, Status>>;

#[tonic::async_trait]
impl<M: StateMachine + 'static> pb::events_server::Events for EvtService<M> {
    async fn create(
        &self,
        req: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        let channel = req.into_inner().channel;
        match self.propose(EvtCommand::Create { channel }).await? {
            EvtResponse::Created { existed } => {
                Ok(Response::new(pb::CreateChannelResponse { existed }))
            }
            r => Err(unexpected(r)),
        }
    }

    async fn unlink(
        &self,
        req: Request<pb::UnlinkChannelRequest>,
    ) -> Result<Response<pb::UnlinkChannelResponse>, Status> {
        let channel = req.into_inner().channel;
        match self.propose(EvtCommand::Unlink { channel }).await? {
            EvtResponse::Unlinked => Ok(Response::new(pb::UnlinkChannelResponse {})),
            r => Err(unexpected(r)),
        }
    }

    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let r = req.into_inner();
        let priority = u8::try_from(r.priority).unwrap_or(u8::MAX);
        let cmd = EvtCommand::Publish {
            channel: r.channel,
            create: r.create,
            patterns: r.patterns.into_iter().map(pattern_from_pb).collect(),
            priority,
            retention_ms: r.retention_ms,
            publisher: r.publisher,
            data: r.data,
        };
        match self.propose(cmd).await? {
            EvtResponse::Published { event_id } => {
                METRICS.published.inc();
                Ok(Response::new(pb::PublishResponse { event_id }))
            }
            r => Err(unexpected(r)),
        }
    }

    async fn clear_retention(
        &self,
        req: Request<pb::ClearRetentionRequest>,
    ) -> Result<Response<pb::ClearRetentionResponse>, Status> {
        let r = req.into_inner();
        let cmd = EvtCommand::ClearRetention {
            channel: r.channel,
            event_id: r.event_id,
        };
        match self.propose(cmd).await? {
            EvtResponse::RetentionCleared => Ok(Response::new(pb::ClearRetentionResponse {})),
            r => Err(unexpected(r)),
        }
    }

    async fn channels(
        &self,
        _: Request<pb::ChannelsRequest>,
    ) -> Result<Response<pb::ChannelsResponse>, Status> {
        let timeout = Duration::from_millis(core_limits::CLIENT_TIMEOUT_MS);
        let infos = self
            .handle
            .read(ReadMode::Linearizable, timeout, |s| s.channels())
            .await
            .map_err(propose_err)?;
        Ok(Response::new(pb::ChannelsResponse {
            channels: infos
                .into_iter()
                .map(|c| pb::ChannelInfo {
                    name: c.name,
                    last_id: c.last_id,
                    retained: c.retained as u64,
                })
                .collect(),
        }))
    }

    async fn get_limits(
        &self,
        _: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::GetLimitsResponse>, Status> {
        let limits = self.limits().await?;
        Ok(Response::new(pb::GetLimitsResponse {
            limits: Some(pb::Limits::from(&limits)),
        }))
    }

    async fn set_limits(
        &self,
        req: Request<pb::SetLimitsRequest>,
    ) -> Result<Response<pb::SetLimitsResponse>, Status> {
        let r = req.into_inner();
        let limits = limits_from_pb(r.limits, "limits")?;
        let expected = match r.expected {
            Some(e) => Some(limits_from_pb(Some(e), "expected")?),
            None => None,
        };
        match self
            .propose(EvtCommand::SetLimits { limits, expected })
            .await?
        {
            EvtResponse::LimitsSet => Ok(Response::new(pb::SetLimitsResponse {})),
            r => Err(unexpected(r)),
        }
    }

    type SubscribeStream = ItemStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        let Some(slot) = SubscriberSlot::take() else {
            METRICS.subscribers_refused.inc();
            tracing::warn!(
                "refused a subscription to {}: this agent serves {SUBSCRIBERS_MAX} subscribers \
                 already (SUBSCRIBERS_MAX)",
                r.channel
            );
            return Err(status_from_ais(&AisError::new(
                ErrorCode::NoSpace,
                format!(
                    "this agent serves {SUBSCRIBERS_MAX} event subscribers already (its limit): \
                     end a subscription, or subscribe through another agent"
                ),
            )));
        };
        let filters = r
            .filters
            .into_iter()
            .map(Filter::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status_from_ais(&e))?;
        validate_filters(&filters, &self.limits().await?).map_err(|e| status_from_ais(&e))?;
        if r.create {
            self.propose(EvtCommand::Create {
                channel: r.channel.clone(),
            })
            .await?;
        }
        // Listen before reading the backlog: an event applied in between is in both, and the
        // pump drops what it already passed (ids only grow). The read is linearizable: a
        // follower that has not yet applied an acknowledged create or publish would answer
        // NOT_EXIST or miss it (seen in CI).
        let live = self.events.subscribe();
        let channel = r.channel.clone();
        let from = r.from_id;
        let timeout = Duration::from_millis(core_limits::CLIENT_TIMEOUT_MS);
        let backlog = self
            .handle
            .read(ReadMode::Linearizable, timeout, move |s| {
                backlog(s, &channel, from)
            })
            .await
            .map_err(propose_err)?
            .map_err(|e| status_from_ais(&e))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_LEN);
        let pump = Pump {
            handle: self.handle.clone(),
            channel: r.channel,
            filters,
            queue: SubscriberQueue::bounded(SUBSCRIBER_QUEUE_LEN, SUBSCRIBER_QUEUE_BYTES_MAX),
            high_water: from,
            _slot: slot,
        };
        tokio::spawn(pump.run(backlog, live, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What a new subscriber gets first: the retained events (from 0), or every kept event after
/// `from` with the count of those no longer kept.
fn backlog(s: &EvtState, channel: &str, from: u64) -> Result<(Vec<Event>, u64), AisError> {
    if from == 0 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        return Ok((s.retained(channel, now_ms)?, 0));
    }
    let since = s.since(channel, from)?;
    Ok((since.events, since.lost))
}

/// One subscriber: feeds its queue from the backlog and the live events, and its stream from
/// the queue.
struct Pump<M: StateMachine> {
    handle: EvtHandle<M>,
    channel: String,
    filters: Vec<Filter>,
    queue: SubscriberQueue,
    /// The highest id queued (or counted lost) so far: older ids are duplicates.
    high_water: u64,
    /// Its place under [`SUBSCRIBERS_MAX`], held until the pump ends.
    _slot: SubscriberSlot,
}

impl<M: StateMachine + 'static> Pump<M> {
    fn offer(&mut self, e: Event) {
        if e.channel != self.channel || e.id <= self.high_water {
            return;
        }
        self.high_water = e.id;
        if matches(&self.filters, &e.patterns) {
            self.queue.push(e);
        }
    }

    /// The live broadcast lagged: catch up from the state (exact, with the count of what is no
    /// longer kept).
    async fn catch_up(&mut self) {
        let (channel, from) = (self.channel.clone(), self.high_water);
        let timeout = Duration::from_millis(core_limits::CLIENT_TIMEOUT_MS);
        let since = self
            .handle
            .read(ReadMode::Stale, timeout, move |s| s.since(&channel, from))
            .await;
        match since {
            Ok(Ok(s)) => {
                if s.lost > 0 {
                    self.queue.lag(s.lost);
                    self.high_water += s.lost;
                }
                for e in s.events {
                    self.offer(e);
                }
            }
            Ok(Err(e)) => tracing::warn!("event subscriber cannot catch up: {e}"),
            Err(e) => tracing::warn!("event subscriber cannot catch up: {e}"),
        }
    }

    async fn run(
        mut self,
        backlog: (Vec<Event>, u64),
        mut live: broadcast::Receiver<Event>,
        tx: mpsc::Sender<Result<pb::SubscribeItem, Status>>,
    ) {
        if backlog.1 > 0 {
            self.queue.lag(backlog.1);
        }
        for e in backlog.0 {
            self.offer(e);
        }
        loop {
            if !self.queue.is_empty() || self.queue.lost_pending() > 0 {
                tokio::select! {
                    biased;
                    permit = tx.reserve() => {
                        let Ok(permit) = permit else { return };
                        if let Some(item) = self.queue.pop() {
                            let item = match item {
                                Delivery::Event(e) => {
                                    METRICS.delivered.inc();
                                    pb::subscribe_item::Item::Event(event_to_pb(&e))
                                }
                                Delivery::Lost { count } => {
                                    METRICS.lost.add(count);
                                    pb::subscribe_item::Item::Lost(count)
                                }
                            };
                            permit.send(Ok(pb::SubscribeItem { item: Some(item) }));
                        }
                    }
                    // Keep draining the broadcast while the client is slow, so this
                    // subscriber, not the others, pays for its slowness.
                    ev = live.recv() => if !self.on_live(ev).await { return },
                }
                continue;
            }
            tokio::select! {
                _ = tx.closed() => return,
                ev = live.recv() => if !self.on_live(ev).await { return },
            }
        }
    }

    async fn on_live(&mut self, ev: Result<Event, broadcast::error::RecvError>) -> bool {
        match ev {
            Ok(e) => {
                self.offer(e);
                true
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.catch_up().await;
                true
            }
            Err(broadcast::error::RecvError::Closed) => false,
        }
    }
}
