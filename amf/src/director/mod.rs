//! The node director: one per agent. It carries out the local part of the AMF state — starts
//! and stops this node's components, delivers the directives addressed to its SUs as callbacks
//! through the component sessions — and proposes what happened (presence, errors, acks).
//!
//! It decides nothing about assignments: every decision is in the state machine. Its loop
//! wakes on a state change, a process exit (SIGCHLD-driven, not a poll), a session event, the
//! fencing flag, or a finished task, and then reconciles the local processes with the node's
//! view. Long work (spawn and wait for registration, terminate, callbacks) runs in tasks, so a
//! slow component never holds up another's failover.

mod link;
mod tasks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nines_consensus::{ReadMode, ServiceHandle, StateMachine};
use nines_core::shutdown::ShutdownSignal;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

pub use link::{Believed, ComponentLink, Invocation, LinkEvent};

use crate::policy::HaState;
use crate::process::{Exit, Supervisor};
use crate::state::{AmfCommand, AmfResponse, AmfState, NodeView, Presence, Recovery};

/// The AMF's typed view of the composite state machine.
pub type AmfHandle<M> = ServiceHandle<M, AmfCommand, AmfResponse, AmfState>;

/// Bound on one proposal from the director.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a failed proposal is retried.
pub const RETRY_DELAY: Duration = Duration::from_millis(100);

/// How a director is set up.
#[derive(Debug, Clone)]
pub struct DirectorConfig {
    /// This node's name (the model's node names).
    pub node: String,
    /// The SDK socket path, given to components as `NINES_SOCKET`.
    pub socket: PathBuf,
    /// Where component output goes (`<dir>/<component>.log`); None = inherit the agent's.
    pub log_dir: Option<PathBuf>,
    /// The agents' client endpoints, given to components as `NINES_ENDPOINTS` (checkpoints,
    /// events).
    pub endpoints: String,
    /// The agent's own executable, given to components as `NINES_BIN` (so a model can run the
    /// bundled examples: `"$NINES_BIN" example counter`).
    pub bin: Option<PathBuf>,
    /// More environment for every component (e.g. `NINES_CA`, `NINES_CERT`, `NINES_KEY`: the
    /// client certificate components use for checkpoints and events over mutual TLS).
    pub env: std::collections::BTreeMap<String, String>,
}

/// The director's inputs.
pub struct DirectorInputs {
    /// Bumped by the state machine after every AMF change.
    pub changed: watch::Receiver<u64>,
    /// Process exits from the supervisor.
    pub exits: mpsc::Receiver<Exit>,
    /// Session events.
    pub link_events: mpsc::Receiver<LinkEvent>,
    /// The node's lease says it is fenced.
    pub fenced: watch::Receiver<bool>,
}

/// What the director knows of a local process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Local {
    incarnation: u64,
    pid: u32,
    /// Its watchdog period (0 = none) and the recovery when it expires.
    watchdog_ms: u64,
    watchdog_recovery: Recovery,
}

/// A local component's watchdog as `nines amf status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogView {
    /// Its period.
    pub watchdog_ms: u64,
    /// Time since its last kick (or since it was armed).
    pub last_kick_age_ms: u64,
    /// It expired and has not been kicked since.
    pub expired: bool,
}

/// This node's component watchdogs, by component (shared with the agent's status service).
pub type WatchdogViews = Arc<std::sync::Mutex<BTreeMap<String, WatchdogView>>>;

/// A local component's belief as `nines amf status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeliefView {
    /// What it holds, as it reported: (si, csi) → (HA state, epoch).
    pub believed: Believed,
    /// Its lease from the agent has run out.
    pub lease_expired: bool,
    /// Whether it matches this node's view of the agreed state (a directive on its way counts
    /// as agreeing: the component is being told).
    pub agrees: bool,
    /// How long it has differed (0 when it agrees).
    pub differs_for_ms: u64,
}

/// This node's components' beliefs, by component (shared with the status service and metrics).
pub type BeliefViews = Arc<std::sync::Mutex<BTreeMap<String, BeliefView>>>;

/// How long a belief may differ from the agreed state before it is an alarm (a correction
/// normally lands within one reconcile and a callback).
pub const BELIEF_ALARM_MS: u64 = 1_000;

/// A finished task's news for the loop.
#[derive(Debug)]
enum Done {
    /// A component's start or stop finished (successfully or not).
    Component(String),
    /// A directive's delivery finished; it is no longer in flight here.
    Directive(u64),
    /// A correction of a component's belief finished.
    Correction(String),
}

/// What a component last said it believes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Belief {
    believed: Believed,
    lease_expired: bool,
}

/// How soon the same component's belief may be corrected again (a correction that failed, or
/// a belief that keeps differing, is retried at this pace, not in a loop).
const CORRECTION_PAUSE: Duration = Duration::from_millis(200);

/// Shared between the loop and its tasks.
struct Shared<M: StateMachine, L: ComponentLink> {
    cfg: DirectorConfig,
    amf: AmfHandle<M>,
    link: L,
    sup: Supervisor,
    /// Registration waiters, by component.
    waiters: Mutex<HashMap<String, oneshot::Sender<u32>>>,
    /// Local processes, by component.
    local: Mutex<HashMap<String, Local>>,
    done: mpsc::Sender<Done>,
}

/// The node director.
pub struct Director<M: StateMachine, L: ComponentLink> {
    shared: Arc<Shared<M, L>>,
    done_rx: mpsc::Receiver<Done>,
    /// Components with a start or stop in progress.
    busy: HashSet<String>,
    /// Directives being delivered.
    inflight: HashSet<u64>,
    /// (component, incarnation) this director run started, stopped, saw exit, or reported
    /// lost: only an incarnation it never handled can be a process left by a previous run (the
    /// local view may lag its own reports, so "instantiated but not here" alone proves nothing).
    lost_reported: HashSet<(String, u64)>,
    /// What each registered local component last said it believes.
    beliefs: HashMap<String, Belief>,
    /// Components whose belief is being corrected, and when each correction last started.
    correcting: HashSet<String>,
    corrected_at: HashMap<String, tokio::time::Instant>,
    /// Since when each component's belief has differed from the agreed state, and whether that
    /// was alarmed yet (once per difference).
    differs_since: HashMap<String, (tokio::time::Instant, bool)>,
    beliefs_view: BeliefViews,
    /// Fenced: no starts, actives quiesced and stopped.
    fenced: bool,
    /// Set once the fence reaction finished (every local component stopped); cleared when the
    /// fence lifts. The node watchdog keeps kicking a fenced node only after this.
    fence_done: Arc<std::sync::atomic::AtomicBool>,
    /// Component watchdog deadlines (ms since `origin`).
    watchdogs: nines_watchdog::DeadlineTable<String>,
    origin: tokio::time::Instant,
    views: WatchdogViews,
}

impl<M, L> Director<M, L>
where
    M: StateMachine + 'static,
    L: ComponentLink,
{
    /// A director for `cfg.node`, driving processes through `sup` and sessions through `link`.
    pub fn new(cfg: DirectorConfig, amf: AmfHandle<M>, link: L, sup: Supervisor) -> Self {
        let (done, done_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            cfg,
            amf,
            link,
            sup,
            waiters: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            done,
        });
        Director {
            shared,
            done_rx,
            busy: HashSet::new(),
            inflight: HashSet::new(),
            lost_reported: HashSet::new(),
            beliefs: HashMap::new(),
            correcting: HashSet::new(),
            corrected_at: HashMap::new(),
            differs_since: HashMap::new(),
            beliefs_view: BeliefViews::default(),
            fenced: false,
            fence_done: Arc::default(),
            watchdogs: nines_watchdog::DeadlineTable::new(),
            origin: tokio::time::Instant::now(),
            views: WatchdogViews::default(),
        }
    }

    /// Whether the fence reaction has finished (see the field).
    pub fn fence_done(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.fence_done.clone()
    }

    /// This node's component watchdogs, for status.
    pub fn watchdog_views(&self) -> WatchdogViews {
        self.views.clone()
    }

    /// This node's components' beliefs, for status and metrics.
    pub fn belief_views(&self) -> BeliefViews {
        self.beliefs_view.clone()
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Publish the watchdog table for status.
    fn publish_watchdogs(&self) {
        let now = self.now_ms();
        let mut views = self.views.lock().expect("watchdog views lock");
        views.clear();
        for (name, st) in self.watchdogs.states(now) {
            views.insert(
                name,
                WatchdogView {
                    watchdog_ms: st.watchdog_ms,
                    last_kick_age_ms: st.last_kick_age_ms,
                    expired: st.expired,
                },
            );
        }
    }

    /// Expired component watchdogs are component errors with the configured recovery.
    async fn on_watchdog_deadline(&mut self) {
        let now = self.now_ms();
        for e in self.watchdogs.expire(now) {
            let Some(local) = self.shared.local.lock().await.get(&e.key).copied() else {
                continue;
            };
            crate::telemetry::METRICS.watchdog_expiries.inc();
            tracing::warn!(component = %e.key, "watchdog expired");
            let cmd = AmfCommand::ComponentError {
                component: e.key.clone(),
                incarnation: local.incarnation,
                recommended: local.watchdog_recovery,
                reason: format!(
                    "watchdog expired: no kick for {} ms (period {} ms)",
                    now.saturating_sub(e.last_kick_ms),
                    e.watchdog_ms
                ),
                detected_at_ms: now_ms(),
            };
            tasks::fail_in_background(&self.shared, cmd);
        }
        self.publish_watchdogs();
    }

    /// Run until `shutdown`; then stop every local component (bounded).
    pub async fn run(mut self, mut inputs: DirectorInputs, mut shutdown: ShutdownSignal) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(exit) = inputs.exits.recv() => self.on_exit(exit).await,
                Some(ev) = inputs.link_events.recv() => {
                    // Kicks are frequent and change nothing the reconcile looks at.
                    if let LinkEvent::Kick { component } = &ev {
                        let now = self.now_ms();
                        self.watchdogs.kick(component, now);
                        crate::telemetry::METRICS.watchdog_kicks.inc();
                        continue;
                    }
                    self.on_link(ev).await
                }
                Some(done) = self.done_rx.recv() => self.on_done(done),
                r = inputs.changed.changed() => {
                    if r.is_err() {
                        break;
                    }
                }
                r = inputs.fenced.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let fenced = *inputs.fenced.borrow();
                    self.on_fenced(fenced);
                }
                _ = nines_watchdog::sleep_until_next(&self.watchdogs, self.origin) => {
                    self.on_watchdog_deadline().await;
                }
                // Retries of failed proposals and missed wake-ups: bounded, slow.
                _ = tick.tick() => self.publish_watchdogs(),
            }
            self.reconcile().await;
            self.update_fence_done();
        }
        self.shared.sup.shutdown_all(Duration::from_secs(5)).await;
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Component(c) => {
                self.busy.remove(&c);
            }
            Done::Directive(id) => {
                self.inflight.remove(&id);
            }
            Done::Correction(c) => {
                self.correcting.remove(&c);
            }
        }
    }

    async fn on_exit(&mut self, exit: Exit) {
        let local = {
            let mut map = self.shared.local.lock().await;
            match map.get(&exit.component) {
                Some(l) if l.pid == exit.pid => map.remove(&exit.component),
                _ => None,
            }
        };
        self.shared.link.forget(&exit.component);
        self.beliefs.remove(&exit.component);
        let Some(local) = local else {
            return;
        };
        self.watchdogs.disarm(&exit.component);
        self.publish_watchdogs();
        // The error proposed below (or the stop that expected this exit) speaks for this
        // incarnation: reconcile must not report it lost as well.
        self.lost_reported
            .insert((exit.component.clone(), local.incarnation));
        if exit.expected {
            return;
        }
        tracing::warn!(component = %exit.component, pid = exit.pid, "component {}", exit.kind);
        let reason = format!("process {} {}", exit.pid, exit.kind);
        let cmd = AmfCommand::ComponentError {
            component: exit.component.clone(),
            incarnation: local.incarnation,
            recommended: Recovery::NoRecommendation,
            reason,
            detected_at_ms: now_ms(),
        };
        tasks::propose_in_background(&self.shared, cmd);
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Registered { component, pid } => {
                let local = self.shared.local.lock().await.get(&component).copied();
                if let Some(l) = local.filter(|l| l.watchdog_ms > 0) {
                    let now = self.now_ms();
                    if let Err(e) = self.watchdogs.arm(component.clone(), l.watchdog_ms, now) {
                        tracing::error!(%component, "cannot watch the component: {e}");
                    }
                    self.publish_watchdogs();
                }
                if let Some(tx) = self.shared.waiters.lock().await.remove(&component) {
                    let _ = tx.send(pid);
                }
            }
            LinkEvent::Kick { .. } => {} // handled in the loop, without a reconcile
            LinkEvent::Disconnected { component } => {
                tracing::debug!(%component, "component session closed");
                self.beliefs.remove(&component);
            }
            LinkEvent::Belief {
                component,
                believed,
                lease_expired,
            } => {
                let belief = Belief {
                    believed,
                    lease_expired,
                };
                self.beliefs.insert(component, belief);
            }
            LinkEvent::ErrorReport {
                component,
                recommended,
                reason,
            } => {
                let Some(local) = self.shared.local.lock().await.get(&component).copied() else {
                    return;
                };
                let cmd = AmfCommand::ComponentError {
                    component,
                    incarnation: local.incarnation,
                    recommended,
                    reason: format!("error report: {reason}"),
                    detected_at_ms: now_ms(),
                };
                tasks::fail_in_background(&self.shared, cmd);
            }
        }
    }

    /// Fenced: this node's lease ran out. A fence is a pause, not a massacre: every local
    /// component stops acting as active at its own lease deadline (the SDK quiesces it, or ends
    /// its process), so nothing is killed here; the director starts and delivers nothing while
    /// fenced. Components are stopped only once the cluster has decided this node is down (its
    /// view then wants none of them running); if the lease returns first, the belief
    /// corrections make the ones the cluster still assigns active again.
    fn on_fenced(&mut self, fenced: bool) {
        self.fenced = fenced;
        if fenced {
            tracing::error!(
                node = %self.shared.cfg.node,
                "fenced: local components stop acting at their lease deadline; none is killed \
                 unless the cluster declares this node down"
            );
        } else {
            tracing::info!(node = %self.shared.cfg.node, "fence lifted");
        }
        self.update_fence_done();
    }

    /// While fenced, whether every local component has stopped acting as active, as its own
    /// belief reports (a component with no session holds nothing it may act on: its lease ends
    /// with the last grant). The node watchdog and liveness wait for this.
    fn update_fence_done(&self) {
        use std::sync::atomic::Ordering;
        let done = self.fenced
            && self.beliefs.values().all(|b| {
                !b.believed
                    .values()
                    .any(|(ha, _)| matches!(ha, HaState::Active | HaState::Quiescing))
            });
        self.fence_done.store(done, Ordering::SeqCst);
    }

    async fn view(&self) -> Option<NodeView> {
        let node = self.shared.cfg.node.clone();
        self.shared
            .amf
            .read(ReadMode::Stale, PROPOSE_TIMEOUT, move |s| {
                s.node_view(&node)
            })
            .await
            .ok()
    }

    /// Bring local processes and deliveries in line with the node's view.
    async fn reconcile(&mut self) {
        let Some(view) = self.view().await else {
            return;
        };
        let local = self.shared.local.lock().await.clone();
        for plan in &view.components {
            if self.busy.contains(&plan.name) {
                continue;
            }
            let running = local.get(&plan.name).copied();
            match running {
                Some(l) if l.incarnation != plan.incarnation || !plan.should_run => {
                    self.busy.insert(plan.name.clone());
                    self.watchdogs.disarm(&plan.name);
                    self.lost_reported
                        .insert((plan.name.clone(), l.incarnation));
                    let graceful = l.incarnation == plan.incarnation;
                    tasks::stop(&self.shared, plan.clone(), graceful);
                }
                Some(_) => {}
                None if plan.should_run && !self.fenced => {
                    if plan.presence == Presence::Instantiated {
                        // The cluster thinks it runs, but not under this director (the agent
                        // restarted): clean up and let the escalation decide.
                        self.report_lost(plan).await;
                        continue;
                    }
                    self.busy.insert(plan.name.clone());
                    self.lost_reported
                        .insert((plan.name.clone(), plan.incarnation));
                    tasks::start(&self.shared, plan.clone());
                }
                None => {
                    if plan.presence == Presence::Instantiated && !plan.should_run {
                        tasks::propose_in_background(
                            &self.shared,
                            AmfCommand::Presence {
                                component: plan.name.clone(),
                                incarnation: plan.incarnation,
                                report: crate::state::PresenceReport::Uninstantiated,
                            },
                        );
                    }
                }
            }
        }
        if self.fenced {
            return;
        }
        for d in &view.directives {
            if self.inflight.insert(d.directive.id) {
                let incarnations: BTreeMap<String, u64> = view
                    .components
                    .iter()
                    .map(|c| (c.name.clone(), c.incarnation))
                    .collect();
                tasks::deliver(&self.shared, d.clone(), incarnations);
            }
        }
        self.correct_beliefs(&view);
    }

    /// Compare what each registered local component believes with what this node's view says
    /// it holds; where they differ and no directive is on its way to it, correct it (the task
    /// confirms the difference on a linearizable read first).
    fn correct_beliefs(&mut self, view: &NodeView) {
        let now = tokio::time::Instant::now();
        let mut shown = BTreeMap::new();
        self.differs_since
            .retain(|c, _| self.beliefs.contains_key(c));
        for (component, belief) in &self.beliefs {
            let directed = view
                .directives
                .iter()
                .any(|d| d.targets.iter().any(|t| &t.component == component));
            let agreed = agreed_for(view, component);
            let agrees = directed || agreed == belief.believed;
            let differs_for_ms = match agrees {
                true => {
                    self.differs_since.remove(component);
                    0
                }
                false => {
                    let since = self
                        .differs_since
                        .entry(component.clone())
                        .or_insert((now, false));
                    let ms = (now - since.0).as_millis() as u64;
                    if ms >= BELIEF_ALARM_MS && !since.1 {
                        since.1 = true;
                        tracing::error!(
                            %component, differs_for_ms = ms, believed = ?belief.believed,
                            ?agreed, lease_expired = belief.lease_expired,
                            "ALARM: a component's belief has differed from the agreed state for \
                             over {BELIEF_ALARM_MS} ms"
                        );
                    }
                    ms
                }
            };
            shown.insert(
                component.clone(),
                BeliefView {
                    believed: belief.believed.clone(),
                    lease_expired: belief.lease_expired,
                    agrees,
                    differs_for_ms,
                },
            );
            if agrees
                || belief.lease_expired
                || self.busy.contains(component)
                || self.correcting.contains(component)
                || self
                    .corrected_at
                    .get(component)
                    .is_some_and(|t| now < *t + CORRECTION_PAUSE)
            {
                continue;
            }
            tracing::warn!(
                %component, believed = ?belief.believed, ?agreed,
                "a component's belief differs from the agreed state: correcting"
            );
            crate::telemetry::METRICS.belief_corrections.inc();
            self.correcting.insert(component.clone());
            self.corrected_at.insert(component.clone(), now);
            tasks::correct(&self.shared, component.clone(), belief.believed.clone());
        }
        *self.beliefs_view.lock().expect("belief views lock") = shown;
    }

    async fn report_lost(&mut self, plan: &crate::state::ComponentPlan) {
        if !self
            .lost_reported
            .insert((plan.name.clone(), plan.incarnation))
        {
            return;
        }
        if let Some(pid) = plan.pid {
            kill_orphan(&plan.name, pid);
        }
        let cmd = AmfCommand::ComponentError {
            component: plan.name.clone(),
            incarnation: plan.incarnation,
            recommended: Recovery::NoRecommendation,
            reason: "its node director restarted: the process is no longer supervised".into(),
            detected_at_ms: now_ms(),
        };
        tasks::propose_in_background(&self.shared, cmd);
    }
}

/// What `view` says `component` holds: (si, csi) → (HA state, epoch).
fn agreed_for(view: &NodeView, component: &str) -> Believed {
    view.held
        .iter()
        .filter(|h| h.csi.component == component)
        .map(|h| ((h.csi.si.clone(), h.csi.csi.clone()), (h.ha, h.epoch)))
        .collect()
}

/// A component process left running by a previous run of this agent (it was spawned as its
/// own process group): kill that group, but only if `pid` carries this component's
/// `NINES_COMPONENT` (a reused pid is someone else's process).
fn kill_orphan(component: &str, pid: u32) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::{getpgid, Pid};
    let p = Pid::from_raw(pid as i32);
    let tag = format!("NINES_COMPONENT={component}");
    let ours = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == tag.as_bytes()))
        .unwrap_or(false);
    // Components run in their own process group (led by the process the agent spawned).
    if let (true, Ok(group)) = (ours, getpgid(Some(p))) {
        tracing::warn!(
            component,
            pid,
            "killing a component left by a previous agent run"
        );
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Wall-clock milliseconds since the Unix epoch (for timelines only, never for decisions).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
