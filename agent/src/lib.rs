//! nines-agent: the daemon that runs on every node.
//!
//! Data flow: [`AgentConfig`] (TOML) → [`run`] opens the data dir (format-checked), starts the
//! Raft node (`nines-consensus`) with the composite [`AgentState`] state machine, and serves gRPC
//! on one TCP port: `nines.raft.v1.RaftPeer` for peers and `nines.cluster.v1.Cluster` for
//! operators. It stops on the injected shutdown signal (SIGTERM in the binary) within a grace
//! period, or at once with an error if the node hits a fatal storage or state-machine error.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod amf_link;
mod amf_service;
mod authz;
mod config;
mod datadir;
mod deadline;
mod drill_service;
mod health;
mod heartbeat;
#[cfg(test)]
mod heartbeat_tests;
mod janitor;
mod membership;
mod membership_service;
mod metrics;
mod model_loader;
mod node_watchdog;
mod server;
mod session;
mod state;
mod switchover;
pub mod telemetry;

pub use amf_service::{parse_model, status_proto};
pub use config::{AgentConfig, ConfigError, DrillSection, PeerConfig, WatchdogSection};
pub use health::{LIVENESS_SERVICE, READINESS_SERVICE};
pub use membership::{AgreedState, Change, ChangeKind, MembershipCommand, MembershipState};
pub use server::{run, AgentError};
pub use session::{
    InvokeError, SessionError, SessionEvent, SessionHub, CONNECTIONS_MAX,
    INVOCATIONS_IN_FLIGHT_MAX, SESSIONS_MAX, SESSION_EVENTS_BUFFER_LEN, SESSION_MESSAGE_BYTES_MAX,
};
pub use state::{
    amf_handle, ckpt_handle, AgentState, AmfHandle, ClusterCommand, ClusterResponse, Command,
    Response,
};
