//! The 2N redundancy model: one SU holds every SI ACTIVE, one other holds them STANDBY; on a
//! fault the standby takes over, on an admin switchover the active is quiesced first.
//!
//! One plan function computes the next batch from the current state whenever nothing is in
//! flight. Phases, first non-empty one wins, so each phase is its own batch:
//! 1. take down (common): quiesce or remove what leaves service;
//! 2. promote: the in-service standby of an SI whose active side is gone or acknowledged
//!    QUIESCED becomes ACTIVE, sponsors before dependents;
//! 3. finish: acknowledged QUIESCED SUSIs get REMOVE (or STANDBY at the end of a swap, or
//!    ACTIVE back when the swap's standby was lost);
//! 4. place (R-2N-INIT): unassigned SIs ACTIVE on the active SU; only when there is none,
//!    missing standbys on the standby SU.

use super::common::{
    descriptor, is_acked_active, is_acked_quiesced, is_active_side, msg, si_assignable,
    sis_by_rank, sponsors_active, sus_by_rank, take_down,
};
use super::runtime::SgRuntime;
use super::types::{HaState, Msg, MsgKind, SgConfig};

/// The next 2N batch (empty when the SG is where it should be).
pub(crate) fn plan(cfg: &SgConfig, rt: &mut SgRuntime) -> Vec<Msg> {
    assert!(!rt.in_flight(), "2N plans only when nothing is in flight");
    abandon_lost_swap(rt);
    let batch = take_down(cfg, rt);
    if !batch.is_empty() {
        return batch;
    }
    let batch = promote(cfg, rt);
    if !batch.is_empty() {
        return batch;
    }
    let batch = finish(cfg, rt);
    if !batch.is_empty() {
        return batch;
    }
    let batch = place_actives(cfg, rt);
    if !batch.is_empty() {
        return batch;
    }
    place_standbys(cfg, rt)
}

/// A swap whose SU left service (or lost every assignment) is over: the leaving rules take
/// over, and the flag must not quiesce the SU when it is active again one day.
fn abandon_lost_swap(rt: &mut SgRuntime) {
    if let Some(su) = rt.swap_su.clone() {
        if !rt.in_service(&su) || rt.susis_of_su(&su).next().is_none() {
            rt.swap_su = None;
        }
    }
}

/// Phase 2: promote the in-service standby of every SI without a live active.
fn promote(cfg: &SgConfig, rt: &SgRuntime) -> Vec<Msg> {
    let mut batch = Vec::new();
    for si in sis_by_rank(cfg) {
        let name = si.name.as_str();
        let r = rt.si(name);
        if r.locked || !sponsors_active(cfg, rt, name) {
            continue;
        }
        let live = rt
            .susis_of_si(name)
            .any(|s| is_active_side(s) && !is_acked_quiesced(s));
        if live {
            continue;
        }
        let standby = rt
            .susis_of_si(name)
            .find(|s| s.ha == HaState::Standby && rt.in_service(&s.su));
        if let Some(s) = standby {
            batch.push(msg(
                &s.su,
                name,
                MsgKind::Active(descriptor(rt, name, &s.su)),
            ));
        }
    }
    batch
}

/// Phase 3: finish the acknowledged QUIESCED SUSIs.
fn finish(cfg: &SgConfig, rt: &mut SgRuntime) -> Vec<Msg> {
    let mut batch = Vec::new();
    let swap_su = rt.swap_su.clone();
    let mut swap_left = 0usize;
    for si in sis_by_rank(cfg) {
        let name = si.name.as_str();
        let quiesced: Vec<String> = rt
            .susis_of_si(name)
            .filter(|s| is_acked_quiesced(s))
            .map(|s| s.su.clone())
            .collect();
        for su in quiesced {
            let swapping = swap_su.as_deref() == Some(su.as_str()) && rt.in_service(&su);
            let kind = finish_kind(rt, name, &su, swapping);
            match kind {
                Some(kind) => batch.push(msg(&su, name, kind)),
                None if swapping => swap_left += 1,
                None => {}
            }
        }
    }
    if swap_su.is_some() && swap_left == 0 && batch.iter().any(|m| Some(&m.su) == swap_su.as_ref())
    {
        rt.swap_su = None;
    }
    batch
}

/// What an acknowledged QUIESCED SUSI of (`si`, `su`) gets next, if anything yet.
fn finish_kind(rt: &SgRuntime, si: &str, su: &str, swapping: bool) -> Option<MsgKind> {
    let active_elsewhere = rt.susis_of_si(si).any(|s| s.su != su && is_acked_active(s));
    if active_elsewhere {
        return Some(if swapping {
            MsgKind::Standby
        } else {
            MsgKind::Remove
        });
    }
    let standby_waits = rt
        .susis_of_si(si)
        .any(|s| s.su != su && s.ha == HaState::Standby && rt.in_service(&s.su));
    if standby_waits {
        // Its promotion waits for a sponsor (§4.9); the dependency rules settle it.
        return None;
    }
    if rt.in_service(su) && !rt.si(si).locked {
        // §6.1: the SU being made active was lost; the quiesced SU takes its actives back.
        return Some(MsgKind::Active(descriptor(rt, si, su)));
    }
    Some(MsgKind::Remove)
}

/// Phase 4a (R-2N-INIT step 1): every assignable SI with no assignment becomes ACTIVE on the
/// active SU.
fn place_actives(cfg: &SgConfig, rt: &SgRuntime) -> Vec<Msg> {
    let Some(active_su) = active_su(cfg, rt) else {
        return Vec::new();
    };
    sis_by_rank(cfg)
        .into_iter()
        .filter(|si| rt.susis_of_si(&si.name).next().is_none())
        .filter(|si| si_assignable(cfg, rt, &si.name))
        .map(|si| {
            msg(
                &active_su,
                &si.name,
                MsgKind::Active(descriptor(rt, &si.name, &active_su)),
            )
        })
        .collect()
}

/// The SU that holds the actives, else the best in-service SU that holds no standby, else the
/// best in-service SU.
fn active_su(cfg: &SgConfig, rt: &SgRuntime) -> Option<String> {
    let sus = sus_by_rank(cfg);
    let in_service = || sus.iter().filter(|su| rt.in_service(&su.name));
    let holds = |su: &str, ha: HaState| rt.susis_of_su(su).any(|s| s.ha == ha);
    in_service()
        .find(|su| holds(&su.name, HaState::Active))
        .or_else(|| in_service().find(|su| !holds(&su.name, HaState::Standby)))
        .or_else(|| in_service().next())
        .map(|su| su.name.clone())
}

/// Phase 4b (R-2N-INIT step 2): every SI active on the active SU without a standby gets one on
/// the standby SU (the SU holding standbys, else the best fresh in-service SU).
fn place_standbys(cfg: &SgConfig, rt: &SgRuntime) -> Vec<Msg> {
    let Some(active_su) = active_su(cfg, rt) else {
        return Vec::new();
    };
    let sus = sus_by_rank(cfg);
    let candidates = || {
        sus.iter()
            .filter(|su| su.name != active_su && rt.in_service(&su.name))
    };
    let standby_su = candidates()
        .find(|su| rt.susis_of_su(&su.name).any(|s| s.ha == HaState::Standby))
        .or_else(|| candidates().find(|su| rt.susis_of_su(&su.name).next().is_none()));
    let Some(standby_su) = standby_su else {
        return Vec::new();
    };
    sis_by_rank(cfg)
        .into_iter()
        .filter(|si| !rt.si(&si.name).locked)
        .filter(|si| rt.susi(&si.name, &active_su).is_some_and(is_acked_active))
        .filter(|si| rt.susis_of_si(&si.name).count() == 1)
        .map(|si| msg(&standby_su.name, &si.name, MsgKind::Standby))
        .collect()
}

/// 2N invariants, checked after every call: at most two SUSIs per SI, and at most one of them
/// active, quiescing or being made active.
pub(crate) fn check_invariants(cfg: &SgConfig, rt: &SgRuntime) {
    for si in &cfg.sis {
        let n = rt.susis_of_si(&si.name).count();
        assert!(n <= 2, "2N: SI {} has {n} assignments", si.name);
        let live = rt
            .susis_of_si(&si.name)
            .filter(|s| {
                matches!(s.ha, HaState::Active | HaState::Quiescing)
                    || matches!(s.pending, Some(MsgKind::Active(_)))
            })
            .count();
        assert!(live <= 1, "2N: SI {} has {live} live actives", si.name);
    }
}
