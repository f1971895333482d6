//! The AMF state machine: the model in force, each SG's policy runtime, the directives in
//! flight to node directors, component and SU runtimes, and the history.
//!
//! Every decision is made here, inside `apply`, from committed commands only: a node director
//! reports (presence, errors, acks) and the policy turns them into the next directives. Every
//! node applies the same log, so every node agrees; each node's director carries out the
//! directives addressed to its SUs. Time comes from the command's stamp (`ApplyContext`).

mod apply_model;
mod command;
mod escalation;
mod runtime;
mod view;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use nines_consensus::ApplyContext;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::model::Model;
use crate::policy::{self, Ack, MsgKind, SgConfig, SgEvent, SgRuntime};

pub use command::{AdminOp, AmfCommand, AmfResponse, PresenceReport, Recovery, TargetKind};
pub use runtime::{
    CompRuntime, Counter, Directive, FailoverTrack, HistoryEntry, HistoryKind, NodeRuntime,
    OutReason, Presence, SuRuntime, Timeline,
};
pub use view::{
    AmfStatus, AssignmentView, ComponentPlan, ComponentView, CsiPlan, DirectivePlan, HeldCsi,
    NodeView, SiView, SuView,
};

/// History entries kept (oldest dropped first).
pub const HISTORY_LEN_MAX: usize = 512;

/// One SG: its policy view of the config and the policy's runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgEntry {
    /// The policy's view of the SG's config.
    pub cfg: SgConfig,
    /// The policy's runtime.
    pub rt: SgRuntime,
    /// The initial placement ran.
    pub started: bool,
}

/// The AMF's replicated state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AmfState {
    /// The model in force.
    pub model: Option<Model>,
    /// SGs by name.
    pub sgs: BTreeMap<String, SgEntry>,
    /// Directives in flight, by id.
    pub directives: BTreeMap<u64, Directive>,
    /// The next directive id.
    pub next_id: u64,
    /// The highest epoch handed out; every directive takes the next one.
    pub epoch: u64,
    /// The epoch of each confirmed assignment, by (SI, SU).
    pub epochs: BTreeMap<(String, String), u64>,
    /// Components by name.
    pub components: BTreeMap<String, CompRuntime>,
    /// SUs by name.
    pub sus: BTreeMap<String, SuRuntime>,
    /// Nodes by name (every node the model names).
    pub nodes: BTreeMap<String, NodeRuntime>,
    /// Cluster nodes the membership view says are up (by name), model or not.
    pub cluster_up: BTreeSet<String>,
    /// Recent history, oldest first.
    pub history: VecDeque<HistoryEntry>,
    /// Failovers waiting for their new active to confirm, by SG.
    pub failovers: BTreeMap<String, FailoverTrack>,
    /// Bumped after every applied command that changed something (not replicated).
    #[serde(skip)]
    changed: Option<watch::Sender<u64>>,
}

impl Clone for AmfState {
    fn clone(&self) -> Self {
        AmfState {
            model: self.model.clone(),
            sgs: self.sgs.clone(),
            directives: self.directives.clone(),
            next_id: self.next_id,
            epoch: self.epoch,
            epochs: self.epochs.clone(),
            components: self.components.clone(),
            sus: self.sus.clone(),
            nodes: self.nodes.clone(),
            cluster_up: self.cluster_up.clone(),
            history: self.history.clone(),
            failovers: self.failovers.clone(),
            changed: None,
        }
    }
}

impl AmfState {
    /// Tell `tx` (with a growing number) whenever the state changes; node directors wait on it.
    pub fn set_notifier(&mut self, tx: watch::Sender<u64>) {
        self.changed = Some(tx);
    }

    /// Take the notifier out (around a snapshot restore).
    pub fn take_notifier(&mut self) -> Option<watch::Sender<u64>> {
        self.changed.take()
    }

    fn notify(&self) {
        if let Some(tx) = &self.changed {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Apply one command. Business refusals are values; nothing here fails.
    pub fn apply(&mut self, ctx: ApplyContext, cmd: AmfCommand) -> AmfResponse {
        let before_epoch = self.epoch;
        let fault = match &cmd {
            AmfCommand::ComponentError {
                component,
                incarnation,
                ..
            } => Some(crate::telemetry::fault_id(component, *incarnation)),
            _ => None,
        };
        let resp = match cmd {
            AmfCommand::ApplyModel { model } => self.apply_model(ctx, *model),
            AmfCommand::Presence {
                component,
                incarnation,
                report,
            } => self.presence(ctx, &component, incarnation, report),
            AmfCommand::ComponentError {
                component,
                incarnation,
                recommended,
                reason,
                detected_at_ms,
            } => self.component_error(
                ctx,
                &component,
                incarnation,
                recommended,
                &reason,
                detected_at_ms,
            ),
            AmfCommand::Ack {
                id,
                ok,
                reason,
                done_at_ms,
            } => self.ack(ctx, id, ok, &reason, done_at_ms),
            AmfCommand::Admin { op, kind, target } => self.admin(ctx, op, kind, &target),
        };
        if !matches!(resp, AmfResponse::Ignored | AmfResponse::Refused(_)) {
            self.notify();
        }
        crate::telemetry::trace_decisions(self, before_epoch, fault.as_deref());
        resp
    }

    /// The membership view's up nodes (by name) are `up`: nodes that left it are lost, nodes
    /// that joined it are up.
    pub fn sync_cluster(&mut self, ctx: ApplyContext, up: &BTreeSet<String>) {
        let lost: Vec<String> = self.cluster_up.difference(up).cloned().collect();
        let back: Vec<String> = up.difference(&self.cluster_up).cloned().collect();
        for n in lost {
            self.node_down(ctx, &n, "is down");
        }
        for n in back {
            self.node_up(ctx, &n);
        }
    }

    /// The membership view says `node` is up (the composite calls this on every up or join).
    pub fn node_up(&mut self, ctx: ApplyContext, node: &str) {
        if !self.cluster_up.insert(node.to_string()) {
            return;
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.up = true;
            self.record(
                ctx,
                ctx.time_ms,
                HistoryKind::Node,
                node,
                "node is up".into(),
            );
        }
        self.notify();
    }

    /// The membership view says `node` is down or left: its SUs go out of service abruptly
    /// (F-NODE) and the standbys take over in this same apply.
    pub fn node_down(&mut self, ctx: ApplyContext, node: &str, why: &str) {
        self.cluster_up.remove(node);
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if !n.up {
            return;
        }
        n.up = false;
        self.record(
            ctx,
            ctx.time_ms,
            HistoryKind::Node,
            node,
            format!("node {why}"),
        );
        let cause = format!("node {node} {why}");
        let before_epoch = self.epoch;
        self.track_node_failover(node, cause, ctx.time_ms, ctx.time_ms);
        self.fail_node(ctx, node);
        let fault = format!("node/{node}");
        crate::telemetry::trace_decisions(self, before_epoch, Some(&fault));
        self.notify();
    }

    /// Every SU on `node` is out (node lost or node failover): reset its components (a fresh
    /// incarnation each, so a surviving old process is cleaned up) and tell every SG.
    fn fail_node(&mut self, ctx: ApplyContext, node: &str) {
        let comps: Vec<String> = self
            .components
            .iter()
            .filter(|(_, c)| c.node == node)
            .map(|(n, _)| n.clone())
            .collect();
        for c in comps {
            self.reset_component(&c);
        }
        let sus: Vec<String> = self.sus_on_node(node);
        for su in &sus {
            if let Some(s) = self.sus.get_mut(su) {
                s.instantiated = false;
                s.out = Some(OutReason::NodeLost);
            }
        }
        let sgs: BTreeSet<String> = sus.iter().filter_map(|su| self.sg_of_su(su)).collect();
        for sg in sgs {
            if self.sgs.get(&sg).is_some_and(|e| e.started) {
                self.run_event(
                    ctx,
                    &sg,
                    SgEvent::NodeFailover {
                        node: node.to_string(),
                    },
                );
            }
        }
    }

    /// A fresh incarnation of `comp`: the director replaces whatever process it has.
    fn reset_component(&mut self, comp: &str) {
        if let Some(c) = self.components.get_mut(comp) {
            c.incarnation += 1;
            c.presence = Presence::Uninstantiated;
            c.pid = None;
        }
    }

    fn presence(
        &mut self,
        ctx: ApplyContext,
        comp: &str,
        incarnation: u64,
        report: PresenceReport,
    ) -> AmfResponse {
        let Some(c) = self.components.get_mut(comp) else {
            return AmfResponse::Ignored;
        };
        if c.incarnation != incarnation {
            return AmfResponse::Ignored;
        }
        let su = c.su.clone();
        match report {
            PresenceReport::Instantiated { pid } => {
                c.presence = Presence::Instantiated;
                c.pid = Some(pid);
            }
            PresenceReport::Uninstantiated => {
                c.presence = Presence::Uninstantiated;
                c.pid = None;
            }
            PresenceReport::InstantiationFailed { reason } => {
                c.presence = Presence::InstantiationFailed;
                c.pid = None;
                let text = format!("instantiation failed: {reason}");
                self.record(ctx, ctx.time_ms, HistoryKind::Detected, comp, text);
                self.su_instantiation_failed(ctx, &su);
                return AmfResponse::Done {
                    message: String::new(),
                };
            }
            PresenceReport::TerminationFailed { reason } => {
                c.presence = Presence::TerminationFailed;
                let node = c.node.clone();
                let text = format!("cleanup failed ({reason}): node {node} fails fast");
                self.record(ctx, ctx.time_ms, HistoryKind::Decided, comp, text);
                self.node_failover(ctx, &node);
                return AmfResponse::Done {
                    message: String::new(),
                };
            }
        }
        self.after_presence(ctx, &su);
        AmfResponse::Done {
            message: String::new(),
        }
    }

    /// An SU whose components are all instantiated comes (back) into service.
    fn after_presence(&mut self, ctx: ApplyContext, su: &str) {
        let all = self
            .components
            .values()
            .filter(|c| c.su == su)
            .all(|c| c.presence == Presence::Instantiated);
        let Some(s) = self.sus.get_mut(su) else {
            return;
        };
        let was = s.instantiated;
        s.instantiated = all;
        if !all || was {
            return;
        }
        let out = s.out;
        let Some(sg) = self.sg_of_su(su) else {
            return;
        };
        if !self.sgs.get(&sg).is_some_and(|e| e.started) {
            self.try_start(ctx, &sg);
            return;
        }
        match out {
            None => {}
            Some(OutReason::NodeLost) => {
                let node = self.node_of_su(su);
                let ready = self
                    .sus_on_node(&node)
                    .iter()
                    .filter(|x| self.sg_of_su(x).as_deref() == Some(sg.as_str()))
                    .all(|x| self.sus.get(x).is_some_and(|r| r.instantiated));
                if ready {
                    let mine: Vec<String> = self
                        .sus_on_node(&node)
                        .into_iter()
                        .filter(|x| self.sg_of_su(x).as_deref() == Some(sg.as_str()))
                        .collect();
                    for x in mine {
                        if let Some(r) = self.sus.get_mut(&x) {
                            if r.out == Some(OutReason::NodeLost) {
                                r.out = None;
                            }
                        }
                    }
                    self.run_event(ctx, &sg, SgEvent::NodeUp { node });
                }
            }
            Some(OutReason::Faulted) => {
                let auto = self.sgs.get(&sg).is_some_and(|e| e.cfg.auto_repair);
                if auto {
                    self.repair_su(ctx, su);
                }
            }
        }
    }

    /// After a graceful failover, a faulted SU whose components still run is repaired once its
    /// last assignment is removed.
    fn repair_if_released(&mut self, ctx: ApplyContext, sg: &str, su: &str) {
        let Some(s) = self.sus.get(su) else {
            return;
        };
        if s.out != Some(OutReason::Faulted) || !s.instantiated {
            return;
        }
        let Some(e) = self.sgs.get(sg) else {
            return;
        };
        let holds = policy::susis(&e.rt).iter().any(|(_, x, _, _)| x == su);
        if !holds && e.cfg.auto_repair {
            self.repair_su(ctx, su);
        }
    }

    /// The SU is repaired: back into service (the policy decides what it gets).
    fn repair_su(&mut self, ctx: ApplyContext, su: &str) {
        let Some(sg) = self.sg_of_su(su) else {
            return;
        };
        if let Some(s) = self.sus.get_mut(su) {
            s.out = None;
        }
        self.run_event(ctx, &sg, SgEvent::SuRepaired { su: su.to_string() });
    }

    /// Start an SG once every SU on an up node is instantiated (or failed to be).
    fn try_start(&mut self, ctx: ApplyContext, sg: &str) {
        let Some(entry) = self.sgs.get(sg) else {
            return;
        };
        if entry.started {
            return;
        }
        let sus: Vec<(String, String)> = entry
            .cfg
            .sus
            .iter()
            .map(|s| (s.name.clone(), s.node.clone()))
            .collect();
        let mut down_nodes = BTreeSet::new();
        let mut failed = Vec::new();
        for (su, node) in &sus {
            let up = self.nodes.get(node).is_some_and(|n| n.up);
            if !up {
                down_nodes.insert(node.clone());
                continue;
            }
            let s = self.sus.get(su).cloned().unwrap_or_default();
            let comp_failed = self
                .components
                .values()
                .any(|c| &c.su == su && c.presence == Presence::InstantiationFailed);
            if comp_failed {
                failed.push(su.clone());
            } else if !s.instantiated {
                return;
            }
        }
        if down_nodes.len() + failed.len() == sus.len() {
            return; // nothing to place on yet
        }
        for node in down_nodes {
            for su in self.sus_on_node(&node) {
                if let Some(s) = self.sus.get_mut(&su) {
                    s.out = Some(OutReason::NodeLost);
                }
            }
            self.run_event(ctx, sg, SgEvent::NodeFailover { node });
        }
        for su in failed {
            if let Some(s) = self.sus.get_mut(&su) {
                s.out = Some(OutReason::Faulted);
            }
            let recovery = policy::FaultRecovery::SuFailover;
            self.run_event(ctx, sg, SgEvent::SuFault { su, recovery });
        }
        if let Some(e) = self.sgs.get_mut(sg) {
            e.started = true;
        }
        self.run_event(ctx, sg, SgEvent::Start);
    }

    fn su_instantiation_failed(&mut self, ctx: ApplyContext, su: &str) {
        let Some(sg) = self.sg_of_su(su) else {
            return;
        };
        if let Some(s) = self.sus.get_mut(su) {
            s.instantiated = false;
        }
        if !self.sgs.get(&sg).is_some_and(|e| e.started) {
            self.try_start(ctx, &sg);
            return;
        }
        let already = self.sus.get(su).and_then(|s| s.out).is_some();
        if !already {
            if let Some(s) = self.sus.get_mut(su) {
                s.out = Some(OutReason::Faulted);
            }
            let su = su.to_string();
            let recovery = policy::FaultRecovery::SuFailover;
            self.run_event(ctx, &sg, SgEvent::SuFault { su, recovery });
        }
    }

    fn ack(
        &mut self,
        ctx: ApplyContext,
        id: u64,
        ok: bool,
        reason: &str,
        done_at_ms: u64,
    ) -> AmfResponse {
        let Some(d) = self.directives.get(&id).cloned() else {
            return AmfResponse::Ignored;
        };
        if !ok {
            // The director reports the failing component as a component error; the SU fault
            // that follows resolves this directive.
            let text = format!("{} of {} failed: {reason}", kind_name(d.kind), d.si);
            self.record(ctx, done_at_ms, HistoryKind::Detected, &d.su, text);
            return AmfResponse::Done {
                message: String::new(),
            };
        }
        self.directives.remove(&id);
        let key = (d.si.clone(), d.su.clone());
        if d.kind == MsgKind::Remove {
            self.epochs.remove(&key);
        } else {
            self.epochs.insert(key, d.epoch);
        }
        let text = format!(
            "{} {} (epoch {}) confirmed by {}",
            d.si,
            kind_name(d.kind),
            d.epoch,
            d.su
        );
        self.record(ctx, done_at_ms, HistoryKind::Confirmed, &d.si, text);
        if matches!(d.kind, MsgKind::Active(_)) {
            self.finish_failover(ctx, &d, done_at_ms);
        }
        let kind = match d.kind {
            MsgKind::Quiescing => MsgKind::Quiesced,
            k => k,
        };
        let ack = Ack {
            su: d.su.clone(),
            si: d.si.clone(),
            kind,
            ok: true,
        };
        let Some(entry) = self.sgs.get_mut(&d.sg) else {
            return AmfResponse::Ignored;
        };
        let out = policy::acknowledge(&entry.cfg, &mut entry.rt, &ack);
        self.after_outcome(ctx, &d.sg, out);
        if d.kind == MsgKind::Remove {
            self.repair_if_released(ctx, &d.sg, &d.su);
        }
        AmfResponse::Done {
            message: String::new(),
        }
    }

    /// Feed an event to an SG's policy and follow up.
    fn run_event(&mut self, ctx: ApplyContext, sg: &str, ev: SgEvent) -> policy::Outcome {
        let Some(entry) = self.sgs.get_mut(sg) else {
            return policy::Outcome::default();
        };
        let out = policy::handle(&entry.cfg, &mut entry.rt, &ev);
        self.after_outcome(ctx, sg, out.clone());
        out
    }

    /// Record alarms and bring the directives in line with the policy's pending messages: a
    /// new pending message becomes a directive with the next epoch; a directive the policy no
    /// longer waits for (its SU was lost) is dropped.
    fn after_outcome(&mut self, ctx: ApplyContext, sg: &str, out: policy::Outcome) {
        for si in &out.alarms_raised {
            let text = "raised: SI unassigned".to_string();
            self.record(ctx, ctx.time_ms, HistoryKind::Alarm, si, text);
        }
        for si in &out.alarms_cleared {
            let text = "cleared: SI assigned again".to_string();
            self.record(ctx, ctx.time_ms, HistoryKind::Alarm, si, text);
        }
        let Some(entry) = self.sgs.get(sg) else {
            return;
        };
        let pending = policy::pending(&entry.rt);
        let stale: Vec<u64> = self
            .directives
            .values()
            .filter(|d| d.sg == sg)
            .filter(|d| {
                !pending
                    .iter()
                    .any(|m| m.su == d.su && m.si == d.si && m.kind == d.kind)
            })
            .map(|d| d.id)
            .collect();
        for id in stale {
            self.directives.remove(&id);
        }
        for m in pending {
            let known = self
                .directives
                .values()
                .any(|d| d.sg == sg && d.su == m.su && d.si == m.si && d.kind == m.kind);
            if known {
                continue;
            }
            self.next_id += 1;
            self.epoch += 1;
            let d = Directive {
                id: self.next_id,
                sg: sg.to_string(),
                node: self.node_of_su(&m.su),
                su: m.su.clone(),
                si: m.si.clone(),
                kind: m.kind,
                epoch: self.epoch,
                issued_at_ms: ctx.time_ms,
            };
            let text = format!(
                "{} {} (epoch {}) to {}",
                d.si,
                kind_name(d.kind),
                d.epoch,
                d.su
            );
            self.record(ctx, ctx.time_ms, HistoryKind::Assigned, &m.si, text);
            self.directives.insert(d.id, d);
        }
        // Assignments that are gone take their epochs with them.
        let live: BTreeSet<(String, String)> = self
            .sgs
            .values()
            .flat_map(|e| policy::susis(&e.rt))
            .map(|(si, su, _, _)| (si, su))
            .collect();
        self.epochs.retain(|k, _| live.contains(k));
    }

    /// Remember that `sg` is failing over (until its new active confirms).
    fn start_failover(&mut self, sg: &str, cause: String, detected_ms: u64, decided_ms: u64) {
        self.failovers
            .entry(sg.to_string())
            .or_insert(FailoverTrack {
                cause,
                detected_ms,
                decided_ms,
            });
    }

    /// The new active of `d.sg` confirmed: record the failover's timeline.
    fn finish_failover(&mut self, ctx: ApplyContext, d: &Directive, confirmed_ms: u64) {
        let Some(t) = self.failovers.remove(&d.sg) else {
            return;
        };
        let timeline = Timeline {
            detected_ms: t.detected_ms,
            decided_ms: t.decided_ms,
            confirmed_ms,
        };
        let text = format!(
            "{} active on {} (epoch {}) after {}: decided +{} ms, confirmed +{} ms",
            d.si,
            d.su,
            d.epoch,
            t.cause,
            t.decided_ms.saturating_sub(t.detected_ms),
            confirmed_ms.saturating_sub(t.detected_ms)
        );
        self.record(ctx, confirmed_ms, HistoryKind::Failover, &d.si, text);
        crate::telemetry::failover_confirmed(&d.sg, &d.si, &d.su, d.epoch, &timeline);
        if let Some(last) = self.history.back_mut() {
            last.timeline = Some(timeline);
        }
    }

    /// Track a failover in every SG that has an active on `node`.
    fn track_node_failover(&mut self, node: &str, cause: String, detected: u64, decided: u64) {
        let sgs: Vec<String> = self
            .sgs
            .iter()
            .filter(|(_, e)| {
                policy::susis(&e.rt).iter().any(|(_, su, ha, _)| {
                    *ha == policy::HaState::Active
                        && e.cfg.sus.iter().any(|s| &s.name == su && s.node == node)
                })
            })
            .map(|(n, _)| n.clone())
            .collect();
        for sg in sgs {
            self.start_failover(&sg, cause.clone(), detected, decided);
        }
    }

    fn record(
        &mut self,
        ctx: ApplyContext,
        time_ms: u64,
        kind: HistoryKind,
        entity: &str,
        text: String,
    ) {
        if self.history.len() >= HISTORY_LEN_MAX {
            self.history.pop_front();
        }
        self.history.push_back(HistoryEntry {
            index: ctx.index,
            time_ms,
            kind,
            entity: entity.to_string(),
            text,
            timeline: None,
        });
    }

    fn sus_on_node(&self, node: &str) -> Vec<String> {
        self.sgs
            .values()
            .flat_map(|e| e.cfg.sus.iter())
            .filter(|s| s.node == node)
            .map(|s| s.name.clone())
            .collect()
    }

    fn sg_of_su(&self, su: &str) -> Option<String> {
        self.sgs
            .iter()
            .find(|(_, e)| e.cfg.sus.iter().any(|s| s.name == su))
            .map(|(n, _)| n.clone())
    }

    fn node_of_su(&self, su: &str) -> String {
        self.sgs
            .values()
            .flat_map(|e| e.cfg.sus.iter())
            .find(|s| s.name == su)
            .map(|s| s.node.clone())
            .unwrap_or_default()
    }

    fn sg_of_si(&self, si: &str) -> Option<String> {
        self.sgs
            .iter()
            .find(|(_, e)| e.cfg.sis.iter().any(|s| s.name == si))
            .map(|(n, _)| n.clone())
    }
}

/// The word for a directive's change.
pub fn kind_name(kind: MsgKind) -> &'static str {
    match kind {
        MsgKind::Active(_) => "active",
        MsgKind::Standby => "standby",
        MsgKind::Quiesced => "quiesced",
        MsgKind::Quiescing => "quiescing",
        MsgKind::Remove => "remove",
    }
}
