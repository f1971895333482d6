//! Planned leave and planned stop as switchovers (promise 1): before a node leaves the cluster
//! (`nines admin node drain`) or its agent stops (SIGTERM), its SUs are taken out of service the
//! graceful way — an AMF node lock, under which each active is quiesced before its standby is
//! made active — and only once the node holds no assignment does it leave or stop its
//! components. Leaving first would make the standbys active at once (a node that left is lost
//! to the AMF) while the old actives still ran.

use std::{path::PathBuf, time::Duration};

use nines_amf::state::{AdminOp, AmfCommand, AmfResponse, TargetKind};
use nines_consensus::{Proposer, ReadMode};
use nines_core::{
    shutdown::{Shutdown, ShutdownSignal},
    ErrorCode, NodeId,
};
use tokio::time::Instant;

use crate::{AgentState, Command, Response};

/// Pause between looks at the node's assignments, and between retries of a refused lock.
const POLL_MS: u64 = 50;
/// How long a requested stop (SIGTERM) may spend switching the node's assignments over before
/// it stops anyway (its components are then stopped and the cluster fails them over after the
/// lease, as for a lost node).
const PLANNED_STOP_SWITCHOVER_MS: u64 = 5_000;
/// The file in the data dir saying a planned stop locked this node: the next start unlocks it.
const LOCKED_BY_STOP_FILE: &str = "amf-locked-by-stop";
/// How long the next start keeps trying to unlock the node a planned stop locked.
const UNLOCK_AFTER_STOP_MS: u64 = 60_000;

/// How a switchover ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Switched {
    /// This call locked the node, and it now holds no assignment (someone must unlock it when
    /// it is back).
    Locked,
    /// There is nothing to switch over: no AMF model, or the node is not in it.
    NotInModel,
}

/// Why a switchover did not complete, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SwitchError {
    /// The node still holds assignments at the deadline (it stays locked; nothing was moved
    /// abruptly).
    Timeout(String),
    /// The cluster could not be read or written (no leader, cut off).
    Unavailable(String),
    /// The cluster refused the lock.
    Refused(String),
}

impl SwitchError {
    /// The gRPC status to answer with.
    pub(crate) fn status(&self, what: &str) -> tonic::Status {
        match self {
            SwitchError::Timeout(m) => tonic::Status::deadline_exceeded(format!("{what}: {m}")),
            SwitchError::Unavailable(m) => tonic::Status::unavailable(format!("{what}: {m}")),
            SwitchError::Refused(m) => tonic::Status::failed_precondition(format!("{what}: {m}")),
        }
    }
}

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchError::Timeout(m) | SwitchError::Unavailable(m) | SwitchError::Refused(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Take node `node`'s SUs out of service gracefully and wait, until `deadline`, for it to hold
/// no assignment and no directive. A node that is not a member has nothing to switch over
/// ([`Switched::NotInModel`]; its leave is refused with NOT_EXIST).
///
/// # Errors
/// [`SwitchError`]: the node still holds assignments at the deadline, or the cluster refused or
/// could not take the lock.
pub(crate) async fn switch_over(
    proposer: &Proposer<AgentState>,
    node: NodeId,
    deadline: Instant,
) -> Result<Switched, SwitchError> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let name = proposer
        .read(ReadMode::Linearizable, left(), move |s: &AgentState| {
            s.members.get(&node).map(|p| p.name.clone())
        })
        .await
        .map_err(|e| SwitchError::Unavailable(format!("cannot read the membership: {e}")))?;
    let Some(name) = name else {
        return Ok(Switched::NotInModel);
    };
    loop {
        let lock = Command::Amf(AmfCommand::Admin {
            op: AdminOp::Lock,
            kind: TargetKind::Node,
            target: name.clone(),
        });
        match proposer.propose(&lock, left()).await {
            Ok(Response::Amf(AmfResponse::Refused(e))) if e.code == ErrorCode::NotExist => {
                return Ok(Switched::NotInModel);
            }
            Ok(Response::Amf(AmfResponse::Refused(e))) if e.code == ErrorCode::TryAgain => {
                // An SG is busy with another batch: wait for it, within the deadline.
                if Instant::now() + Duration::from_millis(POLL_MS) >= deadline {
                    return Err(SwitchError::Timeout(format!(
                        "cannot lock node {name} in time: {}",
                        e.message
                    )));
                }
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
            Ok(Response::Amf(AmfResponse::Refused(e))) => {
                return Err(SwitchError::Refused(format!(
                    "the cluster refused to lock node {name}: {}",
                    e.message
                )));
            }
            Ok(_) => break,
            Err(e) => {
                return Err(SwitchError::Unavailable(format!(
                    "cannot lock node {name}: {e}"
                )))
            }
        }
    }
    tracing::info!(node = %name, "switchover: node locked, waiting for its assignments to move");
    loop {
        let n = name.clone();
        let held = proposer
            .read(ReadMode::Linearizable, left(), move |s: &AgentState| {
                let v = s.amf.node_view(&n);
                v.held.len() + v.directives.len()
            })
            .await
            .map_err(|e| {
                SwitchError::Unavailable(format!("cannot read node {name}'s assignments: {e}"))
            })?;
        if held == 0 {
            tracing::info!(node = %name, "switchover: the node holds no assignment");
            return Ok(Switched::Locked);
        }
        if Instant::now() + Duration::from_millis(POLL_MS) >= deadline {
            return Err(SwitchError::Timeout(format!(
                "node {name} still holds {held} assignments or directives at the deadline; it \
                 stays locked and nothing was moved abruptly: retry the drain, or unlock it with \
                 `nines admin unlock node {name}`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// A requested stop (SIGTERM, Ctrl-C) is a switchover: once `requested` fires, lock this node's
/// SUs out of service gracefully if it holds any assignment, wait (bounded) for them to move,
/// then fire `stop_all`, which stops the components and the agent. A lock taken here is
/// recorded in the data dir, and the next start lifts it ([`unlock_after_planned_stop`]).
pub(crate) async fn planned_stop(
    mut requested: ShutdownSignal,
    proposer: Proposer<AgentState>,
    node: NodeId,
    data_dir: PathBuf,
    stop_all: Shutdown,
) {
    requested.wait().await;
    let deadline = Instant::now() + Duration::from_millis(PLANNED_STOP_SWITCHOVER_MS);
    if holds_assignments(&proposer, node).await {
        tracing::info!("stop requested: switching this node's assignments over first");
        match switch_over(&proposer, node, deadline).await {
            Ok(Switched::Locked) => {
                if let Err(e) = std::fs::write(data_dir.join(LOCKED_BY_STOP_FILE), b"") {
                    tracing::warn!(
                        "cannot record the planned stop's lock ({e}); unlock this node with \
                         `nines admin unlock node` once it is back"
                    );
                }
            }
            Ok(_) => {}
            Err(why) => tracing::warn!(
                "stopping without a switchover: {why}; the components are stopped now and the \
                 cluster fails them over once this node's lease has expired"
            ),
        }
    }
    stop_all.trigger();
}

/// Whether the local replica shows node `node` holding an assignment (a stale read: a node that
/// holds nothing needs no switchover, and a stop must not wait on a cluster without quorum).
async fn holds_assignments(proposer: &Proposer<AgentState>, node: NodeId) -> bool {
    let read = proposer
        .read(
            ReadMode::Stale,
            Duration::from_millis(POLL_MS * 10),
            move |s: &AgentState| {
                let name = s.members.get(&node)?.name.clone();
                let v = s.amf.node_view(&name);
                Some(v.held.len() + v.directives.len())
            },
        )
        .await;
    matches!(read, Ok(Some(n)) if n > 0)
}

/// If a planned stop locked this node ([`planned_stop`]), unlock it now that the agent is back,
/// retrying (bounded) until the cluster takes it; then forget the lock.
pub(crate) async fn unlock_after_planned_stop(
    proposer: Proposer<AgentState>,
    node: NodeId,
    data_dir: PathBuf,
    mut shutdown: ShutdownSignal,
) {
    let marker = data_dir.join(LOCKED_BY_STOP_FILE);
    if !marker.exists() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(UNLOCK_AFTER_STOP_MS);
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let name = proposer
            .read(ReadMode::Linearizable, left, move |s: &AgentState| {
                s.members.get(&node).map(|p| p.name.clone())
            })
            .await;
        if let Ok(Some(name)) = name {
            let unlock = Command::Amf(AmfCommand::Admin {
                op: AdminOp::Unlock,
                kind: TargetKind::Node,
                target: name.clone(),
            });
            match proposer.propose(&unlock, left).await {
                Ok(Response::Amf(AmfResponse::Refused(e))) if e.code == ErrorCode::TryAgain => {}
                Ok(r) => {
                    tracing::info!(node = %name, ?r, "unlocked after the planned stop");
                    let _ = std::fs::remove_file(&marker);
                    return;
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_millis(POLL_MS * 4)) => {}
        }
    }
    tracing::warn!(
        "could not unlock this node after its planned stop within {UNLOCK_AFTER_STOP_MS} ms; \
         unlock it with `nines admin unlock node`"
    );
}
