//! Redundancy-model policies: pure functions from (SG config, SG runtime, event or ack) to the
//! next batch of assignment messages. No I/O, no clock: time comes in as `SgEvent::Tick`.
//! The behaviour is the AIS AMF's assignment semantics for 2N and No-Redundancy, as the model
//! modules' docs state them and the assignment vectors (`amf/tests/vectors.rs`) check them.
//!
//! How to drive it (the AMF state machine and the vector harness do the same):
//! 1. `let mut rt = SgRuntime::new(&cfg);`
//! 2. `handle(&cfg, &mut rt, &SgEvent::Start)` → an [`Outcome`] whose `messages` is the batch to
//!    send now.
//! 3. For each message carried out, `acknowledge(&cfg, &mut rt, &ack)`; when the batch that is
//!    in flight is complete, the outcome carries the next batch. A QUIESCING message is
//!    complete when acknowledged with kind `Quiesced` (quiescing complete).
//! 4. `is_stable(&rt)` is true when no message waits for an acknowledgement and the SG's FSM is
//!    back in STABLE; `table(&cfg, &rt)` is the assignment table.
//!
//! When a changed model is applied, call [`SgRuntime::sync_config`] with the new config before
//! the next event: the runtime must know every SU and SI of the config it is driven with.
//!
//! Events may arrive while a batch is in flight (a node lost mid-swap): the policy works out the
//! pending messages again. Admin operations are refused with TRY_AGAIN while
//! a batch is in flight, except a lock that overrides a shutdown in progress.
//!
//! Shape: each model is a module with a `plan` function (the next batch from the current state,
//! called only when nothing is in flight) and its invariants; [`handle`] and [`acknowledge`]
//! dispatch on [`SgConfig::model`]. Shared phases (rank order, descriptor rule, take-down) are in
//! `common`. N+M, N-Way and N-Way-Active slot in as further modules; until then
//! [`model_supported`] is false for them, events are no-ops and admin operations answer
//! NOT_SUPPORTED.

mod admin;
mod alarms;
mod common;
mod deps;
mod engine;
mod events;
mod nored;
mod runtime;
#[cfg(test)]
mod tests;
mod twon;
mod types;

pub use engine::{
    acknowledge, handle, is_admin, is_stable, model_supported, pending, su_admin_state, su_enabled,
    su_in_service, susis, table,
};
pub use events::su_should_be_instantiated;
pub use runtime::{
    AssignmentState, DepState, SgFsm, SgRuntime, SiRuntime, SuAdminState, SuRuntime, Susi,
};
pub use types::*;
