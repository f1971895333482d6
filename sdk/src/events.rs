//! [`EventClient`]: the event service (AIS EVT) — channels, publish, and subscriptions that
//! survive a broken stream.
//!
//! A channel is a named, cluster-wide stream of events with one total order: every event gets
//! the channel's next id when it is committed through Raft. An event carries a pattern array
//! (name → bytes pairs), a priority (0 highest … 3 lowest), a publisher name, the time it was
//! published and its data; a retained event (retention above zero) is also delivered to
//! subscribers that join later, until its retention runs out.
//!
//! - [`EventClient::publish`] a [`Publish`] (built with [`Publish::new`] and its setters): the
//!   answer is the event's id, sent after quorum commit and fsync.
//! - [`EventClient::subscribe`] with a [`Subscription`]: an [`EventStream`] of [`Delivery`]s —
//!   the events that pass the subscription's [`Filter`]s, and [`Delivery::Lost`] notices when
//!   events could not be delivered (the subscriber fell behind, or they are no longer kept).
//!   When the stream breaks, it reconnects (to another agent if needed) and resumes after the
//!   last event it delivered: no duplicate, and no silent gap.
//! - [`EventClient::create`], [`EventClient::unlink`], [`EventClient::channels`],
//!   [`EventClient::clear_retention`] manage channels and retained events.
//! - [`EventClient::limits`] and [`EventClient::update_limits`] read and change the
//!   [`EventLimits`] every agent checks commands against (the same on every agent: they are
//!   part of the replicated state).
//!
//! Endpoints, deadlines and failover follow the same rules as the
//! [`CheckpointClient`](crate::CheckpointClient): see [`ClientConfig`]. A publish whose
//! outcome is unknown (the deadline passed while it was in flight) is never re-sent: it fails
//! with `TIMEOUT`, and the event may or may not have been published.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use nines_sdk::{Delivery, EventClient, Filter, Publish, Subscription};
//!
//! # async fn demo() -> Result<(), nines_sdk::SdkError> {
//! let events = EventClient::connect(&["127.0.0.1:7101", "127.0.0.1:7102"]).await?;
//! let mut stream = events
//!     .subscribe(
//!         &Subscription::new("alarms")
//!             .create(true)
//!             .filter(Filter::prefix("link-")),
//!     )
//!     .await?;
//! let id = events
//!     .publish(
//!         &Publish::new("alarms", "eth0 down")
//!             .create(true)
//!             .pattern("kind", "link-down")
//!             .priority(0)
//!             .retention(Duration::from_secs(60))
//!             .publisher("nic-monitor"),
//!     )
//!     .await?;
//! println!("published event {id}");
//! while let Some(item) = stream.next().await {
//!     match item? {
//!         Delivery::Event(e) => println!("#{} from {}: {:?}", e.id, e.publisher, e.data),
//!         Delivery::Lost(n) => println!("{n} events lost"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod limits;
mod stream;
mod types;

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use nines_core::limits as core_limits;
use nines_proto::evt::v1::{self as pb, events_client::EventsClient as Grpc};
use tonic::{
    transport::{Channel, Endpoint},
    Streaming,
};

pub use nines_core::evt::limits::PRIORITY_LOWEST;
pub use nines_core::evt::{Filter, FilterKind, Limits as EventLimits};
pub use stream::{EventStream, REORDER_WINDOW_IDS};
pub use types::{ChannelInfo, Delivery, Event, Publish, Subscription};

use crate::{
    call::{base_endpoint, Inner, Service},
    client::ClientConfig,
    error::{Result, SdkError},
    retry::{classify, Idempotency, Verdict},
};

/// HTTP/2 keep-alive pings on event connections: a subscription is silent between events, so a
/// dead peer (power loss, cable pulled) is only noticed by pings. Interval and answer deadline.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the event service of a nines cluster, through any of its agents.
///
/// Cheap to clone (clones share connections). Every call has a deadline
/// ([`ClientConfig::timeout`]); calls go to the endpoint that answered last and fail over, in the
/// order given, to the others when it is unreachable; `TRY_AGAIN` is retried until the deadline.
///
/// ```no_run
/// use std::time::Duration;
///
/// use nines_sdk::{Delivery, EventClient, Filter, Publish, Subscription};
///
/// # async fn demo() -> Result<(), nines_sdk::SdkError> {
/// let events = EventClient::connect(&["127.0.0.1:7101", "127.0.0.1:7102"]).await?;
/// let mut stream = events
///     .subscribe(
///         &Subscription::new("alarms")
///             .create(true)
///             .filter(Filter::prefix("link-")),
///     )
///     .await?;
/// let id = events
///     .publish(
///         &Publish::new("alarms", "eth0 down")
///             .create(true)
///             .pattern("kind", "link-down")
///             .priority(0)
///             .retention(Duration::from_secs(60))
///             .publisher("nic-monitor"),
///     )
///     .await?;
/// println!("published event {id}");
/// while let Some(item) = stream.next().await {
///     match item? {
///         Delivery::Event(e) => println!("#{} from {}: {:?}", e.id, e.publisher, e.data),
///         Delivery::Lost(n) => println!("{n} events lost"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EventClient {
    inner: Arc<Inner<Grpc<Channel>>>,
    timeout: Duration,
}

impl Service for Grpc<Channel> {
    const NAME: &'static str = "event service";

    fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint> {
        Ok(base_endpoint(addr, config)?
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }

    fn over(channel: Channel) -> Self {
        Grpc::new(channel)
            .max_decoding_message_size(core_limits::GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(core_limits::GRPC_MESSAGE_BYTES_MAX)
    }

    fn verdict(status: &tonic::Status, idempotency: Idempotency) -> Verdict {
        verdict(status, idempotency)
    }
}

crate::call::client_basics!(EventClient);

impl EventClient {
    /// Create channel `channel`; `Ok(true)` if it existed already (not an error).
    ///
    /// # Errors
    /// `NO_SPACE` when the cluster holds too many channels; `INVALID_PARAM` for a name beyond
    /// the service's limits; `TIMEOUT` when the outcome is unknown (list the channels to see).
    pub async fn create(&self, channel: &str) -> Result<bool> {
        let what = format!("create channel '{channel}'");
        check_channel(&what, channel)?;
        let r = self
            .inner
            .call(
                self.timeout,
                &what,
                Idempotency::Mutating,
                |_left| pb::CreateChannelRequest {
                    channel: channel.to_string(),
                },
                |mut c, r| async move { c.create(r).await },
            )
            .await?;
        Ok(r.existed)
    }

    /// Delete channel `channel` and its retained events; its subscriptions end.
    ///
    /// # Errors
    /// `NOT_EXIST` if there is no such channel; `TIMEOUT` when the outcome is unknown.
    pub async fn unlink(&self, channel: &str) -> Result<()> {
        let what = format!("unlink channel '{channel}'");
        check_channel(&what, channel)?;
        self.inner
            .call(
                self.timeout,
                &what,
                Idempotency::Mutating,
                |_left| pb::UnlinkChannelRequest {
                    channel: channel.to_string(),
                },
                |mut c, r| async move { c.unlink(r).await },
            )
            .await?;
        Ok(())
    }

    /// Publish `event`; returns its id, once it is committed (quorum and fsync).
    ///
    /// A publish whose answer is lost is not re-sent (it could be published twice): it fails
    /// with `TIMEOUT`, and the event may or may not have been published.
    ///
    /// # Errors
    /// `NOT_EXIST` for a missing channel without [`Publish::create`]; `INVALID_PARAM` / `TOO_BIG`
    /// for patterns or data beyond the service's limits; [`SdkError::InvalidArgument`] for an
    /// empty channel name or a priority above 3; `TRY_AGAIN` (after retries) when the cluster
    /// has no leader.
    pub async fn publish(&self, event: &Publish) -> Result<u64> {
        let what = format!("publish on channel '{}'", event.channel);
        check_channel(&what, &event.channel)?;
        if event.priority > PRIORITY_LOWEST {
            return Err(SdkError::InvalidArgument(format!(
                "{what}: priority {} is out of range; give 0 (highest) to {PRIORITY_LOWEST} \
                 (lowest)",
                event.priority
            )));
        }
        let req = event.to_wire();
        let r = self
            .inner
            .call(
                self.timeout,
                &what,
                Idempotency::Mutating,
                |_left| req.clone(),
                |mut c, r| async move { c.publish(r).await },
            )
            .await?;
        Ok(r.event_id)
    }

    /// Stop retaining event `id` of `channel` now: later subscribers will not receive it.
    ///
    /// # Errors
    /// `NOT_EXIST` if the channel, or a retained event with that id, does not exist.
    pub async fn clear_retention(&self, channel: &str, id: u64) -> Result<()> {
        let what = format!("clear the retention of event {id} of channel '{channel}'");
        check_channel(&what, channel)?;
        self.inner
            .call(
                self.timeout,
                &what,
                Idempotency::Mutating,
                |_left| pb::ClearRetentionRequest {
                    channel: channel.to_string(),
                    event_id: id,
                },
                |mut c, r| async move { c.clear_retention(r).await },
            )
            .await?;
        Ok(())
    }

    /// Every channel with its last event id and how many events it retains.
    ///
    /// # Errors
    /// [`SdkError::Unavailable`] when no agent is reachable; `TRY_AGAIN` (after retries) when
    /// the cluster has no leader.
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>> {
        let r = self
            .inner
            .call(
                self.timeout,
                "list channels",
                Idempotency::Idempotent,
                |_left| pb::ChannelsRequest {},
                |mut c, r| async move { c.channels(r).await },
            )
            .await?;
        Ok(r.channels.into_iter().map(ChannelInfo::from).collect())
    }

    /// Subscribe: an [`EventStream`] of the events that pass `subscription`'s filters, from
    /// [`Subscription::from_id`](Subscription#structfield.from_id) on. See [`EventStream`] for
    /// what happens when the stream breaks.
    ///
    /// Opening the stream is bounded by the client's deadline.
    ///
    /// # Errors
    /// `NOT_EXIST` for a missing channel without [`Subscription::create`]; `INVALID_PARAM` for
    /// filters beyond the service's limits; [`SdkError::Unavailable`] when no agent is
    /// reachable.
    pub async fn subscribe(&self, subscription: &Subscription) -> Result<EventStream> {
        let what = format!("subscribe to channel '{}'", subscription.channel);
        check_channel(&what, &subscription.channel)?;
        let start = self.inner.current.load(Ordering::Relaxed);
        let (at, stream) = self
            .open_stream(&what, subscription, subscription.from_id, start, false)
            .await?;
        Ok(EventStream::new(
            self.clone(),
            what,
            subscription.clone(),
            at,
            stream,
        ))
    }

    /// Open a subscription stream from `from_id`, starting at endpoint `start` and failing over.
    /// With `persist` (a reconnection), a round that finds every endpoint unreachable is retried
    /// after a backoff until the deadline (an agent restarting); otherwise it fails at once,
    /// like any call.
    pub(super) async fn open_stream(
        &self,
        what: &str,
        subscription: &Subscription,
        from_id: u64,
        start: usize,
        persist: bool,
    ) -> Result<(usize, Streaming<pb::SubscribeItem>)> {
        let req = subscription.to_wire(from_id);
        self.inner
            .open_stream(what, self.timeout, start, persist, |mut grpc| {
                let req = req.clone();
                async move { Ok(grpc.subscribe(req).await?.into_inner()) }
            })
            .await
    }
}

/// [`classify`], with the `UNIMPLEMENTED` reason naming this service.
fn verdict(status: &tonic::Status, idempotency: Idempotency) -> Verdict {
    match classify(status, idempotency) {
        Verdict::NextEndpoint(_) if status.code() == tonic::Code::Unimplemented => {
            Verdict::NextEndpoint(
                "does not serve the event service (older agent? upgrade it)".into(),
            )
        }
        v => v,
    }
}

/// Refuse an empty channel name before sending.
fn check_channel(what: &str, channel: &str) -> Result<()> {
    if channel.is_empty() {
        return Err(SdkError::InvalidArgument(format!(
            "{what}: the channel name is empty; give a name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_core::AisError;
    use std::sync::Mutex;

    use nines_core::ErrorCode;
    use nines_proto::{
        evt::v1::{
            events_server::{Events as EventsService, EventsServer},
            subscribe_item::Item,
        },
        status_from_ais,
    };
    use tonic::codegen::tokio_stream::{self, wrappers::TcpListenerStream};

    fn wire_event(id: u64) -> pb::Event {
        pb::Event {
            channel: "ch".into(),
            id,
            // The lowest priority: ids come in order, so a resume starts after the last.
            priority: 3,
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

    fn item_event(id: u64) -> std::result::Result<pb::SubscribeItem, tonic::Status> {
        Ok(pb::SubscribeItem {
            item: Some(Item::Event(wire_event(id))),
        })
    }

    /// A fake agent. Each subscribe records its `from_id`; the first stream sends events
    /// 1..=3 and breaks; later ones send a lost notice, an event already delivered (3) and
    /// events 4..=5, then stay open.
    #[derive(Default)]
    struct Fake {
        subscribes: Mutex<Vec<u64>>,
        unlinked: bool,
        /// The limits it holds; `SetLimits` replaces them if `expected` matches.
        limits: Mutex<EventLimits>,
        /// Before each of this many `SetLimits`, "another operator" raises `channels_max`.
        races: Mutex<u32>,
    }

    type ItemStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = std::result::Result<pb::SubscribeItem, tonic::Status>>
                + Send,
        >,
    >;

    #[tonic::async_trait]
    impl EventsService for Fake {
        async fn create(
            &self,
            _r: tonic::Request<pb::CreateChannelRequest>,
        ) -> std::result::Result<tonic::Response<pb::CreateChannelResponse>, tonic::Status>
        {
            Ok(tonic::Response::new(pb::CreateChannelResponse {
                existed: true,
            }))
        }

        async fn unlink(
            &self,
            _r: tonic::Request<pb::UnlinkChannelRequest>,
        ) -> std::result::Result<tonic::Response<pb::UnlinkChannelResponse>, tonic::Status>
        {
            Err(status_from_ais(&AisError::new(
                ErrorCode::NotExist,
                "no channel 'nope'",
            )))
        }

        async fn publish(
            &self,
            r: tonic::Request<pb::PublishRequest>,
        ) -> std::result::Result<tonic::Response<pb::PublishResponse>, tonic::Status> {
            let r = r.into_inner();
            Ok(tonic::Response::new(pb::PublishResponse {
                event_id: 40 + u64::from(r.priority),
            }))
        }

        async fn clear_retention(
            &self,
            _r: tonic::Request<pb::ClearRetentionRequest>,
        ) -> std::result::Result<tonic::Response<pb::ClearRetentionResponse>, tonic::Status>
        {
            Ok(tonic::Response::new(pb::ClearRetentionResponse {}))
        }

        async fn channels(
            &self,
            _r: tonic::Request<pb::ChannelsRequest>,
        ) -> std::result::Result<tonic::Response<pb::ChannelsResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::ChannelsResponse {
                channels: vec![pb::ChannelInfo {
                    name: "ch".into(),
                    last_id: 5,
                    retained: 2,
                }],
            }))
        }

        async fn get_limits(
            &self,
            _r: tonic::Request<pb::GetLimitsRequest>,
        ) -> std::result::Result<tonic::Response<pb::GetLimitsResponse>, tonic::Status> {
            let limits = self.limits.lock().expect("lock");
            Ok(tonic::Response::new(pb::GetLimitsResponse {
                limits: Some(pb::Limits::from(&*limits)),
            }))
        }

        async fn set_limits(
            &self,
            r: tonic::Request<pb::SetLimitsRequest>,
        ) -> std::result::Result<tonic::Response<pb::SetLimitsResponse>, tonic::Status> {
            let r = r.into_inner();
            let mut limits = self.limits.lock().expect("lock");
            let mut races = self.races.lock().expect("lock");
            if *races > 0 {
                *races -= 1;
                limits.channels_max += 1;
            }
            let expected = EventLimits::try_from(r.expected.expect("expected")).expect("limits");
            if expected != *limits {
                return Err(status_from_ais(&AisError::new(
                    ErrorCode::BadOperation,
                    "they changed since they were read",
                )));
            }
            *limits = EventLimits::try_from(r.limits.expect("limits")).expect("limits");
            Ok(tonic::Response::new(pb::SetLimitsResponse {}))
        }

        type SubscribeStream = ItemStream;

        async fn subscribe(
            &self,
            r: tonic::Request<pb::SubscribeRequest>,
        ) -> std::result::Result<tonic::Response<ItemStream>, tonic::Status> {
            let from = r.into_inner().from_id;
            let first = {
                let mut s = self.subscribes.lock().expect("lock");
                s.push(from);
                s.len() == 1
            };
            if self.unlinked {
                let s = tokio_stream::StreamExt::chain(
                    tokio_stream::iter(vec![item_event(1)]),
                    tokio_stream::once(Err(status_from_ais(&AisError::new(
                        ErrorCode::NotExist,
                        "channel 'ch' was unlinked",
                    )))),
                );
                return Ok(tonic::Response::new(Box::pin(s)));
            }
            if first {
                let s = tokio_stream::StreamExt::chain(
                    tokio_stream::iter((1..=3).map(item_event)),
                    tokio_stream::once(Err(tonic::Status::unavailable("agent stopping"))),
                );
                return Ok(tonic::Response::new(Box::pin(s)));
            }
            let items = vec![
                Ok(pb::SubscribeItem {
                    item: Some(Item::Lost(2)),
                }),
                item_event(3),
                item_event(4),
                item_event(5),
            ];
            let s =
                tokio_stream::StreamExt::chain(tokio_stream::iter(items), tokio_stream::pending());
            Ok(tonic::Response::new(Box::pin(s)))
        }
    }

    async fn serve(fake: Fake) -> (String, Arc<Fake>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let fake = Arc::new(fake);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EventsServer::from_arc(fake.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (addr, fake)
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    async fn next_event(s: &mut EventStream) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("in time")
            .expect("an item")
            .expect("not an error")
    }

    #[tokio::test]
    async fn unary_calls_fail_over_and_convert() {
        let dead = format!("127.0.0.1:{}", closed_port());
        let (live, _) = serve(Fake::default()).await;
        let c = EventClient::connect(&[dead.as_str(), live.as_str()])
            .await
            .expect("one endpoint is live");
        assert!(c.create("ch").await.expect("create"), "existed");
        let id = c
            .publish(&Publish::new("ch", "x").priority(2))
            .await
            .expect("publish");
        assert_eq!(id, 42);
        assert_eq!(
            c.channels().await.expect("channels"),
            vec![ChannelInfo {
                name: "ch".into(),
                last_id: 5,
                retained: 2
            }]
        );
        c.clear_retention("ch", 1).await.expect("clear");
        let e = c.unlink("nope").await.expect_err("missing");
        assert_eq!(e.code(), Some(ErrorCode::NotExist));
        assert!(e.to_string().starts_with("unlink channel 'nope': "), "{e}");
        let bad = c.publish(&Publish::new("ch", "x").priority(4)).await;
        assert!(matches!(bad, Err(SdkError::InvalidArgument(_))), "{bad:?}");
        let empty = c.subscribe(&Subscription::new("")).await;
        assert!(matches!(empty, Err(SdkError::InvalidArgument(_))));
    }

    #[tokio::test]
    async fn limits_update_by_read_modify_write_without_undoing_a_concurrent_change() {
        let (addr, fake) = serve(Fake {
            races: Mutex::new(1),
            ..Fake::default()
        })
        .await;
        let c = EventClient::connect(&[addr.as_str()])
            .await
            .expect("connect");
        assert_eq!(c.limits().await.expect("limits"), EventLimits::default());
        let got = c
            .update_limits(|l| l.patterns_max = 32)
            .await
            .expect("update");
        assert_eq!(
            (got.patterns_max, got.channels_max),
            (32, 65),
            "both changes kept"
        );
        assert_eq!(*fake.limits.lock().expect("lock"), got);
        let same = c.update_limits(|_| {}).await.expect("no change");
        assert_eq!(same, got, "nothing to write");

        *fake.races.lock().expect("lock") = 10;
        let e = c
            .update_limits(|l| l.patterns_max = 40)
            .await
            .expect_err("the limits keep changing");
        assert_eq!(e.code(), Some(ErrorCode::BadOperation));
        assert!(e.to_string().starts_with("set the event limits: "), "{e}");
        assert_eq!(
            *fake.races.lock().expect("lock"),
            7,
            "3 rounds, then it gives up"
        );
    }

    #[tokio::test]
    async fn a_broken_stream_resumes_after_the_last_event_without_duplicates() {
        let (first, _) = serve(Fake::default()).await;
        let (second, fake2) = serve(Fake {
            // The second agent has already seen one subscribe: it serves the resume shape.
            subscribes: Mutex::new(vec![0]),
            ..Fake::default()
        })
        .await;
        let c = EventClient::connect(&[first.as_str(), second.as_str()])
            .await
            .expect("connect");
        let mut s = c
            .subscribe(&Subscription::new("ch").from_id(0))
            .await
            .expect("subscribe");
        let mut got = Vec::new();
        for _ in 0..3 {
            match next_event(&mut s).await {
                Delivery::Event(e) => got.push(e.id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(s.endpoint(), first);
        // The first agent breaks the stream: the second resumes after 3, reports the lost
        // count, and event 3 (sent again) is skipped.
        assert_eq!(next_event(&mut s).await, Delivery::Lost(2));
        for want in [4, 5] {
            match next_event(&mut s).await {
                Delivery::Event(e) => assert_eq!(e.id, want),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(s.endpoint(), second);
        assert_eq!(s.reconnects(), 1);
        assert_eq!((s.last_id(), s.resume_from()), (Some(5), 5));
        assert_eq!(*fake2.subscribes.lock().expect("lock"), [0, 3]);
        let quiet = tokio::time::timeout(Duration::from_millis(200), s.next()).await;
        assert!(quiet.is_err(), "no event, no item: {quiet:?}");
    }

    #[tokio::test]
    async fn a_final_answer_ends_the_stream() {
        let (addr, _) = serve(Fake {
            unlinked: true,
            ..Fake::default()
        })
        .await;
        let c = EventClient::connect(&[addr.as_str()])
            .await
            .expect("connect");
        let mut s = c.subscribe(&Subscription::new("ch")).await.expect("open");
        assert!(matches!(next_event(&mut s).await, Delivery::Event(_)));
        let e = s.next().await.expect("an item").expect_err("unlinked");
        assert_eq!(e.code(), Some(ErrorCode::NotExist));
        assert!(
            e.to_string().starts_with("subscribe to channel 'ch': "),
            "{e}"
        );
        assert!(s.next().await.is_none(), "ended");
    }

    #[tokio::test]
    async fn a_subscribe_with_no_agent_is_unavailable() {
        let dead = format!("127.0.0.1:{}", closed_port());
        let c = EventClient::connect_lazy(&[dead.as_str()], ClientConfig::default())
            .expect("well-formed");
        let e = c
            .subscribe(&Subscription::new("ch"))
            .await
            .expect_err("nothing listens");
        assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");
        assert!(e.is_retryable());
    }
}
