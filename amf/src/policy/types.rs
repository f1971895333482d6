//! The contract between the redundancy-model policies and their callers (the AMF state machine
//! and the vector harness). Plain data; serde so the runtime can live in replicated state.

use serde::{Deserialize, Serialize};

/// AIS redundancy models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedundancyModel {
    /// 2N: one active SU, one standby SU, the rest spares.
    #[serde(rename = "2N")]
    TwoN,
    /// N+M (later issue).
    #[serde(rename = "NpM")]
    NPlusM,
    /// N-Way (later issue).
    #[serde(rename = "NWay")]
    NWay,
    /// N-Way-Active (later issue).
    #[serde(rename = "NWayActive")]
    NWayActive,
    /// No redundancy: one SI per SU, no standby.
    #[serde(rename = "NoRed")]
    NoRed,
}

/// One SU as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuConfig {
    /// SU name.
    pub name: String,
    /// Node the SU lives on (node name).
    pub node: String,
    /// Rank: smaller is more preferred; 0 means least preferred.
    pub rank: u32,
    /// `saAmfSUFailover`.
    pub failover: bool,
    /// Pre-instantiable SU.
    pub preinstantiable: bool,
}

/// One SI-ranked-SU entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedSu {
    /// The SU.
    pub su: String,
    /// Its rank for this SI.
    pub rank: u32,
}

/// One SI as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiConfig {
    /// SI name.
    pub name: String,
    /// Rank: smaller is more preferred; 0 means least preferred.
    pub rank: u32,
    /// N-Way-Active preferred actives.
    pub pref_active: u32,
    /// N-Way preferred standbys.
    pub pref_standby: u32,
    /// SI-ranked SUs.
    pub ranked_su: Vec<RankedSu>,
}

/// An SI-SI dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The SI that must be active first.
    pub sponsor: String,
    /// The SI that depends on it.
    pub dependent: String,
    /// Tolerance time before the dependent is unassigned when the sponsor loses its active.
    pub tolerance_ms: u64,
}

/// Everything the policy needs to know about one service group's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgConfig {
    /// SG name.
    pub name: String,
    /// The redundancy model.
    pub model: RedundancyModel,
    /// `saAmfSGAutoAdjust`.
    pub auto_adjust: bool,
    /// Auto-adjust probation, 0 = immediate.
    pub auto_adjust_prob_ms: u64,
    /// `saAmfSGAutoRepair`.
    pub auto_repair: bool,
    /// N+M active SU budget.
    pub pref_active_sus: u32,
    /// N+M standby SU budget.
    pub pref_standby_sus: u32,
    /// 0 = number of SUs.
    pub pref_inservice_sus: u32,
    /// 0 = pref_inservice.
    pub pref_assigned_sus: u32,
    /// 0 = unlimited.
    pub max_active_sis_per_su: u32,
    /// 0 = unlimited.
    pub max_standby_sis_per_su: u32,
    /// The SG's SUs (any order; the policy sorts by effective rank, then name).
    pub sus: Vec<SuConfig>,
    /// The SG's SIs (any order; the policy sorts by effective rank, then name).
    pub sis: Vec<SiConfig>,
    /// SI-SI dependencies inside this SG.
    pub dependencies: Vec<Dependency>,
}

/// HA states of an assignment (SUSI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HaState {
    /// Active.
    Active,
    /// Standby.
    Standby,
    /// Quiescing (shutdown in progress).
    Quiescing,
    /// Quiesced.
    Quiesced,
}

/// The transition descriptor carried by a change to ACTIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Descriptor {
    /// A new assignment (no previous active to take over from).
    NewAssign,
    /// The previous active was quiesced and acknowledged.
    Quiesced,
    /// The previous active was lost without quiescing.
    NotQuiesced,
}

/// What a message asks of an SU for one SI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MsgKind {
    /// Become (or be assigned) active.
    Active(Descriptor),
    /// Become (or be assigned) standby.
    Standby,
    /// Become quiesced.
    Quiesced,
    /// Start quiescing (shutdown); completion comes back as an ack with `Quiesced`.
    Quiescing,
    /// Remove the assignment.
    Remove,
}

/// One assignment message of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Msg {
    /// The SU addressed.
    pub su: String,
    /// The SI.
    pub si: String,
    /// The change.
    pub kind: MsgKind,
}

/// An acknowledgement of one message by the SU's node director.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The SU that was addressed.
    pub su: String,
    /// The SI.
    pub si: String,
    /// The change that was carried out (for QUIESCING, `Quiesced` reports quiescing complete).
    pub kind: MsgKind,
    /// Whether the components carried it out. A failed ack is handled as an SU fault by the
    /// caller (escalation), not by the policy.
    pub ok: bool,
}

/// The recovery that reached the director for an SU fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultRecovery {
    /// F-GRACEFUL: component failover (the SU's other components are quiesced).
    CompFailover,
    /// F-ABRUPT: SU failover (the SU's components were cleaned up without callbacks).
    SuFailover,
}

/// Events the policy reacts to (the vector format's event kinds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SgEvent {
    /// Cluster start: every SU whose node is up comes into service; one placement pass.
    Start,
    /// An SU fault that escalated to the director.
    SuFault {
        /// The SU.
        su: String,
        /// Graceful or abrupt.
        recovery: FaultRecovery,
    },
    /// A node was lost (or node failover): its SUs go out of service abruptly.
    NodeFailover {
        /// Node name.
        node: String,
    },
    /// A node is back: its SUs are instantiated, enabled and (if unlocked) in service.
    NodeUp {
        /// Node name.
        node: String,
    },
    /// An SU was repaired (enabled again).
    SuRepaired {
        /// The SU.
        su: String,
    },
    /// Admin lock of an SU.
    SuLock {
        /// The SU.
        su: String,
    },
    /// Admin shutdown of an SU.
    SuShutdown {
        /// The SU.
        su: String,
    },
    /// Admin unlock of an SU.
    SuUnlock {
        /// The SU.
        su: String,
    },
    /// Admin lock-instantiation of an SU.
    SuLockIn {
        /// The SU.
        su: String,
    },
    /// Admin unlock-instantiation of an SU.
    SuUnlockIn {
        /// The SU.
        su: String,
    },
    /// Admin lock of every SU on a node.
    NodeLock {
        /// Node name.
        node: String,
    },
    /// Admin unlock of every SU on a node.
    NodeUnlock {
        /// Node name.
        node: String,
    },
    /// Admin SI swap.
    SiSwap {
        /// The SI.
        si: String,
    },
    /// Admin lock of an SI.
    SiLock {
        /// The SI.
        si: String,
    },
    /// Admin unlock of an SI.
    SiUnlock {
        /// The SI.
        si: String,
    },
    /// Time passes (tolerance and auto-adjust timers).
    Tick {
        /// Milliseconds.
        ms: u64,
    },
}

/// The result of an admin operation, as AIS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResult {
    /// Accepted.
    Ok,
    /// Not possible in this configuration.
    BadOperation,
    /// Not possible now; try again later (the SG is busy, or a degradation is temporary).
    TryAgain,
    /// The model does not support the operation.
    NotSupported,
}

/// What one call into the policy produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The batch to send now (possibly empty).
    pub messages: Vec<Msg>,
    /// SIs whose "SI unassigned" alarm was raised by this call.
    pub alarms_raised: Vec<String>,
    /// SIs whose alarm was cleared by this call.
    pub alarms_cleared: Vec<String>,
    /// For admin events: the result (None for non-admin events).
    pub admin: Option<AdminResult>,
}

/// The assignment table of one SI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiAssignment {
    /// SUs holding the SI active (includes quiescing).
    pub active: Vec<String>,
    /// SUs holding it standby.
    pub standby: Vec<String>,
}
