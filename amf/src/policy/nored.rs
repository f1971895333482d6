//! The No-Redundancy model: each SI is assigned ACTIVE to one SU, with no standby; a failed SU's
//! SIs move to a fresh in-service SU.
//!
//! Phases, first non-empty one wins: take down (common); REMOVE every acknowledged QUIESCED
//! SUSI; place each unassigned SI, in rank order, ACTIVE on the best fresh in-service SU (one
//! SI per SU), stopping at the first SI that finds none (no preemption).

use super::common::{is_acked_quiesced, msg, si_assignable, sis_by_rank, sus_by_rank, take_down};
use super::runtime::SgRuntime;
use super::types::{Descriptor, Msg, MsgKind, SgConfig};

/// The next No-Red batch (empty when the SG is where it should be).
pub(crate) fn plan(cfg: &SgConfig, rt: &mut SgRuntime) -> Vec<Msg> {
    assert!(
        !rt.in_flight(),
        "No-Red plans only when nothing is in flight"
    );
    let batch = take_down(cfg, rt);
    if !batch.is_empty() {
        return batch;
    }
    let batch: Vec<Msg> = rt
        .susis
        .iter()
        .filter(|s| is_acked_quiesced(s))
        .map(|s| msg(&s.su, &s.si, MsgKind::Remove))
        .collect();
    if !batch.is_empty() {
        return batch;
    }
    place(cfg, rt)
}

/// R-NORED-INIT: one SI per fresh in-service SU, in rank order; the pass stops at the first SI
/// that finds no fresh SU.
fn place(cfg: &SgConfig, rt: &SgRuntime) -> Vec<Msg> {
    let mut fresh = sus_by_rank(cfg)
        .into_iter()
        .filter(|su| rt.in_service(&su.name) && rt.susis_of_su(&su.name).next().is_none());
    let mut batch = Vec::new();
    for si in sis_by_rank(cfg) {
        if rt.susis_of_si(&si.name).next().is_some() || !si_assignable(cfg, rt, &si.name) {
            continue;
        }
        let Some(su) = fresh.next() else {
            break;
        };
        // Nothing else of the SI exists, so the descriptor rule of §5.3 gives NEW_ASSIGN.
        batch.push(msg(
            &su.name,
            &si.name,
            MsgKind::Active(Descriptor::NewAssign),
        ));
    }
    batch
}

/// No-Red invariants, checked after every call: one SUSI per SI and one per SU.
pub(crate) fn check_invariants(cfg: &SgConfig, rt: &SgRuntime) {
    for si in &cfg.sis {
        let n = rt.susis_of_si(&si.name).count();
        assert!(n <= 1, "No-Red: SI {} has {n} assignments", si.name);
    }
    for su in &cfg.sus {
        let n = rt.susis_of_su(&su.name).count();
        assert!(n <= 1, "No-Red: SU {} has {n} assignments", su.name);
    }
}
