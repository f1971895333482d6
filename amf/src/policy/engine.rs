//! The public entry points: events and acknowledgements in, batches and alarms out.

use std::collections::BTreeMap;

use super::common::{send, sus_by_rank};
use super::runtime::{SgFsm, SgRuntime, SuAdminState};
use super::types::{
    Ack, AdminResult, HaState, Msg, MsgKind, Outcome, RedundancyModel, SgConfig, SgEvent,
    SiAssignment,
};
use super::{admin, alarms, deps, events, nored, twon};

/// Whether this version implements `model`. The others (N+M, N-Way, N-Way-Active) come as
/// their own modules next to `twon` and `nored`; until then every event is a no-op for them and
/// every admin operation answers NOT_SUPPORTED.
pub fn model_supported(model: RedundancyModel) -> bool {
    matches!(model, RedundancyModel::TwoN | RedundancyModel::NoRed)
}

/// Whether `ev` is an administrative operation (its outcome carries an [`AdminResult`]).
pub fn is_admin(ev: &SgEvent) -> bool {
    matches!(
        ev,
        SgEvent::SuLock { .. }
            | SgEvent::SuShutdown { .. }
            | SgEvent::SuUnlock { .. }
            | SgEvent::SuLockIn { .. }
            | SgEvent::SuUnlockIn { .. }
            | SgEvent::NodeLock { .. }
            | SgEvent::NodeUnlock { .. }
            | SgEvent::SiSwap { .. }
            | SgEvent::SiLock { .. }
            | SgEvent::SiUnlock { .. }
    )
}

/// Applies event `ev` to the SG. Faults and membership changes take effect at once, even while a
/// batch is in flight (messages to SUs lost abruptly are forgotten); admin operations are
/// validated first and refused, with nothing changed, by the [`AdminResult`] in the outcome.
/// When nothing is left in flight the outcome carries the next batch.
pub fn handle(cfg: &SgConfig, rt: &mut SgRuntime, ev: &SgEvent) -> Outcome {
    if !model_supported(cfg.model) {
        let admin = is_admin(ev).then_some(AdminResult::NotSupported);
        return Outcome {
            admin,
            ..Outcome::default()
        };
    }
    let (admin, sent) = match admin::apply(cfg, rt, ev) {
        Some(Err(refused)) => {
            return Outcome {
                admin: Some(refused),
                ..Outcome::default()
            };
        }
        Some(Ok(sent)) => (Some(AdminResult::Ok), sent),
        None => {
            events::apply(cfg, rt, ev);
            (None, Vec::new())
        }
    };
    let mut out = settle(cfg, rt, || format!("{ev:?}"));
    out.messages.splice(0..0, sent);
    out.admin = admin;
    out
}

/// Applies the acknowledgement of one message. An ack that matches no message in flight (a
/// stale ack from an SU that was lost meanwhile) changes nothing. A failed ack (`ok == false`)
/// leaves the message in flight: the caller escalates it as an SU fault (§6.5). An ack of a
/// QUIESCING message with kind `Quiescing` records that quiescing started; the message stays in
/// flight until the ack with kind `Quiesced` (quiescing complete). When the last message in
/// flight is acknowledged, the outcome carries the next batch.
pub fn acknowledge(cfg: &SgConfig, rt: &mut SgRuntime, ack: &Ack) -> Outcome {
    if !model_supported(cfg.model) || !ack.ok {
        return Outcome::default();
    }
    let Some(susi) = rt.susi_mut(&ack.si, &ack.su) else {
        return Outcome::default();
    };
    let Some(pending) = susi.pending else {
        return Outcome::default();
    };
    match (pending, ack.kind) {
        (MsgKind::Quiescing, MsgKind::Quiescing) => susi.ha = HaState::Quiescing,
        (MsgKind::Quiescing | MsgKind::Quiesced, MsgKind::Quiesced) => {
            susi.ha = HaState::Quiesced;
            susi.pending = None;
        }
        (MsgKind::Active(_), MsgKind::Active(_)) => {
            susi.ha = HaState::Active;
            susi.pending = None;
            rt.si_mut(&ack.si).active_lost = false;
        }
        (MsgKind::Standby, MsgKind::Standby) => {
            susi.ha = HaState::Standby;
            susi.pending = None;
        }
        (MsgKind::Remove, MsgKind::Remove) => {
            rt.susis.retain(|s| !(s.si == ack.si && s.su == ack.su));
        }
        _ => return Outcome::default(),
    }
    settle(cfg, rt, || "acknowledgement".to_string())
}

/// After any change: update instantiation, shutdown completion and dependencies; when nothing
/// is in flight (a batch boundary), plan and send the next batch and update alarms; check the
/// model's invariants.
fn settle(cfg: &SgConfig, rt: &mut SgRuntime, cause: impl FnOnce() -> String) -> Outcome {
    events::refresh_instantiation(cfg, rt);
    complete_shutdowns(rt);
    deps::update(cfg, rt);
    // Batch boundary: nothing in flight, so the next batch is planned and alarms are evaluated
    // (not between the acks of one batch, so they do not depend on the order of acks).
    let boundary = !rt.in_flight();
    let messages = if boundary { plan(cfg, rt) } else { Vec::new() };
    send(rt, &messages);
    if !rt.in_flight() {
        rt.fsm = SgFsm::Stable;
    } else if rt.fsm == SgFsm::Stable {
        rt.fsm = SgFsm::Realigning { cause: cause() };
    }
    match cfg.model {
        RedundancyModel::TwoN => twon::check_invariants(cfg, rt),
        RedundancyModel::NoRed => nored::check_invariants(cfg, rt),
        _ => {}
    }
    let (alarms_raised, alarms_cleared) = if boundary {
        alarms::update(cfg, rt)
    } else {
        (Vec::new(), Vec::new())
    };
    Outcome {
        messages,
        alarms_raised,
        alarms_cleared,
        admin: None,
    }
}

/// The model's next batch.
fn plan(cfg: &SgConfig, rt: &mut SgRuntime) -> Vec<Msg> {
    match cfg.model {
        RedundancyModel::TwoN => twon::plan(cfg, rt),
        RedundancyModel::NoRed => nored::plan(cfg, rt),
        RedundancyModel::NPlusM | RedundancyModel::NWay | RedundancyModel::NWayActive => Vec::new(),
    }
}

/// SHUTTING_DOWN becomes LOCKED once the SU has nothing active or quiescing left (§4.4).
fn complete_shutdowns(rt: &mut SgRuntime) {
    let done: Vec<String> = rt
        .sus
        .iter()
        .filter(|(_, r)| r.admin == SuAdminState::ShuttingDown)
        .filter(|(su, _)| {
            !rt.susis_of_su(su).any(|s| {
                matches!(s.ha, HaState::Active | HaState::Quiescing)
                    || s.pending == Some(MsgKind::Quiescing)
            })
        })
        .map(|(su, _)| su.clone())
        .collect();
    for su in done {
        rt.su_mut(&su).admin = SuAdminState::Locked;
    }
}

/// Whether the SG is STABLE: nothing waits for an acknowledgement.
pub fn is_stable(rt: &SgRuntime) -> bool {
    !rt.in_flight()
}

/// The assignment table: every SI of `cfg`, with the SUs holding it active (or quiescing) and
/// standby, in SU rank order. QUIESCED assignments appear in neither list.
pub fn table(cfg: &SgConfig, rt: &SgRuntime) -> BTreeMap<String, SiAssignment> {
    let sus = sus_by_rank(cfg);
    let holding = |si: &str, want: &[HaState]| -> Vec<String> {
        sus.iter()
            .filter(|su| rt.susi(si, &su.name).is_some_and(|s| want.contains(&s.ha)))
            .map(|su| su.name.clone())
            .collect()
    };
    cfg.sis
        .iter()
        .map(|si| {
            let a = SiAssignment {
                active: holding(&si.name, &[HaState::Active, HaState::Quiescing]),
                standby: holding(&si.name, &[HaState::Standby]),
            };
            (si.name.clone(), a)
        })
        .collect()
}

/// The messages sent and not yet acknowledged, ordered by (SI, SU).
pub fn pending(rt: &SgRuntime) -> Vec<Msg> {
    rt.susis
        .iter()
        .filter_map(|s| {
            s.pending.map(|kind| Msg {
                su: s.su.clone(),
                si: s.si.clone(),
                kind,
            })
        })
        .collect()
}

/// Every SUSI as (SI, SU, HA state, message in flight), ordered by (SI, SU), for status display.
pub fn susis(rt: &SgRuntime) -> Vec<(String, String, HaState, Option<MsgKind>)> {
    rt.susis
        .iter()
        .map(|s| (s.si.clone(), s.su.clone(), s.ha, s.pending))
        .collect()
}

/// The admin state of SU `su` (UNLOCKED for an SU unknown to this SG).
pub fn su_admin_state(rt: &SgRuntime, su: &str) -> SuAdminState {
    rt.sus.get(su).map(|r| r.admin).unwrap_or_default()
}

/// Whether SU `su` is enabled (operational state).
pub fn su_enabled(rt: &SgRuntime, su: &str) -> bool {
    rt.sus.get(su).is_some_and(|r| r.enabled)
}

/// Whether SU `su` is in service (§1.2): it may hold and receive assignments.
pub fn su_in_service(rt: &SgRuntime, su: &str) -> bool {
    rt.sus.contains_key(su) && rt.in_service(su)
}
