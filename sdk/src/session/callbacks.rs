//! [`Callbacks`]: what a component implements to be managed.

use std::future::Future;

use super::CsiSet;

/// The component's answers to its agent's invocations (AIS AMF callbacks).
///
/// Each callback's `Ok` or `Err(reason)` is sent back to the agent as the invocation's response;
/// the reason is shown to operators, so say what failed and why.
///
/// # Correctness
///
/// - CSI set, CSI remove and terminate are called one at a time, in the order the agent sent
///   them; healthchecks run beside them, so a long CSI set does not fail a healthcheck.
/// - Answer `Ok` to a CSI set only once the component has taken the HA state: the agent (and the
///   cluster) act on the answer, and [`Session::epoch_for`](crate::Session::epoch_for) reports the
///   epoch from then on.
/// - Every callback runs under the agent's deadline; one that does not answer in time is treated
///   as a failed component.
pub trait Callbacks: Send + Sync + 'static {
    /// Take the HA state `set.ha_state` for CSI `set.csi` of SI `set.si`, fenced by `set.epoch`.
    fn csi_set(&self, set: CsiSet) -> impl Future<Output = Result<(), String>> + Send;

    /// Stop serving CSI `csi` of SI `si` and release what it holds.
    fn csi_remove(&self, si: &str, csi: &str) -> impl Future<Output = Result<(), String>> + Send;

    /// Release everything: the agent stops the process after the answer (or its deadline).
    /// After `Ok`, [`Session::closed`](crate::Session::closed) resolves `Ok`.
    fn terminate(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// AMF-invoked healthcheck for `key`: `Ok` when healthy. Healthy by default.
    fn healthcheck(&self, key: &str) -> impl Future<Output = Result<(), String>> + Send {
        let _ = key;
        async { Ok(()) }
    }

    /// The session to the agent broke (the agent stopped or restarted) without a terminate.
    /// The component keeps its assignments for at most the agent's lease
    /// ([`Session::lease_ms`](crate::Session::lease_ms)); an active should stop acting active
    /// once that passes. Does nothing by default. Must not block.
    fn agent_lost(&self) {}
}
