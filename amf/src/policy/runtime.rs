//! [`SgRuntime`]: everything the policy remembers about one service group between calls.
//!
//! The runtime is plain data (serde) so it can live in the replicated AMF state: every node
//! applies the same events to the same runtime and computes the same batches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{HaState, MsgKind, SgConfig};

/// Administrative state of an SU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SuAdminState {
    /// In service when also enabled, instantiated and its node is present and unlocked.
    #[default]
    Unlocked,
    /// Out of service; stays instantiated.
    Locked,
    /// Out of service and terminated (a non-instantiated SU).
    LockedInstantiation,
    /// Being shut down: its actives are quiescing; becomes `Locked` when they are quiesced.
    ShuttingDown,
}

impl SuAdminState {
    /// The status table's word.
    pub fn name(self) -> &'static str {
        match self {
            SuAdminState::Unlocked => "unlocked",
            SuAdminState::Locked => "locked",
            SuAdminState::LockedInstantiation => "locked_instantiation",
            SuAdminState::ShuttingDown => "shutting_down",
        }
    }
}

/// Per-SU runtime state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuRuntime {
    /// Administrative state of the SU itself.
    pub admin: SuAdminState,
    /// The SU's node is administratively locked (node lock; the SU's own admin state is kept so
    /// a node unlock restores exactly what was there).
    pub node_locked: bool,
    /// Operational state: false after a fault until the SU is repaired.
    pub enabled: bool,
    /// The SU's node is a cluster member. False after a node failover until the node is back.
    pub node_present: bool,
    /// The SU's components are instantiated (the policy's belief: it assumes that an SU it
    /// wants instantiated is, the caller reports failures as faults).
    pub instantiated: bool,
    /// Copied from the config: a non-pre-instantiable SU is in service without being
    /// instantiated (it is instantiated when it gets an assignment).
    pub preinstantiable: bool,
}

impl Default for SuRuntime {
    fn default() -> Self {
        SuRuntime {
            admin: SuAdminState::Unlocked,
            node_locked: false,
            enabled: true,
            node_present: true,
            instantiated: false,
            preinstantiable: true,
        }
    }
}

/// Assignment state of an SI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AssignmentState {
    /// No active (and, for 2N, no standby) assignment.
    #[default]
    Unassigned,
    /// Some but not all preferred assignments.
    PartiallyAssigned,
    /// Every preferred assignment is made.
    FullyAssigned,
}

/// Where an SI stands with respect to its sponsors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DepState {
    /// Every sponsor is active (or has a way to become active), or the SI has no sponsor.
    #[default]
    Ok,
    /// A sponsor lost its active; the SI is unassigned when the deadline passes.
    Tolerating {
        /// `SgRuntime::now_ms` at which the SI is unassigned.
        deadline_ms: u64,
    },
    /// The SI must be unassigned because a sponsor lost its active.
    Unassign,
}

/// Per-SI runtime state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiRuntime {
    /// Administratively locked: no assignment is kept or made.
    pub locked: bool,
    /// The assignment state as of the end of the last call (alarms fire on its changes).
    pub ass_state: AssignmentState,
    /// The "SI unassigned" alarm is outstanding.
    pub alarm: bool,
    /// The SI's active was lost without quiescing (abrupt failure of the active, or of the SU
    /// being made active): the replacement active carries `NOT_QUIESCED` (§5.3).
    pub active_lost: bool,
    /// Dependency state.
    pub dep: DepState,
}

/// One assignment of an SI to an SU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Susi {
    /// The SI.
    pub si: String,
    /// The SU.
    pub su: String,
    /// The acknowledged HA state; for a new assignment not yet acknowledged, its target state.
    pub ha: HaState,
    /// The message sent for this SUSI and not yet acknowledged.
    pub pending: Option<MsgKind>,
}

/// What the SG is doing, for status display and to gate admin operations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SgFsm {
    /// No operation in progress and nothing in flight.
    #[default]
    Stable,
    /// Working towards a new assignment table after the named cause.
    Realigning {
        /// What started the work (e.g. "su_lock SU1").
        cause: String,
    },
}

/// All per-SG runtime state of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SgRuntime {
    /// `Start` was seen: before it nothing is in service (cluster start-up, §1.3).
    pub started: bool,
    /// The SG FSM state.
    pub fsm: SgFsm,
    /// Per-SU state, by SU name.
    pub sus: BTreeMap<String, SuRuntime>,
    /// Per-SI state, by SI name.
    pub sis: BTreeMap<String, SiRuntime>,
    /// The SUSIs, sorted by (SI, SU). Messages in flight are the `pending` ones: the batch in
    /// flight is exactly the set of SUSIs with a pending message.
    pub susis: Vec<Susi>,
    /// 2N SI swap in progress: the SU whose actives are being swapped to the standby SU.
    pub swap_su: Option<String>,
    /// Policy time in milliseconds: the sum of every `Tick` seen.
    pub now_ms: u64,
}

impl SgRuntime {
    /// A runtime for `cfg` before cluster start: every SU unlocked, enabled, node present,
    /// nothing assigned.
    pub fn new(cfg: &SgConfig) -> Self {
        let mut rt = SgRuntime::default();
        rt.sync_config(cfg);
        rt
    }

    /// Adds state for SUs and SIs new in `cfg` and forgets those no longer in it (their SUSIs are
    /// dropped without messages: the caller has already stopped them). Used when a changed model
    /// is applied.
    pub fn sync_config(&mut self, cfg: &SgConfig) {
        for su in &cfg.sus {
            self.sus.entry(su.name.clone()).or_default().preinstantiable = su.preinstantiable;
        }
        for si in &cfg.sis {
            self.sis.entry(si.name.clone()).or_default();
        }
        self.sus
            .retain(|name, _| cfg.sus.iter().any(|s| &s.name == name));
        self.sis
            .retain(|name, _| cfg.sis.iter().any(|s| &s.name == name));
        let (sus, sis) = (&self.sus, &self.sis);
        self.susis
            .retain(|s| sus.contains_key(&s.su) && sis.contains_key(&s.si));
        if self.swap_su.as_ref().is_some_and(|s| !sus.contains_key(s)) {
            self.swap_su = None;
        }
    }

    /// The runtime of SU `su` (panics on an SU that is not in the config: a caller bug).
    pub(crate) fn su(&self, su: &str) -> &SuRuntime {
        self.sus.get(su).expect("SU of the SG config has a runtime")
    }

    /// Mutable runtime of SU `su`.
    pub(crate) fn su_mut(&mut self, su: &str) -> &mut SuRuntime {
        self.sus
            .get_mut(su)
            .expect("SU of the SG config has a runtime")
    }

    /// The runtime of SI `si`.
    pub(crate) fn si(&self, si: &str) -> &SiRuntime {
        self.sis.get(si).expect("SI of the SG config has a runtime")
    }

    /// Mutable runtime of SI `si`.
    pub(crate) fn si_mut(&mut self, si: &str) -> &mut SiRuntime {
        self.sis
            .get_mut(si)
            .expect("SI of the SG config has a runtime")
    }

    /// The SUSI of (`si`, `su`), if any.
    pub(crate) fn susi(&self, si: &str, su: &str) -> Option<&Susi> {
        self.susis.iter().find(|s| s.si == si && s.su == su)
    }

    /// Mutable SUSI of (`si`, `su`).
    pub(crate) fn susi_mut(&mut self, si: &str, su: &str) -> Option<&mut Susi> {
        self.susis.iter_mut().find(|s| s.si == si && s.su == su)
    }

    /// The SUSIs of SI `si`.
    pub(crate) fn susis_of_si<'a>(&'a self, si: &'a str) -> impl Iterator<Item = &'a Susi> + 'a {
        self.susis.iter().filter(move |s| s.si == si)
    }

    /// The SUSIs of SU `su`.
    pub(crate) fn susis_of_su<'a>(&'a self, su: &'a str) -> impl Iterator<Item = &'a Susi> + 'a {
        self.susis.iter().filter(move |s| s.su == su)
    }

    /// Whether any message waits for an acknowledgement.
    pub(crate) fn in_flight(&self) -> bool {
        self.susis.iter().any(|s| s.pending.is_some())
    }

    /// Whether SU `su` is in service (§1.2): started, unlocked (SU and node), enabled, its node
    /// present and instantiated.
    pub(crate) fn in_service(&self, su: &str) -> bool {
        let r = self.su(su);
        self.started
            && r.admin == SuAdminState::Unlocked
            && !r.node_locked
            && r.enabled
            && r.node_present
            && (r.instantiated || !r.preinstantiable)
    }

    /// Inserts a new SUSI, keeping the list sorted; asserts there is none for the pair yet.
    pub(crate) fn insert_susi(&mut self, susi: Susi) {
        assert!(
            self.susi(&susi.si, &susi.su).is_none(),
            "one SUSI per (SI, SU): {} {}",
            susi.si,
            susi.su
        );
        let at = self.susis.partition_point(|s| {
            (s.si.as_str(), s.su.as_str()) < (susi.si.as_str(), susi.su.as_str())
        });
        self.susis.insert(at, susi);
    }
}
