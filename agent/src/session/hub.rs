//! [`SessionHub`]: which component this agent expects in which process, the live session of each,
//! and the invocations in flight on them.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use nines_proto::amf::v1::{
    agent_message, invocation, AgentMessage, Belief, Invocation, InvocationResponse, LeaseGrant,
    Recovery, Registered,
};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch, Semaphore},
    time::{timeout_at, Instant},
};
use tonic::Status;

use super::{
    peer::{self, Peer},
    InvokeError,
};

/// Component sessions served at once (a session is one component process).
pub const SESSIONS_MAX: usize = 1_024;
/// Invocations in flight on one session; more wait (within their deadline) for a slot.
pub const INVOCATIONS_IN_FLIGHT_MAX: usize = 16;
/// Messages queued to one component before senders wait (an invocation's send counts against its
/// deadline). Larger than [`INVOCATIONS_IN_FLIGHT_MAX`] so the first message always fits.
const OUTBOUND_QUEUE_LEN: usize = 2 * INVOCATIONS_IN_FLIGHT_MAX;
/// Session events buffered per subscriber before a slow one sees `RecvError::Lagged`.
pub const SESSION_EVENTS_BUFFER_LEN: usize = 1_024;

/// What happens on the component sessions, for the node director.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A component registered (a session it had before, if any, was closed without a
    /// [`SessionEvent::Disconnected`]).
    Registered {
        /// The component.
        component: String,
        /// The pid of the process that registered (the expected process or one in its group).
        pid: u32,
    },
    /// The component's session ended (the process exited or closed it, the agent forgot the
    /// component, or the agent is shutting down). Invocations now fail with
    /// [`InvokeError::NotRegistered`].
    Disconnected {
        /// The component.
        component: String,
    },
    /// The component reported an error on itself (`saAmfComponentErrorReport`).
    ErrorReport {
        /// The component.
        component: String,
        /// The recovery it recommends.
        recommended: Recovery,
        /// Why, for people.
        reason: String,
    },
    /// The component confirmed (or denied) its health for a key (component-invoked healthcheck).
    HealthcheckConfirm {
        /// The component.
        component: String,
        /// The healthcheck key.
        key: String,
        /// Whether it is healthy.
        healthy: bool,
    },
    /// The component kicked its watchdog (the SDK coalesces kicks: a few of these per
    /// watchdog period, only while the component's work loop makes progress). See
    /// [`SessionHub::last_kick`].
    Kick {
        /// The component.
        component: String,
        /// Its kicks so far in this session (only grows within a session).
        count: u64,
    },
    /// What the component now believes it holds (after every change, and once after it
    /// registered).
    Belief {
        /// The component.
        component: String,
        /// What it reported.
        belief: Belief,
    },
}

/// A lease deadline as a reading of this host's `CLOCK_MONOTONIC` in ns (what components are
/// granted; 0 = none). The monotonic clock is read before tokio's, so the result is never later
/// than `deadline`.
pub fn mono_deadline_ns(deadline: Option<Instant>) -> u64 {
    let Some(deadline) = deadline else {
        return 0;
    };
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable on Linux");
    let now = Instant::now();
    let mono_ns = u64::try_from(mono.tv_sec())
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(mono.tv_nsec()).unwrap_or(0));
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    if deadline >= now {
        mono_ns.saturating_add(ns(deadline - now))
    } else {
        mono_ns.saturating_sub(ns(now - deadline))
    }
}

/// The agent's side of the component sessions: the node director says which process it started
/// for which component ([`SessionHub::expect`]), the process registers over the Unix socket
/// ([`SessionHub::serve`](crate::SessionHub::serve)), and the director sends it invocations
/// ([`SessionHub::invoke`]) and hears its events ([`SessionHub::subscribe`]).
///
/// Cheap to clone: clones share one hub.
#[derive(Debug, Clone)]
pub struct SessionHub {
    pub(crate) inner: Arc<Inner>,
}

/// What the hub's clones share.
#[derive(Debug)]
pub(crate) struct Inner {
    /// This node's name, told to components in `Registered`.
    node: String,
    /// The agent's lease, told to components in `Registered`.
    lease_ms: u64,
    /// How soon after its lease deadline a component must have stopped acting (the node lease's
    /// fence reaction), told to components in `Registered`.
    reaction_ms: u64,
    /// The components' lease deadline: the node lease's fence deadline while it is renewed
    /// ([`SessionHub::grant_lease`]); `None` before the first renewal. Sent to every session.
    lease: watch::Sender<Option<Instant>>,
    /// The agent's uid: components must run as it (or as root).
    own_uid: u32,
    /// Expectations and live sessions. A std mutex: never held across an await.
    state: Mutex<State>,
    /// Session events, to every subscriber.
    events: broadcast::Sender<SessionEvent>,
    /// Invocation ids: unique per hub, so a late answer never matches a newer invocation.
    next_invocation: AtomicU64,
    /// Session ids: tell a session from the one that replaced it.
    next_session: AtomicU64,
    /// Caps concurrent sessions ([`SESSIONS_MAX`]).
    pub(crate) sessions: Arc<Semaphore>,
    /// Set at shutdown: new registrations are refused.
    closing: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Component → the process the agent started it as, and its watchdog.
    expected: HashMap<String, Expected>,
    /// Component → its live session.
    live: HashMap<String, Live>,
}

/// What the node director told the hub about one component it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    /// The pid the agent started it as (its process group leader).
    pid: u32,
    /// Its watchdog period, told to it in `Registered` (0 = none).
    watchdog_ms: u64,
}

/// One registered session. Dropping it closes the session: the outbound stream ends once the
/// last sender is gone, the reader is told through `_close`, and waiting invokers are released.
#[derive(Debug)]
struct Live {
    id: u64,
    /// The expected pid it registered against.
    pid: u32,
    outbound: mpsc::Sender<Result<AgentMessage, Status>>,
    in_flight: Arc<Semaphore>,
    /// Invocation id → where its answer goes.
    pending: HashMap<u64, oneshot::Sender<InvocationResponse>>,
    /// When the session's highest kick count arrived, and that count (`None` before any).
    last_kick: Option<(Instant, u64)>,
    /// Dropped with the session: wakes its reader.
    _close: oneshot::Sender<()>,
    /// Dropped with the session: ends its lease-grant forwarder.
    _grants_stop: oneshot::Sender<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.in_flight.close();
    }
}

/// A registration the service hands to the stream it serves.
pub(crate) struct Registration {
    pub session: u64,
    pub outbound: mpsc::Receiver<Result<AgentMessage, Status>>,
    pub close: oneshot::Receiver<()>,
}

impl SessionHub {
    /// A hub for node `node`, whose components are told the agent's lease `lease_ms` and must
    /// stop acting within `reaction_ms` of their lease deadline. No component holds a lease
    /// until the first [`SessionHub::grant_lease`].
    pub fn new(node: String, lease_ms: u64, reaction_ms: u64) -> Self {
        let (events, _) = broadcast::channel(SESSION_EVENTS_BUFFER_LEN);
        Self {
            inner: Arc::new(Inner {
                node,
                lease_ms,
                reaction_ms,
                lease: watch::channel(None).0,
                own_uid: nix::unistd::getuid().as_raw(),
                state: Mutex::new(State::default()),
                events,
                next_invocation: AtomicU64::new(1),
                next_session: AtomicU64::new(1),
                sessions: Arc::new(Semaphore::new(SESSIONS_MAX)),
                closing: AtomicBool::new(false),
            }),
        }
    }

    /// The node director started `component` as process `pid` (the process group leader: the
    /// agent spawns components with `process_group(0)`). Only that process, or one in its group,
    /// may register as `component`. A live session registered against another pid (a previous
    /// instance) is closed. The component has no watchdog ([`SessionHub::expect_with`] with
    /// `watchdog_ms` 0).
    pub fn expect(&self, component: &str, pid: u32) {
        self.expect_with(component, pid, 0);
    }

    /// As [`SessionHub::expect`], for a component with a watchdog: it is told `watchdog_ms` when
    /// it registers, and its SDK then kicks a few times per `watchdog_ms` while its work loop
    /// makes progress ([`SessionEvent::Kick`], [`SessionHub::last_kick`]). `watchdog_ms` 0
    /// means no watchdog. The hub only records the kicks; deciding that a component missed its
    /// watchdog is the node director's.
    ///
    /// A new `watchdog_ms` reaches a component only when it next registers.
    pub fn expect_with(&self, component: &str, pid: u32, watchdog_ms: u64) {
        let mut st = self.inner.lock();
        st.expected
            .insert(component.to_string(), Expected { pid, watchdog_ms });
        if st.live.get(component).is_some_and(|l| l.pid != pid) {
            st.live.remove(component);
            drop(st);
            self.inner.emit(SessionEvent::Disconnected {
                component: component.to_string(),
            });
        }
    }

    /// The component is no longer instantiated here: forget its process and close its session
    /// (a [`SessionEvent::Disconnected`] follows if it had one).
    pub fn forget(&self, component: &str) {
        let mut st = self.inner.lock();
        st.expected.remove(component);
        let closed = st.live.remove(component).is_some();
        drop(st);
        if closed {
            self.inner.emit(SessionEvent::Disconnected {
                component: component.to_string(),
            });
        }
    }

    /// Grant every component session the lease deadline `deadline` (the node lease's fence
    /// deadline, each time that lease is renewed). A deadline never moves back.
    ///
    /// # Correctness
    /// Call only with a deadline the node's own lease holds (its fence deadline): a component
    /// may act as active until it, and the cluster's proof that a replacement starts only after
    /// the old active stopped rests on it (`nines_heartbeat::lease`, "The component's lease").
    pub fn grant_lease(&self, deadline: Instant) {
        self.inner.lease.send_if_modified(|d| {
            if d.is_some_and(|d| d >= deadline) {
                return false;
            }
            *d = Some(deadline);
            true
        });
    }

    /// Whether `component` has a live session.
    pub fn is_registered(&self, component: &str) -> bool {
        self.inner.lock().live.contains_key(component)
    }

    /// When `component`'s live session last raised its kick count, and the count then (its
    /// kicks so far in this session). `None` when it has no live session or has not kicked in
    /// it: a new session starts without kicks, so a watchdog deadline should run from the
    /// registration until the first kick.
    pub fn last_kick(&self, component: &str) -> Option<(Instant, u64)> {
        self.inner.lock().live.get(component)?.last_kick
    }

    /// The session events from now on.
    ///
    /// A broadcast receiver: each subscriber sees every event, in order per component. One that
    /// falls more than [`SESSION_EVENTS_BUFFER_LEN`] events behind gets `RecvError::Lagged` and
    /// must resynchronise (with [`SessionHub::is_registered`]) rather than assume nothing was
    /// missed.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Send one invocation to `component` and wait for its answer, all within `timeout`
    /// (including waiting for one of the session's [`INVOCATIONS_IN_FLIGHT_MAX`] slots).
    ///
    /// # Errors
    ///
    /// [`InvokeError::NotRegistered`] when it has no session, [`InvokeError::Timeout`] when the
    /// deadline passes (a late answer is dropped), [`InvokeError::Failed`] when the component
    /// answers with an error, [`InvokeError::SessionLost`] when the session closes first.
    pub async fn invoke(
        &self,
        component: &str,
        kind: invocation::Kind,
        timeout: Duration,
    ) -> Result<(), InvokeError> {
        let deadline = Instant::now() + timeout;
        let timed_out = || InvokeError::Timeout {
            component: component.to_string(),
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let lost = || InvokeError::SessionLost {
            component: component.to_string(),
        };
        let (session, outbound, in_flight) = {
            let st = self.inner.lock();
            let live = st
                .live
                .get(component)
                .ok_or_else(|| InvokeError::NotRegistered {
                    component: component.to_string(),
                })?;
            (live.id, live.outbound.clone(), live.in_flight.clone())
        };
        let _slot = match timeout_at(deadline, in_flight.acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_closed)) => return Err(lost()),
            Err(_) => return Err(timed_out()),
        };
        let id = self.inner.next_invocation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if !self.inner.add_pending(component, session, id, tx) {
            return Err(lost());
        }
        let _pending = PendingGuard {
            inner: &self.inner,
            component,
            session,
            id,
        };
        let msg = AgentMessage {
            msg: Some(agent_message::Msg::Invocation(Invocation {
                id,
                kind: Some(kind),
            })),
        };
        match timeout_at(deadline, outbound.send(Ok(msg))).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => return Err(lost()),
            Err(_) => return Err(timed_out()),
        }
        // Holding a sender would keep the stream open after the session closes.
        drop(outbound);
        match timeout_at(deadline, rx).await {
            Ok(Ok(r)) if r.ok => Ok(()),
            Ok(Ok(r)) => Err(InvokeError::Failed {
                component: component.to_string(),
                reason: if r.error.is_empty() {
                    "no reason given".to_string()
                } else {
                    r.error
                },
            }),
            Ok(Err(_closed)) => Err(lost()),
            Err(_) => Err(timed_out()),
        }
    }
}

/// Send each new lease deadline to one session until the session closes. Grants are coalesced:
/// a session whose queue is full gets the next one. Holds the session's queue only weakly, so a
/// closed session's stream still ends; ends with the session (`stopped`).
async fn forward_grants(
    mut grants: watch::Receiver<Option<Instant>>,
    outbound: mpsc::WeakSender<Result<AgentMessage, Status>>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            changed = grants.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let Some(outbound) = outbound.upgrade() else {
            return;
        };
        let deadline = *grants.borrow_and_update();
        let grant = AgentMessage {
            msg: Some(agent_message::Msg::Lease(LeaseGrant {
                deadline_mono_ns: mono_deadline_ns(deadline),
            })),
        };
        // Never waits: a full queue skips this grant (the next renewal brings a newer one),
        // and a waiting sender would hold a closed session's stream open.
        match outbound.try_send(Ok(grant)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Removes an invocation's pending entry however the invocation ends (answer, deadline, drop).
struct PendingGuard<'a> {
    inner: &'a Inner,
    component: &'a str,
    session: u64,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(live) = st.live.get_mut(self.component) {
            if live.id == self.session {
                live.pending.remove(&self.id);
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only maps of channels: still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn emit(&self, event: SessionEvent) {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.events.send(event);
    }

    fn add_pending(
        &self,
        component: &str,
        session: u64,
        id: u64,
        tx: oneshot::Sender<InvocationResponse>,
    ) -> bool {
        let mut st = self.lock();
        match st.live.get_mut(component) {
            Some(live) if live.id == session => {
                assert!(
                    live.pending.len() < INVOCATIONS_IN_FLIGHT_MAX,
                    "invocations in flight exceed their slots"
                );
                live.pending.insert(id, tx);
                true
            }
            _ => false,
        }
    }

    /// Accept `peer` as `component` (checked against the expected process) and make it the
    /// component's live session, replacing any other.
    pub(crate) fn register(&self, component: &str, peer: Peer) -> Result<Registration, Status> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "the agent is shutting down; the component will be restarted by the next agent",
            ));
        }
        let mut st = self.lock();
        let Some(Expected {
            pid: expected,
            watchdog_ms,
        }) = st.expected.get(component).copied()
        else {
            return Err(Status::not_found(format!(
                "no component {component} is instantiated on this node; components are started \
                 by the agent, which sets NINES_COMPONENT"
            )));
        };
        peer::check(component, expected, peer, self.own_uid, peer::process_group)?;
        let (tx, outbound) = mpsc::channel(OUTBOUND_QUEUE_LEN);
        let mut grants = self.lease.subscribe();
        let deadline = *grants.borrow_and_update();
        let registered = AgentMessage {
            msg: Some(agent_message::Msg::Registered(Registered {
                component: component.to_string(),
                node: self.node.clone(),
                lease_ms: self.lease_ms,
                watchdog_ms,
                lease_deadline_mono_ns: mono_deadline_ns(deadline),
                lease_reaction_ms: self.reaction_ms,
            })),
        };
        tx.try_send(Ok(registered))
            .expect("a new session's queue has room for its first message");
        let (grants_stop, stopped) = oneshot::channel();
        tokio::spawn(forward_grants(grants, tx.downgrade(), stopped));
        let (close_tx, close) = oneshot::channel();
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let live = Live {
            id: session,
            pid: expected,
            outbound: tx,
            in_flight: Arc::new(Semaphore::new(INVOCATIONS_IN_FLIGHT_MAX)),
            pending: HashMap::new(),
            last_kick: None,
            _close: close_tx,
            _grants_stop: grants_stop,
        };
        if let Some(old) = st.live.insert(component.to_string(), live) {
            tracing::info!(component, old = old.id, new = session, "session replaced");
        }
        drop(st);
        let pid = peer.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        tracing::info!(component, pid, session, "component registered");
        self.emit(SessionEvent::Registered {
            component: component.to_string(),
            pid,
        });
        Ok(Registration {
            session,
            outbound,
            close,
        })
    }

    /// An answer from `component`'s session `session`. An answer nobody waits for (its
    /// invocation timed out) is dropped.
    pub(crate) fn deliver(&self, component: &str, session: u64, r: InvocationResponse) {
        let waiter = {
            let mut st = self.lock();
            match st.live.get_mut(component) {
                Some(live) if live.id == session => live.pending.remove(&r.invocation),
                _ => None,
            }
        };
        match waiter {
            Some(tx) => {
                let _ = tx.send(r);
            }
            None => tracing::debug!(component, id = r.invocation, "late or unknown answer"),
        }
    }

    /// A kick from `component`'s session `session`, with its count so far: recorded and
    /// announced when the count grew (a count that did not grow, or from a replaced session, is
    /// dropped: the SDK's counts only grow).
    pub(crate) fn kick(&self, component: &str, session: u64, count: u64) {
        let grew = {
            let mut st = self.lock();
            match st.live.get_mut(component) {
                Some(live) if live.id == session => {
                    let grew = live.last_kick.is_none_or(|(_, last)| count > last);
                    if grew {
                        live.last_kick = Some((Instant::now(), count));
                    }
                    grew
                }
                _ => false,
            }
        };
        if grew {
            self.emit(SessionEvent::Kick {
                component: component.to_string(),
                count,
            });
        } else {
            tracing::debug!(component, session, count, "stale kick dropped");
        }
    }

    /// A belief report from `component`'s session `session`: announced to the director (one from
    /// a replaced session is dropped).
    pub(crate) fn belief(&self, component: &str, session: u64, belief: Belief) {
        let current = self
            .lock()
            .live
            .get(component)
            .is_some_and(|live| live.id == session);
        if current {
            self.emit(SessionEvent::Belief {
                component: component.to_string(),
                belief,
            });
        }
    }

    /// Session `session` of `component` ended: if it is still the live one, remove it and say so.
    pub(crate) fn end(&self, component: &str, session: u64) {
        let removed = {
            let mut st = self.lock();
            match st.live.get(component) {
                Some(live) if live.id == session => st.live.remove(component),
                _ => None,
            }
        };
        if removed.is_some() {
            drop(removed);
            tracing::info!(component, session, "component disconnected");
            self.emit(SessionEvent::Disconnected {
                component: component.to_string(),
            });
        }
    }

    /// Refuse new registrations (`true`, at shutdown) or accept them again (`false`).
    pub(crate) fn set_closing(&self, closing: bool) {
        self.closing.store(closing, Ordering::Release);
    }

    /// Close every session (at shutdown), so their streams end and the server can drain.
    pub(crate) fn close_all(&self) {
        let closed: Vec<String> = {
            let mut st = self.lock();
            st.live.drain().map(|(c, _)| c).collect()
        };
        for component in closed {
            self.emit(SessionEvent::Disconnected { component });
        }
    }
}
