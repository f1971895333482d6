//! One drill's script, step by step: preflight (is the SI protected?), plan (whom to break,
//! whether a failover is expected), inject, follow the AMF history to the end of the failover,
//! and restore the cluster as it was found. Every wait is bounded by the spec's deadlines.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use nines_proto::amf::v1::AmfStatusReply;
use nines_proto::drill::v1::Signal;

use super::fault::NodeEndpoint;
use super::observe::{self, now_ms};
use super::probe::Probe;
use super::sampler::Sampler;
use super::{DrillKind, DrillSpec};

/// After a pause ends, how long a detection may still show up in the history.
const PAUSE_GRACE_MS: u64 = 2_000;

/// Wait for the SI to be protected, with a quiet history ([`observe::QUIET`]). `Ok(Err(why))`:
/// it is not, and will not be soon (no standby candidate at all, or not settled within `limit`);
/// `Err`: no agent answered.
pub(super) async fn preflight(
    endpoints: &[String],
    si: &str,
    limit: Duration,
) -> anyhow::Result<Result<AmfStatusReply, String>> {
    let deadline = Instant::now() + limit;
    let mut last: Option<AmfStatusReply> = None;
    let mut quiet = observe::Quiet::default();
    loop {
        if let Some(st) = observe::status(endpoints, None).await {
            if observe::settled(&st, si).is_some() {
                if quiet.is_quiet(&st) {
                    return Ok(Ok(st));
                }
                last = Some(st);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if no_candidate(&st, si) {
                return Ok(Err(observe::why_unprotected(&st, si)));
            }
            last = Some(st);
        }
        if Instant::now() >= deadline {
            return match last {
                Some(st) if observe::settled(&st, si).is_some() => Ok(Err(format!(
                    "{si} is protected, but the AMF history kept changing for {limit:?} (see \
                     `nines amf history`): wait for the cluster to calm down"
                ))),
                Some(st) => Ok(Err(format!(
                    "not settled within {limit:?}: {}",
                    observe::why_unprotected(&st, si)
                ))),
                None => Err(anyhow!("no agent answered an AMF status within {limit:?}")),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nothing in flight, and no SU besides the assigned ones that could become the standby.
fn no_candidate(st: &AmfStatusReply, si_name: &str) -> bool {
    let Some(si) = observe::si(st, si_name) else {
        return true;
    };
    if si.assignments.iter().any(|a| !a.pending.is_empty()) {
        return false;
    }
    let has_standby = si.assignments.iter().any(|a| a.ha_state == "standby");
    let spare = st.sus.iter().any(|s| {
        s.sg == si.sg
            && !si.assignments.iter().any(|a| a.su == s.name)
            && s.admin_state == "unlocked"
            && s.readiness == "in_service"
    });
    !has_standby && !spare
}

/// Whom a drill breaks and what it expects.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The SI's active before the fault.
    pub old_active: String,
    /// Its standby before the fault.
    pub old_standby: String,
    /// The history index before the fault (later entries are the drill's).
    pub seen: u64,
    /// The node broken (its drill endpoint), if any.
    pub target: Option<NodeEndpoint>,
    /// The component broken, if any.
    pub component: Option<(String, u32)>,
    /// The target agent's pid before the fault (to see a restarted one).
    pub agent_pid: u32,
    /// Whether the SI must fail (or switch) over.
    pub expect_failover: bool,
    /// Endpoint to read from last while the target is broken.
    pub avoid: Option<String>,
    /// The fault, in words.
    pub what: String,
}

/// The fault as injected.
#[derive(Debug, Clone)]
pub struct Injected {
    /// When, ms since the Unix epoch (the target agent's clock, or this host's for a switchover).
    pub at_ms: u64,
}

/// Resolve the drill's target from the settled status `st`.
pub(super) async fn plan(
    endpoints: &[String],
    spec: &DrillSpec,
    si: &str,
    st: &AmfStatusReply,
) -> anyhow::Result<Plan> {
    let (old_active, old_standby) = observe::settled(st, si).expect("preflight settled");
    let active_node = observe::node_of_su(st, &old_active)
        .ok_or_else(|| anyhow!("the active SU {old_active} has no node in the status"))?;
    let mut plan = Plan {
        old_active: old_active.clone(),
        old_standby,
        seen: observe::last_index(st),
        target: None,
        component: None,
        agent_pid: 0,
        expect_failover: true,
        avoid: None,
        what: format!("admin si-swap {si}"),
    };
    let node = match spec.kind {
        DrillKind::Switchover => return Ok(plan),
        DrillKind::LeaderKill => NodeEndpoint::leader(endpoints).await?,
        DrillKind::ComponentKill | DrillKind::ComponentHang => {
            NodeEndpoint::find(endpoints, &active_node).await?
        }
        DrillKind::NodeKill | DrillKind::AgentPause | DrillKind::LinkFlap => {
            let n = spec.node.clone().unwrap_or(active_node.clone());
            NodeEndpoint::find(endpoints, &n).await?
        }
    };
    if spec.kind == DrillKind::LinkFlap {
        let Some(links) = &spec.links else {
            bail!(
                "link-flap cuts a real network link, so it runs on a cluster it puts in network \
                 namespaces of its own: `nines drill link-flap --local` (as root, with iproute2)"
            );
        };
        if !links.nodes().any(|n| n == node.node) {
            bail!("node {} has no link this drill can cut", node.node);
        }
    }
    let info = node.require_enabled().await?;
    plan.agent_pid = info.agent_pid;
    plan.expect_failover = node.node == active_node;
    plan.avoid = Some(node.addr.clone());
    plan.what = match spec.kind {
        DrillKind::ComponentKill | DrillKind::ComponentHang => {
            let comps = observe::running_components(st, &old_active);
            let (name, pid) = comps.first().cloned().ok_or_else(|| {
                anyhow!("the active SU {old_active} has no running component to break")
            })?;
            let sig = if spec.kind == DrillKind::ComponentKill {
                "kill -9"
            } else {
                "kill -STOP"
            };
            let what = format!(
                "{sig} {name} (pid {pid}, active {old_active} on {})",
                node.node
            );
            plan.component = Some((name, pid));
            what
        }
        DrillKind::NodeKill | DrillKind::LeaderKill => {
            format!(
                "kill -9 node {}'s agent (pid {}) and components",
                node.node, info.agent_pid
            )
        }
        DrillKind::AgentPause => {
            if spec.pause.as_millis() as u64 > info.pause_ms_max {
                bail!(
                    "node {} accepts pauses up to {} ms (`[drill] pause_ms_max`); use a shorter \
                     --for",
                    node.node,
                    info.pause_ms_max
                );
            }
            format!(
                "kill -STOP node {}'s agent (pid {}) for {} ms",
                node.node,
                info.agent_pid,
                spec.pause.as_millis()
            )
        }
        DrillKind::LinkFlap => format!(
            "flap node {}'s link: down {} ms, up {} ms, {} times",
            node.node,
            spec.flap.down.as_millis(),
            spec.flap.up.as_millis(),
            spec.flap.cuts()
        ),
        DrillKind::Switchover => unreachable!("returned above"),
    };
    plan.target = Some(node);
    Ok(plan)
}

impl Plan {
    /// Inject the fault.
    pub(super) async fn inject(
        &self,
        endpoints: &[String],
        spec: &DrillSpec,
    ) -> anyhow::Result<Injected> {
        let target = self.target.as_ref();
        let at_ms = match (spec.kind, target, &self.component) {
            (DrillKind::Switchover, _, _) => {
                let at_ms = now_ms();
                let si = spec
                    .si
                    .as_deref()
                    .expect("the SI is resolved before the plan");
                super::fault::switchover(endpoints, si).await?;
                at_ms
            }
            (DrillKind::ComponentKill, Some(n), Some((c, _))) => {
                n.signal(c, Signal::Kill).await?.at_ms
            }
            (DrillKind::ComponentHang, Some(n), Some((c, _))) => {
                n.signal(c, Signal::Stop).await?.at_ms
            }
            (DrillKind::NodeKill | DrillKind::LeaderKill, Some(n), _) => n.kill().await?.at_ms,
            (DrillKind::AgentPause, Some(n), _) => n.pause(spec.pause).await?.at_ms,
            (DrillKind::LinkFlap, Some(n), _) => {
                let links = spec.links.clone().expect("the plan checked the links");
                start_flapping(links, n.node.clone(), spec.flap)?
            }
            _ => bail!("internal: the drill's plan has no target"),
        };
        Ok(Injected { at_ms })
    }
}

/// Cut the node's link now and start flapping it in the background; returns when the first cut
/// was made. The flapping ends on its own, link up, after `flap.cuts()` cuts (even if the drill
/// is gone); [`restore`] waits for that and makes sure the link is up.
fn start_flapping(
    links: crate::netns::LinkSwitch,
    node: String,
    flap: super::Flap,
) -> anyhow::Result<u64> {
    links.set(&node, false)?;
    let at_ms = now_ms();
    std::thread::spawn(move || {
        for cut in 0..flap.cuts() {
            if cut > 0 {
                let _ = links.set(&node, false);
            }
            std::thread::sleep(flap.down);
            let mut restored = links.set(&node, true);
            for _ in 0..10 {
                if restored.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
                restored = links.set(&node, true);
            }
            if let Err(e) = restored {
                eprintln!("nines drill: cannot restore node {node}'s link: {e:#}");
                return;
            }
            std::thread::sleep(flap.up);
        }
    });
    Ok(at_ms)
}

/// When the fault ends: the pause's or flapping's end, ms since the Unix epoch.
fn fault_end(spec: &DrillSpec, injected: &Injected) -> Option<u64> {
    let span = match spec.kind {
        DrillKind::AgentPause => spec.pause,
        DrillKind::LinkFlap => (spec.flap.down + spec.flap.up) * spec.flap.cuts(),
        _ => return None,
    };
    Some(injected.at_ms + span.as_millis() as u64)
}

/// What the drill saw of the failover, in ms since the Unix epoch.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Failure detected (process exit, watchdog, node declared down) or admin op accepted.
    pub detected: Option<u64>,
    /// Recovery decided.
    pub decided: Option<u64>,
    /// The new active confirmed.
    pub confirmed: Option<u64>,
    /// The SI protected again and the cluster acknowledging writes.
    pub restored: Option<u64>,
    /// The SU active after the drill.
    pub new_active: Option<String>,
    /// Why a phase is missing, or what else happened.
    pub notes: Vec<String>,
    /// Whether the cluster is back as found.
    pub left_as_found: bool,
    /// The last status seen (for diagnosis).
    pub last: Option<AmfStatusReply>,
}

/// Follow the history until the SI is protected again, or the deadline.
pub(super) async fn follow(
    spec: &DrillSpec,
    plan: &Plan,
    injected: &Injected,
    sampler: &Sampler,
    probe: &Probe,
    progress: &mut dyn FnMut(&str),
) -> Seen {
    let si = spec.si.clone().expect("the SI is resolved before the plan");
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let pause_end = fault_end(spec, injected).map(|end| end + PAUSE_GRACE_MS);
    let mut latest = sampler.latest();
    let mut seen = Seen::default();
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let changed = tokio::time::timeout(wait, latest.changed()).await;
        let Some((at_ms, st)) = latest.borrow_and_update().clone() else {
            if changed.is_err() {
                break;
            }
            continue;
        };
        update(&mut seen, spec, plan, &st, &si);
        let waiting_for = phase_wanted(&seen, plan, spec, pause_end, at_ms);
        progress(&format!(
            "{} ms: waiting for {waiting_for}",
            at_ms.saturating_sub(injected.at_ms)
        ));
        if waiting_for == "restored" {
            if let Some((a, _)) = observe::settled(&st, &si) {
                let failed_over = plan.expect_failover || spec.kind == DrillKind::Switchover;
                let moved = match spec.kind {
                    DrillKind::Switchover => a == plan.old_standby,
                    _ => !failed_over || seen.detected.is_none() || a != plan.old_active,
                };
                if let (true, Some(ack)) = (moved, probe.first_ack_sent_after(injected.at_ms)) {
                    seen.restored = Some(at_ms.max(ack));
                    seen.new_active = Some(a);
                }
            }
        }
        seen.last = Some(st);
        if seen.restored.is_some() || changed.is_err() || Instant::now() >= deadline {
            break;
        }
    }
    if seen.detected.is_none() && spec.kind.may_go_unnoticed() {
        let fault = match spec.kind {
            DrillKind::LinkFlap => format!("{} ms cuts", spec.flap.down.as_millis()),
            _ => format!("{} ms pause", spec.pause.as_millis()),
        };
        seen.notes.push(format!(
            "the node was not declared down during the {fault} (shorter than the failure \
             detector's timeout?): nothing to fail over"
        ));
    }
    seen
}

/// Fill in the phases the history now shows.
fn update(seen: &mut Seen, spec: &DrillSpec, plan: &Plan, st: &AmfStatusReply, si: &str) {
    if spec.kind == DrillKind::Switchover {
        let e = |kind, word| observe::entry_after(st, plan.seen, kind, si, word).map(|h| h.time_ms);
        seen.detected = seen.detected.or(e("admin", ""));
        seen.decided = seen.decided.or(e("assigned", ""));
        if seen.decided.is_some() {
            seen.confirmed = seen.confirmed.or(e("confirmed", " active "));
        }
        return;
    }
    if plan.expect_failover {
        if let Some(h) = observe::failover_after(st, si, plan.seen) {
            seen.detected = Some(h.detected_ms);
            seen.decided = Some(h.decided_ms);
            seen.confirmed = Some(h.confirmed_ms);
        }
    }
    if seen.detected.is_none() {
        if let Some(n) = &plan.target {
            if let Some(h) = observe::node_failure_after(st, plan.seen, &n.node) {
                seen.detected = Some(h.time_ms);
            }
        }
    }
}

/// The next phase the drill waits for.
fn phase_wanted(
    seen: &Seen,
    plan: &Plan,
    spec: &DrillSpec,
    pause_end: Option<u64>,
    now: u64,
) -> &'static str {
    let failover = plan.expect_failover || spec.kind == DrillKind::Switchover;
    let undetected_pause_over = pause_end.is_some_and(|end| now >= end);
    match (seen.detected, seen.confirmed) {
        (None, _) if !undetected_pause_over => "the failure to be detected",
        (Some(_), None) if failover && seen.decided.is_none() => "a decision",
        (Some(_), None) if failover => "the standby to confirm active",
        _ => "restored",
    }
}

/// Put the cluster back as it was found: continue a stopped component, wait for a killed or
/// paused agent to answer again (a killed one needs its supervisor), wait for the SI to settle.
pub(super) async fn restore(
    spec: &DrillSpec,
    plan: &Plan,
    injected: &Injected,
    endpoints: &[String],
    seen: &mut Seen,
    progress: &mut dyn FnMut(&str),
) {
    seen.left_as_found = true;
    if let (DrillKind::ComponentHang, Some(n), Some((c, _))) =
        (spec.kind, &plan.target, &plan.component)
    {
        // Normally the director killed it already; a live one must not stay stopped.
        let _ = n.signal(c, Signal::Cont).await;
    }
    let deadline = Instant::now() + spec.rejoin_timeout;
    if let (
        DrillKind::NodeKill | DrillKind::LeaderKill | DrillKind::AgentPause | DrillKind::LinkFlap,
        Some(n),
    ) = (spec.kind, &plan.target)
    {
        let killed = !spec.kind.may_go_unnoticed();
        progress(&if killed {
            format!(
                "waiting for node {}'s supervisor to restart its agent",
                n.node
            )
        } else if spec.kind == DrillKind::LinkFlap {
            format!("waiting for node {}'s link to stop flapping", n.node)
        } else {
            format!("waiting for node {}'s agent to resume", n.node)
        });
        if let Some(end) = fault_end(spec, injected) {
            tokio::time::sleep(Duration::from_millis(end.saturating_sub(now_ms()))).await;
        }
        if let (DrillKind::LinkFlap, Some(links)) = (spec.kind, &spec.links) {
            // The flapper leaves it up; make sure, in case it could not.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = links.set(&n.node, true) {
                seen.left_as_found = false;
                seen.notes
                    .push(format!("node {}'s link may be left down: {e:#}", n.node));
            }
        }
        if !wait_agent(n, plan.agent_pid, killed, deadline).await {
            seen.left_as_found = false;
            seen.notes.push(if killed {
                format!(
                    "node {}'s agent did not come back within {:?}: its supervisor must restart \
                     it (systemd Restart=always, a container restart policy); start it by hand",
                    n.node, spec.rejoin_timeout
                )
            } else {
                format!(
                    "node {}'s agent did not answer within {:?} of the pause's end; check it \
                     (kill -CONT {})",
                    n.node, spec.rejoin_timeout, plan.agent_pid
                )
            });
            return;
        }
    }
    progress("waiting for the SI to settle again");
    let si = spec.si.clone().expect("the SI is resolved before the plan");
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = observe::wait_settled(endpoints, &si, left.max(Duration::from_secs(1))).await {
        seen.left_as_found = false;
        seen.notes.push(format!("the SI did not settle again: {e}"));
    }
}

/// Wait until the node's agent answers (a new process if `restarted`).
async fn wait_agent(n: &NodeEndpoint, old_pid: u32, restarted: bool, deadline: Instant) -> bool {
    loop {
        if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(1), n.info()).await {
            if !restarted || info.agent_pid != old_pid {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
