//! `nines bench amf`: failover of the counter example's 2N SI on a throw-away local 3-node
//! cluster. Each trial kills the active (its component with `kill -9`, or with `--node-kill` its
//! whole agent), then reads the failover's timeline from the AMF history: detected (process exit
//! seen, or node declared down), decided, and the standby confirming active. Times are measured
//! from the kill, on this machine's wall clock (the agents run here too).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use nines_proto::amf::v1::AmfStatusReply;
use serde::Serialize;

use crate::amf_cmd::fetch_status;
use crate::drill::observe;
use crate::local::{LocalCluster, LocalOptions};

/// The counter example's model (deploy/local/model.toml), embedded so that the benchmark and the
/// demo need no files.
pub const COUNTER_MODEL: &str = include_str!("../../deploy/local/model.toml");
/// The counter's SI.
pub const COUNTER_SI: &str = "counter-si";
/// How long one trial may take before the benchmark gives up.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);

/// One trial's timeline, in ms after the kill.
#[derive(Debug, Clone, Serialize)]
pub struct AmfTrial {
    /// Trial number (1-based).
    pub trial: usize,
    /// The SU whose component (or node) was killed.
    pub killed_su: String,
    /// The SU that became active.
    pub new_active_su: String,
    /// Kill → failure detected.
    pub detected_ms: f64,
    /// Kill → recovery decided.
    pub decided_ms: f64,
    /// Kill → new active confirmed.
    pub confirmed_ms: f64,
}

/// A local cluster running the counter example (its model written into the cluster's dir).
pub fn start_counter_cluster(bin: &std::path::Path) -> anyhow::Result<LocalCluster> {
    let opts = LocalOptions {
        amf_model_text: Some(COUNTER_MODEL.to_string()),
        ..Default::default()
    };
    LocalCluster::start(bin, 3, opts)
}

/// The counter SI's settled (nothing in flight) active and standby SUs.
pub fn settled(st: &AmfStatusReply) -> Option<(String, String)> {
    observe::settled(st, COUNTER_SI)
}

/// Wait until the counter SI has a settled active and standby.
pub async fn wait_settled(endpoints: &[String], limit: Duration) -> anyhow::Result<AmfStatusReply> {
    observe::wait_settled(endpoints, COUNTER_SI, limit).await
}

/// How a trial breaks the active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 the active component.
    ComponentKill,
    /// SIGSTOP the active component (its watchdog must catch it).
    ComponentHang,
    /// kill -9 the active's whole agent.
    NodeKill,
}

/// Run `trials` failovers; `on_trial` sees each as it completes.
pub async fn run(
    c: &mut LocalCluster,
    trials: usize,
    fault: Fault,
    mut on_trial: impl FnMut(&AmfTrial),
) -> anyhow::Result<Vec<AmfTrial>> {
    let node_kill = fault == Fault::NodeKill;
    let mut out = Vec::new();
    for trial in 1..=trials {
        let eps = c.endpoints();
        let st = wait_settled(&eps, TRIAL_LIMIT).await?;
        let (active, _) = settled(&st).ok_or_else(|| anyhow!("not settled"))?;
        let seen = observe::last_index(&st);
        let node = observe::node_of_su(&st, &active).ok_or_else(|| anyhow!("no SU {active}"))?;
        let node_id: u64 = node.trim_start_matches('n').parse()?;
        let killed_at = observe::now_ms();
        if node_kill {
            c.kill(node_id)?;
        } else {
            let (_, pid) = observe::running_components(&st, &active)
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("the active SU {active} has no running component"))?;
            let sig = if fault == Fault::ComponentHang {
                nix::sys::signal::Signal::SIGSTOP
            } else {
                nix::sys::signal::Signal::SIGKILL
            };
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)?;
        }
        let t = wait_failover(c, seen, trial, &active, killed_at).await?;
        on_trial(&t);
        out.push(t);
        if node_kill {
            c.spawn(node_id)?;
        }
    }
    Ok(out)
}

async fn wait_failover(
    c: &LocalCluster,
    seen: u64,
    trial: usize,
    killed_su: &str,
    killed_at: u64,
) -> anyhow::Result<AmfTrial> {
    let deadline = Instant::now() + TRIAL_LIMIT;
    let ms = |t: u64| t.saturating_sub(killed_at) as f64;
    loop {
        if let Ok(st) = fetch_status(&c.endpoints(), true).await {
            if let Some(h) = observe::failover_after(&st, COUNTER_SI, seen) {
                let new_active = observe::actives(&st, COUNTER_SI)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                return Ok(AmfTrial {
                    trial,
                    killed_su: killed_su.to_string(),
                    new_active_su: new_active,
                    detected_ms: ms(h.detected_ms),
                    decided_ms: ms(h.decided_ms),
                    confirmed_ms: ms(h.confirmed_ms),
                });
            }
        }
        if Instant::now() >= deadline {
            bail!("trial {trial}: no failover confirmed within {TRIAL_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
