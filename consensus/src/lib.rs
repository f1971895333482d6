//! nines-consensus: one Raft group (tikv's raft-rs 0.7) driven on tokio, stored through a
//! [`LogStore`], talking through a [`Transport`].
//!
//! How to drive it:
//! 1. Pick a store ([`SledLogStore`] on disk, [`MemLogStore`] in tests), a [`StateMachine`] and a
//!    transport ([`GrpcTransport`], or [`InProcessNetwork`] in tests).
//! 2. [`start`] a node: it bootstraps or recovers from the store and spawns the one task that
//!    owns raft-rs's `RawNode` (the driver). It handles each `Ready` in the documented order:
//!    write → (fsync when required) → send persisted messages → apply → advance; on a
//!    multi-thread runtime the fsync runs on a sync thread of its own (group commit, see
//!    `persist`), and the persisted messages wait for it.
//! 3. Everyone else talks to the node through its [`Proposer`]: `propose` (forwarded to the
//!    leader when needed, answered once committed on a quorum and applied), `read` (ReadIndex or
//!    stale), `add_voter` / `remove_member`, `status`.
//! 4. Serve [`PeerService`] on the node's peer port so peers can reach it: accept through
//!    [`PeerPort::incoming`], which serves raft links itself and hands the rest to tonic.
//!    Whatever peers send is decoded without protobuf 2 and checked before raft-rs sees it
//!    (`wire`, `inbound`): a malformed or forged message is refused and counted, never a panic.
//!
//! Any storage error or state-machine corruption ends the driver with [`Fatal`]; the node must
//! stop, never acknowledge.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod driver;
mod error;
mod inbound;
mod logger;
mod mailbox;
mod members;
pub mod metrics;
mod node;
mod persist;
mod proposer;
mod ready;
mod service_handle;
mod state_machine;
mod status;
mod store;
mod transport;
mod wire;

pub use config::RaftConfig;
pub use error::{Fatal, ProposeError};
pub use mailbox::Mailbox;
pub use members::{Members, MembershipChange, PeerInfo};
pub use node::{start, NodeConfig, StartedNode};
pub use proposer::{Proposer, ReadMode};
pub use service_handle::ServiceHandle;
pub use state_machine::{ApplyContext, StateMachine};
pub use status::{NodeStatus, Role};
pub use store::{LogStore, MemLogStore, ReadyWrite, SledLogStore, StoreError};
pub use transport::{
    host_of, BoxFuture, ForwardHandler, ForwardKind, GrpcTransport, InProcessNetwork,
    InProcessTransport, PeerConn, PeerPort, PeerService, PeerTls, Transport, ALPN_H2, ALPN_LINK,
    HANDSHAKE_TIMEOUT_MS,
};
