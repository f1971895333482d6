//! The node director's seam to the component sessions, implemented over the [`SessionHub`].

use std::collections::BTreeMap;
use std::time::Duration;

use nines_amf::director::{ComponentLink, Invocation, LinkEvent};
use nines_amf::policy::{Descriptor, HaState};
use nines_amf::state::Recovery;
use nines_proto::amf::v1 as pb;
use tokio::sync::{broadcast, mpsc};

use crate::session::{SessionEvent, SessionHub};

/// Session events queued for the director.
pub const LINK_EVENTS_LEN: usize = 1_024;

/// [`ComponentLink`] over the agent's session hub.
#[derive(Clone)]
pub(crate) struct HubLink(pub(crate) SessionHub);

impl ComponentLink for HubLink {
    fn expect(&self, component: &str, pid: u32, watchdog_ms: u64) {
        self.0.expect_with(component, pid, watchdog_ms);
    }

    fn forget(&self, component: &str) {
        self.0.forget(component);
    }

    fn is_registered(&self, component: &str) -> bool {
        self.0.is_registered(component)
    }

    async fn invoke(
        &self,
        component: &str,
        inv: Invocation,
        timeout: Duration,
    ) -> Result<(), String> {
        self.0
            .invoke(component, invocation_proto(inv), timeout)
            .await
            .map_err(|e| e.to_string())
    }
}

fn ha_proto(ha: HaState) -> pb::HaState {
    match ha {
        HaState::Active => pb::HaState::Active,
        HaState::Standby => pb::HaState::Standby,
        HaState::Quiescing => pb::HaState::Quiescing,
        HaState::Quiesced => pb::HaState::Quiesced,
    }
}

fn descriptor_proto(d: Option<Descriptor>) -> pb::TransitionDescriptor {
    match d {
        None => pb::TransitionDescriptor::Unspecified,
        Some(Descriptor::NewAssign) => pb::TransitionDescriptor::NewAssign,
        Some(Descriptor::Quiesced) => pb::TransitionDescriptor::Quiesced,
        Some(Descriptor::NotQuiesced) => pb::TransitionDescriptor::NotQuiesced,
    }
}

fn invocation_proto(inv: Invocation) -> pb::invocation::Kind {
    use pb::invocation::Kind;
    match inv {
        Invocation::CsiSet {
            si,
            csi,
            ha,
            epoch,
            descriptor,
            attributes,
            active_component,
        } => Kind::CsiSet(pb::CsiSet {
            si,
            csi,
            ha_state: ha_proto(ha) as i32,
            epoch,
            descriptor: descriptor_proto(descriptor) as i32,
            attributes: attributes.into_iter().collect(),
            active_component: active_component.unwrap_or_default(),
        }),
        Invocation::CsiRemove { si, csi } => Kind::CsiRemove(pb::CsiRemove { si, csi }),
        Invocation::Terminate => Kind::Terminate(pb::Terminate {}),
        Invocation::Healthcheck { key } => Kind::Healthcheck(pb::Healthcheck { key }),
    }
}

pub(crate) fn recovery(r: pb::Recovery) -> Recovery {
    match r {
        pb::Recovery::ComponentRestart => Recovery::ComponentRestart,
        pb::Recovery::ComponentFailover => Recovery::ComponentFailover,
        pb::Recovery::NodeSwitchover => Recovery::NodeSwitchover,
        pb::Recovery::NodeFailover => Recovery::NodeFailover,
        pb::Recovery::NodeFailfast => Recovery::NodeFailfast,
        pb::Recovery::NoRecommendation | pb::Recovery::Unspecified => Recovery::NoRecommendation,
    }
}

/// A belief report as the director reads it: (si, csi) → (HA state, epoch). A CSI in a state
/// this agent does not know is left out (the director then corrects it as missing).
pub(crate) fn believed(b: &pb::Belief) -> BTreeMap<(String, String), (HaState, u64)> {
    b.csis
        .iter()
        .filter_map(|c| {
            let ha = match pb::HaState::try_from(c.ha_state).ok()? {
                pb::HaState::Active => HaState::Active,
                pb::HaState::Standby => HaState::Standby,
                pb::HaState::Quiescing => HaState::Quiescing,
                pb::HaState::Quiesced => HaState::Quiesced,
                pb::HaState::Unspecified => return None,
            };
            Some(((c.si.clone(), c.csi.clone()), (ha, c.epoch)))
        })
        .collect()
}

/// Forward the hub's events to the director (as [`LinkEvent`]s) until the hub goes away.
pub(crate) fn forward_events(hub: &SessionHub) -> mpsc::Receiver<LinkEvent> {
    let (tx, rx) = mpsc::channel(LINK_EVENTS_LEN);
    let mut events = hub.subscribe();
    tokio::spawn(async move {
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("the director missed {n} session events");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let ev = match ev {
                SessionEvent::Registered { component, pid } => {
                    LinkEvent::Registered { component, pid }
                }
                SessionEvent::Disconnected { component } => LinkEvent::Disconnected { component },
                SessionEvent::ErrorReport {
                    component,
                    recommended,
                    reason,
                } => LinkEvent::ErrorReport {
                    component,
                    recommended: recovery(recommended),
                    reason,
                },
                SessionEvent::HealthcheckConfirm {
                    component,
                    key,
                    healthy,
                } => {
                    if healthy {
                        continue;
                    }
                    LinkEvent::ErrorReport {
                        component,
                        recommended: Recovery::NoRecommendation,
                        reason: format!("it reported healthcheck '{key}' unhealthy"),
                    }
                }
                SessionEvent::Kick { component, .. } => LinkEvent::Kick { component },
                SessionEvent::Belief { component, belief } => LinkEvent::Belief {
                    component,
                    believed: believed(&belief),
                    lease_expired: belief.lease_expired,
                },
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    rx
}
