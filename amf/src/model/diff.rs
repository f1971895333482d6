//! What applying a changed model adds, removes and changes, per kind of entity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::Model;

/// Added, removed and changed entities of one kind, by name (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindDiff {
    /// In the new model only.
    pub added: Vec<String>,
    /// In the old model only.
    pub removed: Vec<String>,
    /// In both, with a different definition.
    pub changed: Vec<String>,
}

impl KindDiff {
    /// Nothing added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn of<T: PartialEq>(old: BTreeMap<String, &T>, new: BTreeMap<String, &T>) -> KindDiff {
        let mut d = KindDiff::default();
        for (name, o) in &old {
            match new.get(name) {
                None => d.removed.push(name.clone()),
                Some(n) if n != o => d.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        d.added = new
            .keys()
            .filter(|k| !old.contains_key(*k))
            .cloned()
            .collect();
        d
    }
}

/// The difference between two models (see [`Model::diff`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDiff {
    /// Nodes.
    pub nodes: KindDiff,
    /// Service groups.
    pub sgs: KindDiff,
    /// Service units.
    pub sus: KindDiff,
    /// Components.
    pub components: KindDiff,
    /// Service instances.
    pub sis: KindDiff,
    /// Component service instances.
    pub csis: KindDiff,
    /// SI dependencies, named `sponsor -> dependent`.
    pub dependencies: KindDiff,
}

impl ModelDiff {
    /// One line per change, for people: "added su counter-4", "changed component x".
    pub fn lines(&self) -> Vec<String> {
        let kinds = [
            ("node", &self.nodes),
            ("sg", &self.sgs),
            ("su", &self.sus),
            ("component", &self.components),
            ("si", &self.sis),
            ("csi", &self.csis),
            ("dependency", &self.dependencies),
        ];
        let mut out = Vec::new();
        for (kind, d) in kinds {
            out.extend(d.added.iter().map(|n| format!("added {kind} {n}")));
            out.extend(d.removed.iter().map(|n| format!("removed {kind} {n}")));
            out.extend(d.changed.iter().map(|n| format!("changed {kind} {n}")));
        }
        out
    }

    /// Equal models.
    pub fn is_empty(&self) -> bool {
        [
            &self.nodes,
            &self.sgs,
            &self.sus,
            &self.components,
            &self.sis,
            &self.csis,
            &self.dependencies,
        ]
        .iter()
        .all(|k| k.is_empty())
    }
}

/// Entities of one kind by name (the first of duplicate names; a validated model has none).
fn by_name<T>(items: &[T], name: impl Fn(&T) -> String) -> BTreeMap<String, &T> {
    let mut m = BTreeMap::new();
    for it in items {
        m.entry(name(it)).or_insert(it);
    }
    m
}

impl Model {
    /// What changes from `self` to `new`, per kind. Equal models give an empty diff. A changed
    /// entity is one whose definition differs; its children are listed under their own kind only
    /// when they changed themselves.
    pub fn diff(&self, new: &Model) -> ModelDiff {
        let dep = |d: &super::types::SiDependency| format!("{} -> {}", d.sponsor, d.dependent);
        ModelDiff {
            nodes: KindDiff::of(
                by_name(&self.node, |x| x.name.clone()),
                by_name(&new.node, |x| x.name.clone()),
            ),
            sgs: KindDiff::of(
                by_name(&self.sg, |x| x.name.clone()),
                by_name(&new.sg, |x| x.name.clone()),
            ),
            sus: KindDiff::of(
                by_name(&self.su, |x| x.name.clone()),
                by_name(&new.su, |x| x.name.clone()),
            ),
            components: KindDiff::of(
                by_name(&self.component, |x| x.name.clone()),
                by_name(&new.component, |x| x.name.clone()),
            ),
            sis: KindDiff::of(
                by_name(&self.si, |x| x.name.clone()),
                by_name(&new.si, |x| x.name.clone()),
            ),
            csis: KindDiff::of(
                by_name(&self.csi, |x| x.name.clone()),
                by_name(&new.csi, |x| x.name.clone()),
            ),
            dependencies: KindDiff::of(
                by_name(&self.dependency, dep),
                by_name(&new.dependency, dep),
            ),
        }
    }
}
