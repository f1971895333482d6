//! [`Supervisor`]: the table of component processes on this node, how they start, and the reaper
//! task that turns each exit into an [`Exit`] event. Stopping lives in `stop.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use tokio::process::Child;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::helper::{self, Context};
use super::{Exit, ExitKind, ProcessError, ProcessSpec};

/// Components one supervisor keeps track of at once (running, or exited and not yet cleaned up).
pub const PROCESSES_MAX: usize = 4096;

/// How long the reaper waits for room in a full exit channel before it drops the event (and
/// says so loudly): a director that stops reading for this long is itself broken.
const EXIT_SEND_TIMEOUT_MS: u64 = 30_000;

/// Spawns and watches component processes; cheap to clone (one shared table).
///
/// Every process runs in its own process group, so signals and SIGKILL reach everything it
/// forked. Each has a reaper task awaiting tokio's SIGCHLD-driven `Child::wait`; when it returns,
/// the task removes the process from the table, wakes whoever waits for it, and sends an
/// [`Exit`].
#[derive(Clone)]
pub struct Supervisor {
    /// Shared with the reaper tasks.
    pub(super) inner: Arc<Inner>,
}

/// State shared by the supervisor handles and the reaper tasks.
pub(super) struct Inner {
    /// Per component; the lock is held only for table updates, never across an await.
    slots: Mutex<HashMap<String, Slot>>,
    /// Where exits go; bounded, see [`EXIT_SEND_TIMEOUT_MS`].
    exits: mpsc::Sender<Exit>,
}

/// What the supervisor knows about one component.
#[derive(Default)]
pub(super) struct Slot {
    /// The running process, if any.
    pub(super) live: Option<Live>,
    /// Process group of the last process we reaped: members it forked may outlive it. Cleanup
    /// kills them; so does the next spawn of the same component.
    pub(super) leftover_pgid: Option<u32>,
    /// Working directory and log file, shared with terminate and cleanup commands.
    pub(super) ctx: Context,
}

/// A running process: enough to signal it, mark its exit expected, and wait for its reaping.
#[derive(Clone)]
pub(super) struct Live {
    /// Pid, and process group id.
    pub(super) pid: u32,
    /// Set before we signal it, read by the reaper, so the [`Exit`] says whether we did it.
    pub(super) expected: Arc<AtomicBool>,
    /// `Some` once reaped (set after the table no longer lists the process).
    pub(super) reaped: watch::Receiver<Option<ExitKind>>,
}

impl Live {
    /// Marks the coming exit as caused by us. Call before signalling.
    pub(super) fn expect_exit(&self) {
        self.expected.store(true, Ordering::SeqCst);
    }

    /// Waits, event driven, until the reaper has reaped the process or `deadline` passes.
    /// Returns whether it was reaped.
    pub(super) async fn reaped_by(&self, deadline: Instant) -> bool {
        let mut reaped = self.reaped.clone();
        let waited = tokio::time::timeout_at(deadline, reaped.wait_for(Option::is_some))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => true,
            // The reaper task was dropped (runtime shutting down): trust only what it recorded.
            Ok(false) => reaped.borrow().is_some(),
            Err(_elapsed) => false,
        }
    }
}

impl Supervisor {
    /// A supervisor and the receiving end of its exit channel, which holds up to
    /// `exits_capacity` (at least 1) undelivered exits.
    pub fn new(exits_capacity: usize) -> (Supervisor, mpsc::Receiver<Exit>) {
        let (exits, rx) = mpsc::channel(exits_capacity.max(1));
        let inner = Inner {
            slots: Mutex::new(HashMap::new()),
            exits,
        };
        (
            Supervisor {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// Starts `spec` as `/bin/sh -c <command>` in its own process group (pgid = pid), stdin null,
    /// and returns its pid. Its exit is delivered on the exit channel the moment it is reaped.
    /// Leftover members of a previous incarnation's process group are killed first.
    ///
    /// # Errors
    /// [`ProcessError::AlreadyRunning`] if the component runs here; [`ProcessError::TooMany`] at
    /// [`PROCESSES_MAX`]; [`ProcessError::LogFile`] / [`ProcessError::Spawn`] if it cannot start.
    ///
    /// # Panics
    /// Outside a Tokio runtime (like `tokio::spawn`).
    pub fn spawn(&self, spec: ProcessSpec) -> Result<u32, ProcessError> {
        let component = spec.component.clone();
        // Fail fast before touching the file system; checked again under the lock below.
        self.check_room(&self.inner.lock(), &component)?;
        let ctx = Context {
            cwd: spec.cwd.clone(),
            log_path: spec.log_path.clone(),
        };
        let mut cmd = helper::shell(&spec.command, &spec.env, &ctx).map_err(|source| {
            ProcessError::LogFile {
                component: component.clone(),
                path: spec.log_path.clone().unwrap_or_default(),
                source,
            }
        })?;
        cmd.kill_on_drop(false);

        let mut slots = self.inner.lock();
        self.check_room(&slots, &component)?;
        // Leftovers of the previous incarnation may hold its resources (ports, locks): kill them
        // before the new one starts.
        if let Some(pgid) = slots
            .get_mut(&component)
            .and_then(|s| s.leftover_pgid.take())
        {
            kill_leftovers(&component, pgid);
        }
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            component: component.clone(),
            command: spec.command.clone(),
            source,
        })?;
        let pid = child.id().expect("a child not yet awaited has a pid");
        let (reaped_tx, reaped_rx) = watch::channel(None);
        let expected = Arc::new(AtomicBool::new(false));
        let slot = slots.entry(component.clone()).or_default();
        slot.live = Some(Live {
            pid,
            expected: Arc::clone(&expected),
            reaped: reaped_rx,
        });
        slot.ctx = ctx;
        drop(slots);

        tracing::info!(
            component,
            pid,
            command = spec.command,
            "component process started"
        );
        let reaper = Reaper {
            inner: Arc::clone(&self.inner),
            component,
            pid,
            expected,
            reaped: reaped_tx,
        };
        tokio::spawn(reaper.run(child));
        Ok(pid)
    }

    /// Errors unless `component` may start now: not running, and room in the table.
    fn check_room(
        &self,
        slots: &HashMap<String, Slot>,
        component: &str,
    ) -> Result<(), ProcessError> {
        match slots.get(component) {
            Some(Slot {
                live: Some(live), ..
            }) => Err(ProcessError::AlreadyRunning {
                component: component.to_owned(),
                pid: live.pid,
            }),
            Some(_) => Ok(()),
            None if slots.len() >= PROCESSES_MAX => Err(ProcessError::TooMany {
                component: component.to_owned(),
                max: PROCESSES_MAX,
            }),
            None => Ok(()),
        }
    }

    /// The pid of the component's running process, if any.
    pub fn pid(&self, component: &str) -> Option<u32> {
        self.live(component).map(|(live, _)| live.pid)
    }

    /// Every running process as (component, pid), sorted by component.
    pub fn running(&self) -> Vec<(String, u32)> {
        let slots = self.inner.lock();
        let mut running: Vec<_> = slots
            .iter()
            .filter_map(|(c, s)| s.live.as_ref().map(|l| (c.clone(), l.pid)))
            .collect();
        running.sort();
        running
    }

    /// Sends `sig` to the component's process group (drills: SIGSTOP / SIGCONT; tests).
    ///
    /// # Errors
    /// [`ProcessError::NotRunning`], or [`ProcessError::Signal`] if the kernel refused.
    pub fn signal(&self, component: &str, sig: Signal) -> Result<(), ProcessError> {
        let (live, _) = self
            .live(component)
            .ok_or_else(|| ProcessError::NotRunning {
                component: component.to_owned(),
            })?;
        killpg(helper::as_pid(live.pid), sig).map_err(|source| ProcessError::Signal {
            component: component.to_owned(),
            pid: live.pid,
            signal: sig,
            source,
        })
    }

    /// The component's running process and context, if it runs.
    pub(super) fn live(&self, component: &str) -> Option<(Live, Context)> {
        let slots = self.inner.lock();
        let slot = slots.get(component)?;
        Some((slot.live.clone()?, slot.ctx.clone()))
    }
}

impl Inner {
    /// The table. A poisoned lock means a panic mid-update: the table can no longer be trusted.
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots
            .lock()
            .expect("process table lock poisoned: a panic interrupted a table update")
    }

    /// Delivers `exit` without blocking forever: at once if there is room, else waits up to
    /// [`EXIT_SEND_TIMEOUT_MS`]; if the receiver is gone, drops it.
    async fn deliver(&self, exit: Exit) {
        let exit = match self.exits.try_send(exit) {
            Ok(()) | Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(exit)) => exit,
        };
        tracing::warn!(
            component = exit.component,
            "exit channel full; waiting for room"
        );
        let timeout = Duration::from_millis(EXIT_SEND_TIMEOUT_MS);
        if tokio::time::timeout(timeout, self.exits.send(exit.clone()))
            .await
            .is_err()
        {
            tracing::error!(
                component = exit.component,
                pid = exit.pid,
                kind = %exit.kind,
                "exit event dropped: the director did not read exits for {timeout:?}"
            );
        }
    }
}

/// The task that owns one child: awaits its reaping and reports it.
struct Reaper {
    /// The table to update.
    inner: Arc<Inner>,
    /// Whose process.
    component: String,
    /// Its pid.
    pid: u32,
    /// Whether we stopped it.
    expected: Arc<AtomicBool>,
    /// Wakes terminate / cleanup waiters.
    reaped: watch::Sender<Option<ExitKind>>,
}

impl Reaper {
    /// Awaits `child` (event driven: tokio's SIGCHLD handling), then, in this order: removes it
    /// from the table (so a waiter woken next may spawn again), wakes waiters, sends the [`Exit`].
    async fn run(self, mut child: Child) {
        let kind = match child.wait().await {
            Ok(status) => ExitKind::from(status),
            Err(error) => {
                tracing::error!(component = self.component, pid = self.pid, %error,
                    "could not collect the exit status; treating the process as gone");
                ExitKind::Unknown
            }
        };
        {
            let mut slots = self.inner.lock();
            if let Some(slot) = slots.get_mut(&self.component) {
                if slot.live.as_ref().is_some_and(|l| l.pid == self.pid) {
                    slot.live = None;
                    slot.leftover_pgid = Some(self.pid);
                }
            }
        }
        self.reaped.send_replace(Some(kind));
        let expected = self.expected.load(Ordering::SeqCst);
        if expected {
            tracing::info!(component = self.component, pid = self.pid, %kind, "component stopped");
        } else {
            tracing::warn!(component = self.component, pid = self.pid, %kind, "component exited");
        }
        let exit = Exit {
            component: self.component,
            pid: self.pid,
            kind,
            expected,
        };
        self.inner.deliver(exit).await;
    }
}

/// SIGKILLs what is left of process group `pgid` after its leader was reaped.
///
/// Guard against pid reuse: while any member of the group lives, the kernel does not hand out
/// `pgid` as a pid again. So if a process `pgid` exists now, our group is empty and the number
/// belongs to someone else: leave it alone.
pub(super) fn kill_leftovers(component: &str, pgid: u32) {
    match kill(helper::as_pid(pgid), None) {
        Err(Errno::ESRCH) => {}
        Ok(()) | Err(_) => return,
    }
    match killpg(helper::as_pid(pgid), Signal::SIGKILL) {
        Ok(()) => tracing::warn!(
            component,
            pgid,
            "killed leftover members of the process group"
        ),
        Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!(component, pgid, %errno, "could not kill leftover group"),
    }
}

/// Adds `NINES_PID=<pid>` to `env` when the pid is known.
pub(super) fn with_pid(
    env: &BTreeMap<String, String>,
    pid: Option<u32>,
) -> BTreeMap<String, String> {
    let mut env = env.clone();
    if let Some(pid) = pid {
        env.insert("NINES_PID".to_owned(), pid.to_string());
    }
    env
}
