//! [`Model::validate`]: every semantic problem at once, each naming its entity.

use std::collections::{BTreeMap, BTreeSet};

use super::error::ModelErrors;
use super::limits::*;
use super::query::takes;
use super::types::{Component, Model, Node, Sg};
use crate::policy::RedundancyModel;

impl Model {
    /// Checks the model; `Err` lists every problem found (not just the first), one per entity
    /// and problem, e.g. `su counter-1: node n9 is not a [[node]] of the model`.
    pub fn validate(&self) -> Result<(), ModelErrors> {
        let mut errs = ModelErrors::default();
        self.check_counts(&mut errs);
        self.check_names(&mut errs);
        self.check_nodes_and_sgs(&mut errs);
        self.check_sus(&mut errs);
        self.check_components(&mut errs);
        self.check_sis_and_csis(&mut errs);
        self.check_dependencies(&mut errs);
        errs.into_result()
    }

    fn check_counts(&self, errs: &mut ModelErrors) {
        let counts = [
            ("[[node]]", self.node.len(), NODES_MAX),
            ("[[sg]]", self.sg.len(), SGS_MAX),
            ("[[su]]", self.su.len(), SUS_MAX),
            ("[[component]]", self.component.len(), COMPONENTS_MAX),
            ("[[si]]", self.si.len(), SIS_MAX),
            ("[[csi]]", self.csi.len(), CSIS_MAX),
            ("[[dependency]]", self.dependency.len(), DEPENDENCIES_MAX),
        ];
        for (kind, n, max) in counts {
            if n > max {
                errs.push(
                    "model",
                    format!("{n} {kind} entries, more than the limit of {max}"),
                );
            }
        }
    }

    /// Name syntax and duplicates, per kind.
    fn check_names(&self, errs: &mut ModelErrors) {
        let kinds: [(&str, Vec<&str>); 6] = [
            ("node", self.node.iter().map(|x| x.name.as_str()).collect()),
            ("sg", self.sg.iter().map(|x| x.name.as_str()).collect()),
            ("su", self.su.iter().map(|x| x.name.as_str()).collect()),
            (
                "component",
                self.component.iter().map(|x| x.name.as_str()).collect(),
            ),
            ("si", self.si.iter().map(|x| x.name.as_str()).collect()),
            ("csi", self.csi.iter().map(|x| x.name.as_str()).collect()),
        ];
        for (kind, names) in kinds {
            let mut seen = BTreeSet::new();
            for name in names {
                if let Some(problem) = name_problem(name) {
                    errs.push(format!("{kind} {name:?}"), problem);
                } else if !seen.insert(name) {
                    errs.push(
                        format!("{kind} {name}"),
                        format!("defined more than once; {kind} names must be unique"),
                    );
                }
            }
        }
    }

    fn check_nodes_and_sgs(&self, errs: &mut ModelErrors) {
        for n in &self.node {
            check_node(n, errs);
        }
        for g in &self.sg {
            let entity = format!("sg {}", g.name);
            check_sg(g, errs);
            let sus = self.sus_of_sg(&g.name).len();
            if sus == 0 {
                errs.push(&entity, "has no [[su]]; add at least one (two for 2N)");
            } else if g.redundancy == RedundancyModel::TwoN && sus < 2 {
                errs.push(
                    &entity,
                    format!("redundancy 2N needs at least 2 SUs, has {sus}"),
                );
            }
        }
    }

    fn check_sus(&self, errs: &mut ModelErrors) {
        for s in &self.su {
            let entity = format!("su {}", s.name);
            if self.sg(&s.sg).is_none() {
                errs.push(&entity, format!("sg {} is not a [[sg]] of the model", s.sg));
            }
            if self.node(&s.node).is_none() {
                errs.push(
                    &entity,
                    format!("node {} is not a [[node]] of the model", s.node),
                );
            }
            if self.components_of_su(&s.name).is_empty() {
                errs.push(&entity, "has no [[component]]");
            }
        }
    }

    fn check_components(&self, errs: &mut ModelErrors) {
        for c in &self.component {
            let entity = format!("component {}", c.name);
            if self.su(&c.su).is_none() {
                errs.push(&entity, format!("su {} is not a [[su]] of the model", c.su));
            }
            check_component(&entity, c, errs);
        }
    }

    fn check_sis_and_csis(&self, errs: &mut ModelErrors) {
        for s in &self.si {
            let entity = format!("si {}", s.name);
            if self.sg(&s.sg).is_none() {
                errs.push(&entity, format!("sg {} is not a [[sg]] of the model", s.sg));
            }
            if self.csis_of_si(&s.name).is_empty() {
                errs.push(
                    &entity,
                    "has no [[csi]]; an SI without CSIs is never assigned",
                );
            }
            for r in &s.ranked_su {
                if self.su(&r.su).is_none_or(|u| u.sg != s.sg) {
                    errs.push(
                        &entity,
                        format!("ranked su {} is not an SU of sg {}", r.su, s.sg),
                    );
                }
            }
        }
        for c in &self.csi {
            let entity = format!("csi {}", c.name);
            let Some(si) = self.si(&c.si) else {
                errs.push(&entity, format!("si {} is not a [[si]] of the model", c.si));
                continue;
            };
            if c.attributes.len() > ATTRIBUTES_MAX {
                errs.push(
                    &entity,
                    format!(
                        "{} attributes, more than the limit of {ATTRIBUTES_MAX}",
                        c.attributes.len()
                    ),
                );
            }
            check_map(&entity, "attribute", &c.attributes, errs);
            for su in self.sus_of_sg(&si.sg) {
                if !self
                    .components_of_su(&su.name)
                    .iter()
                    .any(|comp| takes(comp, c))
                {
                    let what = c
                        .cs_type
                        .as_deref()
                        .map_or("it".to_string(), |t| format!("cs_type {t}"));
                    errs.push(
                        &entity,
                        format!("no component of su {} takes {what}", su.name),
                    );
                }
            }
        }
    }

    fn check_dependencies(&self, errs: &mut ModelErrors) {
        let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for d in &self.dependency {
            let entity = format!("dependency {} -> {}", d.sponsor, d.dependent);
            let (sp, de) = (self.si(&d.sponsor), self.si(&d.dependent));
            if sp.is_none() {
                errs.push(
                    &entity,
                    format!("sponsor {} is not a [[si]] of the model", d.sponsor),
                );
            }
            if de.is_none() {
                errs.push(
                    &entity,
                    format!("dependent {} is not a [[si]] of the model", d.dependent),
                );
            }
            let (Some(sp), Some(de)) = (sp, de) else {
                continue;
            };
            if sp.sg != de.sg {
                errs.push(
                    &entity,
                    format!(
                        "sponsor is in sg {}, dependent in sg {}; both must be in the same SG",
                        sp.sg, de.sg
                    ),
                );
            }
            if eff_rank(de.rank) < eff_rank(sp.rank) {
                errs.push(&entity, "the dependent ranks before its sponsor; give it a rank value not smaller than the sponsor's");
            }
            if d.tolerance_ms > DURATION_MS_MAX {
                errs.push(
                    &entity,
                    format!("tolerance_ms above the limit of {DURATION_MS_MAX}"),
                );
            }
            edges
                .entry(d.sponsor.as_str())
                .or_default()
                .push(d.dependent.as_str());
        }
        if let Some(cycle) = find_cycle(&edges) {
            errs.push(
                format!("dependency {}", cycle.join(" -> ")),
                "is a cycle; SI dependencies must not loop",
            );
        }
    }
}

fn eff_rank(r: u32) -> u32 {
    if r == 0 {
        u32::MAX
    } else {
        r
    }
}

/// Why `name` is not a valid entity name, if it is not.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("empty name".into())
    } else if name.len() > NAME_BYTES_MAX {
        Some(format!("name longer than {NAME_BYTES_MAX} bytes"))
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("name contains whitespace or control characters".into())
    } else {
        None
    }
}

fn check_duration(entity: &str, field: &str, ms: u64, zero_ok: bool, errs: &mut ModelErrors) {
    if ms == 0 && !zero_ok {
        errs.push(entity, format!("{field} is 0; give a positive duration"));
    } else if ms > DURATION_MS_MAX {
        errs.push(
            entity,
            format!("{field} is {ms}, above the limit of {DURATION_MS_MAX}"),
        );
    }
}

fn check_node(n: &Node, errs: &mut ModelErrors) {
    let entity = format!("node {}", n.name);
    check_duration(
        &entity,
        "su_failover_prob_ms",
        n.su_failover_prob_ms,
        false,
        errs,
    );
}

fn check_sg(g: &Sg, errs: &mut ModelErrors) {
    let entity = format!("sg {}", g.name);
    if !matches!(g.redundancy, RedundancyModel::TwoN | RedundancyModel::NoRed) {
        errs.push(
            &entity,
            format!(
                "redundancy {:?} is not supported yet; use 2N or NoRed",
                g.redundancy
            ),
        );
    }
    check_duration(
        &entity,
        "comp_restart_prob_ms",
        g.comp_restart_prob_ms,
        false,
        errs,
    );
    check_duration(
        &entity,
        "su_restart_prob_ms",
        g.su_restart_prob_ms,
        false,
        errs,
    );
    check_duration(
        &entity,
        "auto_adjust_prob_ms",
        g.auto_adjust_prob_ms,
        true,
        errs,
    );
}

fn check_component(entity: &str, c: &Component, errs: &mut ModelErrors) {
    if c.instantiate.trim().is_empty() {
        errs.push(entity, "instantiate command is empty");
    }
    for (field, cmd) in [
        ("instantiate", &c.instantiate),
        ("terminate", &c.terminate),
        ("cleanup", &c.cleanup),
    ] {
        if cmd.len() > COMMAND_BYTES_MAX {
            errs.push(
                entity,
                format!("{field} command longer than {COMMAND_BYTES_MAX} bytes"),
            );
        }
    }
    check_duration(
        entity,
        "instantiate_timeout_ms",
        c.instantiate_timeout_ms,
        false,
        errs,
    );
    check_duration(
        entity,
        "terminate_timeout_ms",
        c.terminate_timeout_ms,
        false,
        errs,
    );
    check_duration(
        entity,
        "cleanup_timeout_ms",
        c.cleanup_timeout_ms,
        false,
        errs,
    );
    check_duration(
        entity,
        "callback_timeout_ms",
        c.callback_timeout_ms,
        false,
        errs,
    );
    check_duration(
        entity,
        "healthcheck_period_ms",
        c.healthcheck_period_ms,
        true,
        errs,
    );
    check_duration(entity, "watchdog_ms", c.watchdog_ms, true, errs);
    if c.watchdog_ms != 0 && c.watchdog_ms < WATCHDOG_MS_MIN {
        errs.push(
            entity,
            format!(
                "watchdog_ms = {} is below the minimum of {WATCHDOG_MS_MIN} ms (kicks are \
                 coalesced in the SDK; use 0 for no watchdog)",
                c.watchdog_ms
            ),
        );
    }
    let hc_zero_ok = c.healthcheck_period_ms == 0;
    check_duration(
        entity,
        "healthcheck_timeout_ms",
        c.healthcheck_timeout_ms,
        hc_zero_ok,
        errs,
    );
    if c.env.len() > ENV_MAX {
        errs.push(
            entity,
            format!(
                "{} env entries, more than the limit of {ENV_MAX}",
                c.env.len()
            ),
        );
    }
    check_map(entity, "env", &c.env, errs);
    if c.cs_types.len() > CS_TYPES_MAX {
        errs.push(
            entity,
            format!(
                "{} cs_types, more than the limit of {CS_TYPES_MAX}",
                c.cs_types.len()
            ),
        );
    }
    for t in &c.cs_types {
        if let Some(problem) = name_problem(t) {
            errs.push(entity, format!("cs_type {t:?}: {problem}"));
        }
    }
}

/// Keys must be non-empty, without `=`, NUL or whitespace; values bounded and without NUL.
fn check_map(entity: &str, what: &str, map: &BTreeMap<String, String>, errs: &mut ModelErrors) {
    for (k, v) in map {
        if k.is_empty() || k.contains('=') || k.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            errs.push(
                entity,
                format!("{what} key {k:?} is empty or has '=', whitespace or control characters"),
            );
        }
        if v.len() > VALUE_BYTES_MAX || v.contains('\0') {
            errs.push(
                entity,
                format!("{what} {k}: value longer than {VALUE_BYTES_MAX} bytes or contains NUL"),
            );
        }
    }
}

/// A cycle of the sponsor → dependent graph, as the SI names along it (first repeated last).
///
/// Depth-first with an explicit stack, not recursion: a chain of thousands of dependencies (a
/// model may list more than the limit; it is refused for that, but checked first) overflowed
/// the thread's stack, which aborts the process.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    for &start in edges.keys() {
        if state.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        // The current path: each SI with the index of its next edge to follow.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        state.insert(start, 1);
        while let Some(&(si, next)) = path.last() {
            let children = edges.get(si).map(Vec::as_slice).unwrap_or(&[]);
            let Some(&child) = children.get(next) else {
                state.insert(si, 2);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            match state.get(child).copied().unwrap_or(0) {
                2 => {}
                1 => {
                    let from = path
                        .iter()
                        .position(|(s, _)| *s == child)
                        .expect("an SI marked on the path is on it");
                    let mut cycle: Vec<&str> = path[from..].iter().map(|(s, _)| *s).collect();
                    cycle.push(child);
                    return Some(cycle);
                }
                _ => {
                    state.insert(child, 1);
                    path.push((child, 0));
                }
            }
        }
    }
    None
}
