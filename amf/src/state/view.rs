//! Read-only views of the AMF state: the status operators see (`nines amf status`) and what one
//! node director needs to do its part.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{kind_name, AmfState, Directive, HistoryEntry, Presence};
use crate::model::Component as ComponentDef;
use crate::policy::{self, HaState, MsgKind, SgRuntime};

/// One assignment of an SI, as `nines amf status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentView {
    /// The SU.
    pub su: String,
    /// Its node.
    pub node: String,
    /// "active" | "standby" | "quiescing" | "quiesced".
    pub ha_state: String,
    /// The assignment's epoch (of its last confirmed change; of the change in flight if none).
    pub epoch: u64,
    /// The change in flight, if any ("active", "remove", ...).
    pub pending: Option<String>,
}

/// One SI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiView {
    /// SI name.
    pub name: String,
    /// Its SG.
    pub sg: String,
    /// "unassigned" | "partially_assigned" | "fully_assigned".
    pub assignment_state: String,
    /// Its assignments.
    pub assignments: Vec<AssignmentView>,
}

/// One component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentView {
    /// Component name.
    pub name: String,
    /// Its SU.
    pub su: String,
    /// Its node.
    pub node: String,
    /// Its process id while instantiated.
    pub pid: Option<u32>,
    /// Presence state.
    pub presence: String,
    /// "in_service" | "out_of_service".
    pub readiness: String,
    /// Restarts so far.
    pub restarts: u32,
}

/// One SU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuView {
    /// SU name.
    pub name: String,
    /// Its SG.
    pub sg: String,
    /// Its node.
    pub node: String,
    /// "unlocked" | "locked" | "locked_instantiation" | "shutting_down".
    pub admin_state: String,
    /// "enabled" | "disabled".
    pub oper_state: String,
    /// "in_service" | "out_of_service".
    pub readiness: String,
}

/// The whole AMF status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmfStatus {
    /// Whether a model is in force.
    pub has_model: bool,
    /// SIs with their assignments.
    pub sis: Vec<SiView>,
    /// Components.
    pub components: Vec<ComponentView>,
    /// SUs.
    pub sus: Vec<SuView>,
    /// The highest epoch handed out.
    pub epoch: u64,
    /// Recent history, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// What a node director should do about one local component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentPlan {
    /// Component name.
    pub name: String,
    /// Its SU.
    pub su: String,
    /// The incarnation the cluster wants.
    pub incarnation: u64,
    /// Whether it should be running.
    pub should_run: bool,
    /// Presence as the cluster knows it.
    pub presence: Presence,
    /// Its process id as the cluster knows it.
    pub pid: Option<u32>,
    /// Its definition (commands, env, timeouts).
    pub def: ComponentDef,
    /// CSI attributes it may be given, for its environment.
    pub attributes: BTreeMap<String, String>,
}

/// One CSI a component holds (or is to hold), for callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiPlan {
    /// The component.
    pub component: String,
    /// The SI.
    pub si: String,
    /// The CSI.
    pub csi: String,
    /// The CSI's attributes.
    pub attributes: BTreeMap<String, String>,
}

/// A directive with the callbacks it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectivePlan {
    /// The directive.
    pub directive: Directive,
    /// The component CSIs it concerns.
    pub targets: Vec<CsiPlan>,
    /// The SI's active component elsewhere (for standby), or the previous one (for active).
    pub active_component: Option<String>,
}

/// A confirmed assignment of a local component's CSI (for re-delivery after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCsi {
    /// The CSI.
    pub csi: CsiPlan,
    /// Its HA state.
    pub ha: HaState,
    /// Its epoch.
    pub epoch: u64,
}

/// Everything one node director needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// The node's components.
    pub components: Vec<ComponentPlan>,
    /// Directives to the node's SUs, oldest first.
    pub directives: Vec<DirectivePlan>,
    /// Confirmed assignments of the node's components' CSIs.
    pub held: Vec<HeldCsi>,
}

fn ha_name(ha: HaState) -> &'static str {
    match ha {
        HaState::Active => "active",
        HaState::Standby => "standby",
        HaState::Quiescing => "quiescing",
        HaState::Quiesced => "quiesced",
    }
}

impl AmfState {
    /// The status operators see.
    pub fn status(&self) -> AmfStatus {
        let mut st = AmfStatus {
            has_model: self.model.is_some(),
            epoch: self.epoch,
            history: self.history.iter().cloned().collect(),
            ..Default::default()
        };
        for (sg, e) in &self.sgs {
            let susis = policy::susis(&e.rt);
            let table = policy::table(&e.cfg, &e.rt);
            for si in &e.cfg.sis {
                let assignments = susis
                    .iter()
                    .filter(|(s, _, _, _)| s == &si.name)
                    .map(|(s, su, ha, pending)| AssignmentView {
                        su: su.clone(),
                        node: self.node_of_su(su),
                        ha_state: ha_name(*ha).into(),
                        epoch: self.assignment_epoch(s, su),
                        pending: pending.map(|k| kind_name(k).to_string()),
                    })
                    .collect();
                let t = table.get(&si.name).cloned().unwrap_or_default();
                let state = match (t.active.len(), t.standby.len(), e.cfg.model) {
                    (0, _, _) => "unassigned",
                    (_, 0, policy::RedundancyModel::TwoN) => "partially_assigned",
                    _ => "fully_assigned",
                };
                st.sis.push(SiView {
                    name: si.name.clone(),
                    sg: sg.clone(),
                    assignment_state: state.into(),
                    assignments,
                });
            }
            for su in &e.cfg.sus {
                st.sus.push(su_view(sg, &e.rt, su));
            }
        }
        for (name, c) in &self.components {
            let in_service = self
                .sgs
                .values()
                .any(|e| policy::su_in_service(&e.rt, &c.su));
            st.components.push(ComponentView {
                name: name.clone(),
                su: c.su.clone(),
                node: c.node.clone(),
                pid: c.pid,
                presence: c.presence.name().into(),
                readiness: readiness(in_service && c.presence == Presence::Instantiated),
                restarts: c.restarts,
            });
        }
        st
    }

    fn assignment_epoch(&self, si: &str, su: &str) -> u64 {
        if let Some(e) = self.epochs.get(&(si.to_string(), su.to_string())) {
            return *e;
        }
        self.directives
            .values()
            .filter(|d| d.si == si && d.su == su)
            .map(|d| d.epoch)
            .max()
            .unwrap_or(0)
    }

    /// What `node`'s director should do.
    pub fn node_view(&self, node: &str) -> NodeView {
        let mut view = NodeView::default();
        let Some(model) = self.model.as_ref() else {
            return view;
        };
        let node_up = self.nodes.get(node).is_some_and(|n| n.up);
        for (name, c) in self.components.iter().filter(|(_, c)| c.node == node) {
            let Some(def) = model.component(name) else {
                continue;
            };
            // An SU the policy holds out (node lost, faulted) is instantiated again so that it
            // can come back (repair); the policy alone would wait for it to be enabled first.
            let out = self.sus.get(&c.su).is_some_and(|s| s.out.is_some());
            let su_wants = self
                .sgs
                .values()
                .find(|e| e.cfg.sus.iter().any(|s| s.name == c.su))
                .is_some_and(|e| {
                    policy::su_should_be_instantiated(&e.cfg, &e.rt, &c.su)
                        || (out
                            && policy::su_admin_state(&e.rt, &c.su)
                                != policy::SuAdminState::LockedInstantiation)
                });
            let should_run = node_up && su_wants && c.presence != Presence::InstantiationFailed;
            view.components.push(ComponentPlan {
                name: name.clone(),
                su: c.su.clone(),
                incarnation: c.incarnation,
                should_run,
                presence: c.presence,
                pid: c.pid,
                def: def.clone(),
                attributes: component_attributes(model, name),
            });
        }
        for d in self.directives.values().filter(|d| d.node == node) {
            view.directives.push(DirectivePlan {
                directive: d.clone(),
                targets: self.targets(&d.su, &d.si),
                active_component: self.active_component_of(&d.si, &d.su),
            });
        }
        for e in self.sgs.values() {
            for (si, su, ha, _) in policy::susis(&e.rt) {
                if self.node_of_su(&su) != node {
                    continue;
                }
                let Some(epoch) = self.epochs.get(&(si.clone(), su.clone())) else {
                    continue;
                };
                for csi in self.targets(&su, &si) {
                    view.held.push(HeldCsi {
                        csi,
                        ha,
                        epoch: *epoch,
                    });
                }
            }
        }
        view
    }

    fn targets(&self, su: &str, si: &str) -> Vec<CsiPlan> {
        let Some(model) = self.model.as_ref() else {
            return vec![];
        };
        model
            .csi_targets(su, si)
            .into_iter()
            .map(|(comp, csi)| CsiPlan {
                attributes: csi.attributes.clone(),
                component: comp.name.clone(),
                si: si.to_string(),
                csi: csi.name.clone(),
            })
            .collect()
    }

    /// The first component of the SU (other than `not_su`) that holds or is becoming active
    /// for `si`.
    fn active_component_of(&self, si: &str, not_su: &str) -> Option<String> {
        let sg = self.sg_of_si(si)?;
        let e = self.sgs.get(&sg)?;
        let su = policy::susis(&e.rt)
            .into_iter()
            .find(|(s, su, ha, p)| {
                s == si
                    && su != not_su
                    && (*ha == HaState::Active || matches!(p, Some(MsgKind::Active(_))))
            })
            .map(|(_, su, _, _)| su)?;
        self.targets(&su, si)
            .into_iter()
            .next()
            .map(|t| t.component)
    }
}

/// The attributes of every CSI the component may be given (for its environment).
fn component_attributes(model: &crate::model::Model, comp: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(c) = model.component(comp) else {
        return out;
    };
    let Some(su) = model.su(&c.su) else {
        return out;
    };
    for si in model.sis_of_sg(&su.sg) {
        for (target, csi) in model.csi_targets(&su.name, &si.name) {
            if target.name == comp {
                out.extend(csi.attributes.clone());
            }
        }
    }
    out
}

fn readiness(in_service: bool) -> String {
    if in_service {
        "in_service".into()
    } else {
        "out_of_service".into()
    }
}

fn su_view(sg: &str, rt: &SgRuntime, su: &policy::SuConfig) -> SuView {
    SuView {
        name: su.name.clone(),
        sg: sg.to_string(),
        node: su.node.clone(),
        admin_state: policy::su_admin_state(rt, &su.name).name().into(),
        oper_state: if policy::su_enabled(rt, &su.name) {
            "enabled".into()
        } else {
            "disabled".into()
        },
        readiness: readiness(policy::su_in_service(rt, &su.name)),
    }
}
