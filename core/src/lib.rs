//! nines-core: the vocabulary every other nines crate shares, with no I/O.
//!
//! - [`NodeId`] and the other identifiers.
//! - [`AisError`]: API errors with stable codes mirroring SA Forum's `SaAisErrorT`, so callers in
//!   any language can branch on a number that never changes meaning.
//! - [`limits`]: named limits (units last) that bound every queue, message and batch.
//! - [`shutdown`]: the injected shutdown signal long-lived tasks select on.
//! - [`bytes`]: serde for byte-string fields (copied, not decoded byte by byte).
//! - [`evt`]: the event service's filters, their matching, and its limits, shared by the service
//!   and the SDK so both read them the same way.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bytes;
mod error;
pub mod evt;
pub mod limits;
pub mod shutdown;

pub use error::{AisError, ErrorCode};

/// A node's id in the cluster: stable for the node's life, never reused, never 0 (raft-rs
/// reserves 0 for "none").
pub type NodeId = u64;

/// The wire protocol version this build speaks. Bumped only for incompatible changes; peers that
/// speak another version are refused with a message naming both.
pub const PROTOCOL_VERSION: u32 = 2;

/// The data-dir format version this build writes and reads; another is refused, never guessed.
pub const DATA_FORMAT_VERSION: u32 = 4;
