//! The replicated commands of the AMF and their outcomes.

use nines_core::AisError;
use serde::{Deserialize, Serialize};

use crate::model::Model;

/// A recovery, as a component recommends it or a component's config sets it (AIS
/// `SaAmfRecommendedRecoveryT`, the subset nines acts on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Recovery {
    /// No recommendation: use the component's configured recovery.
    NoRecommendation,
    /// Restart the component in place (escalates to SU restart, then failover).
    ComponentRestart,
    /// Move the SU's SIs to the standby (graceful for the SU's healthy components).
    ComponentFailover,
    /// Move every SU of the node away gracefully.
    NodeSwitchover,
    /// Move every SU of the node away abruptly.
    NodeFailover,
    /// Node failover, and the node's components are killed at once.
    NodeFailfast,
}

/// What a node director observed about one of its components.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceReport {
    /// The process runs and registered its session.
    Instantiated {
        /// Its process id.
        pid: u32,
    },
    /// It could not be instantiated (command failed, no registration within the timeout).
    InstantiationFailed {
        /// Why.
        reason: String,
    },
    /// It was terminated (or cleaned up) as asked.
    Uninstantiated,
    /// Its cleanup failed: the node must fail fast.
    TerminationFailed {
        /// Why.
        reason: String,
    },
}

/// Admin operations (AIS `saAmfAdmin*`), as the CLI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// Take out of service (gracefully move its SIs away).
    Lock,
    /// Back into service.
    Unlock,
    /// Terminate a locked SU's components.
    LockInstantiation,
    /// Allow a locked SU to be instantiated again.
    UnlockInstantiation,
    /// Like lock, but letting the components finish work (QUIESCING).
    Shutdown,
    /// Swap an SI's active and standby.
    SiSwap,
    /// Restart a component or an SU in place.
    Restart,
    /// Clear an SU's or node's fault and counters.
    Repaired,
}

impl AdminOp {
    /// The CLI's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            AdminOp::Lock => "lock",
            AdminOp::Unlock => "unlock",
            AdminOp::LockInstantiation => "lock-instantiation",
            AdminOp::UnlockInstantiation => "unlock-instantiation",
            AdminOp::Shutdown => "shutdown",
            AdminOp::SiSwap => "si-swap",
            AdminOp::Restart => "restart",
            AdminOp::Repaired => "repaired",
        }
    }

    /// Parse the CLI's name.
    pub fn parse(s: &str) -> Option<AdminOp> {
        Some(match s {
            "lock" => AdminOp::Lock,
            "unlock" => AdminOp::Unlock,
            "lock-instantiation" | "lock-in" => AdminOp::LockInstantiation,
            "unlock-instantiation" | "unlock-in" => AdminOp::UnlockInstantiation,
            "shutdown" => AdminOp::Shutdown,
            "si-swap" | "swap" => AdminOp::SiSwap,
            "restart" => AdminOp::Restart,
            "repaired" => AdminOp::Repaired,
            _ => return None,
        })
    }
}

/// What an admin operation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetKind {
    /// A service unit.
    Su,
    /// A node (every SU on it).
    Node,
    /// A service instance.
    Si,
    /// A component.
    Component,
}

impl TargetKind {
    /// The CLI's name.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Su => "su",
            TargetKind::Node => "node",
            TargetKind::Si => "si",
            TargetKind::Component => "component",
        }
    }

    /// Parse the CLI's name.
    pub fn parse(s: &str) -> Option<TargetKind> {
        Some(match s {
            "su" => TargetKind::Su,
            "node" => TargetKind::Node,
            "si" => TargetKind::Si,
            "component" | "comp" => TargetKind::Component,
            _ => return None,
        })
    }
}

/// A replicated AMF command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AmfCommand {
    /// Put a (validated) model in force. The same model again is a no-op.
    ApplyModel {
        /// The model.
        model: Box<Model>,
    },
    /// A node director's report on a component's presence.
    Presence {
        /// The component.
        component: String,
        /// The incarnation the report is about (stale reports are ignored).
        incarnation: u64,
        /// What happened.
        report: PresenceReport,
    },
    /// A component failed (process exit, failed callback, healthcheck, error report).
    ComponentError {
        /// The component.
        component: String,
        /// The incarnation that failed (stale reports are ignored).
        incarnation: u64,
        /// The recovery recommended (NoRecommendation = the configured one).
        recommended: Recovery,
        /// What happened, for people and the history.
        reason: String,
        /// When the director saw it (ms since the Unix epoch, its wall clock).
        detected_at_ms: u64,
    },
    /// A node director carried out (or failed) a directive.
    Ack {
        /// The directive's id.
        id: u64,
        /// Whether every component took it.
        ok: bool,
        /// Why not, when not ok.
        reason: String,
        /// When the last component confirmed (ms since the Unix epoch, director's clock).
        done_at_ms: u64,
    },
    /// An admin operation.
    Admin {
        /// The operation.
        op: AdminOp,
        /// What kind of entity it targets.
        kind: TargetKind,
        /// The entity's name.
        target: String,
    },
}

/// The outcome of an AMF command. Refusals are values (the caller maps them to AIS errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AmfResponse {
    /// A model was applied; what changed (empty: the same model was already in force).
    ModelApplied {
        /// One line per change.
        changes: Vec<String>,
    },
    /// Accepted.
    Done {
        /// What was done, for people.
        message: String,
    },
    /// The command referred to something that is gone or stale; nothing changed.
    Ignored,
    /// Refused; nothing changed.
    Refused(AisError),
}

impl From<crate::model::Recovery> for Recovery {
    fn from(r: crate::model::Recovery) -> Self {
        use crate::model::Recovery as M;
        match r {
            M::ComponentRestart => Recovery::ComponentRestart,
            M::ComponentFailover => Recovery::ComponentFailover,
            M::NodeSwitchover => Recovery::NodeSwitchover,
            M::NodeFailover => Recovery::NodeFailover,
            M::NodeFailfast => Recovery::NodeFailfast,
        }
    }
}
