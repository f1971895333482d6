//! [`MembershipClient`]: the cluster's membership view, a watch of its changes, and drain.
//!
//! Membership is tracked like AIS CLM: every agent knows the members, each one's agreed state
//! (`up`, `down`, `left`, as committed by the leader; `suspect` is the answering agent's own
//! failure detector's opinion) and a view number that grows by one with every committed change.
//!
//! - [`MembershipClient::members`]: the current [`View`].
//! - [`MembershipClient::watch`]: a [`MembershipWatch`], which delivers the current view (a
//!   [`ChangeKind::Snapshot`] event) and then one [`MembershipEvent`] per change. When the stream
//!   breaks (the agent stops, the connection drops) it reconnects, to another endpoint first, and
//!   resumes with a fresh `Snapshot`: changes that happened while it was reconnecting are not
//!   delivered one by one but summarized by that snapshot's view.
//! - [`MembershipClient::drain`]: mark a node as leaving (planned); it is then reported `left`,
//!   never as a failure.
//!
//! Endpoints, deadlines and failover follow the same rules as the
//! [`CheckpointClient`](crate::CheckpointClient): see [`ClientConfig`].

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use nines_core::limits;
use nines_proto::membership::v1::{self as pb, membership_client::MembershipClient as Grpc};
use tonic::{
    transport::{Channel, Endpoint},
    Streaming,
};

use crate::{
    call::{base_endpoint, timeout_ms, Inner, Service},
    client::ClientConfig,
    error::{Result, SdkError},
    retry::{classify, Idempotency, Verdict},
};

/// HTTP/2 keep-alive pings on membership connections: a watch is silent between changes, so a
/// dead peer (power loss, cable pulled) is only noticed by pings. Interval and answer deadline.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A member's state as the answering agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Agreed up: heartbeating, part of the cluster.
    Up,
    /// The cluster still holds it up, but the answering agent's own failure detector has missed
    /// its heartbeats (it may be about to be declared down, or only this agent is cut off).
    /// Also what a state unknown to this SDK (from a newer agent) is reported as.
    Suspect,
    /// Agreed down: failed (missed heartbeats past the timeout), not planned.
    Down,
    /// Left on purpose (drained or removed): not a failure.
    Left,
}

impl MemberState {
    /// The lowercase name used in output and JSON: `up`, `suspect`, `down`, `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }

    /// From the wire value; unspecified or unknown values (a newer agent) become
    /// [`MemberState::Suspect`]: the SDK cannot vouch that such a member is up.
    fn from_wire(v: i32) -> Self {
        match pb::MemberState::try_from(v) {
            Ok(pb::MemberState::Up) => MemberState::Up,
            Ok(pb::MemberState::Down) => MemberState::Down,
            Ok(pb::MemberState::Left) => MemberState::Left,
            Ok(pb::MemberState::Suspect | pb::MemberState::Unspecified) | Err(_) => {
                MemberState::Suspect
            }
        }
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Its name (e.g. `n2`).
    pub name: String,
    /// Its agent's `host:port`.
    pub addr: String,
    /// Its state, as the answering agent sees it.
    pub state: MemberState,
    /// Age, in milliseconds, of the last heartbeat the answering agent received from it (0 for
    /// the answering agent itself); `None` if it never heard from it.
    pub last_heartbeat_ms: Option<u64>,
}

impl From<pb::MemberView> for Member {
    fn from(m: pb::MemberView) -> Self {
        Member {
            id: m.id,
            name: m.name,
            addr: m.addr,
            state: MemberState::from_wire(m.state),
            last_heartbeat_ms: u64::try_from(m.last_heartbeat_ms).ok(),
        }
    }
}

/// A membership view: the members and their states at one view number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// The view number: grows by one with every committed membership change.
    pub view: u64,
    /// The members, as the answering agent lists them.
    pub members: Vec<Member>,
    /// Whether the answering agent considers itself fenced (cut off from a quorum past its
    /// lease): its view may then be out of date.
    pub fenced: bool,
}

impl View {
    /// Member `id`, if it is in the view.
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The members in state `state`.
    pub fn in_state(&self, state: MemberState) -> impl Iterator<Item = &Member> + '_ {
        self.members.iter().filter(move |m| m.state == state)
    }
}

impl From<pb::MembershipView> for View {
    fn from(v: pb::MembershipView) -> Self {
        View {
            view: v.view,
            members: v.members.into_iter().map(Member::from).collect(),
            fenced: v.fenced,
        }
    }
}

/// What a [`MembershipEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// No single change: the whole current view. The first event of a watch, and the first
    /// after every reconnection (then it summarizes whatever changed in between). Also what a
    /// change kind unknown to this SDK (from a newer agent) is reported as: the event's view is
    /// still the truth.
    Snapshot,
    /// A node joined the cluster.
    Joined,
    /// A node left on purpose (drained or removed).
    Left,
    /// A node was declared down (failed).
    Down,
    /// A node that was down is up again.
    Up,
}

impl ChangeKind {
    /// The lowercase name used in output and JSON: `snapshot`, `joined`, `left`, `down`, `up`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Snapshot => "snapshot",
            ChangeKind::Joined => "joined",
            ChangeKind::Left => "left",
            ChangeKind::Down => "down",
            ChangeKind::Up => "up",
        }
    }

    fn from_wire(v: i32) -> Self {
        match pb::ChangeKind::try_from(v) {
            Ok(pb::ChangeKind::Joined) => ChangeKind::Joined,
            Ok(pb::ChangeKind::Left) => ChangeKind::Left,
            Ok(pb::ChangeKind::Down) => ChangeKind::Down,
            Ok(pb::ChangeKind::Up) => ChangeKind::Up,
            Ok(pb::ChangeKind::Snapshot | pb::ChangeKind::Unspecified) | Err(_) => {
                ChangeKind::Snapshot
            }
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a [`MembershipWatch`]: a change, or a snapshot of the whole view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipEvent {
    /// The view number after the change.
    pub view: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// The node that changed (`None` for a [`ChangeKind::Snapshot`]).
    pub node: Option<u64>,
    /// The whole view after the change.
    pub current: View,
}

impl From<pb::MembershipEvent> for MembershipEvent {
    fn from(e: pb::MembershipEvent) -> Self {
        let kind = ChangeKind::from_wire(e.kind);
        let node = match kind {
            ChangeKind::Snapshot => None,
            _ => Some(e.node).filter(|&n| n != 0),
        };
        let current = e.current.map_or_else(
            || View {
                view: e.view,
                ..View::default()
            },
            View::from,
        );
        MembershipEvent {
            view: e.view,
            kind,
            node,
            current,
        }
    }
}

/// A connection to the membership service of a nines cluster, through any of its agents.
///
/// Cheap to clone (clones share connections). Every call has a deadline
/// ([`ClientConfig::timeout`]); calls go to the endpoint that answered last and fail over, in the
/// order given, to the others when it is unreachable; `TRY_AGAIN` is retried until the deadline.
///
/// ```no_run
/// use nines_sdk::{ChangeKind, MembershipClient};
///
/// # async fn demo() -> Result<(), nines_sdk::SdkError> {
/// let members = MembershipClient::connect(&["127.0.0.1:7101", "127.0.0.1:7102"]).await?;
/// let view = members.members().await?;
/// println!("view {}: {} members", view.view, view.members.len());
/// let mut watch = members.watch().await?;
/// while let Some(event) = watch.next().await {
///     let event = event?;
///     match event.kind {
///         ChangeKind::Snapshot => println!("view {}: {:?}", event.view, event.current),
///         kind => println!("view {}: node {:?} {kind}", event.view, event.node),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MembershipClient {
    inner: Arc<Inner<Grpc<Channel>>>,
    timeout: Duration,
}

impl Service for Grpc<Channel> {
    const NAME: &'static str = "membership service";

    fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint> {
        endpoint(addr, config)
    }

    fn over(channel: Channel) -> Self {
        Grpc::new(channel)
            .max_decoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
    }

    fn verdict(status: &tonic::Status, idempotency: Idempotency) -> Verdict {
        verdict(status, idempotency)
    }
}

crate::call::client_basics!(MembershipClient);

impl MembershipClient {
    /// The current membership view, as the answering agent sees it.
    ///
    /// # Errors
    /// [`SdkError::Unavailable`] when no agent is reachable; `TIMEOUT` past the deadline.
    pub async fn members(&self) -> Result<View> {
        let v = self
            .inner
            .call(
                self.timeout,
                "read the membership view",
                Idempotency::Idempotent,
                |_left| pb::MembersRequest {},
                |mut c, r| async move { c.members(r).await },
            )
            .await?;
        Ok(View::from(v))
    }

    /// Mark node `node` as leaving (a planned departure): from then on it is reported `left`,
    /// never as a failure. Returns the view after the change.
    ///
    /// The service gets what is left of the deadline to commit the change. A drain whose answer
    /// is lost is not re-sent: it fails with `TIMEOUT` (read the view back with
    /// [`MembershipClient::members`]).
    ///
    /// # Errors
    /// `NOT_EXIST` for a node that is not a member; `TRY_AGAIN` (after retries) when the cluster
    /// has no leader; [`SdkError::InvalidArgument`] for node 0.
    pub async fn drain(&self, node: u64) -> Result<View> {
        if node == 0 {
            return Err(SdkError::InvalidArgument(
                "drain node 0: node ids start at 1; give a member's id (see `nines members`)"
                    .into(),
            ));
        }
        let what = format!("drain node {node}");
        let v = self
            .inner
            .call(
                self.timeout,
                &what,
                Idempotency::Mutating,
                |left| pb::DrainRequest {
                    node,
                    timeout_ms: timeout_ms(left),
                },
                |mut c, r| async move { c.drain(r).await },
            )
            .await?;
        Ok(View::from(v))
    }

    /// Watch the membership: the first event is a [`ChangeKind::Snapshot`] of the current view,
    /// then one event per change, in view order. See [`MembershipWatch`] for what happens when
    /// the stream breaks.
    ///
    /// Opening the stream (up to its first event) is bounded by the client's deadline.
    ///
    /// # Errors
    /// [`SdkError::Unavailable`] when no agent is reachable; `TIMEOUT` when none answers within
    /// the deadline.
    pub async fn watch(&self) -> Result<MembershipWatch> {
        let start = self.inner.current.load(Ordering::Relaxed);
        let (at, stream, first) = self.open_watch(start, false).await?;
        Ok(MembershipWatch {
            client: self.clone(),
            at,
            stream: Some(stream),
            pending: Some(first),
            ended: false,
            reconnects: 0,
        })
    }

    /// Open a watch stream and read its first event, starting at endpoint `start` and failing
    /// over. With `persist` (a reconnection), a round that finds every endpoint unreachable is
    /// retried after a backoff until the deadline (an agent restarting, leadership moving);
    /// otherwise it fails at once, like any call.
    async fn open_watch(
        &self,
        start: usize,
        persist: bool,
    ) -> Result<(usize, Streaming<pb::MembershipEvent>, MembershipEvent)> {
        let (i, (stream, first)) = self
            .inner
            .open_stream(
                "watch the membership",
                self.timeout,
                start,
                persist,
                |mut grpc| async move {
                    let mut stream = grpc.watch(pb::WatchRequest {}).await?.into_inner();
                    match stream.message().await? {
                        Some(first) => Ok((stream, first)),
                        None => Err(tonic::Status::unavailable(
                            "the agent ended the watch before its first event",
                        )),
                    }
                },
            )
            .await?;
        Ok((i, stream, MembershipEvent::from(first)))
    }
}

/// A watch of the membership, from [`MembershipClient::watch`]: call
/// [`MembershipWatch::next`] in a loop.
///
/// The first event is a [`ChangeKind::Snapshot`] of the current view; then one event per
/// change. When the stream breaks (the agent stops, the connection drops or goes silent past the
/// keep-alive), the watch reconnects — to the next endpoint first, then the others, the broken
/// one last — and resumes with a fresh `Snapshot` of the view there. **Changes made while it was
/// reconnecting are not delivered one by one: that snapshot summarizes them.** A consumer that
/// keeps state should therefore treat every `Snapshot` as "replace everything". Views come from
/// the agent that answers; after a reconnection that agent may be a little behind (the snapshot
/// may then carry a lower view number than the last event), and it catches up with the
/// following events.
///
/// Dropping the watch ends it.
#[derive(Debug)]
pub struct MembershipWatch {
    client: MembershipClient,
    /// Index of the endpoint the stream is open on.
    at: usize,
    stream: Option<Streaming<pb::MembershipEvent>>,
    /// The first event of a just-opened stream, read while opening it.
    pending: Option<MembershipEvent>,
    ended: bool,
    reconnects: u64,
}

impl MembershipWatch {
    /// The next event; waits as long as nothing changes.
    ///
    /// - `Some(Ok(event))`: a change, or a `Snapshot` (first, and after each reconnection).
    /// - `Some(Err(e))` with `e.is_retryable()`: the stream broke and no agent could be reached
    ///   within the client's deadline; calling `next` again tries again.
    /// - `Some(Err(e))` otherwise: an answer retrying cannot fix (say, every agent refuses the
    ///   watch); the watch has ended and every later call returns `None`.
    pub async fn next(&mut self) -> Option<Result<MembershipEvent>> {
        if self.ended {
            return None;
        }
        if let Some(first) = self.pending.take() {
            return Some(Ok(first));
        }
        if let Some(stream) = self.stream.as_mut() {
            match stream.message().await {
                Ok(Some(e)) => return Some(Ok(MembershipEvent::from(e))),
                Ok(None) => tracing::debug!(
                    endpoint = %self.endpoint(),
                    "the agent ended the membership watch; reconnecting"
                ),
                Err(status) => tracing::debug!(
                    endpoint = %self.endpoint(),
                    %status,
                    "the membership watch broke; reconnecting"
                ),
            }
            self.stream = None;
            self.reconnects += 1;
        }
        // Start with the next endpoint: the broken one is tried last.
        let n = self.client.inner.targets.len();
        let start = (self.at + 1) % n;
        match self.client.open_watch(start, true).await {
            Ok((at, stream, first)) => {
                self.at = at;
                self.stream = Some(stream);
                Some(Ok(first))
            }
            Err(e) => {
                if !e.is_retryable() {
                    self.ended = true;
                }
                Some(Err(e))
            }
        }
    }

    /// The endpoint the watch is (or was last) streaming from.
    pub fn endpoint(&self) -> &str {
        &self.client.inner.targets[self.at].addr
    }

    /// How many times the stream broke and the watch reconnected (or tried to).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }
}

/// [`classify`], with the `UNIMPLEMENTED` reason naming this service.
fn verdict(status: &tonic::Status, idempotency: Idempotency) -> Verdict {
    match classify(status, idempotency) {
        Verdict::NextEndpoint(_) if status.code() == tonic::Code::Unimplemented => {
            Verdict::NextEndpoint(
                "does not serve the membership service (older agent? upgrade it)".into(),
            )
        }
        v => v,
    }
}

/// The tonic endpoint for `host:port`: the client's connect timeout, and keep-alive pings so a
/// silent watch notices a dead peer.
fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint> {
    Ok(base_endpoint(addr, config)?
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use nines_proto::membership::v1::membership_server::{
        Membership as MembershipService, MembershipServer,
    };
    use tonic::codegen::tokio_stream::{self, wrappers::TcpListenerStream};

    fn wire_member(id: u64, state: pb::MemberState, hb: i64) -> pb::MemberView {
        pb::MemberView {
            id,
            name: format!("n{id}"),
            addr: format!("127.0.0.1:710{id}"),
            state: state as i32,
            last_heartbeat_ms: hb,
        }
    }

    fn wire_view(view: u64, fenced: bool) -> pb::MembershipView {
        pb::MembershipView {
            view,
            members: vec![
                wire_member(1, pb::MemberState::Up, 0),
                wire_member(2, pb::MemberState::Down, 4_200),
                wire_member(3, pb::MemberState::Left, -1),
            ],
            fenced,
        }
    }

    #[test]
    fn views_convert_with_states_and_heartbeat_ages() {
        let v = View::from(wire_view(7, true));
        assert_eq!(v.view, 7);
        assert!(v.fenced);
        assert_eq!(
            v.members[1],
            Member {
                id: 2,
                name: "n2".into(),
                addr: "127.0.0.1:7102".into(),
                state: MemberState::Down,
                last_heartbeat_ms: Some(4_200),
            }
        );
        assert_eq!(v.members[0].last_heartbeat_ms, Some(0), "itself");
        assert_eq!(v.members[2].last_heartbeat_ms, None, "never heard from");
        assert_eq!(v.member(3).map(|m| m.state), Some(MemberState::Left));
        assert!(v.member(9).is_none());
        assert_eq!(v.in_state(MemberState::Up).count(), 1);
        assert_eq!(View::from(pb::MembershipView::default()), View::default());
    }

    #[test]
    fn member_states_map_and_unknown_ones_are_suspect() {
        for (wire, state, name) in [
            (pb::MemberState::Up as i32, MemberState::Up, "up"),
            (
                pb::MemberState::Suspect as i32,
                MemberState::Suspect,
                "suspect",
            ),
            (pb::MemberState::Down as i32, MemberState::Down, "down"),
            (pb::MemberState::Left as i32, MemberState::Left, "left"),
            (
                pb::MemberState::Unspecified as i32,
                MemberState::Suspect,
                "suspect",
            ),
            (99, MemberState::Suspect, "suspect"),
        ] {
            assert_eq!(MemberState::from_wire(wire), state, "{wire}");
            assert_eq!(state.to_string(), name);
        }
    }

    #[test]
    fn events_convert_and_snapshots_name_no_node() {
        let e = MembershipEvent::from(pb::MembershipEvent {
            view: 8,
            kind: pb::ChangeKind::Down as i32,
            node: 2,
            current: Some(wire_view(8, false)),
        });
        assert_eq!(e.view, 8);
        assert_eq!(e.kind, ChangeKind::Down);
        assert_eq!(e.node, Some(2));
        assert_eq!(e.current.members.len(), 3);
        for (wire, kind, name) in [
            (
                pb::ChangeKind::Snapshot as i32,
                ChangeKind::Snapshot,
                "snapshot",
            ),
            (pb::ChangeKind::Joined as i32, ChangeKind::Joined, "joined"),
            (pb::ChangeKind::Left as i32, ChangeKind::Left, "left"),
            (pb::ChangeKind::Down as i32, ChangeKind::Down, "down"),
            (pb::ChangeKind::Up as i32, ChangeKind::Up, "up"),
            (
                pb::ChangeKind::Unspecified as i32,
                ChangeKind::Snapshot,
                "snapshot",
            ),
            (42, ChangeKind::Snapshot, "snapshot"),
        ] {
            assert_eq!(ChangeKind::from_wire(wire), kind, "{wire}");
            assert_eq!(kind.to_string(), name);
        }
        let snap = MembershipEvent::from(pb::MembershipEvent {
            view: 3,
            kind: pb::ChangeKind::Snapshot as i32,
            node: 5,
            current: None,
        });
        assert_eq!(snap.node, None);
        assert_eq!(
            snap.current.view, 3,
            "a missing view keeps the event's number"
        );
        assert!(snap.current.members.is_empty());
        let joined_without_node = MembershipEvent::from(pb::MembershipEvent {
            view: 4,
            kind: pb::ChangeKind::Joined as i32,
            node: 0,
            current: None,
        });
        assert_eq!(joined_without_node.node, None);
    }

    /// A fake agent: answers Members and Drain from a fixed view; a watch sends a snapshot, then
    /// `changes` events, then breaks (or, with `hold`, stays open).
    struct Fake {
        view: u64,
        changes: u64,
        hold: bool,
        drained: Mutex<Vec<u64>>,
    }

    type EventStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = std::result::Result<pb::MembershipEvent, tonic::Status>>
                + Send,
        >,
    >;

    #[tonic::async_trait]
    impl MembershipService for Fake {
        async fn beat(
            &self,
            _r: tonic::Request<pb::BeatRequest>,
        ) -> std::result::Result<tonic::Response<pb::BeatAck>, tonic::Status> {
            Err(tonic::Status::unimplemented("beat"))
        }

        async fn members(
            &self,
            _r: tonic::Request<pb::MembersRequest>,
        ) -> std::result::Result<tonic::Response<pb::MembershipView>, tonic::Status> {
            Ok(tonic::Response::new(wire_view(self.view, false)))
        }

        type WatchStream = EventStream;

        async fn watch(
            &self,
            _r: tonic::Request<pb::WatchRequest>,
        ) -> std::result::Result<tonic::Response<EventStream>, tonic::Status> {
            let mut items = vec![Ok(pb::MembershipEvent {
                view: self.view,
                kind: pb::ChangeKind::Snapshot as i32,
                node: 0,
                current: Some(wire_view(self.view, false)),
            })];
            for k in 1..=self.changes {
                items.push(Ok(pb::MembershipEvent {
                    view: self.view + k,
                    kind: pb::ChangeKind::Down as i32,
                    node: 2,
                    current: Some(wire_view(self.view + k, false)),
                }));
            }
            let s = tokio_stream::iter(items);
            if self.hold {
                Ok(tonic::Response::new(Box::pin(
                    tokio_stream::StreamExt::chain(s, tokio_stream::pending()),
                )))
            } else {
                Ok(tonic::Response::new(Box::pin(
                    tokio_stream::StreamExt::chain(
                        s,
                        tokio_stream::once(Err(tonic::Status::unavailable("agent stopping"))),
                    ),
                )))
            }
        }

        async fn drain(
            &self,
            r: tonic::Request<pb::DrainRequest>,
        ) -> std::result::Result<tonic::Response<pb::MembershipView>, tonic::Status> {
            let r = r.into_inner();
            assert!(r.timeout_ms > 0, "the deadline is passed on");
            self.drained.lock().expect("lock").push(r.node);
            let mut v = wire_view(self.view + 1, false);
            v.members[1].state = pb::MemberState::Left as i32;
            Ok(tonic::Response::new(v))
        }

        async fn revoke_lease(
            &self,
            _: tonic::Request<pb::RevokeLeaseRequest>,
        ) -> std::result::Result<tonic::Response<pb::RevokeLeaseReply>, tonic::Status> {
            Err(tonic::Status::unimplemented("agent to agent only"))
        }
    }

    async fn serve(fake: Fake) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MembershipServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }

    fn fake(view: u64, changes: u64, hold: bool) -> Fake {
        Fake {
            view,
            changes,
            hold,
            drained: Mutex::new(Vec::new()),
        }
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn members_and_drain_fail_over_past_a_dead_endpoint() {
        let dead = format!("127.0.0.1:{}", closed_port());
        let live = serve(fake(5, 0, true)).await;
        let c = MembershipClient::connect(&[dead.as_str(), live.as_str()])
            .await
            .expect("one endpoint is live");
        let v = c.members().await.expect("members");
        assert_eq!(v.view, 5);
        assert_eq!(v.members.len(), 3);
        let v = c.drain(2).await.expect("drain");
        assert_eq!(v.view, 6);
        assert_eq!(v.member(2).map(|m| m.state), Some(MemberState::Left));
        assert!(matches!(
            c.drain(0).await,
            Err(SdkError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn a_broken_watch_resumes_elsewhere_with_a_snapshot() {
        let first = serve(fake(10, 2, false)).await;
        let second = serve(fake(20, 0, true)).await;
        let c = MembershipClient::connect(&[first.as_str(), second.as_str()])
            .await
            .expect("connect");
        let mut w = c.watch().await.expect("watch");
        let e = w.next().await.expect("event").expect("snapshot");
        assert_eq!((e.kind, e.view, e.node), (ChangeKind::Snapshot, 10, None));
        assert_eq!(w.endpoint(), first);
        for view in [11, 12] {
            let e = w.next().await.expect("event").expect("change");
            assert_eq!((e.kind, e.view, e.node), (ChangeKind::Down, view, Some(2)));
        }
        // The first agent breaks the stream: the watch resumes on the second with a snapshot.
        let e = w.next().await.expect("event").expect("resumed");
        assert_eq!((e.kind, e.view), (ChangeKind::Snapshot, 20));
        assert_eq!(w.endpoint(), second);
        assert_eq!(w.reconnects(), 1);
        let quiet = tokio::time::timeout(Duration::from_millis(200), w.next()).await;
        assert!(quiet.is_err(), "no change, no event: {quiet:?}");
    }

    #[tokio::test]
    async fn a_watch_with_no_agent_is_unavailable_and_names_the_operation() {
        let dead = format!("127.0.0.1:{}", closed_port());
        let c = MembershipClient::connect_lazy(&[dead.as_str()], ClientConfig::default())
            .expect("well-formed");
        let e = c.watch().await.expect_err("nothing listens");
        assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().starts_with("watch the membership: "), "{e}");
        assert!(e.is_retryable());
        let e = c.members().await.expect_err("nothing listens");
        assert!(e.to_string().contains("NINES_ENDPOINTS"), "{e}");
    }
}
