//! The counter: the smallest useful nines application, built only on the SDK.
//!
//! Run as a component of a 2N service group (see `deploy/local/model.toml`), each instance
//! opens a session with its agent. The one the cluster makes **active** counts up every
//! `COUNT_INTERVAL` and checkpoints the value with its assignment's epoch; the **standby** waits.
//! When the active dies, the standby is made active, reads the checkpoint and continues from the
//! last acknowledged value: nothing counted is lost, and a stale active (an older epoch) cannot
//! overwrite the new one's progress.
//!
//! Environment (set by the agent): `NINES_COMPONENT`, `NINES_SOCKET`, `NINES_ENDPOINTS` (the
//! checkpoint service). Optional: `NINES_COUNTER_DIR`, a directory where each instance appends
//! its HA transitions and acknowledged values to `<component>.log` (one line each:
//! `<unix ms> <event> <si> <value or HA state> <epoch>`; a process's first line is `started - <pid>
//! 0`), which drills and tests read to check that no two instances were active at once and that
//! no acknowledged value was lost.
//!
//! The work loop (active or standby) advances a progress counter every `COUNT_INTERVAL`; the
//! SDK kicks the component's watchdog only while it moves, so a stopped (SIGSTOP) or stuck
//! instance is caught by its agent.
//!
//! Fault injection for drills and tests: `NINES_COUNTER_FAULT=ignore-terminate` makes the
//! instance ignore SIGTERM and never answer the terminate callback (the agent must clean it
//! up); `NINES_COUNTER_FAULT=hang-healthcheck` makes it never answer a healthcheck;
//! `NINES_COUNTER_FAULT=stall-loop` makes its work loop stop after 20 turns (the process and its
//! session stay alive, so only the watchdog can tell).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nines_sdk::{
    Attributes, Callbacks, CheckpointClient, CsiSet, ErrorCode, HaState, OpenOptions, Session,
};

/// How often the active instance counts (and checkpoints).
pub const COUNT_INTERVAL: Duration = Duration::from_millis(100);
/// The checkpoint section holding the value.
pub const SECTION: &str = "value";

/// What the instance is doing now.
#[derive(Debug, Clone, Default)]
struct Role {
    /// (si, epoch) while active.
    active: Option<(String, u64)>,
}

/// Injected misbehaviour (`NINES_COUNTER_FAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    IgnoreTerminate,
    HangHealthcheck,
    StallLoop,
}

struct Shared {
    fault: Fault,
    /// Advanced by the work loop every iteration; the SDK kicks the component's watchdog only
    /// while it moves (set once the session is open).
    progress: std::sync::OnceLock<nines_sdk::Progress>,
    /// Turns of the work loop so far.
    turns: std::sync::atomic::AtomicU64,
    role: Mutex<Role>,
    wake: tokio::sync::Notify,
    log: Option<PathBuf>,
}

impl Shared {
    /// One more turn of the work loop (kicks the watchdog through the SDK).
    fn advance(&self) {
        let turns = self
            .turns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.fault == Fault::StallLoop && turns >= 20 {
            self.note("stalled - - 0");
            // Stuck for good: this task never yields again (the runtime's other worker keeps
            // the session answering, as a real stuck loop would).
            std::thread::sleep(Duration::from_secs(24 * 3600));
        }
        if let Some(p) = self.progress.get() {
            p.advance();
        }
    }

    fn note(&self, line: &str) {
        let Some(path) = &self.log else {
            return;
        };
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: with O_APPEND it lands whole, even when two tasks note at once
            // (`writeln!` writes piecewise, and lines from the session's callbacks and the work
            // loop interleaved into one unreadable line).
            let _ = f.write_all(format!("{ms} {line}\n").as_bytes());
        }
    }
}

struct Counter(Arc<Shared>);

impl Callbacks for Counter {
    async fn csi_set(&self, set: CsiSet) -> Result<(), String> {
        let s = &self.0;
        let ha = set.ha_state.as_str().to_lowercase();
        s.note(&format!("set {} {ha} {}", set.si, set.epoch));
        let mut role = s.role.lock().expect("role lock");
        role.active = (set.ha_state == HaState::Active).then(|| (set.si.clone(), set.epoch));
        drop(role);
        s.wake.notify_one();
        Ok(())
    }

    async fn csi_remove(&self, si: &str, _csi: &str) -> Result<(), String> {
        let s = &self.0;
        s.note(&format!("remove {si} - 0"));
        s.role.lock().expect("role lock").active = None;
        Ok(())
    }

    async fn terminate(&self) -> Result<(), String> {
        let s = &self.0;
        if s.fault == Fault::IgnoreTerminate {
            s.note("terminate-ignored - - 0");
            std::future::pending::<()>().await;
        }
        s.note("terminate - - 0");
        s.role.lock().expect("role lock").active = None;
        Ok(())
    }

    async fn healthcheck(&self, _key: &str) -> Result<(), String> {
        if self.0.fault == Fault::HangHealthcheck {
            self.0.note("healthcheck-hung - - 0");
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Run the counter until the agent asks it to terminate (Ok) or the session breaks (Err).
pub async fn run() -> Result<(), String> {
    let component = std::env::var("NINES_COMPONENT").unwrap_or_else(|_| "counter".into());
    let log = std::env::var_os("NINES_COUNTER_DIR")
        .map(PathBuf::from)
        .map(|d| d.join(format!("{component}.log")));
    let fault = match std::env::var("NINES_COUNTER_FAULT").as_deref() {
        Ok("ignore-terminate") => Fault::IgnoreTerminate,
        Ok("hang-healthcheck") => Fault::HangHealthcheck,
        Ok("stall-loop") => Fault::StallLoop,
        _ => Fault::None,
    };
    // Ignoring SIGTERM: a handler that does nothing replaces the default (exit).
    let _sigterm = if fault == Fault::IgnoreTerminate {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    } else {
        None
    };
    let shared = Arc::new(Shared {
        fault,
        progress: std::sync::OnceLock::new(),
        turns: std::sync::atomic::AtomicU64::new(0),
        role: Mutex::new(Role::default()),
        wake: tokio::sync::Notify::new(),
        log,
    });
    // Before the session: its callbacks may run before `connect` returns, and a reader of the
    // log takes this line as the start of a new process.
    shared.note(&format!("started - {} 0", std::process::id()));
    let session = Session::connect(Counter(shared.clone()))
        .await
        .map_err(|e| e.to_string())?;
    shared.note(&format!("registered {} - 0", session.node()));
    let _ = shared.progress.set(session.kicker().progress());
    let worker = tokio::spawn(count(shared.clone()));
    let result = session.closed().await.map_err(|e| e.to_string());
    worker.abort();
    result
}

/// The active's loop: resume from the checkpoint, then count and checkpoint with the epoch.
async fn count(shared: Arc<Shared>) {
    let client = match CheckpointClient::from_env().await {
        Ok(c) => c,
        Err(e) => {
            shared.note(&format!("no-checkpoints - {e} 0"));
            return;
        }
    };
    loop {
        shared.advance();
        let Some((si, epoch)) = shared.role.lock().expect("role lock").active.clone() else {
            // Standby: wake up every interval anyway, so the work loop keeps kicking.
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(COUNT_INTERVAL) => {}
            }
            continue;
        };
        if let Err(e) = serve(&shared, &client, &si, epoch).await {
            shared.note(&format!("error {si} {} {epoch}", e.replace(' ', "_")));
            tokio::time::sleep(COUNT_INTERVAL).await;
        }
    }
}

/// Count while this instance stays active at `epoch`.
async fn serve(
    shared: &Shared,
    client: &CheckpointClient,
    si: &str,
    epoch: u64,
) -> Result<(), String> {
    let name = format!("counter-{si}");
    let cp = client
        .open(&name, OpenOptions::create(Attributes::default()))
        .await
        .map_err(|e| e.to_string())?
        .with_epoch(epoch);
    let mut value: u64 = match cp.read(SECTION).await {
        Ok(v) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
        Err(e) if e.code() == Some(ErrorCode::NotExist) => 0,
        Err(e) => return Err(e.to_string()),
    };
    shared.note(&format!("resumed {si} {value} {epoch}"));
    loop {
        shared.advance();
        let still = shared.role.lock().expect("role lock").active.clone();
        if still.as_ref().map(|(s, e)| (s.as_str(), *e)) != Some((si, epoch)) {
            return Ok(());
        }
        value += 1;
        cp.write(SECTION, value.to_string().into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        shared.note(&format!("wrote {si} {value} {epoch}"));
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}
