//! Building blocks every redundancy model shares: rank order (§1.1), the descriptor rule (§5.3),
//! sending a batch, and the "take down" phase (quiesce or remove what must leave service).

use std::collections::BTreeSet;

use super::runtime::{DepState, SgRuntime, SuAdminState, Susi};
use super::types::{Descriptor, HaState, Msg, MsgKind, SgConfig, SiConfig, SuConfig};

/// Effective rank (§1.1): 0 means least preferred.
pub(crate) fn eff_rank(rank: u32) -> u32 {
    if rank == 0 {
        u32::MAX
    } else {
        rank
    }
}

/// The SG's SUs, most preferred first; equal ranks by name.
pub(crate) fn sus_by_rank(cfg: &SgConfig) -> Vec<&SuConfig> {
    let mut sus: Vec<&SuConfig> = cfg.sus.iter().collect();
    sus.sort_by(|a, b| (eff_rank(a.rank), &a.name).cmp(&(eff_rank(b.rank), &b.name)));
    sus
}

/// The SG's SIs, most preferred first; equal ranks by name.
pub(crate) fn sis_by_rank(cfg: &SgConfig) -> Vec<&SiConfig> {
    let mut sis: Vec<&SiConfig> = cfg.sis.iter().collect();
    sis.sort_by(|a, b| (eff_rank(a.rank), &a.name).cmp(&(eff_rank(b.rank), &b.name)));
    sis
}

/// `pref_inservice` (§1.2): 0 means the number of SUs.
pub(crate) fn pref_inservice(cfg: &SgConfig) -> usize {
    if cfg.pref_inservice_sus == 0 {
        cfg.sus.len()
    } else {
        cfg.pref_inservice_sus as usize
    }
}

/// Whether the SUSI is on the active side: active, quiescing, quiesced, or being made active.
pub(crate) fn is_active_side(s: &Susi) -> bool {
    matches!(
        s.ha,
        HaState::Active | HaState::Quiescing | HaState::Quiesced
    ) || matches!(s.pending, Some(MsgKind::Active(_)))
}

/// Whether the SUSI is an acknowledged ACTIVE.
pub(crate) fn is_acked_active(s: &Susi) -> bool {
    s.ha == HaState::Active && s.pending.is_none()
}

/// Whether the SUSI is an acknowledged QUIESCED.
pub(crate) fn is_acked_quiesced(s: &Susi) -> bool {
    s.ha == HaState::Quiesced && s.pending.is_none()
}

/// The sponsors of SI `si` (§4.9).
pub(crate) fn sponsors_of<'a>(cfg: &'a SgConfig, si: &'a str) -> impl Iterator<Item = &'a str> {
    cfg.dependencies
        .iter()
        .filter(move |d| d.dependent == si)
        .map(|d| d.sponsor.as_str())
}

/// Whether every sponsor of `si` has an acknowledged ACTIVE: only then may `si` become active.
pub(crate) fn sponsors_active(cfg: &SgConfig, rt: &SgRuntime, si: &str) -> bool {
    sponsors_of(cfg, si).all(|sp| rt.susis_of_si(sp).any(is_acked_active))
}

/// Whether the SI may receive new assignments: unlocked, its dependency state allows it and
/// its sponsors are active.
pub(crate) fn si_assignable(cfg: &SgConfig, rt: &SgRuntime, si: &str) -> bool {
    let r = rt.si(si);
    !r.locked && r.dep == DepState::Ok && sponsors_active(cfg, rt, si)
}

/// The descriptor for making SU `su` active for SI `si` (§5.3, the exact rule): QUIESCED when
/// another assignment of the SI is an acknowledged QUIESCED, NOT_QUIESCED when the active was
/// lost without quiescing, else NEW_ASSIGN.
pub(crate) fn descriptor(rt: &SgRuntime, si: &str, su: &str) -> Descriptor {
    if rt
        .susis_of_si(si)
        .any(|s| s.su != su && is_acked_quiesced(s))
    {
        Descriptor::Quiesced
    } else if rt.si(si).active_lost {
        Descriptor::NotQuiesced
    } else {
        Descriptor::NewAssign
    }
}

/// Builds a message.
pub(crate) fn msg(su: &str, si: &str, kind: MsgKind) -> Msg {
    Msg {
        su: su.to_string(),
        si: si.to_string(),
        kind,
    }
}

/// Marks every message of `batch` as sent: an existing SUSI gets the message as its pending
/// change; a new SUSI is created in its target state. Asserts one message per SUSI and that
/// nothing is sent to an SU whose node is absent.
pub(crate) fn send(rt: &mut SgRuntime, batch: &[Msg]) {
    let mut seen = BTreeSet::new();
    for m in batch {
        assert!(
            seen.insert((&m.si, &m.su)),
            "one message per SUSI in a batch: {m:?}"
        );
        assert!(
            rt.su(&m.su).node_present,
            "message to an SU whose node is absent: {m:?}"
        );
        if let Some(s) = rt.susi_mut(&m.si, &m.su) {
            assert!(
                s.pending.is_none(),
                "a SUSI has one message in flight: {m:?}"
            );
            s.pending = Some(m.kind);
            continue;
        }
        let ha = match m.kind {
            MsgKind::Active(_) => HaState::Active,
            MsgKind::Standby => HaState::Standby,
            other => panic!("only ACTIVE or STANDBY creates a SUSI, got {other:?} for {m:?}"),
        };
        rt.insert_susi(Susi {
            si: m.si.clone(),
            su: m.su.clone(),
            ha,
            pending: Some(m.kind),
        });
    }
}

/// Drops every SUSI of SU `su` without a message (F-ABRUPT, F-NODE). An SI that loses its
/// active side this way, and keeps another assignment, remembers it (`active_lost`).
pub(crate) fn drop_su_susis(rt: &mut SgRuntime, su: &str) {
    let dropped: Vec<Susi> = rt.susis_of_su(su).cloned().collect();
    rt.susis.retain(|s| s.su != su);
    for s in dropped {
        let lost = is_active_side(&s);
        let left = rt.susis_of_si(&s.si).next().is_some();
        let r = rt.si_mut(&s.si);
        if !left {
            r.active_lost = false;
        } else if lost {
            r.active_lost = true;
        }
    }
}

/// Whether SU `su` is leaving its assignments: out of service, or the SU whose actives a 2N
/// swap moves.
fn leaving(rt: &SgRuntime, su: &str) -> bool {
    !rt.in_service(su) || rt.swap_su.as_deref() == Some(su)
}

/// Phase "take down", first in every model's plan: REMOVE the SUSIs of dependents whose
/// sponsor is lost; quiesce then REMOVE locked SIs; quiesce (QUIESCING when shutting down) the
/// actives of leaving SUs, dependents before sponsors (§4.9); REMOVE the standbys of SUs out
/// of service.
pub(crate) fn take_down(cfg: &SgConfig, rt: &SgRuntime) -> Vec<Msg> {
    let mut batch = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for si in sis_by_rank(cfg) {
        let r = rt.si(&si.name);
        if r.dep == DepState::Unassign {
            for s in rt.susis_of_si(&si.name) {
                batch.push(msg(&s.su, &s.si, MsgKind::Remove));
            }
            done.insert(si.name.clone());
        } else if r.locked {
            let quiesce: Vec<&Susi> = rt
                .susis_of_si(&si.name)
                .filter(|s| is_acked_active(s))
                .collect();
            let active = rt
                .susis_of_si(&si.name)
                .any(|s| matches!(s.ha, HaState::Active | HaState::Quiescing));
            for s in rt.susis_of_si(&si.name) {
                if !quiesce.is_empty() && is_acked_active(s) {
                    batch.push(msg(&s.su, &s.si, MsgKind::Quiesced));
                } else if quiesce.is_empty() && !active {
                    batch.push(msg(&s.su, &s.si, MsgKind::Remove));
                }
            }
            done.insert(si.name.clone());
        }
    }
    for su in sus_by_rank(cfg) {
        if leaving(rt, &su.name) {
            take_down_su(cfg, rt, &su.name, &done, &mut batch);
        }
    }
    batch
}

/// The take-down messages of one leaving SU.
fn take_down_su(
    cfg: &SgConfig,
    rt: &SgRuntime,
    su: &str,
    done: &BTreeSet<String>,
    batch: &mut Vec<Msg>,
) {
    let quiesce_kind = if rt.su(su).admin == SuAdminState::ShuttingDown {
        MsgKind::Quiescing
    } else {
        MsgKind::Quiesced
    };
    for s in rt.susis_of_su(su).filter(|s| !done.contains(&s.si)) {
        if is_acked_active(s) && dependents_quiesced(cfg, rt, &s.si, su) {
            batch.push(msg(su, &s.si, quiesce_kind));
        } else if s.ha == HaState::Standby && s.pending.is_none() && !rt.in_service(su) {
            batch.push(msg(su, &s.si, MsgKind::Remove));
        }
    }
}

/// Whether no dependent of `si` is still active or quiescing on SU `su` (a sponsor is quiesced
/// after its dependents, §4.9).
fn dependents_quiesced(cfg: &SgConfig, rt: &SgRuntime, si: &str, su: &str) -> bool {
    cfg.dependencies
        .iter()
        .filter(|d| d.sponsor == si)
        .all(|d| {
            rt.susi(&d.dependent, su)
                .is_none_or(|s| !matches!(s.ha, HaState::Active | HaState::Quiescing))
        })
}
