//! SI assignment state (unassigned, partially or fully assigned, as AIS counts the active and
//! standby assignments an SI has against what its SG wants) and the "SI unassigned" alarm.
//!
//! The state is computed at batch boundaries (when nothing is in flight), after the next batch
//! is sent, counting sent assignments as made (OpenSAF updates its counters when it sends). So
//! an SI that is removed from one SU and, in the same step, placed on another raises no alarm,
//! whatever the order of the acknowledgements. The
//! alarm is raised when the state changes to UNASSIGNED (so an SI never assigned raises none),
//! cleared when it leaves UNASSIGNED, and suppressed (cleared) while the SI is locked.

use super::common::is_active_side;
use super::runtime::{AssignmentState, SgRuntime};
use super::types::{HaState, RedundancyModel, SgConfig};

/// The assignment state of SI `si` under the SG's model.
pub(crate) fn assignment_state(cfg: &SgConfig, rt: &SgRuntime, si: &str) -> AssignmentState {
    let active = rt.susis_of_si(si).filter(|s| is_active_side(s)).count();
    let standby = rt
        .susis_of_si(si)
        .filter(|s| s.ha == HaState::Standby && !is_active_side(s))
        .count();
    match cfg.model {
        RedundancyModel::NoRed | RedundancyModel::NWayActive if active == 0 => {
            AssignmentState::Unassigned
        }
        RedundancyModel::NoRed => AssignmentState::FullyAssigned,
        _ if active == 0 && standby == 0 => AssignmentState::Unassigned,
        _ if active >= 1 && standby >= 1 => AssignmentState::FullyAssigned,
        _ => AssignmentState::PartiallyAssigned,
    }
}

/// Updates every SI's assignment state and alarm; returns (raised, cleared) SI names.
pub(crate) fn update(cfg: &SgConfig, rt: &mut SgRuntime) -> (Vec<String>, Vec<String>) {
    let (mut raised, mut cleared) = (Vec::new(), Vec::new());
    for si in &cfg.sis {
        let state = assignment_state(cfg, rt, &si.name);
        let r = rt.si_mut(&si.name);
        let changed_to_unassigned =
            state == AssignmentState::Unassigned && r.ass_state != AssignmentState::Unassigned;
        r.ass_state = state;
        if r.alarm && (r.locked || state != AssignmentState::Unassigned) {
            r.alarm = false;
            cleared.push(si.name.clone());
        } else if !r.alarm && !r.locked && changed_to_unassigned {
            r.alarm = true;
            raised.push(si.name.clone());
        }
    }
    (raised, cleared)
}
