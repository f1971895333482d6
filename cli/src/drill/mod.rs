//! `nines drill`: rehearse a failure against a running cluster and measure what happened.
//!
//! One drill is a short script: check that the SI is protected (an active and a standby,
//! nothing in flight — otherwise refuse and say why, before breaking anything), start the probe
//! checkpoint writer ([`probe`]) and the assignment sampler ([`sampler`]), inject the fault
//! ([`fault`]: through the target node's guarded drill endpoint, or the admin API for a
//! switchover), follow the AMF history until the standby is confirmed active and the SI is
//! protected again ([`observe`]), put the cluster back as it was found (wait for a killed agent's
//! supervisor to restart it, continue a stopped process), then check the three promises:
//!
//! 1. never two actives: no sample of the agreed assignments showed two actives for the SI;
//! 2. no acknowledged write lost: every acknowledged probe write reads back intact;
//! 3. failover that is fast and measured: the standby was confirmed active (within `--max-ms`
//!    if given) and the SI was protected again within the drill's deadline.
//!
//! Every wait is bounded. [`report`] prints the timeline and, over `--repeat N`, the spread of
//! each phase; [`local`] runs drills on a throw-away cluster whose killed agents it restarts
//! (`nines drill --local`, `nines demo`, the tests).

pub mod fault;
pub mod local;
pub mod observe;
pub mod probe;
pub mod report;
pub mod sampler;
mod timeline;

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;

pub use report::{Check, DrillReport, Phase};

/// The drills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillKind {
    /// kill -9 the SI's active component.
    ComponentKill,
    /// SIGSTOP the SI's active component (its watchdog or healthcheck must catch it).
    ComponentHang,
    /// kill -9 a node's agent and its components.
    NodeKill,
    /// kill -9 the raft leader's agent and its components.
    LeaderKill,
    /// Swap the SI's active and standby (admin si-swap).
    Switchover,
    /// SIGSTOP a node's agent (not its components) for a while, then SIGCONT.
    AgentPause,
    /// Cut a node's network link and restore it, again and again (network namespaces only).
    LinkFlap,
}

impl DrillKind {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            DrillKind::ComponentKill => "component-kill",
            DrillKind::ComponentHang => "component-hang",
            DrillKind::NodeKill => "node-kill",
            DrillKind::LeaderKill => "leader-kill",
            DrillKind::Switchover => "switchover",
            DrillKind::AgentPause => "agent-pause",
            DrillKind::LinkFlap => "link-flap",
        }
    }

    /// Whether the fault may pass without the cluster noticing (a short pause or flap need not
    /// make the node be declared down): then no failover is not a broken promise.
    pub fn may_go_unnoticed(self) -> bool {
        matches!(self, DrillKind::AgentPause | DrillKind::LinkFlap)
    }
}

/// How a link flaps: down for `down`, up for `up`, again and again for `span`; left up after.
#[derive(Debug, Clone, Copy)]
pub struct Flap {
    /// How long the link stays down each time.
    pub down: Duration,
    /// How long it stays up between cuts.
    pub up: Duration,
    /// How long the flapping lasts.
    pub span: Duration,
}

impl Flap {
    /// How many cuts the flapping makes (at least one).
    pub fn cuts(&self) -> u32 {
        let period = (self.down + self.up).as_millis().max(1);
        (self.span.as_millis().div_ceil(period) as u32).max(1)
    }
}

/// What to drill and how long to wait for each step.
#[derive(Debug, Clone)]
pub struct DrillSpec {
    /// The drill.
    pub kind: DrillKind,
    /// The SI to watch (default: the model's only SI).
    pub si: Option<String>,
    /// The node for node-kill, pause and link-flap (default: the node of the SI's active).
    pub node: Option<String>,
    /// How long a pause lasts.
    pub pause: Duration,
    /// How a link flaps (link-flap).
    pub flap: Flap,
    /// The switch that cuts links, when the cluster runs in namespaces of its own (link-flap).
    pub links: Option<crate::netns::LinkSwitch>,
    /// Fault → SI protected again, at most.
    pub timeout: Duration,
    /// How long to wait for a killed or paused agent to come back, and the SI to settle, after.
    pub rejoin_timeout: Duration,
    /// Fault → standby confirmed active must be within this, if set (promise 3).
    pub max_ms: Option<u64>,
}

impl DrillSpec {
    /// A drill with the default deadlines.
    pub fn new(kind: DrillKind) -> DrillSpec {
        DrillSpec {
            kind,
            si: None,
            node: None,
            pause: Duration::from_secs(3),
            flap: Flap {
                down: Duration::from_millis(300),
                up: Duration::from_millis(300),
                span: Duration::from_secs(6),
            },
            links: None,
            timeout: Duration::from_secs(30),
            rejoin_timeout: Duration::from_secs(60),
            max_ms: None,
        }
    }
}

/// How long the SI may take to settle before a drill starts.
const PREFLIGHT_LIMIT: Duration = Duration::from_secs(20);
/// Probe writes before the fault, so that the probe is known to work.
const BASELINE_MS: u64 = 200;

/// The SI to drill: the one named, or the model's only SI.
async fn resolve_si(endpoints: &[String], si: Option<&str>) -> anyhow::Result<String> {
    let st = observe::status(endpoints, None)
        .await
        .ok_or_else(|| anyhow!("no agent answered an AMF status; is the cluster running?"))?;
    if st.empty {
        bail!("no AMF model is applied, so there is nothing to fail over; apply one with `nines admin model apply FILE`");
    }
    let names: Vec<&str> = st.sis.iter().map(|s| s.name.as_str()).collect();
    match si {
        Some(s) if names.contains(&s) => Ok(s.to_string()),
        Some(s) => bail!("no SI named {s} (SIs: {})", names.join(", ")),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => bail!(
            "the model has several SIs; pick one with --si ({})",
            names.join(", ")
        ),
    }
}

/// Run one drill. `progress` sees a short line at each step (for a live status line).
///
/// A broken promise is a failed check in the report, not an error; an error means the drill
/// could not run (no cluster, drills disabled on the target node, bad arguments).
pub async fn run_once(
    endpoints: &[String],
    spec: &DrillSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<DrillReport> {
    let si = resolve_si(endpoints, spec.si.as_deref()).await?;
    let spec = &DrillSpec {
        si: Some(si.clone()),
        ..spec.clone()
    };
    progress(&format!(
        "waiting for {si} to have a settled active and standby"
    ));
    let st = match timeline::preflight(endpoints, &si, PREFLIGHT_LIMIT).await? {
        Ok(st) => st,
        Err(why) => return Ok(DrillReport::refused(spec.kind, &si, why)),
    };
    let plan = timeline::plan(endpoints, spec, &si, &st).await?;
    progress("starting the probe checkpoint writer");
    let probe = probe::Probe::start(endpoints).await?;
    let sampler = sampler::Sampler::start(endpoints, &si, plan.avoid.clone());
    tokio::time::sleep(Duration::from_millis(BASELINE_MS)).await;
    progress(&format!("injecting: {}", plan.what));
    let injected = match plan.inject(endpoints, spec).await {
        Ok(i) => i,
        Err(e) => {
            let _ = sampler.stop().await;
            let _ = probe.finish().await;
            return Err(e);
        }
    };
    let mut t = timeline::follow(spec, &plan, &injected, &sampler, &probe, progress).await;
    timeline::restore(spec, &plan, &injected, endpoints, &mut t, progress).await;
    progress("verifying every acknowledged probe write");
    let samples = sampler.stop().await;
    let probe = probe.finish().await?;
    Ok(DrillReport::build(
        spec, &si, &plan, &injected, t, samples, probe,
    ))
}
