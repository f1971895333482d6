//! What can go wrong with the component sessions: one invocation ([`InvokeError`], an expected
//! outcome the node director acts on) or serving the socket ([`SessionError`]).

use std::path::PathBuf;

/// Why one invocation (CSI set / remove, terminate, healthcheck) did not succeed.
///
/// Every variant is an expected outcome: the node director turns it into a component failure
/// (and its recovery) or a retry, never a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The component has no live session: it has not registered yet, or it disconnected.
    #[error(
        "component {component} has no session with this agent (not registered yet, or \
         disconnected); wait for its Registered event, or restart it if it never connects"
    )]
    NotRegistered {
        /// The component.
        component: String,
    },
    /// The component did not answer within the deadline.
    #[error(
        "component {component} did not answer the invocation within {after_ms} ms; it may be \
         hung or overloaded: apply its recovery (restart it)"
    )]
    Timeout {
        /// The component.
        component: String,
        /// The deadline that passed.
        after_ms: u64,
    },
    /// The component answered with an error.
    #[error("component {component} refused the invocation: {reason}; see the component's logs")]
    Failed {
        /// The component.
        component: String,
        /// The component's reason, for people.
        reason: String,
    },
    /// The session closed (the process exited, or its session was replaced or forgotten) before
    /// the component answered.
    #[error(
        "the session to component {component} closed before it answered the invocation; the \
         process probably exited: check it and apply its recovery"
    )]
    SessionLost {
        /// The component.
        component: String,
    },
}

/// Why the component socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The socket path (or its directory) cannot be prepared.
    #[error("cannot prepare the component socket {path}: {reason}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Another process already serves the socket.
    #[error(
        "the component socket {path} is served by another running process (another agent?); \
         stop it, or give this agent another socket path"
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket cannot be bound.
    #[error(
        "cannot listen on the component socket {path}: {source}; check the directory's permissions"
    )]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the component session server failed: {0}")]
    Server(String),
}
