//! nines-heartbeat: the failure detector and node leases — pure cores, no I/O, no clock.
//!
//! How to drive it (the agent's heartbeat task does this):
//! 1. Build a [`FailureDetector`] from a validated [`DetectorConfig`] and
//!    [`add_node`](FailureDetector::add_node) every peer.
//! 2. Every heartbeat received from a peer goes to [`FailureDetector::heartbeat`] with the
//!    sender's sequence number and `now_ms` from the driver's monotonic clock.
//! 3. Every `interval_ms`, [`FailureDetector::tick`] returns the health [`Transition`]s (up →
//!    suspect → down, and back), each exactly once, in node id order. On the leader, a node that
//!    went [`Health::Down`] has its lease revoked on a majority and is proposed "node down" at
//!    [`lease::earliest_replacement_ms`] from the latest grant they report
//!    ([`lease::reported_grant_on_decider_ms`]).
//! 4. On every node, a [`lease::SelfLease`] renewed by a majority's acknowledgements of its
//!    heartbeats says when the node must demote its own actives ([`lease::SelfLease::is_fenced`])
//!    and whether it may still kick the node watchdog.
//!
//! The [`lease`] module docs state the timing rule, its assumptions and why it guarantees that a
//! lost node's actives have stopped before their replacements start (promise 1).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod detector;
pub mod lease;

pub use config::{
    ConfigError, DetectorConfig, DURATION_MS_MAX, FLAP_THRESHOLD_DEFAULT, FLAP_THRESHOLD_MAX,
    FLAP_WINDOW_MS_DEFAULT, HOLD_DOWN_MS_DEFAULT, INTERVAL_MS_DEFAULT, TIMEOUT_MS_DEFAULT,
};
pub use detector::{
    DetectorError, FailureDetector, Health, HeartbeatOutcome, NodeView, Transition, NODES_MAX,
};
pub use lease::{LeaseConfig, SelfLease};
