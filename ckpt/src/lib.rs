//! nines-ckpt: AIS checkpoints — named sets of sections replicated through Raft, so a standby
//! takes over exactly where the active left off.
//!
//! Data flow: the gRPC [`service`] validates a request against named limits (nothing is proposed
//! if it is too big), turns it into a [`CkptCommand`] and proposes it through the replicated log;
//! every node applies it to its [`CkptState`] with the same result ([`CkptResponse`]). Reads are
//! linearizable (ReadIndex) unless the caller asks for stale ones. Time-based expiry (retention
//! of unopened checkpoints, section expiration) runs inside `apply`, on the time the leader
//! stamped on the entry.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod command;
mod convert;
pub mod limits;
pub mod service;
mod state;

pub use command::{Attributes, CkptCommand, CkptResponse, SectionWrite, UpdateMode, WriteKind};
pub use service::{CkptHandle, CkptService};
pub use state::{CheckpointStatus, CkptState, SectionInfo, SectionRead};
