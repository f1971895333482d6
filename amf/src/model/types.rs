//! The model's entity definitions: flat TOML tables, unknown fields refused, optional fields
//! take the defaults given beside them (AIS's, where AIS has one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::ModelErrors;
use crate::policy::{RankedSu, RedundancyModel};

/// The whole entity model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Cluster nodes (`[[node]]`).
    #[serde(default)]
    pub node: Vec<Node>,
    /// Service groups (`[[sg]]`).
    #[serde(default)]
    pub sg: Vec<Sg>,
    /// Service units (`[[su]]`).
    #[serde(default)]
    pub su: Vec<Su>,
    /// Components (`[[component]]`).
    #[serde(default)]
    pub component: Vec<Component>,
    /// Service instances (`[[si]]`).
    #[serde(default)]
    pub si: Vec<Si>,
    /// Component service instances (`[[csi]]`).
    #[serde(default)]
    pub csi: Vec<Csi>,
    /// SI-SI dependencies (`[[dependency]]`).
    #[serde(default)]
    pub dependency: Vec<SiDependency>,
}

/// A cluster node, by the agent's configured `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The agent name.
    pub name: String,
    /// `saAmfNodeSuFailoverMax`: failovers on the node within the probation before a node
    /// failover (§4.1 level 2).
    #[serde(default = "ten")]
    pub su_failover_max: u32,
    /// `saAmfNodeSuFailoverProb`.
    #[serde(default = "minute_ms")]
    pub su_failover_prob_ms: u64,
    /// `saAmfNodeAutoRepair`: reboot the node after a node failover.
    #[serde(default = "yes")]
    pub auto_repair: bool,
}

/// A service group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sg {
    /// SG name.
    pub name: String,
    /// Redundancy model: "2N" | "NoRed" (supported); "NpM" | "NWay" | "NWayActive" parse.
    pub redundancy: RedundancyModel,
    /// `saAmfSGAutoRepair` (default true).
    #[serde(default = "yes")]
    pub auto_repair: bool,
    /// `saAmfSGAutoAdjust` (default false).
    #[serde(default)]
    pub auto_adjust: bool,
    /// Auto-adjust probation, 0 = immediate.
    #[serde(default)]
    pub auto_adjust_prob_ms: u64,
    /// `saAmfSGCompRestartMax`.
    #[serde(default = "ten")]
    pub comp_restart_max: u32,
    /// `saAmfSGCompRestartProb`.
    #[serde(default = "minute_ms")]
    pub comp_restart_prob_ms: u64,
    /// `saAmfSGSuRestartMax`.
    #[serde(default = "ten")]
    pub su_restart_max: u32,
    /// `saAmfSGSuRestartProb`.
    #[serde(default = "minute_ms")]
    pub su_restart_prob_ms: u64,
    /// `saAmfSGNumPrefInserviceSUs`, 0 = number of SUs.
    #[serde(default)]
    pub pref_inservice_sus: u32,
    /// `saAmfSGNumPrefAssignedSUs`, 0 = pref in-service.
    #[serde(default)]
    pub pref_assigned_sus: u32,
    /// N+M active SU budget.
    #[serde(default = "one")]
    pub pref_active_sus: u32,
    /// N+M standby SU budget.
    #[serde(default = "one")]
    pub pref_standby_sus: u32,
    /// `saAmfSGMaxActiveSIsperSU`, 0 = unlimited.
    #[serde(default)]
    pub max_active_sis_per_su: u32,
    /// `saAmfSGMaxStandbySIsperSU`, 0 = unlimited.
    #[serde(default)]
    pub max_standby_sis_per_su: u32,
}

/// A service unit: the components of one SG on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Su {
    /// SU name.
    pub name: String,
    /// Its SG.
    pub sg: String,
    /// Its node.
    pub node: String,
    /// `saAmfSURank`: smaller is preferred, 0 = least preferred.
    #[serde(default)]
    pub rank: u32,
    /// `saAmfSUFailover`: a component fault fails the whole SU over abruptly.
    #[serde(default)]
    pub failover: bool,
}

/// The recommended recovery of a component error (`saAmfCompRecoveryOnError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Restart the component.
    #[default]
    ComponentRestart,
    /// Fail the component's SU over gracefully.
    ComponentFailover,
    /// Switch the node's SUs over.
    NodeSwitchover,
    /// Fail the node over.
    NodeFailover,
    /// Fail the node over and reboot it at once.
    NodeFailfast,
}

/// A component: one process tree started with `/bin/sh -c instantiate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Component name, unique across the model.
    pub name: String,
    /// Its SU.
    pub su: String,
    /// Command that starts it (run with `/bin/sh -c`).
    pub instantiate: String,
    /// Command that stops it; empty = SIGTERM to the process group.
    #[serde(default)]
    pub terminate: String,
    /// Command run after a failed stop; empty = only SIGKILL of the process group.
    #[serde(default)]
    pub cleanup: String,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// CS types it can take; empty = every CSI of its SU's SIs.
    #[serde(default)]
    pub cs_types: Vec<String>,
    /// Deadline of instantiation.
    #[serde(default = "ten_s_ms")]
    pub instantiate_timeout_ms: u64,
    /// Deadline of termination.
    #[serde(default = "five_s_ms")]
    pub terminate_timeout_ms: u64,
    /// Deadline of cleanup.
    #[serde(default = "five_s_ms")]
    pub cleanup_timeout_ms: u64,
    /// Deadline of a CSI-set or CSI-remove callback.
    #[serde(default = "five_s_ms")]
    pub callback_timeout_ms: u64,
    /// Period of the AMF-invoked healthcheck; 0 = none.
    #[serde(default)]
    pub healthcheck_period_ms: u64,
    /// Deadline of one healthcheck.
    #[serde(default = "one_s_ms")]
    pub healthcheck_timeout_ms: u64,
    /// Recommended recovery on error.
    #[serde(default)]
    pub recovery_on_error: Recovery,
    /// `saAmfCompDisableRestart`: a component restart becomes a component failover.
    #[serde(default)]
    pub disable_restart: bool,
    /// Component watchdog: the component (through the SDK) must kick at least this often, or
    /// it counts as failed with `watchdog_recovery`. 0 = no watchdog.
    #[serde(default)]
    pub watchdog_ms: u64,
    /// The recovery when the watchdog expires (then the usual escalation).
    #[serde(default)]
    pub watchdog_recovery: Recovery,
}

/// A service instance: the workload unit assigned to SUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Si {
    /// SI name.
    pub name: String,
    /// Its SG.
    pub sg: String,
    /// `saAmfSIRank`: smaller is preferred, 0 = least preferred.
    #[serde(default)]
    pub rank: u32,
    /// N-Way-Active preferred actives.
    #[serde(default = "one")]
    pub pref_active: u32,
    /// N-Way preferred standbys.
    #[serde(default = "one")]
    pub pref_standby: u32,
    /// SI-ranked SUs (N-Way, N-Way-Active placement).
    #[serde(default)]
    pub ranked_su: Vec<RankedSu>,
}

/// A component service instance: the part of an SI one component carries out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Csi {
    /// CSI name.
    pub name: String,
    /// Its SI.
    pub si: String,
    /// Its CS type; `None` = every component of the SU takes it.
    #[serde(default)]
    pub cs_type: Option<String>,
    /// Attributes passed to the component with the assignment.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// An SI-SI dependency inside one SG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiDependency {
    /// The SI that must be active first.
    pub sponsor: String,
    /// The SI that depends on it.
    pub dependent: String,
    /// How long the dependent stays assigned after its sponsor lost its active.
    #[serde(default)]
    pub tolerance_ms: u64,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn ten() -> u32 {
    10
}
fn minute_ms() -> u64 {
    60_000
}
fn ten_s_ms() -> u64 {
    10_000
}
fn five_s_ms() -> u64 {
    5_000
}
fn one_s_ms() -> u64 {
    1_000
}

impl Model {
    /// Parses a model file. `source_name` (usually the file name) names the errors. Syntax
    /// errors, unknown fields and wrong types are reported with line and column.
    pub fn parse(text: &str, source_name: &str) -> Result<Model, ModelErrors> {
        toml::from_str(text).map_err(|e| {
            let mut errs = ModelErrors::default();
            let at = e
                .span()
                .map(|span| {
                    let (line, column) = line_column(text, span.start);
                    format!("line {line}, column {column}: ")
                })
                .unwrap_or_default();
            errs.push(source_name, format!("{at}{}", e.message().trim_end()));
            errs
        })
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
