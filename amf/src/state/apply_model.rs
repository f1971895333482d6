//! Putting a model in force: the same model again changes nothing; a changed model adds,
//! removes and changes entities, and restarts only what changed.

use std::collections::BTreeSet;

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};

use super::{AmfResponse, AmfState, CompRuntime, HistoryKind, NodeRuntime, Presence, SgEntry};
use crate::model::Model;
use crate::policy::SgRuntime;

impl AmfState {
    pub(super) fn apply_model(&mut self, ctx: ApplyContext, model: Model) -> AmfResponse {
        if let Err(e) = model.validate() {
            return AmfResponse::Refused(AisError::new(ErrorCode::InvalidParam, e.to_string()));
        }
        if self.model.as_ref() == Some(&model) {
            return AmfResponse::ModelApplied { changes: vec![] };
        }
        let changes = match &self.model {
            Some(old) => old.diff(&model).lines(),
            None => vec![format!(
                "model applied: {} SG(s), {} SU(s), {} component(s), {} SI(s)",
                model.sg.len(),
                model.su.len(),
                model.component.len(),
                model.si.len()
            )],
        };
        let old = self.model.take();
        self.sync_nodes(&model);
        let rebuilt = self.sync_sgs(&model);
        self.sync_components(old.as_ref(), &model, &rebuilt);
        self.model = Some(model);
        for line in &changes {
            self.record(ctx, ctx.time_ms, HistoryKind::Model, "model", line.clone());
        }
        let sgs: Vec<String> = self.sgs.keys().cloned().collect();
        for sg in sgs {
            self.try_start(ctx, &sg);
        }
        AmfResponse::ModelApplied { changes }
    }

    fn sync_nodes(&mut self, model: &Model) {
        let names: BTreeSet<String> = model.node.iter().map(|n| n.name.clone()).collect();
        self.nodes.retain(|n, _| names.contains(n));
        for n in names {
            let up = self.cluster_up.contains(&n);
            self.nodes.entry(n).or_insert(NodeRuntime {
                up,
                ..Default::default()
            });
        }
    }

    /// Keep SGs whose policy view is unchanged; build the others afresh. Returns the names of
    /// the SGs built afresh (their components restart).
    fn sync_sgs(&mut self, model: &Model) -> BTreeSet<String> {
        let mut rebuilt = BTreeSet::new();
        let names: BTreeSet<String> = model.sg.iter().map(|s| s.name.clone()).collect();
        let gone: Vec<String> = self
            .sgs
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for sg in gone {
            self.sgs.remove(&sg);
            self.directives.retain(|_, d| d.sg != sg);
        }
        for sg in names {
            let cfg = model.sg_config(&sg);
            if self.sgs.get(&sg).is_some_and(|e| e.cfg == cfg) {
                continue;
            }
            self.directives.retain(|_, d| d.sg != sg);
            let rt = SgRuntime::new(&cfg);
            for su in &cfg.sus {
                self.sus.insert(su.name.clone(), Default::default());
            }
            self.sgs.insert(
                sg.clone(),
                SgEntry {
                    cfg,
                    rt,
                    started: false,
                },
            );
            rebuilt.insert(sg);
        }
        let live: BTreeSet<String> = model.su.iter().map(|s| s.name.clone()).collect();
        self.sus.retain(|n, _| live.contains(n));
        rebuilt
    }

    /// Components whose definition is unchanged (and whose SG was kept) keep running; the rest
    /// get a fresh incarnation.
    fn sync_components(&mut self, old: Option<&Model>, model: &Model, rebuilt: &BTreeSet<String>) {
        let names: BTreeSet<String> = model.component.iter().map(|c| c.name.clone()).collect();
        self.components.retain(|n, _| names.contains(n));
        for def in &model.component {
            let Some(su) = model.su(&def.su) else {
                continue;
            };
            let unchanged = old.and_then(|o| o.component(&def.name)) == Some(def)
                && !rebuilt.contains(&su.sg)
                && old.and_then(|o| o.su(&def.su)) == Some(su);
            match self.components.get_mut(&def.name) {
                Some(_) if unchanged => {}
                Some(c) => {
                    c.incarnation += 1;
                    c.presence = Presence::Uninstantiated;
                    c.pid = None;
                    c.su = def.su.clone();
                    c.node = su.node.clone();
                }
                None => {
                    self.components.insert(
                        def.name.clone(),
                        CompRuntime {
                            su: def.su.clone(),
                            node: su.node.clone(),
                            incarnation: 1,
                            presence: Presence::Uninstantiated,
                            pid: None,
                            restarts: 0,
                        },
                    );
                }
            }
        }
    }
}
