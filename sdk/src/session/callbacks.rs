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
    ///
    /// Besides the agent's, the SDK makes one call of its own: when the agent's lease expires
    /// after the session broke, it sets each CSI still held active or quiescing to
    /// [`HaState::Quiesced`](crate::HaState::Quiesced) (same epoch, no descriptor, no
    /// attributes), so the component stops acting active through this same code path; then it
    /// calls [`Callbacks::supervision_lost`].
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
    /// ([`Session::lease_ms`](crate::Session::lease_ms)); once that passes, the SDK quiesces
    /// what it holds active ([`Callbacks::csi_set`] to QUIESCED) and calls
    /// [`Callbacks::supervision_lost`]. Does nothing by default. Must not block.
    fn agent_lost(&self) {}

    /// The agent's lease expired after the session broke (without a terminate): nothing
    /// supervises this component any more, and the cluster may have made another component
    /// active in its place. Called once, after the SDK set every CSI the component held active
    /// or quiescing to QUIESCED through [`Callbacks::csi_set`] (in order with the other CSI
    /// callbacks: after any still running returns). Never called when the session ended with a
    /// terminate.
    ///
    /// After this the component should exit (the next agent restarts it) or stay passive until
    /// it is restarted; it must not act active again on its own. Does nothing by default. Must
    /// not block.
    fn supervision_lost(&self) {}
}
