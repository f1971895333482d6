//! nines-amf: availability management (AIS AMF).
//!
//! Data flow: an operator applies a [`model::Model`] (TOML, validated); it is committed through
//! Raft into the AMF state machine. Committed events (a node down, a component failed, an admin
//! lock, a batch of callbacks acknowledged) go through the redundancy-model policy
//! ([`policy`]), a pure function of config + runtime state + event, which yields the next batch
//! of assignment changes. Every node applies the same log, so every node agrees on the
//! assignments; each node's director carries out the part addressed to its own service units
//! ([`process`] spawns and watches component processes) and proposes the outcome.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod director;
pub mod model;
pub mod policy;
pub mod process;
pub mod state;
pub mod telemetry;
