//! [`ProcessError`]: why a process operation did not do what was asked.

use std::path::PathBuf;

use nines_core::ErrorCode;
use nix::errno::Errno;
use nix::sys::signal::Signal;

/// Why a process operation failed. Each message says what failed, why, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The component already has a process on this node.
    #[error(
        "component {component} already runs on this node as pid {pid}; terminate or clean it up \
         before instantiating it again"
    )]
    AlreadyRunning {
        /// The component.
        component: String,
        /// The pid of the process that runs.
        pid: u32,
    },
    /// The component has no process on this node.
    #[error(
        "component {component} has no running process on this node (never started here, or \
         already exited); nothing to signal or terminate"
    )]
    NotRunning {
        /// The component.
        component: String,
    },
    /// Supervising one more process would pass [`PROCESSES_MAX`](super::PROCESSES_MAX).
    #[error(
        "cannot start component {component}: this node already supervises {max} components; \
         clean up components that are no longer assigned here"
    )]
    TooMany {
        /// The component that was not started.
        component: String,
        /// The limit.
        max: usize,
    },
    /// The log file could not be opened (or its directory created).
    #[error(
        "cannot start component {component}: opening its log file {} failed: {source}; check that \
         the directory can be created and is writable", path.display()
    )]
    LogFile {
        /// The component.
        component: String,
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `/bin/sh -c <command>` could not be started.
    #[error(
        "cannot start component {component} (`/bin/sh -c {command}`): {source}; check the \
         working directory, /bin/sh and the agent's permissions"
    )]
    Spawn {
        /// The component.
        component: String,
        /// The command that was to run.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A signal could not be sent to the component's process group.
    #[error(
        "sending {signal} to the process group of component {component} (pid {pid}) failed: \
         {source}; the process may have just exited (watch for its exit) or the agent lacks \
         permission"
    )]
    Signal {
        /// The component.
        component: String,
        /// Its pid and process group id.
        pid: u32,
        /// The signal.
        signal: Signal,
        /// What the OS said.
        source: Errno,
    },
    /// Cleanup could not make sure the component is gone: the process survived SIGKILL within
    /// the timeout, or the cleanup command failed or overran.
    #[error(
        "cleanup of component {component} failed: {reason}; the node cannot vouch that the \
         component is gone, so escalate to node failfast"
    )]
    CleanupFailed {
        /// The component.
        component: String,
        /// What went wrong.
        reason: String,
    },
}

impl ProcessError {
    /// The stable AIS-style code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AlreadyRunning { .. } => ErrorCode::Exist,
            Self::NotRunning { .. } => ErrorCode::NotExist,
            Self::TooMany { .. } => ErrorCode::NoSpace,
            Self::LogFile { .. } | Self::Spawn { .. } => ErrorCode::InvalidParam,
            Self::Signal { .. } | Self::CleanupFailed { .. } => ErrorCode::Library,
        }
    }

    /// The component the failed operation was about.
    pub fn component(&self) -> &str {
        match self {
            Self::AlreadyRunning { component, .. }
            | Self::NotRunning { component }
            | Self::TooMany { component, .. }
            | Self::LogFile { component, .. }
            | Self::Spawn { component, .. }
            | Self::Signal { component, .. }
            | Self::CleanupFailed { component, .. } => component,
        }
    }
}
