//! What to run ([`ProcessSpec`]) and what became of it ([`Exit`], [`ExitKind`],
//! [`TerminateOutcome`]).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// One component process to start: the command, its environment, where it runs and where its
/// output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Component name; the supervisor's key, so at most one process per component runs here.
    pub component: String,
    /// Shell command, run as `/bin/sh -c <command>` so operators can use redirections and `exec`.
    pub command: String,
    /// Added to (and overriding) the agent's inherited environment: `NINES_COMPONENT`,
    /// `NINES_SOCKET` and the CSI attributes come in here.
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` keeps the agent's.
    pub cwd: Option<PathBuf>,
    /// File that stdout and stderr are appended to (parent directories are created); `None`
    /// inherits the agent's stdout and stderr. Terminate and cleanup commands append here too.
    pub log_path: Option<PathBuf>,
}

impl ProcessSpec {
    /// A spec with no extra environment, the agent's working directory and inherited output.
    pub fn new(component: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            command: command.into(),
            env: BTreeMap::new(),
            cwd: None,
            log_path: None,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// It exited on its own with this code (0 included: components are not supposed to exit).
    Code(i32),
    /// A signal killed it (the number, e.g. 9 for SIGKILL).
    Signal(i32),
    /// The status could not be collected (`wait` failed, e.g. something else in the agent reaped
    /// the child). The process is gone either way.
    Unknown,
}

impl From<ExitStatus> for ExitKind {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Unknown,
        }
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Code(code) => write!(f, "exited with code {code}"),
            Self::Signal(signal) => {
                let name = Signal::try_from(signal).map_or("unknown signal", Signal::as_str);
                write!(f, "killed by signal {signal} ({name})")
            }
            Self::Unknown => f.write_str("ended with a status that could not be collected"),
        }
    }
}

/// One reaped component process, delivered on the supervisor's exit channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Component the process belonged to.
    pub component: String,
    /// Its pid (also its process group id).
    pub pid: u32,
    /// How it ended.
    pub kind: ExitKind,
    /// True when the supervisor stopped it (terminate, cleanup, shutdown); false is a failure to
    /// report.
    pub expected: bool,
}

/// Result of a graceful [`Supervisor::terminate`](super::Supervisor::terminate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateOutcome {
    /// The process exited (and was reaped) before the timeout.
    Terminated,
    /// The process still runs at the timeout; the caller goes on with
    /// [`Supervisor::cleanup`](super::Supervisor::cleanup).
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_kinds_read_as_sentences() {
        assert_eq!(ExitKind::Code(3).to_string(), "exited with code 3");
        assert_eq!(
            ExitKind::Signal(9).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            ExitKind::Signal(15).to_string(),
            "killed by signal 15 (SIGTERM)"
        );
        assert_eq!(
            ExitKind::Signal(999).to_string(),
            "killed by signal 999 (unknown signal)"
        );
    }

    #[test]
    fn exit_status_maps_code_and_signal() {
        assert_eq!(
            ExitKind::from(ExitStatus::from_raw(3 << 8)),
            ExitKind::Code(3)
        );
        assert_eq!(ExitKind::from(ExitStatus::from_raw(9)), ExitKind::Signal(9));
    }
}
