//! The director's long-running work, each piece in its own task: start a component (spawn,
//! wait for its session, re-deliver what it holds), stop one, deliver a directive, fence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nines_consensus::{ReadMode, StateMachine};
use tokio::sync::oneshot;

use super::{
    now_ms, Believed, ComponentLink, Done, Invocation, Local, Shared, PROPOSE_TIMEOUT, RETRY_DELAY,
};
use crate::policy::{HaState, MsgKind};
use crate::process::{ProcessSpec, TerminateOutcome};
use crate::state::{
    AmfCommand, AmfResponse, ComponentPlan, DirectivePlan, HeldCsi, NodeView, PresenceReport,
    Recovery,
};

/// Propose `cmd`; on failure wait a little (the loop retries from the state).
async fn propose<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
    cmd: AmfCommand,
) -> bool {
    use tracing::Instrument;
    // A fault report opens the failover's trace (see crate::telemetry).
    let span = match &cmd {
        AmfCommand::ComponentError {
            component,
            incarnation,
            reason,
            detected_at_ms,
            ..
        } => tracing::info_span!(
            "amf.fault",
            fault_id = %crate::telemetry::fault_id(component, *incarnation),
            node = %shared.cfg.node,
            component = %component,
            incarnation,
            reason = %reason,
            detected_ms = detected_at_ms,
        ),
        _ => tracing::Span::none(),
    };
    let proposed = shared
        .amf
        .propose(cmd, PROPOSE_TIMEOUT)
        .instrument(span)
        .await;
    match proposed {
        Ok(AmfResponse::Refused(e)) => {
            tracing::warn!("the cluster refused a director report: {e}");
            true
        }
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("cannot propose a director report: {e}");
            tokio::time::sleep(RETRY_DELAY).await;
            false
        }
    }
}

/// How long killing a failed component's process group may take before the report goes out
/// anyway (SIGKILL cannot be ignored; this bounds only a stuck reap).
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// A component failed while its process may still run (watchdog, healthcheck, error report,
/// failed callback): kill its process group first, then report — so whatever the cluster
/// decides (a restart, or its standby made active) never overlaps with it still acting.
/// (A process exit needs no kill: the process is gone already.)
pub(super) async fn kill_then_report<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
    cmd: AmfCommand,
) {
    if let AmfCommand::ComponentError { component, .. } = &cmd {
        let env = BTreeMap::new();
        if let Err(e) = shared
            .sup
            .cleanup(component, None, &env, KILL_TIMEOUT)
            .await
        {
            tracing::error!(%component, "cannot kill the failed component: {e}");
        }
        shared.link.forget(component);
    }
    for _ in 0..5 {
        if propose(shared, cmd.clone()).await {
            return;
        }
    }
}

/// [`kill_then_report`] in its own task.
pub(super) fn fail_in_background<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Arc<Shared<M, L>>,
    cmd: AmfCommand,
) {
    let shared = shared.clone();
    tokio::spawn(async move { kill_then_report(&shared, cmd).await });
}

/// Propose without waiting for the answer.
pub(super) fn propose_in_background<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Arc<Shared<M, L>>,
    cmd: AmfCommand,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        // Bounded retries: a report that cannot be committed after these is superseded by
        // the next reconcile (the state still shows the work to do).
        for _ in 0..5 {
            if propose(&shared, cmd.clone()).await {
                return;
            }
        }
    });
}

fn env_of<M: StateMachine, L: ComponentLink>(
    shared: &Shared<M, L>,
    plan: &ComponentPlan,
) -> BTreeMap<String, String> {
    let mut env = shared.cfg.env.clone();
    env.extend(plan.def.env.clone());
    env.extend(plan.attributes.clone());
    env.insert("NINES_COMPONENT".into(), plan.name.clone());
    env.insert(
        "NINES_SOCKET".into(),
        shared.cfg.socket.display().to_string(),
    );
    env.insert("NINES_NODE".into(), shared.cfg.node.clone());
    env.insert("NINES_ENDPOINTS".into(), shared.cfg.endpoints.clone());
    if let Some(bin) = &shared.cfg.bin {
        env.insert("NINES_BIN".into(), bin.display().to_string());
    }
    env
}

/// This node's view as the agreed state has it now: a linearizable read (the local replica may
/// lag, and a directive or re-delivery taken from a lagging view can be stale). `None` when the
/// cluster cannot answer (no leader, or this node is cut off): deliver nothing then.
pub(super) async fn agreed_view<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
) -> Option<NodeView> {
    let node = shared.cfg.node.clone();
    match shared
        .amf
        .read(ReadMode::Linearizable, PROPOSE_TIMEOUT, move |s| {
            s.node_view(&node)
        })
        .await
    {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::warn!("cannot read the agreed state: {e}");
            None
        }
    }
}

/// A CSI set of held CSI `h` to `ha` at its epoch (a re-delivery, correction or fence: no
/// descriptor, no previous active named).
fn set_held(h: &HeldCsi, ha: HaState) -> Invocation {
    Invocation::CsiSet {
        si: h.csi.si.clone(),
        csi: h.csi.csi.clone(),
        ha,
        epoch: h.epoch,
        descriptor: None,
        attributes: h.csi.attributes.clone(),
        active_component: None,
    }
}

/// What `view` says `component` holds.
fn held_by(view: &NodeView, component: &str) -> Vec<HeldCsi> {
    view.held
        .iter()
        .filter(|h| h.csi.component == component)
        .cloned()
        .collect()
}

/// Spawn the component, wait for its session, deliver the CSIs the agreed state gives it (read
/// after it registered, never remembered from before), report.
pub(super) fn start<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Arc<Shared<M, L>>,
    plan: ComponentPlan,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let report = start_inner(&shared, &plan).await;
        if matches!(report, PresenceReport::Instantiated { .. })
            && plan.def.healthcheck_period_ms > 0
        {
            tokio::spawn(healthchecks(shared.clone(), plan.clone()));
        }
        propose(
            &shared,
            AmfCommand::Presence {
                component: plan.name.clone(),
                incarnation: plan.incarnation,
                report,
            },
        )
        .await;
        let _ = shared.done.send(Done::Component(plan.name)).await;
    });
}

async fn start_inner<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
    plan: &ComponentPlan,
) -> PresenceReport {
    let env = env_of(shared, plan);
    let mut spec = ProcessSpec::new(plan.name.clone(), plan.def.instantiate.clone());
    spec.env = env;
    spec.log_path = shared
        .cfg
        .log_dir
        .as_ref()
        .map(|d| d.join(format!("{}.log", plan.name)));
    let (tx, rx) = oneshot::channel();
    shared.waiters.lock().await.insert(plan.name.clone(), tx);
    let pid = match shared.sup.spawn(spec) {
        Ok(pid) => pid,
        Err(e) => {
            shared.waiters.lock().await.remove(&plan.name);
            return PresenceReport::InstantiationFailed {
                reason: e.to_string(),
            };
        }
    };
    shared.local.lock().await.insert(
        plan.name.clone(),
        Local {
            incarnation: plan.incarnation,
            pid,
            watchdog_ms: plan.def.watchdog_ms,
            watchdog_recovery: plan.def.watchdog_recovery.into(),
        },
    );
    shared.link.expect(&plan.name, pid, plan.def.watchdog_ms);
    let timeout = Duration::from_millis(plan.def.instantiate_timeout_ms);
    // The process that registered (the application itself, when the command is a shell that
    // did not exec it): that is the pid operators see and drills signal.
    let registered = tokio::time::timeout(timeout, rx).await;
    if registered.is_err() {
        shared.waiters.lock().await.remove(&plan.name);
        let env = env_of(shared, plan);
        let cleanup = Duration::from_millis(plan.def.cleanup_timeout_ms);
        let _ = shared
            .sup
            .cleanup(&plan.name, non_empty(&plan.def.cleanup), &env, cleanup)
            .await;
        return PresenceReport::InstantiationFailed {
            reason: format!(
                "process {pid} did not register with the agent within {} ms \
                 (does it open a nines SDK session?)",
                plan.def.instantiate_timeout_ms
            ),
        };
    }
    let cb_timeout = Duration::from_millis(plan.def.callback_timeout_ms);
    // A CSI with a directive on its way is left to the directive.
    let held = match agreed_view(shared).await {
        Some(view) if view_wants(&view, plan) => {
            let directed: Vec<(String, String)> = view
                .directives
                .iter()
                .flat_map(|d| d.targets.iter())
                .filter(|t| t.component == plan.name)
                .map(|t| (t.si.clone(), t.csi.clone()))
                .collect();
            held_by(&view, &plan.name)
                .into_iter()
                .filter(|h| !directed.contains(&(h.csi.si.clone(), h.csi.csi.clone())))
                .collect()
        }
        _ => Vec::new(),
    };
    for h in held {
        let inv = set_held(&h, h.ha);
        if let Err(e) = shared.link.invoke(&plan.name, inv, cb_timeout).await {
            tracing::warn!(component = %plan.name, "re-delivery of {} failed: {e}", h.csi.csi);
        }
    }
    let app_pid = match registered {
        Ok(Ok(p)) => p,
        _ => pid,
    };
    PresenceReport::Instantiated { pid: app_pid }
}

/// Whether `view` still wants this incarnation of the component running.
fn view_wants(view: &NodeView, plan: &ComponentPlan) -> bool {
    view.components
        .iter()
        .any(|c| c.name == plan.name && c.incarnation == plan.incarnation && c.should_run)
}

/// AMF-invoked healthchecks: every period, while this process is the component's, ask it; a
/// failed or unanswered (hung) healthcheck is a component error.
async fn healthchecks<M: StateMachine + 'static, L: ComponentLink>(
    shared: Arc<Shared<M, L>>,
    plan: ComponentPlan,
) {
    let period = Duration::from_millis(plan.def.healthcheck_period_ms);
    let timeout = Duration::from_millis(plan.def.healthcheck_timeout_ms.max(1));
    loop {
        tokio::time::sleep(period).await;
        let current = shared.local.lock().await.get(&plan.name).copied();
        if current.map(|l| l.incarnation) != Some(plan.incarnation) {
            return;
        }
        let inv = Invocation::Healthcheck { key: "amf".into() };
        if let Err(e) = shared.link.invoke(&plan.name, inv, timeout).await {
            let cmd = AmfCommand::ComponentError {
                component: plan.name.clone(),
                incarnation: plan.incarnation,
                recommended: Recovery::NoRecommendation,
                reason: format!("healthcheck failed: {e}"),
                detected_at_ms: now_ms(),
            };
            kill_then_report(&shared, cmd).await;
            return;
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    if s.trim().is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Stop the local process: gracefully (terminate callback, terminate command or SIGTERM, then
/// cleanup after the timeout) when the cluster no longer wants it; abruptly (cleanup) when it
/// wants a fresh incarnation. A failed cleanup is reported: the node fails fast.
pub(super) fn stop<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Arc<Shared<M, L>>,
    plan: ComponentPlan,
    graceful: bool,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let env = env_of(&shared, &plan);
        let old = shared.local.lock().await.get(&plan.name).copied();
        let mut gone = false;
        if graceful {
            let t = Duration::from_millis(plan.def.terminate_timeout_ms);
            let _ = shared
                .link
                .invoke(&plan.name, Invocation::Terminate, t)
                .await;
            let cmd = non_empty(&plan.def.terminate);
            gone = matches!(
                shared.sup.terminate(&plan.name, cmd, &env, t).await,
                Ok(TerminateOutcome::Terminated)
            );
        }
        let cleanup_t = Duration::from_millis(plan.def.cleanup_timeout_ms);
        let result = if gone {
            Ok(())
        } else {
            let cmd = non_empty(&plan.def.cleanup);
            shared.sup.cleanup(&plan.name, cmd, &env, cleanup_t).await
        };
        shared.link.forget(&plan.name);
        {
            let mut map = shared.local.lock().await;
            if map.get(&plan.name).copied() == old {
                map.remove(&plan.name);
            }
        }
        let report = match result {
            Ok(()) => PresenceReport::Uninstantiated,
            Err(e) => PresenceReport::TerminationFailed {
                reason: e.to_string(),
            },
        };
        if let Some(old) = old {
            propose(
                &shared,
                AmfCommand::Presence {
                    component: plan.name.clone(),
                    incarnation: old.incarnation,
                    report,
                },
            )
            .await;
        }
        let _ = shared.done.send(Done::Component(plan.name)).await;
    });
}

/// Deliver one directive: run the callback on every target component, then ack. A failed
/// callback is a component error (the escalation decides); the directive is then resolved by
/// the fault that follows.
pub(super) fn deliver<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Arc<Shared<M, L>>,
    plan: DirectivePlan,
    incarnations: BTreeMap<String, u64>,
) {
    let shared = shared.clone();
    let d = &plan.directive;
    // Every callback is traced; an active assignment's carries its failover's id.
    let span = tracing::info_span!(
        "amf.callback",
        failover_id = tracing::field::Empty,
        node = %shared.cfg.node,
        sg = %d.sg,
        si = %d.si,
        su = %d.su,
        ha_state = crate::state::kind_name(d.kind),
        epoch = d.epoch,
        ok = tracing::field::Empty,
    );
    if matches!(d.kind, MsgKind::Active(_)) {
        span.record(
            "failover_id",
            crate::telemetry::failover_id(&d.sg, d.epoch).as_str(),
        );
    }
    let work = async move {
        let id = plan.directive.id;
        let Some((ok, reason)) = deliver_inner(&shared, &plan, &incarnations).await else {
            // No longer what the agreed state says: nothing delivered, nothing to acknowledge.
            let _ = shared.done.send(Done::Directive(id)).await;
            return;
        };
        tracing::Span::current().record("ok", ok);
        let m = &crate::telemetry::METRICS;
        let counter = if ok {
            &m.callbacks_ok
        } else {
            &m.callbacks_failed
        };
        counter.inc();
        let acked = propose(
            &shared,
            AmfCommand::Ack {
                id,
                ok,
                reason,
                done_at_ms: now_ms(),
            },
        )
        .await;
        if !acked {
            tokio::time::sleep(RETRY_DELAY).await;
        }
        let _ = shared.done.send(Done::Directive(id)).await;
    };
    tokio::spawn(tracing::Instrument::instrument(work, span));
}

/// Whether directive `plan` is still pending in the agreed state (a linearizable read), so that
/// delivering it now says what the cluster says. `None`: the cluster could not answer.
async fn still_pending<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
    plan: &DirectivePlan,
) -> Option<bool> {
    let view = agreed_view(shared).await?;
    Some(
        view.directives
            .iter()
            .any(|d| d.directive == plan.directive),
    )
}

/// Deliver every target's callback; `None` when the directive is no longer pending in the
/// agreed state at the moment of delivery (or that could not be confirmed): stale, not sent.
async fn deliver_inner<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
    plan: &DirectivePlan,
    incarnations: &BTreeMap<String, u64>,
) -> Option<(bool, String)> {
    let d = &plan.directive;
    let removing = matches!(
        d.kind,
        MsgKind::Remove | MsgKind::Quiesced | MsgKind::Quiescing
    );
    for t in &plan.targets {
        if removing && !shared.link.is_registered(&t.component) {
            // A failed (or stopped) component has nothing to give up.
            continue;
        }
        if !removing {
            wait_registered(shared, &t.component).await;
        }
        // Checked after any wait, right before the callback: a directive captured earlier (a
        // lagging replica, a component that registered late) must still be the agreed one.
        // Giving something up is always safe; taking a state on is not.
        if !removing && still_pending(shared, plan).await != Some(true) {
            tracing::warn!(
                component = %t.component, id = d.id, si = %d.si, epoch = d.epoch,
                "directive no longer pending in the agreed state: not delivered"
            );
            return None;
        }
        let inv = match d.kind {
            MsgKind::Remove => Invocation::CsiRemove {
                si: t.si.clone(),
                csi: t.csi.clone(),
            },
            kind => {
                let (ha, descriptor) = match kind {
                    MsgKind::Active(desc) => (HaState::Active, Some(desc)),
                    MsgKind::Standby => (HaState::Standby, None),
                    MsgKind::Quiescing => (HaState::Quiescing, None),
                    _ => (HaState::Quiesced, None),
                };
                Invocation::CsiSet {
                    si: t.si.clone(),
                    csi: t.csi.clone(),
                    ha,
                    epoch: d.epoch,
                    descriptor,
                    attributes: t.attributes.clone(),
                    active_component: plan.active_component.clone(),
                }
            }
        };
        let timeout = Duration::from_millis(5_000);
        if let Err(e) = shared.link.invoke(&t.component, inv, timeout).await {
            let reason = format!(
                "{} of CSI {} failed: {e}",
                crate::state::kind_name(d.kind),
                t.csi
            );
            if let Some(inc) = incarnations.get(&t.component) {
                let cmd = AmfCommand::ComponentError {
                    component: t.component.clone(),
                    incarnation: *inc,
                    recommended: Recovery::NoRecommendation,
                    reason: reason.clone(),
                    detected_at_ms: now_ms(),
                };
                kill_then_report(shared, cmd).await;
            }
            // Give the escalation time to act before this directive is tried again.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Some((false, reason));
        }
    }
    Some((true, String::new()))
}

/// Correct `component`, which believes it holds `believed`, to what the agreed state gives it
/// (read linearizably now): give up what it should not hold first, then take on what it should.
/// Nothing is proposed: the component's next belief report shows the outcome, and a directive
/// on its way to the component is left to do its work.
pub(super) fn correct<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Arc<Shared<M, L>>,
    component: String,
    believed: Believed,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        correct_inner(&shared, &component, &believed).await;
        let _ = shared.done.send(Done::Correction(component)).await;
    });
}

async fn correct_inner<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
    component: &str,
    believed: &Believed,
) {
    let Some(view) = agreed_view(shared).await else {
        return;
    };
    let directed = view
        .directives
        .iter()
        .any(|d| d.targets.iter().any(|t| t.component == component));
    if directed {
        return;
    }
    let held = held_by(&view, component);
    let mut invocations = Vec::new();
    for (si, csi) in believed.keys() {
        if !held.iter().any(|h| &h.csi.si == si && &h.csi.csi == csi) {
            let inv = Invocation::CsiRemove {
                si: si.clone(),
                csi: csi.clone(),
            };
            invocations.push(inv);
        }
    }
    // Demotions before promotions, so the component never holds more than it is given.
    let mut held = held;
    held.sort_by_key(|h| h.ha == HaState::Active);
    for h in held {
        let key = (h.csi.si.clone(), h.csi.csi.clone());
        if believed.get(&key) == Some(&(h.ha, h.epoch)) {
            continue;
        }
        invocations.push(set_held(&h, h.ha));
    }
    for inv in invocations {
        tracing::warn!(%component, ?inv, "correcting the component to the agreed state");
        if let Err(e) = shared.link.invoke(component, inv, CORRECTION_TIMEOUT).await {
            tracing::warn!(%component, "correction failed: {e}");
            return;
        }
    }
}

/// The bound on one correcting callback.
const CORRECTION_TIMEOUT: Duration = Duration::from_millis(5_000);

/// A component being (re)started registers soon; wait for it, bounded.
async fn wait_registered<M: StateMachine + 'static, L: ComponentLink>(
    shared: &Shared<M, L>,
    component: &str,
) {
    for _ in 0..REGISTER_WAIT_STEPS {
        if shared.link.is_registered(component) {
            return;
        }
        tokio::time::sleep(REGISTER_WAIT_STEP).await;
    }
}

/// How long a delivery waits for a (re)starting component's session: steps × step.
const REGISTER_WAIT_STEPS: u32 = 250;
const REGISTER_WAIT_STEP: Duration = Duration::from_millis(20);
