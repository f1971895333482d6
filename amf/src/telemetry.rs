//! The AMF's counters, histograms and failover trace spans.
//!
//! A failover crosses nodes, so its spans are linked by attributes rather than by a parent
//! span: `amf.fault` (the director that saw the fault, `fault_id = component#incarnation`) →
//! `amf.failover_decided` (every node's `apply`, same `fault_id`, and `failover_id = sg/epoch`
//! of the new active's directive) → `amf.callback` (the new active's director, same
//! `failover_id`) → `amf.failover_confirmed` (every node's `apply`, with the phase durations).
//!
//! Counters change in `apply` on every node, so every node counts the cluster's failovers and
//! restarts (a restarted agent counts again what it replays after its snapshot). They are
//! process-local observations and never feed back into the state.

use nines_consensus::metrics::{Counter, Histogram};

use crate::policy::MsgKind;
use crate::state::{AmfState, Timeline};

/// Bucket bounds (seconds) for failover phases: 1 ms .. 30 s.
pub const FAILOVER_BOUNDS_S: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The AMF's counters and histograms.
#[derive(Debug)]
pub struct AmfMetrics {
    /// Failovers completed (the new active confirmed).
    pub failovers: Counter,
    /// Fault seen → recovery decided.
    pub phase_detect_to_decide: Histogram,
    /// Recovery decided → new active confirmed.
    pub phase_decide_to_confirm: Histogram,
    /// Fault seen → new active confirmed.
    pub phase_detect_to_confirm: Histogram,
    /// Component restarts decided (recovery or admin).
    pub component_restarts: Counter,
    /// SU restarts decided (component restarts exhausted).
    pub su_restarts: Counter,
    /// Escalations to an SU restart (component restart budget exhausted).
    pub escalations_su_restart: Counter,
    /// Escalations to a failover (restart budgets exhausted).
    pub escalations_failover: Counter,
    /// Escalations to a node failover (the node's failover budget exhausted).
    pub escalations_node_failover: Counter,
    /// Component watchdog kicks this node's director received (coalesced by the SDK).
    pub watchdog_kicks: Counter,
    /// Component watchdogs that expired on this node.
    pub watchdog_expiries: Counter,
    /// Callbacks this node's director delivered, and those that failed or timed out.
    pub callbacks_ok: Counter,
    /// See `callbacks_ok`.
    pub callbacks_failed: Counter,
    /// Corrections of a local component whose belief differed from the agreed state.
    pub belief_corrections: Counter,
}

/// This process's AMF metrics.
pub static METRICS: AmfMetrics = AmfMetrics {
    failovers: Counter::new(),
    phase_detect_to_decide: Histogram::new(FAILOVER_BOUNDS_S),
    phase_decide_to_confirm: Histogram::new(FAILOVER_BOUNDS_S),
    phase_detect_to_confirm: Histogram::new(FAILOVER_BOUNDS_S),
    component_restarts: Counter::new(),
    su_restarts: Counter::new(),
    escalations_su_restart: Counter::new(),
    escalations_failover: Counter::new(),
    escalations_node_failover: Counter::new(),
    watchdog_kicks: Counter::new(),
    watchdog_expiries: Counter::new(),
    callbacks_ok: Counter::new(),
    callbacks_failed: Counter::new(),
    belief_corrections: Counter::new(),
};

/// The id that links a fault's spans: `component#incarnation`.
pub fn fault_id(component: &str, incarnation: u64) -> String {
    format!("{component}#{incarnation}")
}

/// The id that links a failover's decision, callback and confirmation: `sg/epoch` of the new
/// active's directive.
pub fn failover_id(sg: &str, epoch: u64) -> String {
    format!("{sg}/{epoch}")
}

/// After an apply: a span for every new active directive (epoch above `before_epoch`) of an SG
/// that is failing over.
pub(crate) fn trace_decisions(s: &AmfState, before_epoch: u64, fault: Option<&str>) {
    if s.epoch == before_epoch {
        return;
    }
    for d in s.directives.values() {
        if d.epoch <= before_epoch || !matches!(d.kind, MsgKind::Active(_)) {
            continue;
        }
        let Some(track) = s.failovers.get(&d.sg) else {
            continue;
        };
        let span = tracing::info_span!(
            "amf.failover_decided",
            failover_id = %failover_id(&d.sg, d.epoch),
            fault_id = fault.unwrap_or(""),
            sg = %d.sg,
            si = %d.si,
            su = %d.su,
            node = %d.node,
            epoch = d.epoch,
            cause = %track.cause,
            detected_ms = track.detected_ms,
            decided_ms = track.decided_ms,
        );
        span.in_scope(|| tracing::info!("failover decided: {} active on {}", d.si, d.su));
    }
}

/// A failover completed: count it, observe its phases, close its trace.
pub(crate) fn failover_confirmed(sg: &str, si: &str, su: &str, epoch: u64, t: &Timeline) {
    let m = &METRICS;
    m.failovers.inc();
    let decide = t.decided_ms.saturating_sub(t.detected_ms);
    let confirm = t.confirmed_ms.saturating_sub(t.decided_ms);
    let total = t.confirmed_ms.saturating_sub(t.detected_ms);
    m.phase_detect_to_decide.observe_ms(decide);
    m.phase_decide_to_confirm.observe_ms(confirm);
    m.phase_detect_to_confirm.observe_ms(total);
    let span = tracing::info_span!(
        "amf.failover_confirmed",
        failover_id = %failover_id(sg, epoch),
        sg,
        si,
        su,
        epoch,
        detect_to_decide_ms = decide,
        decide_to_confirm_ms = confirm,
        detect_to_confirm_ms = total,
    );
    span.in_scope(|| tracing::info!("failover confirmed: {si} active on {su} after {total} ms"));
}
