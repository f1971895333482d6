//! Runtime records the AMF state machine keeps next to the policies' SG runtimes.

use serde::{Deserialize, Serialize};

use crate::policy::MsgKind;

/// A restart or failover counter over a probation window (AIS escalation levels).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Events counted in the current window.
    pub count: u32,
    /// When the window started (ms, proposer's clock).
    pub window_start_ms: u64,
}

impl Counter {
    /// Count one more event at `now_ms`. True while the budget allows it (fewer than `max`
    /// events in the window before this one); false means escalate. A window older than
    /// `prob_ms` starts over.
    pub fn allow(&mut self, now_ms: u64, max: u32, prob_ms: u64) -> bool {
        if self.count == 0 || now_ms.saturating_sub(self.window_start_ms) > prob_ms {
            self.count = 0;
            self.window_start_ms = now_ms;
        }
        if self.count >= max {
            return false;
        }
        self.count += 1;
        true
    }

    /// Forget (admin repaired).
    pub fn reset(&mut self) {
        *self = Counter::default();
    }
}

/// A component's presence as the cluster knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// Not running.
    Uninstantiated,
    /// Being started (or restarted) by its node director.
    Instantiating,
    /// Running and registered.
    Instantiated,
    /// Could not be started; needs an operator's `repaired`.
    InstantiationFailed,
    /// Could not be cleaned up; its node fails fast.
    TerminationFailed,
}

impl Presence {
    /// The status table's word.
    pub fn name(self) -> &'static str {
        match self {
            Presence::Uninstantiated => "uninstantiated",
            Presence::Instantiating => "instantiating",
            Presence::Instantiated => "instantiated",
            Presence::InstantiationFailed => "instantiation_failed",
            Presence::TerminationFailed => "termination_failed",
        }
    }
}

/// One component's runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompRuntime {
    /// Its SU.
    pub su: String,
    /// Its node.
    pub node: String,
    /// Grows each time the cluster wants a fresh process (restart, cleanup after a failure,
    /// node lost); the node director replaces a process of an older incarnation.
    pub incarnation: u64,
    /// Presence of the current incarnation.
    pub presence: Presence,
    /// Its process id, while instantiated.
    pub pid: Option<u32>,
    /// Restarts of this component (all time), for the status table.
    pub restarts: u32,
}

/// Why the policy holds an SU out of service (what must happen for it to come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutReason {
    /// Its node was lost or failed over: back with `NodeUp` once re-instantiated.
    NodeLost,
    /// It faulted: back with `SuRepaired` once re-instantiated (auto-repair) or on `repaired`.
    Faulted,
}

/// One SU's runtime next to the policy's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuRuntime {
    /// Every component of the current incarnations is instantiated.
    pub instantiated: bool,
    /// Why the policy holds it out, if it does.
    pub out: Option<OutReason>,
    /// Component restarts in the window (level 0).
    pub comp_restarts: Counter,
    /// SU restarts in the window (level 1).
    pub su_restarts: Counter,
}

/// One node's runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRuntime {
    /// The membership view says it is up.
    pub up: bool,
    /// SU / component failovers in the window (level 2).
    pub failovers: Counter,
}

/// One assignment change addressed to a node director, until it is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Its id (acks name it).
    pub id: u64,
    /// The SG.
    pub sg: String,
    /// The SU addressed.
    pub su: String,
    /// The SU's node.
    pub node: String,
    /// The SI.
    pub si: String,
    /// The change.
    pub kind: MsgKind,
    /// The fencing epoch the change carries.
    pub epoch: u64,
    /// When it was decided (ms, proposer's clock).
    pub issued_at_ms: u64,
}

/// One line of the AMF's history (failovers, restarts, admin operations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Log index of the command that caused it.
    pub index: u64,
    /// When (ms since the Unix epoch): the director's clock for detections and confirmations,
    /// the proposer's otherwise.
    pub time_ms: u64,
    /// What kind of event.
    pub kind: HistoryKind,
    /// The entity it is about.
    pub entity: String,
    /// Details for people.
    pub text: String,
    /// For a completed failover: when it was detected, decided and confirmed.
    pub timeline: Option<Timeline>,
}

/// A failover's timeline (ms since the Unix epoch; detection and confirmation on the node
/// directors' clocks, the decision on the proposer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The failure was seen (process exit, failed callback, node declared down).
    pub detected_ms: u64,
    /// The cluster decided the recovery (the command's time stamp).
    pub decided_ms: u64,
    /// The new active confirmed its assignment.
    pub confirmed_ms: u64,
}

/// A failover in progress in one SG, until its new active confirms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverTrack {
    /// What failed.
    pub cause: String,
    /// When it was seen.
    pub detected_ms: u64,
    /// When the recovery was decided.
    pub decided_ms: u64,
}

/// Kinds of history entries (drills and benchmarks look for these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryKind {
    /// A component failure was detected by its node director.
    Detected,
    /// The cluster decided a recovery (restart, failover).
    Decided,
    /// A directive was sent to a node director.
    Assigned,
    /// A node director confirmed a directive.
    Confirmed,
    /// A node was lost or came back.
    Node,
    /// An admin operation.
    Admin,
    /// A model was applied.
    Model,
    /// An SI's unassigned alarm was raised or cleared.
    Alarm,
    /// A failover completed: the new active confirmed (the entry carries the timeline).
    Failover,
}
