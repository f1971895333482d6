//! Administrative operations on SUs, nodes and SIs (lock, unlock, lock/unlock-instantiation,
//! shutdown, SI lock and swap, as AIS defines them for 2N and no-redundancy): validation with
//! the AIS result, then the state change. The batches follow from the plan, not from here.

use super::common::{is_acked_active, msg};
use super::runtime::{SgRuntime, SuAdminState};
use super::types::{AdminResult, HaState, Msg, MsgKind, RedundancyModel, SgConfig, SgEvent};

/// Applies admin event `ev`: `Ok(messages to send at once)` when accepted (the messages are
/// only for a lock that overrides a shutdown in progress), `Err(result)` when refused, with
/// nothing changed. `None` for events that are not admin operations.
pub(crate) fn apply(
    cfg: &SgConfig,
    rt: &mut SgRuntime,
    ev: &SgEvent,
) -> Option<Result<Vec<Msg>, AdminResult>> {
    let r = match ev {
        SgEvent::SuLock { su } => su_lock(rt, su),
        SgEvent::SuShutdown { su } => su_shutdown(rt, su).map(|()| Vec::new()),
        SgEvent::SuUnlock { su } => {
            su_transition(rt, su, SuAdminState::Locked, SuAdminState::Unlocked)
        }
        SgEvent::SuLockIn { su } => su_transition(
            rt,
            su,
            SuAdminState::Locked,
            SuAdminState::LockedInstantiation,
        ),
        SgEvent::SuUnlockIn { su } => su_transition(
            rt,
            su,
            SuAdminState::LockedInstantiation,
            SuAdminState::Locked,
        ),
        SgEvent::NodeLock { node } => node_lock(cfg, rt, node, true),
        SgEvent::NodeUnlock { node } => node_lock(cfg, rt, node, false),
        SgEvent::SiSwap { si } => si_swap(cfg, rt, si),
        SgEvent::SiLock { si } => si_lock(rt, si, true),
        SgEvent::SiUnlock { si } => si_lock(rt, si, false),
        _ => return None,
    };
    Some(r)
}

/// Refuses with TRY_AGAIN while a batch is in flight (the SG is not STABLE).
fn stable(rt: &SgRuntime) -> Result<(), AdminResult> {
    if rt.in_flight() {
        Err(AdminResult::TryAgain)
    } else {
        Ok(())
    }
}

/// Lock of an SU: from UNLOCKED (when stable), or from SHUTTING_DOWN at any time, which turns
/// the QUIESCING messages in flight into QUIESCED ones sent now.
fn su_lock(rt: &mut SgRuntime, su: &str) -> Result<Vec<Msg>, AdminResult> {
    let admin = rt.sus.get(su).ok_or(AdminResult::BadOperation)?.admin;
    match admin {
        SuAdminState::Unlocked => {
            stable(rt)?;
            rt.su_mut(su).admin = SuAdminState::Locked;
            Ok(Vec::new())
        }
        SuAdminState::ShuttingDown => {
            rt.su_mut(su).admin = SuAdminState::Locked;
            let mut batch = Vec::new();
            for s in rt.susis.iter_mut().filter(|s| s.su == su) {
                if s.pending == Some(MsgKind::Quiescing) {
                    s.pending = Some(MsgKind::Quiesced);
                    batch.push(msg(su, &s.si, MsgKind::Quiesced));
                }
            }
            Ok(batch)
        }
        _ => Err(AdminResult::BadOperation),
    }
}

/// Shutdown of an unlocked SU: SHUTTING_DOWN while it holds actives, else LOCKED at once.
fn su_shutdown(rt: &mut SgRuntime, su: &str) -> Result<(), AdminResult> {
    let admin = rt.sus.get(su).ok_or(AdminResult::BadOperation)?.admin;
    if admin != SuAdminState::Unlocked {
        return Err(AdminResult::BadOperation);
    }
    stable(rt)?;
    let actives = rt.susis_of_su(su).any(|s| s.ha == HaState::Active);
    rt.su_mut(su).admin = if actives {
        SuAdminState::ShuttingDown
    } else {
        SuAdminState::Locked
    };
    Ok(())
}

/// A plain admin-state transition `from` → `to` of an SU, when stable.
fn su_transition(
    rt: &mut SgRuntime,
    su: &str,
    from: SuAdminState,
    to: SuAdminState,
) -> Result<Vec<Msg>, AdminResult> {
    let admin = rt.sus.get(su).ok_or(AdminResult::BadOperation)?.admin;
    if admin != from {
        return Err(AdminResult::BadOperation);
    }
    stable(rt)?;
    if to == SuAdminState::LockedInstantiation {
        assert!(
            rt.susis_of_su(su).next().is_none(),
            "a locked SU of a stable SG holds no assignment: {su}"
        );
        rt.su_mut(su).instantiated = false;
    }
    rt.su_mut(su).admin = to;
    Ok(Vec::new())
}

/// Lock (`lock`) or unlock of every SU of this SG on `node`. A node with no SU here is a no-op.
fn node_lock(
    cfg: &SgConfig,
    rt: &mut SgRuntime,
    node: &str,
    lock: bool,
) -> Result<Vec<Msg>, AdminResult> {
    let sus: Vec<String> = cfg
        .sus
        .iter()
        .filter(|s| s.node == node)
        .map(|s| s.name.clone())
        .collect();
    if sus.is_empty() {
        return Ok(Vec::new());
    }
    if sus.iter().all(|su| rt.su(su).node_locked == lock) {
        return Err(AdminResult::BadOperation);
    }
    stable(rt)?;
    for su in &sus {
        rt.su_mut(su).node_locked = lock;
    }
    Ok(Vec::new())
}

/// Lock or unlock of an SI.
fn si_lock(rt: &mut SgRuntime, si: &str, lock: bool) -> Result<Vec<Msg>, AdminResult> {
    let locked = rt.sis.get(si).ok_or(AdminResult::BadOperation)?.locked;
    if locked == lock {
        return Err(AdminResult::BadOperation);
    }
    stable(rt)?;
    rt.si_mut(si).locked = lock;
    Ok(Vec::new())
}

/// SI swap (§4.6). 2N swaps the whole active SU; No-Red (and, until implemented, the other
/// models) answer NOT_SUPPORTED.
fn si_swap(cfg: &SgConfig, rt: &mut SgRuntime, si: &str) -> Result<Vec<Msg>, AdminResult> {
    if cfg.model != RedundancyModel::TwoN {
        return Err(AdminResult::NotSupported);
    }
    let r = rt.sis.get(si).ok_or(AdminResult::BadOperation)?;
    if r.locked {
        return Err(AdminResult::BadOperation);
    }
    stable(rt)?;
    let active = rt.susis_of_si(si).find(|s| is_acked_active(s));
    let Some(active_su) = active.map(|s| s.su.clone()) else {
        return Err(AdminResult::BadOperation);
    };
    let has_standby = rt
        .susis_of_si(si)
        .any(|s| s.ha == HaState::Standby && rt.in_service(&s.su));
    if !has_standby {
        return Err(degradation(cfg, rt, &active_su));
    }
    rt.swap_su = Some(active_su);
    Ok(Vec::new())
}

/// The result for a swap of an SI with a single assignment: TRY_AGAIN when another SU of the SG
/// is, or is about to be, in service (the degradation is temporary), else BAD_OPERATION.
fn degradation(cfg: &SgConfig, rt: &SgRuntime, active_su: &str) -> AdminResult {
    let temporary = cfg.sus.iter().filter(|s| s.name != active_su).any(|s| {
        let r = rt.su(&s.name);
        rt.in_service(&s.name)
            || (r.admin == SuAdminState::Unlocked && !r.node_locked && r.enabled && r.node_present)
    });
    if temporary {
        AdminResult::TryAgain
    } else {
        AdminResult::BadOperation
    }
}
