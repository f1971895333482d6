//! Stopping components: graceful [`Supervisor::terminate`], forceful [`Supervisor::cleanup`],
//! and [`Supervisor::shutdown_all`] when the agent stops.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::helper::{self, Context};
use super::supervisor::{kill_leftovers, with_pid, Live};
use super::{ProcessError, Supervisor, TerminateOutcome};

/// How long [`Supervisor::shutdown_all`] waits for SIGKILLed processes to be reaped.
const SHUTDOWN_KILL_REAP_TIMEOUT_MS: u64 = 5_000;

impl Supervisor {
    /// Graceful stop. Runs `terminate_cmd` (as `/bin/sh -c`, with `env` plus `NINES_PID=<pid>`,
    /// bounded by `timeout`) if given, else sends SIGTERM (then SIGCONT, so a stopped process
    /// acts on it) to the process group; then waits until
    /// the process is reaped and no member of its group is left alive, at most `timeout` from
    /// the call. The exit is marked expected.
    ///
    /// A terminate command that fails is logged, not returned: whether the process is gone is
    /// what counts.
    ///
    /// # Errors
    /// [`ProcessError::NotRunning`] if the component has no process here.
    pub async fn terminate(
        &self,
        component: &str,
        terminate_cmd: Option<&str>,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<TerminateOutcome, ProcessError> {
        let deadline = Instant::now() + timeout;
        let (live, ctx) = self
            .live(component)
            .ok_or_else(|| ProcessError::NotRunning {
                component: component.to_owned(),
            })?;
        live.expect_exit();
        match terminate_cmd {
            Some(command) => {
                let env = with_pid(env, Some(live.pid));
                if let Err(reason) = helper::run("terminate", command, &env, &ctx, timeout).await {
                    tracing::warn!(
                        component,
                        pid = live.pid,
                        reason,
                        "terminate command failed"
                    );
                }
            }
            None => sigterm_group(component, live.pid),
        }
        // Reaped, and the rest of its group gone too (the shell's child, the component itself,
        // may outlive the shell by its own shutdown).
        if live.reaped_by(deadline).await && helper::group_gone_by(live.pid, deadline).await {
            tracing::info!(component, pid = live.pid, "terminated");
            Ok(TerminateOutcome::Terminated)
        } else {
            tracing::warn!(
                component,
                pid = live.pid,
                ?timeout,
                "still running after terminate"
            );
            Ok(TerminateOutcome::TimedOut)
        }
    }

    /// Forceful stop. SIGKILLs the whole process group (and leftovers of an already reaped
    /// process of this component), waits until the process is reaped and no member of its group
    /// is left alive (at most `timeout`), then
    /// runs `cleanup_cmd` if given (with `env` plus `NINES_PID` of the last known process; at
    /// most `timeout` again, killed if it overruns). So the call takes at most twice `timeout`
    /// (plus a bounded reap of an overrunning command).
    ///
    /// Idempotent: for a component that is not running it still kills leftovers it knows of and
    /// runs `cleanup_cmd`.
    ///
    /// # Errors
    /// [`ProcessError::CleanupFailed`] when the process was not reaped in time or the cleanup
    /// command failed: the caller escalates (node failfast).
    pub async fn cleanup(
        &self,
        component: &str,
        cleanup_cmd: Option<&str>,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<(), ProcessError> {
        let (live, leftover_pgid, ctx) = self.take_for_cleanup(component);
        if let Some(live) = &live {
            live.expect_exit();
            helper::signal_group(component, live.pid, Signal::SIGKILL);
            let deadline = Instant::now() + timeout;
            if !live.reaped_by(deadline).await {
                return Err(ProcessError::CleanupFailed {
                    component: component.to_owned(),
                    reason: format!(
                        "process {} was not reaped within {timeout:?} of SIGKILL to its process \
                         group (stuck in uninterruptible sleep?)",
                        live.pid
                    ),
                });
            }
            // The reaped process may be the shell the command runs under; its children (the
            // component itself) die of the same SIGKILL, but only once the kernel runs them.
            // Whoever is told the component is dead must be able to rely on it.
            if !helper::group_gone_by(live.pid, deadline).await {
                return Err(ProcessError::CleanupFailed {
                    component: component.to_owned(),
                    reason: format!(
                        "members of process group {} still ran {timeout:?} after SIGKILL (stuck \
                         in uninterruptible sleep?)",
                        live.pid
                    ),
                });
            }
        }
        if let Some(pgid) = leftover_pgid {
            kill_leftovers(component, pgid);
        }
        if let Some(command) = cleanup_cmd {
            let env = with_pid(env, live.as_ref().map(|l| l.pid).or(leftover_pgid));
            helper::run("cleanup", command, &env, &ctx, timeout)
                .await
                .map_err(|reason| ProcessError::CleanupFailed {
                    component: component.to_owned(),
                    reason,
                })?;
        }
        self.forget_if_idle(component);
        tracing::info!(component, "cleaned up");
        Ok(())
    }

    /// On agent shutdown: SIGTERM every running component's process group, wait until all are
    /// reaped or `grace` passes, SIGKILL the rest (and every leftover group), and wait for those
    /// at most 5 s (`SHUTDOWN_KILL_REAP_TIMEOUT_MS`) more. Components spawned meanwhile are not
    /// covered.
    pub async fn shutdown_all(&self, grace: Duration) {
        let lives = self.all_live();
        for (component, live) in &lives {
            live.expect_exit();
            sigterm_group(component, live.pid);
        }
        let deadline = Instant::now() + grace;
        let mut stubborn = Vec::new();
        for (component, live) in lives {
            if !live.reaped_by(deadline).await {
                helper::signal_group(&component, live.pid, Signal::SIGKILL);
                stubborn.push((component, live));
            }
        }
        let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_KILL_REAP_TIMEOUT_MS);
        for (component, live) in stubborn {
            if live.reaped_by(deadline).await {
                tracing::warn!(
                    component,
                    pid = live.pid,
                    "killed at shutdown after the grace"
                );
            } else {
                tracing::error!(component, pid = live.pid, "not reaped even after SIGKILL");
            }
        }
        let leftovers: Vec<(String, u32)> = {
            let mut slots = self.inner.lock();
            slots
                .iter_mut()
                .filter_map(|(c, s)| s.leftover_pgid.take().map(|pgid| (c.clone(), pgid)))
                .collect()
        };
        for (component, pgid) in leftovers {
            kill_leftovers(&component, pgid);
        }
    }

    /// The running process (if any), the leftover group (taken: cleanup handles it) and the
    /// context of `component`.
    fn take_for_cleanup(&self, component: &str) -> (Option<Live>, Option<u32>, Context) {
        let mut slots = self.inner.lock();
        match slots.get_mut(component) {
            Some(slot) => (
                slot.live.clone(),
                slot.leftover_pgid.take(),
                slot.ctx.clone(),
            ),
            None => (None, None, Context::default()),
        }
    }

    /// Forgets `component` unless a process of it runs (it may have been spawned again).
    fn forget_if_idle(&self, component: &str) {
        let mut slots = self.inner.lock();
        if slots.get(component).is_some_and(|s| s.live.is_none()) {
            slots.remove(component);
        }
    }

    /// Every running process.
    fn all_live(&self) -> Vec<(String, Live)> {
        let slots = self.inner.lock();
        slots
            .iter()
            .filter_map(|(c, s)| s.live.clone().map(|l| (c.clone(), l)))
            .collect()
    }
}

/// SIGTERM, then SIGCONT: a process stopped by a drill (SIGSTOP) acts on the SIGTERM only once
/// continued.
fn sigterm_group(component: &str, pgid: u32) {
    helper::signal_group(component, pgid, Signal::SIGTERM);
    helper::signal_group(component, pgid, Signal::SIGCONT);
}
