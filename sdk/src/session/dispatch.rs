//! The session's two tasks: the dispatcher reads the agent's messages and routes each invocation
//! (and lease grant); the ordered worker runs CSI set / remove / terminate one at a time, in
//! arrival order, and the quiesce when the lease runs out. Healthchecks run beside them (a few at
//! once), so a long CSI set does not starve them.
//!
//! After every change of what the component holds, the worker tells the agent (`Belief`), so the
//! agent can compare it with the agreed state and correct it.
//!
//! When the session breaks, the dispatcher tells the callbacks at once and queues the end of the
//! lease behind the ordered work, so the SDK's own CSI set to QUIESCED never runs beside an
//! application's CSI callback. Invocations still queued then are dropped: their answers cannot
//! reach the agent, and a CSI set run after the agent is gone would act unsupervised.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use nines_proto::amf::v1::{
    agent_message, component_message, invocation::Kind, AgentMessage, Belief, BelievedCsi,
    ComponentMessage, Invocation, InvocationResponse,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};
use tonic::Streaming;

use super::{
    lease::{self, Lease},
    Callbacks, CsiSet, HaState,
};
use crate::SdkError;

/// Invocations queued to the ordered worker before the dispatcher stops reading (the agent bounds
/// its invocations in flight well below this).
pub(crate) const ORDERED_QUEUE_LEN: usize = 64;
/// Healthchecks run at once; more are answered with an error at once.
const HEALTHCHECKS_IN_FLIGHT_MAX: usize = 8;

/// The ordered worker's work, in the order it is done.
#[derive(Debug)]
pub(crate) enum Ordered {
    /// A CSI set / remove or terminate from the agent.
    Invocation(Invocation),
    /// The session broke without a terminate: at `lease_expires`, quiesce what is held active
    /// and tell the callbacks the component is no longer supervised.
    AgentLost {
        /// When the last lease the agent granted runs out.
        lease_expires: Instant,
    },
    /// The lease ran out while the component held a CSI active (from the guard thread):
    /// quiesce, then confirm expiry `expiry` to the guard.
    LeaseExpired {
        /// The guard's count of expiries handled.
        expiry: u64,
    },
}

/// What the session's tasks and its handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// This component's name.
    pub component: String,
    /// (si, csi) → the HA state and epoch the callbacks last accepted.
    assignments: Mutex<BTreeMap<(String, String), (HaState, u64)>>,
    /// SI → the highest epoch the callbacks accepted for it: an ACTIVE set at a lower epoch is a
    /// stale directive and is refused. One entry per SI assigned to this component (bounded by
    /// the model).
    highest_epoch: Mutex<BTreeMap<String, u64>>,
    /// The epoch of an ACTIVE or QUIESCING CSI set whose callback is running (the component may
    /// already write under it).
    taking: Mutex<Option<u64>>,
    /// `None` while the session is open; then `Ok` (terminated) or why it broke.
    pub closed: watch::Sender<Option<Result<(), SdkError>>>,
}

impl Shared {
    pub(crate) fn new(component: String) -> Self {
        Self {
            component,
            assignments: Mutex::new(BTreeMap::new()),
            highest_epoch: Mutex::new(BTreeMap::new()),
            taking: Mutex::new(None),
            closed: watch::channel(None).0,
        }
    }

    fn assignments_mut(&self) -> MutexGuard<'_, BTreeMap<(String, String), (HaState, u64)>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.assignments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every assignment, ordered by (si, csi).
    pub(crate) fn assignments(&self) -> Vec<(String, String, HaState, u64)> {
        self.assignments_mut()
            .iter()
            .map(|((si, csi), (state, epoch))| (si.clone(), csi.clone(), *state, *epoch))
            .collect()
    }

    /// Whether the component may act under fencing `epoch`: it holds a CSI active or quiescing
    /// at that epoch, or is taking one on (its CSI set callback is running).
    pub(crate) fn acts_under(&self, epoch: u64) -> bool {
        let taking = *self.taking.lock().unwrap_or_else(|p| p.into_inner());
        taking == Some(epoch)
            || self.assignments_mut().values().any(|(state, e)| {
                *e == epoch && matches!(state, HaState::Active | HaState::Quiescing)
            })
    }

    /// The highest epoch accepted for `si` (0 before any).
    fn highest_epoch(&self, si: &str) -> u64 {
        let highest = self.highest_epoch.lock().unwrap_or_else(|p| p.into_inner());
        highest.get(si).copied().unwrap_or(0)
    }

    /// Record `si`/`csi` as held in `state` at `epoch` (tests of the lease rules).
    #[cfg(test)]
    pub(crate) fn accept_for_test(&self, si: &str, csi: &str, state: HaState, epoch: u64) {
        self.accept((si.to_string(), csi.to_string()), state, epoch);
    }

    /// The callbacks accepted `state` at `epoch` for `key` (si, csi).
    fn accept(&self, key: (String, String), state: HaState, epoch: u64) {
        {
            let mut highest = self.highest_epoch.lock().unwrap_or_else(|p| p.into_inner());
            let e = highest.entry(key.0.clone()).or_insert(0);
            *e = (*e).max(epoch);
        }
        self.assignments_mut().insert(key, (state, epoch));
    }

    /// Record that `si`/`csi` is now in `state` (its epoch unchanged), if it is still held.
    pub(crate) fn set_state(&self, si: &str, csi: &str, state: HaState) {
        let mut assignments = self.assignments_mut();
        if let Some(held) = assignments.get_mut(&(si.to_string(), csi.to_string())) {
            held.0 = state;
        }
    }

    /// Whether the agent still supervises the component: `false` once the session broke without
    /// a terminate.
    pub(crate) fn supervised(&self) -> bool {
        !matches!(&*self.closed.borrow(), Some(Err(_)))
    }

    /// The highest epoch among `si`'s CSIs.
    pub(crate) fn epoch_for(&self, si: &str) -> Option<u64> {
        self.assignments_mut()
            .iter()
            .filter(|((s, _), _)| s == si)
            .map(|(_, (_, epoch))| *epoch)
            .max()
    }

    /// Settle how the session ended, unless it already has: the first outcome stands.
    fn close(&self, outcome: Result<(), SdkError>) -> bool {
        self.closed.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            *c = Some(outcome);
            true
        })
    }
}

/// Read the agent's messages until the stream ends or breaks; then, unless the component was
/// terminated, settle the session as broken, tell the callbacks, and queue the expiry of the
/// agent's lease (`lease_ms` from now) to the ordered worker.
pub(crate) async fn dispatch<C: Callbacks>(
    callbacks: Arc<C>,
    shared: Arc<Shared>,
    mut inbound: Streaming<AgentMessage>,
    ordered: mpsc::Sender<Ordered>,
    outbound: mpsc::Sender<ComponentMessage>,
    lease: Arc<Lease>,
) {
    let mut healthchecks = JoinSet::new();
    let why = loop {
        let msg = tokio::select! {
            biased;
            Some(_) = healthchecks.join_next(), if !healthchecks.is_empty() => continue,
            m = inbound.message() => m,
        };
        let invocation = match msg {
            Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::Invocation(i)),
            })) => i,
            Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::Lease(grant)),
            })) => {
                if lease.renew(grant.deadline_mono_ns) {
                    tracing::info!(component = %shared.component, "lease from the agent renewed");
                    send_belief(&outbound, &shared, &lease).await;
                }
                continue;
            }
            Ok(Some(other)) => {
                tracing::warn!(?other, "unexpected message from the agent: ignored");
                continue;
            }
            Ok(None) => break "the agent closed the session".to_string(),
            Err(status) => break format!("the session to the agent broke: {}", status.message()),
        };
        match invocation.kind {
            Some(Kind::Healthcheck(h)) if healthchecks.len() >= HEALTHCHECKS_IN_FLIGHT_MAX => {
                let busy = format!(
                    "{HEALTHCHECKS_IN_FLIGHT_MAX} healthchecks are already running; key {} not \
                     checked",
                    h.key
                );
                respond(&outbound, invocation.id, Err(busy)).await;
            }
            Some(Kind::Healthcheck(h)) => {
                let (callbacks, outbound) = (callbacks.clone(), outbound.clone());
                healthchecks.spawn(async move {
                    let r = callbacks.healthcheck(&h.key).await;
                    respond(&outbound, invocation.id, r).await;
                });
            }
            _ => {
                if ordered.send(Ordered::Invocation(invocation)).await.is_err() {
                    break "the session's worker stopped".to_string();
                }
            }
        }
    };
    let lost = SdkError::Unavailable(format!(
        "component {}: {why}; the agent may have stopped or restarted. The component keeps its \
         assignments only for the agent's lease: stop acting active, and reconnect when the \
         agent is back (or exit and let it restart the component)",
        shared.component
    ));
    if shared.close(Err(lost)) {
        let left_ns = lease.deadline_ns().saturating_sub(lease::mono_now_ns());
        let lease_expires = Instant::now() + Duration::from_nanos(left_ns);
        let lease_left_ms = left_ns / 1_000_000;
        tracing::warn!(component = %shared.component, %why, lease_left_ms, "agent lost");
        callbacks.agent_lost();
        if ordered
            .send(Ordered::AgentLost { lease_expires })
            .await
            .is_err()
        {
            tracing::error!(component = %shared.component, "the session's worker stopped");
        }
    }
}

/// Run CSI set / remove / terminate invocations one at a time, in order, until the dispatcher
/// stops; after a break, the lease's expiry.
pub(crate) async fn run_ordered<C: Callbacks>(
    callbacks: Arc<C>,
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Ordered>,
    outbound: mpsc::Sender<ComponentMessage>,
    lease: Arc<Lease>,
) {
    send_belief(&outbound, &shared, &lease).await;
    while let Some(work) = queue.recv().await {
        let invocation = match work {
            Ordered::LeaseExpired { expiry } => {
                if lease::quiesce_held(&*callbacks, &shared, lease.quiesce_bound()).await {
                    lease.confirm(expiry);
                }
                send_belief(&outbound, &shared, &lease).await;
                continue;
            }
            Ordered::Invocation(i) if !shared.supervised() => {
                tracing::warn!(
                    component = %shared.component, id = i.id,
                    "invocation dropped: the session to the agent broke before it ran"
                );
                continue;
            }
            Ordered::Invocation(i) => i,
            Ordered::AgentLost { lease_expires } => {
                lease::expire(&*callbacks, &shared, &lease, lease_expires).await;
                continue;
            }
        };
        let result = match invocation.kind {
            Some(Kind::CsiSet(wire)) => csi_set(&*callbacks, &shared, &lease, wire).await,
            Some(Kind::CsiRemove(r)) => {
                let result = callbacks.csi_remove(&r.si, &r.csi).await;
                if result.is_ok() {
                    shared.assignments_mut().remove(&(r.si, r.csi));
                }
                result
            }
            Some(Kind::Terminate(_)) => {
                let result = callbacks.terminate().await;
                if result.is_ok() {
                    // Settled before answering: the agent may close the session on the answer.
                    shared.close(Ok(()));
                    // The component released everything: nothing is left for the lease to stop.
                    lease.stop();
                }
                result
            }
            Some(Kind::Healthcheck(h)) => callbacks.healthcheck(&h.key).await,
            None => Err("the invocation has no kind this SDK knows; upgrade the SDK".to_string()),
        };
        let changed = result.is_ok();
        respond(&outbound, invocation.id, result).await;
        if changed {
            send_belief(&outbound, &shared, &lease).await;
        }
    }
}

/// How long an ACTIVE CSI set waits for a lease renewal when the lease has run out (a grant is
/// normally a heartbeat interval away; an agent that cannot renew is fenced).
const ACTIVE_WAITS_FOR_LEASE_MS: u64 = 1_000;

async fn csi_set<C: Callbacks>(
    callbacks: &C,
    shared: &Shared,
    lease: &Lease,
    wire: nines_proto::amf::v1::CsiSet,
) -> Result<(), String> {
    let set = CsiSet::from_proto(wire)?;
    let (key, state, epoch) = ((set.si.clone(), set.csi.clone()), set.ha_state, set.epoch);
    if state == HaState::Active {
        let highest = shared.highest_epoch(&set.si);
        if epoch < highest {
            tracing::error!(
                component = %shared.component, si = %set.si, epoch, highest,
                "stale ACTIVE directive refused"
            );
            return Err(format!(
                "stale directive refused: ACTIVE for SI {} at epoch {epoch}, but this component \
                 already accepted epoch {highest} for it",
                set.si
            ));
        }
        let wait = Duration::from_millis(ACTIVE_WAITS_FOR_LEASE_MS);
        if !lease.wait_valid(wait).await {
            return Err(format!(
                "cannot take ACTIVE for SI {}: this component's lease from the agent has run out \
                 and was not renewed within {ACTIVE_WAITS_FOR_LEASE_MS} ms (is the node fenced?)",
                set.si
            ));
        }
    }
    let taking = matches!(state, HaState::Active | HaState::Quiescing);
    if taking {
        *shared.taking.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch);
    }
    let result = callbacks.csi_set(set).await;
    if result.is_ok() {
        shared.accept(key, state, epoch);
    }
    if taking {
        *shared.taking.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    result
}

/// Tell the agent what the component now holds.
async fn send_belief(outbound: &mpsc::Sender<ComponentMessage>, shared: &Shared, lease: &Lease) {
    let csis = shared
        .assignments()
        .into_iter()
        .map(|(si, csi, state, epoch)| BelievedCsi {
            si,
            csi,
            ha_state: state.to_proto() as i32,
            epoch,
        })
        .collect();
    let msg = ComponentMessage {
        msg: Some(component_message::Msg::Belief(Belief {
            csis,
            lease_expired: !lease.is_valid(),
        })),
    };
    if outbound.send(msg).await.is_err() {
        tracing::debug!("belief not sent: the session is closed");
    }
}

/// Answer invocation `id`. An answer that cannot be sent is dropped: the session is gone, and the
/// dispatcher reports that.
async fn respond(outbound: &mpsc::Sender<ComponentMessage>, id: u64, result: Result<(), String>) {
    let (ok, error) = match result {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e),
    };
    let msg = ComponentMessage {
        msg: Some(component_message::Msg::Response(InvocationResponse {
            invocation: id,
            ok,
            error,
        })),
    };
    if outbound.send(msg).await.is_err() {
        tracing::debug!(id, "answer not sent: the session is closed");
    }
}
