//! SI-SI dependencies: when a sponsor loses its active for good, its
//! dependents are unassigned at once (tolerance 0) or when the tolerance time has passed.

use super::common::is_active_side;
use super::runtime::{DepState, SgRuntime};
use super::types::{HaState, SgConfig};

/// Whether sponsor `si` is active or on its way to it: it has an active-side SUSI (active,
/// quiescing, quiesced during a switchover, being made active) or a standby on an in-service SU
/// that can be promoted.
fn sponsor_alive(rt: &SgRuntime, si: &str) -> bool {
    rt.susis_of_si(si)
        .any(|s| is_active_side(s) || (s.ha == HaState::Standby && rt.in_service(&s.su)))
}

/// Updates every dependent's [`DepState`] from its sponsors and the policy time. Called after
/// every event and acknowledgement, before planning.
pub(crate) fn update(cfg: &SgConfig, rt: &mut SgRuntime) {
    for si in &cfg.sis {
        // The shortest tolerance among the dependencies whose sponsor is lost.
        let lost_tolerance_ms = cfg
            .dependencies
            .iter()
            .filter(|d| d.dependent == si.name && !sponsor_alive(rt, &d.sponsor))
            .map(|d| d.tolerance_ms)
            .min();
        let assigned = rt.susis_of_si(&si.name).next().is_some();
        let now_ms = rt.now_ms;
        let r = rt.si_mut(&si.name);
        r.dep = match (lost_tolerance_ms, assigned, r.dep) {
            (None, _, _) | (_, false, _) => DepState::Ok,
            (Some(0), true, _) => DepState::Unassign,
            (Some(tol_ms), true, DepState::Ok) => DepState::Tolerating {
                deadline_ms: now_ms.saturating_add(tol_ms),
            },
            (Some(_), true, DepState::Tolerating { deadline_ms }) if now_ms >= deadline_ms => {
                DepState::Unassign
            }
            (Some(_), true, keep) => keep,
        };
    }
}
