//! The director's seam to the component sessions (the agent implements it over its Unix-socket
//! session hub; tests can implement it in memory).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::policy::{Descriptor, HaState};
use crate::state::Recovery;

/// One callback the director asks a component to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Assign or change the HA state of one CSI.
    CsiSet {
        /// The SI.
        si: String,
        /// The CSI.
        csi: String,
        /// The HA state.
        ha: HaState,
        /// The assignment's epoch.
        epoch: u64,
        /// For ACTIVE: how the previous active left.
        descriptor: Option<Descriptor>,
        /// The CSI's attributes.
        attributes: BTreeMap<String, String>,
        /// The active component (for standby), or the previous one (for active).
        active_component: Option<String>,
    },
    /// Remove one CSI.
    CsiRemove {
        /// The SI.
        si: String,
        /// The CSI.
        csi: String,
    },
    /// Release everything; the process is stopped after the answer.
    Terminate,
    /// AMF-invoked healthcheck.
    Healthcheck {
        /// The healthcheck key.
        key: String,
    },
}

/// What a component believes it holds: (si, csi) → (HA state, epoch).
pub type Believed = BTreeMap<(String, String), (HaState, u64)>;

/// What the sessions tell the director.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A component's process registered its session.
    Registered {
        /// The component.
        component: String,
        /// The registering process.
        pid: u32,
    },
    /// A component's session closed.
    Disconnected {
        /// The component.
        component: String,
    },
    /// A component kicked its watchdog (coalesced: at most a few per watchdog period).
    Kick {
        /// The component.
        component: String,
    },
    /// What a component believes it holds (after every change, and once after it registered).
    Belief {
        /// The component.
        component: String,
        /// (si, csi) → its HA state and epoch, as the component holds them.
        believed: Believed,
        /// Its lease from the agent has run out (it acts as active for nothing until renewed).
        lease_expired: bool,
    },
    /// A component reported an error on itself.
    ErrorReport {
        /// The component.
        component: String,
        /// The recovery it recommends.
        recommended: Recovery,
        /// Why.
        reason: String,
    },
}

/// The component sessions as the director uses them.
pub trait ComponentLink: Clone + Send + Sync + 'static {
    /// The director spawned `pid` (a process group leader) for `component`: accept its
    /// registration, and tell it its watchdog period (0 = none) so its SDK paces its kicks.
    fn expect(&self, component: &str, pid: u32, watchdog_ms: u64);
    /// Forget `component` (its process is gone): close its session.
    fn forget(&self, component: &str);
    /// Whether `component` has a live session.
    fn is_registered(&self, component: &str) -> bool;
    /// Run one callback and wait (bounded by `timeout`) for the answer; Err says why it failed.
    fn invoke(
        &self,
        component: &str,
        inv: Invocation,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send;
}
