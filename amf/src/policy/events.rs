//! Non-administrative events: faults, node membership, repair, start and time (§4.2, §4.5).
//! They change SU state at once, even while a batch is in flight (§6.7): SUSIs of SUs lost
//! abruptly are dropped without messages, and their messages in flight with them.

use super::common::{drop_su_susis, pref_inservice, sus_by_rank};
use super::runtime::{SgRuntime, SuAdminState};
use super::types::{FaultRecovery, SgConfig, SgEvent};

/// Applies a non-admin event. Events naming an SU or node unknown to this SG change nothing.
pub(crate) fn apply(cfg: &SgConfig, rt: &mut SgRuntime, ev: &SgEvent) {
    match ev {
        SgEvent::Start => rt.started = true,
        SgEvent::SuFault { su, recovery } if rt.sus.contains_key(su) => {
            rt.su_mut(su).enabled = false;
            if *recovery == FaultRecovery::SuFailover {
                // F-ABRUPT: the components were cleaned up without callbacks.
                rt.su_mut(su).instantiated = false;
                drop_su_susis(rt, su);
            }
        }
        SgEvent::NodeFailover { node } => {
            for su in cfg.sus.iter().filter(|s| &s.node == node) {
                let r = rt.su_mut(&su.name);
                r.node_present = false;
                r.instantiated = false;
                drop_su_susis(rt, &su.name);
            }
        }
        SgEvent::NodeUp { node } => {
            for su in cfg.sus.iter().filter(|s| &s.node == node) {
                let r = rt.su_mut(&su.name);
                r.node_present = true;
                r.enabled = true;
            }
        }
        SgEvent::SuRepaired { su } if rt.sus.contains_key(su) => rt.su_mut(su).enabled = true,
        SgEvent::Tick { ms } => rt.now_ms = rt.now_ms.saturating_add(*ms),
        _ => {}
    }
}

/// Whether SU `su` should be instantiated (§1.2, §4.4): never on an absent node or when
/// LOCKED_INSTANTIATION; always while it holds an assignment; a disabled SU only then (its
/// repair is the node director's business); a non-pre-instantiable SU only then; an
/// instantiated SU stays so (this version never terminates extra spares); otherwise while
/// fewer than `pref_inservice` SUs are in service (unlocked SU) or instantiated (locked SU).
pub fn su_should_be_instantiated(cfg: &SgConfig, rt: &SgRuntime, su: &str) -> bool {
    let Some(c) = cfg.sus.iter().find(|s| s.name == su) else {
        return false;
    };
    let r = rt.su(su);
    if !r.node_present || r.admin == SuAdminState::LockedInstantiation {
        return false;
    }
    if rt.susis_of_su(su).next().is_some() {
        return true;
    }
    if !r.enabled || !c.preinstantiable {
        return false;
    }
    if r.instantiated {
        return true;
    }
    let pref = pref_inservice(cfg);
    if r.admin == SuAdminState::Unlocked && !r.node_locked {
        let serving = rt.sus.iter().filter(|(_, o)| {
            o.admin == SuAdminState::Unlocked
                && !o.node_locked
                && o.enabled
                && o.node_present
                && o.instantiated
        });
        serving.count() < pref
    } else {
        rt.sus.values().filter(|o| o.instantiated).count() < pref
    }
}

/// Brings the policy's belief about instantiation up to date, in rank order: SUs on absent
/// nodes or LOCKED_INSTANTIATION are not instantiated; SUs that should be, are.
pub(crate) fn refresh_instantiation(cfg: &SgConfig, rt: &mut SgRuntime) {
    for su in sus_by_rank(cfg) {
        let r = rt.su(&su.name);
        if !r.node_present || r.admin == SuAdminState::LockedInstantiation {
            rt.su_mut(&su.name).instantiated = false;
        } else if !r.instantiated && su_should_be_instantiated(cfg, rt, &su.name) {
            rt.su_mut(&su.name).instantiated = true;
        }
    }
}
