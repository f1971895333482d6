//! The node's watchdogs: the watchdog device (`[watchdog] device`) and systemd's (`sd_notify`
//! when `NOTIFY_SOCKET` is set). Both are kicked only while the agent is healthy: its heartbeat
//! loop ticked recently, and the node is not fenced with components still running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nines_consensus::Proposer;
use nines_core::shutdown::ShutdownSignal;
use nines_watchdog::{DevWatchdog, NodeWatchdog, Notifier};

use crate::heartbeat::LocalHealth;
use crate::{AgentConfig, AgentState};

/// How many heartbeat intervals without a tick still count as healthy.
const TICKS_MISSED_MAX: u32 = 3;
/// How often readiness is checked before `READY=1`.
const READY_POLL: Duration = Duration::from_millis(100);

/// Whether the agent may kick its watchdogs now.
#[derive(Clone)]
pub(crate) struct Health {
    pub(crate) local: Arc<Mutex<LocalHealth>>,
    pub(crate) fence_done: Arc<AtomicBool>,
    pub(crate) interval: Duration,
}

impl Health {
    pub(crate) fn ok(&self) -> bool {
        let h = self.local.lock().expect("health lock poisoned");
        let ticking = h
            .last_tick
            .is_some_and(|t| t.elapsed() <= self.interval * TICKS_MISSED_MAX);
        ticking && (!h.fenced || self.fence_done.load(Ordering::SeqCst))
    }
}

/// Start the device watchdog (if configured; it writes the magic close when `device_stop`
/// fires, which the agent fires only after its components are stopped) and the systemd
/// notifications (if under systemd).
pub(crate) fn start(
    cfg: &AgentConfig,
    health: Health,
    proposer: Proposer<AgentState>,
    shutdown: &ShutdownSignal,
    device_stop: ShutdownSignal,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let mut device_task = None;
    if let Some(path) = &cfg.watchdog.device {
        let dev = DevWatchdog::open(path).map_err(|e| e.to_string())?;
        let wd = NodeWatchdog::new(dev, cfg.watchdog.timeout_s).map_err(|e| e.to_string())?;
        let interval = Duration::from_millis(wd.timeout_ms() / 4);
        let h = health.clone();
        let sd = device_stop;
        tracing::info!(device = %path.display(), timeout_s = cfg.watchdog.timeout_s, "node watchdog armed");
        device_task = Some(tokio::spawn(async move {
            if let Err(e) = wd.run(interval, move || h.ok(), sd).await {
                tracing::error!("node watchdog: {e}");
            }
        }));
    }
    let notifier = Notifier::from_env();
    if notifier.enabled() {
        tokio::spawn(systemd(notifier, health, proposer, shutdown.clone()));
    }
    Ok(device_task)
}

/// `READY=1` once the node knows a leader, then `WATCHDOG=1` at half of `WATCHDOG_USEC` while
/// healthy, and `STOPPING=1` at shutdown.
async fn systemd(
    notifier: Notifier,
    health: Health,
    proposer: Proposer<AgentState>,
    mut shutdown: ShutdownSignal,
) {
    loop {
        if proposer.status().leader_id.is_some() {
            notifier.ready();
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(READY_POLL) => {}
        }
    }
    let Some(every) = Notifier::watchdog_interval() else {
        shutdown.wait().await;
        notifier.stopping();
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => {
                notifier.stopping();
                return;
            }
            _ = tick.tick() => {
                if health.ok() {
                    notifier.watchdog();
                }
            }
        }
    }
}
