//! Recovery and escalation: component restart → SU restart → SU (or
//! component) failover → node failover, with counters over probation windows; and the admin
//! operations.

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};

use super::{AdminOp, AmfResponse, AmfState, HistoryKind, OutReason, Recovery, TargetKind};
use crate::policy::{self, AdminResult, FaultRecovery, HaState, SgEvent};

impl AmfState {
    pub(super) fn component_error(
        &mut self,
        ctx: ApplyContext,
        comp: &str,
        incarnation: u64,
        recommended: Recovery,
        reason: &str,
        detected_at_ms: u64,
    ) -> AmfResponse {
        let Some(c) = self.components.get(comp) else {
            return AmfResponse::Ignored;
        };
        if c.incarnation != incarnation {
            return AmfResponse::Ignored;
        }
        let (su, node) = (c.su.clone(), c.node.clone());
        let Some(model) = self.model.as_ref() else {
            return AmfResponse::Ignored;
        };
        let Some(def) = model.component(comp) else {
            return AmfResponse::Ignored;
        };
        let configured = Recovery::from(def.recovery_on_error);
        let disable_restart = def.disable_restart;
        self.record(
            ctx,
            detected_at_ms,
            HistoryKind::Detected,
            comp,
            reason.to_string(),
        );
        let mut rec = match recommended {
            Recovery::NoRecommendation => configured,
            r => r,
        };
        if rec == Recovery::ComponentRestart && (disable_restart || self.su_quiescing(&su)) {
            rec = Recovery::ComponentFailover;
        }
        if rec == Recovery::ComponentRestart {
            if let Some(done) = self.try_restart(ctx, comp, &su) {
                return done;
            }
            crate::telemetry::METRICS.escalations_failover.inc();
            rec = Recovery::ComponentFailover;
        }
        if rec == Recovery::ComponentFailover {
            let cause = (format!("{comp}: {reason}"), detected_at_ms);
            if let Some(done) = self.try_su_failover(ctx, comp, &su, &node, cause) {
                return done;
            }
            crate::telemetry::METRICS.escalations_node_failover.inc();
            rec = Recovery::NodeFailover;
        }
        if rec == Recovery::NodeSwitchover {
            let cause = (format!("{comp}: {reason}"), detected_at_ms);
            self.node_switchover(ctx, comp, &su, &node, cause);
            return AmfResponse::Done {
                message: format!("node {node} switched over"),
            };
        }
        let text = format!("node failover of {node} ({comp}: {reason})");
        self.record(ctx, ctx.time_ms, HistoryKind::Decided, &node, text);
        let cause = format!("{comp}: {reason}");
        self.track_node_failover(&node, cause, detected_at_ms, ctx.time_ms);
        self.node_failover(ctx, &node);
        let _ = rec;
        AmfResponse::Done {
            message: format!("node {node} failed over"),
        }
    }

    /// Level 0 and 1: restart the component, or the whole SU, while the budgets allow.
    fn try_restart(&mut self, ctx: ApplyContext, comp: &str, su: &str) -> Option<AmfResponse> {
        let sg = self.sg_of_su(su)?;
        let limits = self.model.as_ref()?.sg(&sg)?.clone();
        let s = self.sus.get_mut(su)?;
        let now = ctx.time_ms;
        if s.comp_restarts
            .allow(now, limits.comp_restart_max, limits.comp_restart_prob_ms)
        {
            self.restart_component(comp);
            crate::telemetry::METRICS.component_restarts.inc();
            let text = format!("restart component {comp}");
            self.record(ctx, now, HistoryKind::Decided, comp, text);
            return Some(AmfResponse::Done {
                message: format!("component {comp} restarts"),
            });
        }
        if limits.su_restart_max > 0
            && s.su_restarts
                .allow(now, limits.su_restart_max, limits.su_restart_prob_ms)
        {
            s.comp_restarts.reset();
            self.restart_su(su);
            crate::telemetry::METRICS.su_restarts.inc();
            crate::telemetry::METRICS.escalations_su_restart.inc();
            let text = format!("restart SU {su} (component restarts exhausted)");
            self.record(ctx, now, HistoryKind::Decided, su, text);
            return Some(AmfResponse::Done {
                message: format!("SU {su} restarts"),
            });
        }
        None
    }

    /// Level 2: fail the SU over (abruptly when `failover` is set, else gracefully) while the
    /// node's failover budget allows.
    fn try_su_failover(
        &mut self,
        ctx: ApplyContext,
        comp: &str,
        su: &str,
        node: &str,
        cause: (String, u64),
    ) -> Option<AmfResponse> {
        let sg = self.sg_of_su(su)?;
        let model = self.model.as_ref()?;
        let (max, prob) = model
            .node(node)
            .map(|n| (n.su_failover_max, n.su_failover_prob_ms))
            .unwrap_or((10, 60_000));
        let abrupt = model.su(su).map(|s| s.failover).unwrap_or(false);
        let n = self.nodes.get_mut(node)?;
        if !n.failovers.allow(ctx.time_ms, max, prob) {
            return None;
        }
        let recovery = if abrupt {
            FaultRecovery::SuFailover
        } else {
            FaultRecovery::CompFailover
        };
        if abrupt {
            self.restart_su(su);
        } else {
            self.restart_component(comp);
        }
        if let Some(s) = self.sus.get_mut(su) {
            s.instantiated = false;
            s.out = Some(OutReason::Faulted);
        }
        let holds_active = self.sgs.get(&sg).is_some_and(|e| {
            policy::susis(&e.rt)
                .iter()
                .any(|(_, s, ha, _)| s == su && *ha == HaState::Active)
        });
        if holds_active {
            self.start_failover(&sg, cause.0, cause.1, ctx.time_ms);
        }
        let how = if abrupt {
            "SU failover"
        } else {
            "component failover"
        };
        self.record(
            ctx,
            ctx.time_ms,
            HistoryKind::Decided,
            su,
            format!("{how} of {su}"),
        );
        let su_name = su.to_string();
        self.run_event(
            ctx,
            &sg,
            SgEvent::SuFault {
                su: su_name,
                recovery,
            },
        );
        Some(AmfResponse::Done {
            message: format!("{how} of {su}"),
        })
    }

    /// Node switchover: the faulty SU fails over as its `failover` setting
    /// says; every other SU of the node that holds assignments moves away gracefully (quiesced
    /// first) and is repaired once its assignments are removed.
    fn node_switchover(
        &mut self,
        ctx: ApplyContext,
        comp: &str,
        su: &str,
        node: &str,
        cause: (String, u64),
    ) {
        let text = format!("node switchover of {node} ({})", cause.0);
        self.record(ctx, ctx.time_ms, HistoryKind::Decided, node, text);
        self.track_node_failover(node, cause.0.clone(), cause.1, ctx.time_ms);
        let abrupt = self
            .model
            .as_ref()
            .and_then(|m| m.su(su))
            .is_some_and(|s| s.failover);
        let others: Vec<String> = self
            .sus_on_node(node)
            .into_iter()
            .filter(|x| x != su && self.su_has_assignments(x))
            .collect();
        let faulty = [(su.to_string(), abrupt)];
        let rest = others.into_iter().map(|x| (x, false));
        for (x, abrupt) in faulty.into_iter().chain(rest) {
            let Some(sg) = self.sg_of_su(&x) else {
                continue;
            };
            if x == su {
                if abrupt {
                    self.restart_su(&x);
                } else {
                    self.restart_component(comp);
                }
            }
            if let Some(r) = self.sus.get_mut(&x) {
                if x == su {
                    r.instantiated = false;
                }
                r.out = Some(OutReason::Faulted);
            }
            let recovery = if abrupt {
                FaultRecovery::SuFailover
            } else {
                FaultRecovery::CompFailover
            };
            self.run_event(ctx, &sg, SgEvent::SuFault { su: x, recovery });
        }
    }

    fn su_has_assignments(&self, su: &str) -> bool {
        self.sgs
            .values()
            .any(|e| policy::susis(&e.rt).iter().any(|(_, s, _, _)| s == su))
    }

    /// Every SU of `node` fails over abruptly; its components are cleaned up.
    pub(super) fn node_failover(&mut self, ctx: ApplyContext, node: &str) {
        self.fail_node(ctx, node);
    }

    fn su_quiescing(&self, su: &str) -> bool {
        self.sgs.values().any(|e| {
            policy::susis(&e.rt).iter().any(|(_, s, ha, _)| {
                s == su && matches!(ha, HaState::Quiesced | HaState::Quiescing)
            })
        })
    }

    fn restart_component(&mut self, comp: &str) {
        self.reset_component(comp);
        if let Some(c) = self.components.get_mut(comp) {
            c.restarts += 1;
            let su = c.su.clone();
            if let Some(s) = self.sus.get_mut(&su) {
                s.instantiated = false;
            }
        }
    }

    fn restart_su(&mut self, su: &str) {
        let comps: Vec<String> = self
            .components
            .iter()
            .filter(|(_, c)| c.su == su)
            .map(|(n, _)| n.clone())
            .collect();
        for c in comps {
            self.restart_component(&c);
        }
    }

    pub(super) fn admin(
        &mut self,
        ctx: ApplyContext,
        op: AdminOp,
        kind: TargetKind,
        target: &str,
    ) -> AmfResponse {
        if self.model.is_none() {
            return refuse(
                ErrorCode::NotExist,
                "no AMF model is applied; apply one first",
            );
        }
        let label = format!("{} {} {}", op.name(), kind.name(), target);
        let resp = match (op, kind) {
            (AdminOp::Restart, TargetKind::Component) => self.admin_restart_comp(target),
            (AdminOp::Restart, TargetKind::Su) => self.admin_restart_su(target),
            (AdminOp::Repaired, TargetKind::Su) => self.admin_repaired_su(ctx, target),
            (AdminOp::Repaired, TargetKind::Node) => self.admin_repaired_node(target),
            (_, TargetKind::Su) => self.admin_su(ctx, op, target),
            (AdminOp::Lock | AdminOp::Unlock, TargetKind::Node) => self.admin_node(ctx, op, target),
            (AdminOp::SiSwap | AdminOp::Lock | AdminOp::Unlock, TargetKind::Si) => {
                self.admin_si(ctx, op, target)
            }
            _ => refuse(
                ErrorCode::InvalidParam,
                &format!(
                    "{} is not an operation on a {}; see `nines admin --help`",
                    op.name(),
                    kind.name()
                ),
            ),
        };
        if let AmfResponse::Done { message } = &resp {
            let text = format!("{label}: {message}");
            self.record(ctx, ctx.time_ms, HistoryKind::Admin, target, text);
        }
        resp
    }

    fn admin_su(&mut self, ctx: ApplyContext, op: AdminOp, su: &str) -> AmfResponse {
        let Some(sg) = self.sg_of_su(su) else {
            return refuse(
                ErrorCode::NotExist,
                &format!("no SU named {su} in the model"),
            );
        };
        let su = su.to_string();
        let ev = match op {
            AdminOp::Lock => SgEvent::SuLock { su },
            AdminOp::Unlock => SgEvent::SuUnlock { su },
            AdminOp::Shutdown => SgEvent::SuShutdown { su },
            AdminOp::LockInstantiation => SgEvent::SuLockIn { su },
            AdminOp::UnlockInstantiation => SgEvent::SuUnlockIn { su },
            _ => return refuse(ErrorCode::InvalidParam, "not an SU operation"),
        };
        self.admin_event(ctx, &sg, ev)
    }

    fn admin_node(&mut self, ctx: ApplyContext, op: AdminOp, node: &str) -> AmfResponse {
        if !self.nodes.contains_key(node) {
            return refuse(
                ErrorCode::NotExist,
                &format!("no node named {node} in the model"),
            );
        }
        let sgs: Vec<String> = self
            .sgs
            .iter()
            .filter(|(_, e)| e.cfg.sus.iter().any(|s| s.node == node))
            .map(|(n, _)| n.clone())
            .collect();
        let mut last = AmfResponse::Done {
            message: "no SU on that node".into(),
        };
        for sg in sgs {
            let node = node.to_string();
            let ev = match op {
                AdminOp::Lock => SgEvent::NodeLock { node },
                _ => SgEvent::NodeUnlock { node },
            };
            last = self.admin_event(ctx, &sg, ev);
            if matches!(last, AmfResponse::Refused(_)) {
                return last;
            }
        }
        last
    }

    fn admin_si(&mut self, ctx: ApplyContext, op: AdminOp, si: &str) -> AmfResponse {
        let Some(sg) = self.sg_of_si(si) else {
            return refuse(
                ErrorCode::NotExist,
                &format!("no SI named {si} in the model"),
            );
        };
        let si = si.to_string();
        let ev = match op {
            AdminOp::SiSwap => SgEvent::SiSwap { si },
            AdminOp::Lock => SgEvent::SiLock { si },
            _ => SgEvent::SiUnlock { si },
        };
        self.admin_event(ctx, &sg, ev)
    }

    fn admin_event(&mut self, ctx: ApplyContext, sg: &str, ev: SgEvent) -> AmfResponse {
        if !self.sgs.get(sg).is_some_and(|e| e.started) {
            return refuse(
                ErrorCode::TryAgain,
                &format!("SG {sg} has not started yet (its SUs are being instantiated)"),
            );
        }
        let out = self.run_event(ctx, sg, ev);
        match out.admin.unwrap_or(AdminResult::Ok) {
            AdminResult::Ok => AmfResponse::Done {
                message: format!("accepted by SG {sg}"),
            },
            AdminResult::TryAgain => refuse(
                ErrorCode::TryAgain,
                &format!("SG {sg} is busy with another change; try again when it is stable"),
            ),
            AdminResult::BadOperation => refuse(
                ErrorCode::BadOperation,
                &format!("SG {sg} cannot do that in its current state"),
            ),
            AdminResult::NotSupported => refuse(
                ErrorCode::BadOperation,
                &format!("SG {sg}'s redundancy model does not support that operation"),
            ),
        }
    }

    fn admin_restart_comp(&mut self, comp: &str) -> AmfResponse {
        if !self.components.contains_key(comp) {
            return refuse(
                ErrorCode::NotExist,
                &format!("no component named {comp} in the model"),
            );
        }
        self.restart_component(comp);
        AmfResponse::Done {
            message: "restarting".into(),
        }
    }

    fn admin_restart_su(&mut self, su: &str) -> AmfResponse {
        if !self.sus.contains_key(su) {
            return refuse(
                ErrorCode::NotExist,
                &format!("no SU named {su} in the model"),
            );
        }
        self.restart_su(su);
        AmfResponse::Done {
            message: "restarting its components".into(),
        }
    }

    fn admin_repaired_su(&mut self, ctx: ApplyContext, su: &str) -> AmfResponse {
        let Some(s) = self.sus.get_mut(su) else {
            return refuse(
                ErrorCode::NotExist,
                &format!("no SU named {su} in the model"),
            );
        };
        s.comp_restarts.reset();
        s.su_restarts.reset();
        let failed: Vec<String> = self
            .components
            .iter()
            .filter(|(_, c)| c.su == su)
            .filter(|(_, c)| c.presence == super::Presence::InstantiationFailed)
            .map(|(n, _)| n.clone())
            .collect();
        for c in &failed {
            self.reset_component(c);
        }
        let out = self.sus.get(su).and_then(|s| s.out);
        let instantiated = self.sus.get(su).is_some_and(|s| s.instantiated);
        if out == Some(OutReason::Faulted) && instantiated {
            self.repair_su(ctx, su);
        }
        AmfResponse::Done {
            message: "counters cleared".into(),
        }
    }

    fn admin_repaired_node(&mut self, node: &str) -> AmfResponse {
        let Some(n) = self.nodes.get_mut(node) else {
            return refuse(
                ErrorCode::NotExist,
                &format!("no node named {node} in the model"),
            );
        };
        n.failovers.reset();
        AmfResponse::Done {
            message: "failover counter cleared".into(),
        }
    }
}

fn refuse(code: ErrorCode, msg: &str) -> AmfResponse {
    AmfResponse::Refused(AisError::new(code, msg.to_string()))
}
