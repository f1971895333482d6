//! The event service's vocabulary, shared by the service (`nines-evt`) and its clients
//! (`nines-sdk`), so that both read a filter and a limit the same way.
//!
//! - [`Pattern`]: one entry of an event's pattern array.
//! - [`Filter`] and [`matches()`]: how a subscription's filter array picks events (positional,
//!   AIS semantics, with an optional name guard), and the CLI syntax `KIND:NAME=VALUE`.
//! - [`Limits`]: the bounds every event-service command is checked against. They are part of the
//!   service's replicated state and change only through its log, so every node applies with the
//!   same ones.

mod filter;
pub mod limits;

use serde::{Deserialize, Serialize};

pub use filter::{matches, Filter, FilterKind, FilterParseError};
pub use limits::Limits;

/// One entry of an event's pattern array: a name that identifies it and a value that filters
/// match against. Both are bytes (at most [`Limits::pattern_bytes_max`] each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pattern {
    /// What the pattern is (e.g. `b"severity"`); filters may name it to guard their position.
    #[serde(with = "crate::bytes")]
    pub name: Vec<u8>,
    /// The value filters match against (e.g. `b"critical"`).
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
}

impl Pattern {
    /// A pattern from anything byte-like.
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}
