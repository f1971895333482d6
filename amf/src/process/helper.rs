//! Plumbing shared by component processes and their helper commands: where output goes, process
//! groups, and running a terminate or cleanup command under a deadline.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use super::ExitKind;

/// How long a helper command that overran gets to be reaped after SIGKILL before it is left to
/// tokio's background reaper.
const HELPER_REAP_TIMEOUT_MS: u64 = 5_000;

/// Where a component runs and writes; its terminate and cleanup commands share both.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    /// Working directory; `None` keeps the agent's.
    pub(crate) cwd: Option<PathBuf>,
    /// Log file for stdout and stderr; `None` inherits the agent's.
    pub(crate) log_path: Option<PathBuf>,
}

/// `/bin/sh -c <command>` in a new process group (pgid = pid), stdin null, output per `ctx`.
///
/// # Errors
/// Opening the log file (or creating its directory) failed.
pub(crate) fn shell(
    command: &str,
    env: &BTreeMap<String, String>,
    ctx: &Context,
) -> io::Result<Command> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .envs(env)
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(cwd) = &ctx.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(path) = &ctx.log_path {
        let out = open_log(path)?;
        let err = out.try_clone()?;
        cmd.stdout(out).stderr(err);
    }
    Ok(cmd)
}

/// Opens `path` for appending, creating it and its parent directories.
fn open_log(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// A child's pid as nix wants it.
pub(crate) fn as_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("the kernel hands out pids that fit in pid_t"))
}

/// Sends `signal` to process group `pgid`. A group that is already empty (ESRCH) is not an error:
/// whatever we wanted gone is gone.
pub(crate) fn signal_group(component: &str, pgid: u32, signal: Signal) {
    match killpg(as_pid(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => {
            tracing::warn!(component, pgid, %signal, %errno, "could not signal process group");
        }
    }
}

/// Whether any process of group `pgid` is still alive (not a zombie), read from /proc. A
/// component's command runs under `/bin/sh -c`, which does not always exec it: the shell is the
/// process the supervisor reaps, while the component itself is its child in the same group.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // "pid (comm) S ppid pgrp ...": the fields after the command's closing parenthesis.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
        })
}

/// Wait (polling every millisecond, until `deadline`) until no process of group `pgid` is alive;
/// whether none is.
pub(crate) async fn group_gone_by(pgid: u32, deadline: tokio::time::Instant) -> bool {
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs a terminate or cleanup command (`what` names it in messages) to completion, bounded by
/// `timeout`; an overrunning command's whole process group is killed.
///
/// # Errors
/// A sentence saying why the command did not succeed: it could not start, exited non-zero, was
/// killed, or overran.
pub(crate) async fn run(
    what: &str,
    command: &str,
    env: &BTreeMap<String, String>,
    ctx: &Context,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = shell(command, env, ctx)
        .map_err(|e| format!("the {what} command `{command}` could not open its log file: {e}"))?;
    // If our caller gives up on us, do not leave the helper running.
    cmd.kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("the {what} command `{command}` could not start: {e}"))?;
    let pid = child.id().expect("a child not yet awaited has a pid");
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "the {what} command `{command}` {}",
            ExitKind::from(status)
        )),
        Ok(Err(e)) => Err(format!(
            "waiting for the {what} command `{command}` failed: {e}"
        )),
        Err(_elapsed) => {
            signal_group("helper", pid, Signal::SIGKILL);
            let reap = Duration::from_millis(HELPER_REAP_TIMEOUT_MS);
            if tokio::time::timeout(reap, child.wait()).await.is_err() {
                tracing::warn!(
                    pid,
                    command,
                    "overrunning {what} command not reaped after SIGKILL"
                );
            }
            Err(format!(
                "the {what} command `{command}` did not finish within {timeout:?} and was killed"
            ))
        }
    }
}
