//! Lookups on a model, and each SG's policy view.

use super::types::{Component, Csi, Model, Node, Sg, Si, Su};
use crate::policy::{Dependency, SgConfig, SiConfig, SuConfig};

impl Model {
    /// The SG names, in model order.
    pub fn sg_names(&self) -> Vec<&str> {
        self.sg.iter().map(|s| s.name.as_str()).collect()
    }

    /// Node `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node.iter().find(|n| n.name == name)
    }

    /// SG `name`.
    pub fn sg(&self, name: &str) -> Option<&Sg> {
        self.sg.iter().find(|s| s.name == name)
    }

    /// SU `name`.
    pub fn su(&self, name: &str) -> Option<&Su> {
        self.su.iter().find(|s| s.name == name)
    }

    /// Component `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.component.iter().find(|c| c.name == name)
    }

    /// SI `name`.
    pub fn si(&self, name: &str) -> Option<&Si> {
        self.si.iter().find(|s| s.name == name)
    }

    /// CSI `name`.
    pub fn csi(&self, name: &str) -> Option<&Csi> {
        self.csi.iter().find(|c| c.name == name)
    }

    /// The SUs of SG `sg`, in model order.
    pub fn sus_of_sg(&self, sg: &str) -> Vec<&Su> {
        self.su.iter().filter(|s| s.sg == sg).collect()
    }

    /// The SIs of SG `sg`, in model order.
    pub fn sis_of_sg(&self, sg: &str) -> Vec<&Si> {
        self.si.iter().filter(|s| s.sg == sg).collect()
    }

    /// The components of SU `su`, in model order.
    pub fn components_of_su(&self, su: &str) -> Vec<&Component> {
        self.component.iter().filter(|c| c.su == su).collect()
    }

    /// The CSIs of SI `si`, in model order.
    pub fn csis_of_si(&self, si: &str) -> Vec<&Csi> {
        self.csi.iter().filter(|c| c.si == si).collect()
    }

    /// The SUs on node `node`, in model order.
    pub fn sus_on_node(&self, node: &str) -> Vec<&Su> {
        self.su.iter().filter(|s| s.node == node).collect()
    }

    /// Which component of SU `su` takes which CSI of SI `si`, as (component, CSI) pairs: a
    /// component takes a CSI when its `cs_types` is empty or contains the CSI's `cs_type`; a CSI
    /// with no `cs_type` goes to every component of the SU.
    pub fn csi_targets(&self, su: &str, si: &str) -> Vec<(&Component, &Csi)> {
        let comps = self.components_of_su(su);
        let mut out = Vec::new();
        for csi in self.csis_of_si(si) {
            for comp in &comps {
                if takes(comp, csi) {
                    out.push((*comp, csi));
                }
            }
        }
        out
    }

    /// The policy's view of SG `sg`.
    ///
    /// # Panics
    /// If `sg` is not an SG of the model (names come from [`Model::sg_names`]).
    pub fn sg_config(&self, sg: &str) -> SgConfig {
        let g = self.sg(sg).expect("sg_config of an SG of the model");
        SgConfig {
            name: g.name.clone(),
            model: g.redundancy,
            auto_adjust: g.auto_adjust,
            auto_adjust_prob_ms: g.auto_adjust_prob_ms,
            auto_repair: g.auto_repair,
            pref_active_sus: g.pref_active_sus,
            pref_standby_sus: g.pref_standby_sus,
            pref_inservice_sus: g.pref_inservice_sus,
            pref_assigned_sus: g.pref_assigned_sus,
            max_active_sis_per_su: g.max_active_sis_per_su,
            max_standby_sis_per_su: g.max_standby_sis_per_su,
            sus: self.sus_of_sg(sg).into_iter().map(su_config).collect(),
            sis: self.sis_of_sg(sg).into_iter().map(si_config).collect(),
            dependencies: self
                .dependency
                .iter()
                .filter(|d| self.si(&d.dependent).is_some_and(|s| s.sg == sg))
                .map(|d| Dependency {
                    sponsor: d.sponsor.clone(),
                    dependent: d.dependent.clone(),
                    tolerance_ms: d.tolerance_ms,
                })
                .collect(),
        }
    }
}

/// Whether component `comp` takes CSI `csi`.
pub(crate) fn takes(comp: &Component, csi: &Csi) -> bool {
    match &csi.cs_type {
        None => true,
        Some(t) => comp.cs_types.is_empty() || comp.cs_types.contains(t),
    }
}

fn su_config(s: &Su) -> SuConfig {
    SuConfig {
        name: s.name.clone(),
        node: s.node.clone(),
        rank: s.rank,
        failover: s.failover,
        // Every nines component is started by a command: all SUs are pre-instantiable.
        preinstantiable: true,
    }
}

fn si_config(s: &Si) -> SiConfig {
    SiConfig {
        name: s.name.clone(),
        rank: s.rank,
        pref_active: s.pref_active,
        pref_standby: s.pref_standby,
        ranked_su: s.ranked_su.clone(),
    }
}
