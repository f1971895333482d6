//! The node director's process layer: spawn, watch, terminate and clean up component processes.
//!
//! How to drive it:
//! 1. `let (sup, mut exits) = Supervisor::new(capacity);` — keep `exits` in the director's loop.
//! 2. [`Supervisor::spawn`] a [`ProcessSpec`] (instantiate). Each component runs as
//!    `/bin/sh -c <command>` in its own process group, so one signal reaches everything it forked.
//! 3. Every reaped process becomes one [`Exit`] on `exits`, the moment tokio's SIGCHLD-driven
//!    `wait` returns. `expected == false` means the component failed (or exited on its own, which
//!    components are not supposed to do): report it to AMF.
//! 4. To stop a component: [`Supervisor::terminate`]; on [`TerminateOutcome::TimedOut`],
//!    [`Supervisor::cleanup`] (SIGKILL the group, run the cleanup command). A
//!    [`ProcessError::CleanupFailed`] means the node cannot vouch that the component is gone:
//!    escalate to node failfast.
//! 5. On agent shutdown, [`Supervisor::shutdown_all`] stops everything within a bounded grace.
//!
//! Every wait is event driven (a per-process `watch` set by the reaper task) and bounded by the
//! caller's timeout; nothing here polls.

mod error;
mod helper;
mod spec;
mod stop;
mod supervisor;

pub use error::ProcessError;
pub use spec::{Exit, ExitKind, ProcessSpec, TerminateOutcome};
pub use supervisor::{Supervisor, PROCESSES_MAX};
