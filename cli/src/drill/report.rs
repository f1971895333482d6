//! A drill's report: the timeline (fault injected → detected → decided → standby confirmed
//! active → service restored, in ms after the fault), the three promises checked, and how the
//! cluster was left; printed for people or as JSON, and summarized over `--repeat N`.

use serde::Serialize;
use serde_json::{json, Value};

use super::probe::ProbeResult;
use super::sampler::Samples;
use super::timeline::{Injected, Plan, Seen};
use super::{DrillKind, DrillSpec};
use crate::bench::{percentiles, Percentiles};

/// The phases, in order.
pub const PHASES: [&str; 5] = ["injected", "detected", "decided", "confirmed", "restored"];

/// Exit code when the drill could not put the cluster back as it found it (or could not run).
pub const EXIT_NOT_RESTORED: u8 = 4;

/// One phase of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// "injected" | "detected" | "decided" | "confirmed" | "restored".
    pub phase: &'static str,
    /// ms after the fault; null when it did not happen (see the report's notes).
    pub ms: Option<f64>,
}

/// One promise checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// 1: never two actives, 2: no acknowledged write lost, 3: failover fast and measured.
    pub promise: u8,
    /// The promise in words.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// One drill run.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The drill.
    pub drill: DrillKind,
    /// The SI watched.
    pub si: String,
    /// The fault, in words (empty if the drill refused to inject one).
    pub fault: String,
    /// When the fault was injected, ms since the Unix epoch (0 if it was not).
    pub injected_at_ms: u64,
    /// The SI's active before the fault.
    pub old_active: Option<String>,
    /// Its active after the drill.
    pub new_active: Option<String>,
    /// The timeline, in order.
    pub phases: Vec<Phase>,
    /// The promises.
    pub checks: Vec<Check>,
    /// Whether the cluster is back as it was found (agents up, the SI protected).
    pub left_as_found: bool,
    /// The probe checkpoint's outcome.
    pub probe: ProbeResult,
    /// Assignment samples taken.
    pub samples: u64,
    /// Why a phase is missing, what else happened, what to do.
    pub notes: Vec<String>,
    /// All promises held and the cluster is back as found.
    pub ok: bool,
}

fn check(promise: u8, ok: bool, detail: String) -> Check {
    let name = match promise {
        1 => "never two actives",
        2 => "no acknowledged write lost",
        _ => "failover fast and measured",
    };
    Check {
        promise,
        name,
        ok,
        detail,
    }
}

impl DrillReport {
    /// The drill refused to inject its fault: the SI could not fail over (promise 3).
    pub fn refused(kind: DrillKind, si: &str, why: String) -> DrillReport {
        DrillReport {
            drill: kind,
            si: si.to_string(),
            fault: String::new(),
            injected_at_ms: 0,
            old_active: None,
            new_active: None,
            phases: PHASES
                .iter()
                .map(|p| Phase { phase: p, ms: None })
                .collect(),
            checks: vec![check(
                3,
                false,
                format!("could not fail over, so no fault was injected: {why}"),
            )],
            left_as_found: true,
            probe: ProbeResult::default(),
            samples: 0,
            notes: vec![],
            ok: false,
        }
    }

    /// The report of a drill that ran.
    pub(super) fn build(
        spec: &DrillSpec,
        si: &str,
        plan: &Plan,
        injected: &Injected,
        seen: Seen,
        samples: Samples,
        probe: ProbeResult,
    ) -> DrillReport {
        let rel = |t: Option<u64>| t.map(|t| t as f64 - injected.at_ms as f64);
        let times = [
            Some(injected.at_ms),
            seen.detected,
            seen.decided,
            seen.confirmed,
            seen.restored,
        ];
        let phases = PHASES
            .iter()
            .zip(times)
            .map(|(p, t)| Phase {
                phase: p,
                ms: rel(t),
            })
            .collect();
        let checks = vec![
            overlap_check(&samples),
            loss_check(&probe),
            failover_check(spec, plan, &seen, rel(seen.confirmed), si),
        ];
        let ok = seen.left_as_found && checks.iter().all(|c| c.ok);
        DrillReport {
            drill: spec.kind,
            si: si.to_string(),
            fault: plan.what.clone(),
            injected_at_ms: injected.at_ms,
            old_active: Some(plan.old_active.clone()),
            new_active: seen.new_active,
            phases,
            checks,
            left_as_found: seen.left_as_found,
            probe,
            samples: samples.count,
            notes: seen.notes,
            ok,
        }
    }

    /// The process exit code: the first broken promise's number, 4 if only the cluster was not
    /// left as found, 0 if all is well.
    pub fn exit_code(&self) -> u8 {
        match self.checks.iter().find(|c| !c.ok) {
            Some(c) => c.promise,
            None if !self.left_as_found => EXIT_NOT_RESTORED,
            None => 0,
        }
    }

    /// ms after the fault of `phase`.
    pub fn phase_ms(&self, phase: &str) -> Option<f64> {
        self.phases.iter().find(|p| p.phase == phase)?.ms
    }
}

fn overlap_check(s: &Samples) -> Check {
    if s.count == 0 || s.belief_rounds == 0 {
        let detail = format!(
            "nothing to judge by: {} samples of the agreed assignments and {} rounds of the \
             components' beliefs (is the cluster reachable?)",
            s.count, s.belief_rounds
        );
        return check(1, false, detail);
    }
    if s.overlapping == 0 && s.belief_overlapping == 0 {
        let detail = format!(
            "{} samples of the agreed assignments and {} rounds of the components' beliefs, \
             never two actives",
            s.count, s.belief_rounds
        );
        return check(1, true, detail);
    }
    let (n, of, what, first) = if s.overlapping > 0 {
        (
            s.overlapping,
            s.count,
            "samples of the agreed assignments",
            &s.overlaps,
        )
    } else {
        (
            s.belief_overlapping,
            s.belief_rounds,
            "rounds of the components' beliefs",
            &s.belief_overlaps,
        )
    };
    let first = first.first().map(|o| o.actives.join(" and "));
    let detail = format!(
        "{n} of {of} {what} showed two actives at once (first: {})",
        first.unwrap_or_default()
    );
    check(1, false, detail)
}

fn loss_check(p: &ProbeResult) -> Check {
    if p.acked == 0 {
        let detail = "no probe write was acknowledged, so none could be checked".to_string();
        return check(2, false, detail);
    }
    if p.lost.is_empty() {
        let detail = format!(
            "{} acknowledged probe writes read back intact ({} with unknown outcome not counted)",
            p.acked, p.unknown
        );
        return check(2, true, detail);
    }
    let detail = format!(
        "{} of {} acknowledged probe writes are missing or changed in {} (sections p{})",
        p.lost.len(),
        p.acked,
        p.checkpoint,
        p.lost
            .iter()
            .take(10)
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", p")
    );
    check(2, false, detail)
}

fn failover_check(
    spec: &DrillSpec,
    plan: &Plan,
    seen: &Seen,
    confirmed_ms: Option<f64>,
    si: &str,
) -> Check {
    let why = || {
        seen.last
            .as_ref()
            .map(|st| super::observe::why_unprotected(st, si))
            .unwrap_or_else(|| "no AMF status could be read".into())
    };
    let failover = plan.expect_failover || spec.kind == DrillKind::Switchover;
    if failover && seen.detected.is_some() && confirmed_ms.is_none() {
        let d = format!(
            "no standby confirmed active within {:?}: {}",
            spec.timeout,
            why()
        );
        return check(3, false, d);
    }
    if failover && seen.detected.is_none() && !spec.kind.may_go_unnoticed() {
        let d = format!(
            "the fault was not detected within {:?}: {}",
            spec.timeout,
            why()
        );
        return check(3, false, d);
    }
    if seen.restored.is_none() && (seen.detected.is_some() || !spec.kind.may_go_unnoticed()) {
        let d = format!(
            "{si} not protected again within {:?}: {}",
            spec.timeout,
            why()
        );
        return check(3, false, d);
    }
    match (confirmed_ms, spec.max_ms) {
        (Some(ms), Some(max)) if ms > max as f64 => check(
            3,
            false,
            format!("standby confirmed active after {ms:.0} ms, more than --max-ms {max}"),
        ),
        (Some(ms), _) => check(
            3,
            true,
            format!("standby confirmed active after {ms:.0} ms"),
        ),
        (None, _) => check(
            3,
            true,
            "no failover was needed: the active's node was not broken".into(),
        ),
    }
}

/// The timeline and checks, for people.
pub fn text(r: &DrillReport) -> String {
    let mut out = format!("{} of {}", r.drill_name(), r.si);
    if !r.fault.is_empty() {
        out.push_str(&format!(": {}", r.fault));
    }
    out.push('\n');
    if r.injected_at_ms > 0 {
        for p in &r.phases {
            let ms =
                p.ms.map_or_else(|| "-".to_string(), |m| format!("{m:.0} ms"));
            out.push_str(&format!(
                "  {:<10} {:>9}  {}\n",
                p.phase,
                ms,
                phase_words(p.phase, r)
            ));
        }
    }
    for c in &r.checks {
        let mark = if c.ok { "ok    " } else { "BROKEN" };
        out.push_str(&format!(
            "  [{mark}] {}. {}: {}\n",
            c.promise, c.name, c.detail
        ));
    }
    if !r.left_as_found {
        out.push_str("  [BROKEN] the cluster was not left as found\n");
    }
    for n in &r.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

impl DrillReport {
    fn drill_name(&self) -> &'static str {
        self.drill.name()
    }
}

fn phase_words(phase: &str, r: &DrillReport) -> String {
    match phase {
        "injected" => "fault injected".into(),
        "detected" if r.drill == DrillKind::Switchover => "admin operation accepted".into(),
        "detected" => "failure detected".into(),
        "decided" => "recovery decided".into(),
        "confirmed" => match &r.new_active {
            Some(a) => format!("standby confirmed active ({a})"),
            None => "standby confirmed active".into(),
        },
        _ => "service restored: an active and a standby again, writes acknowledged".into(),
    }
}

/// min / p50 / p99 / max of each phase over the runs that reached it.
pub fn summary(runs: &[DrillReport]) -> Vec<(&'static str, usize, Percentiles)> {
    PHASES[1..]
        .iter()
        .filter_map(|p| {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r.phase_ms(p)).collect();
            (!v.is_empty()).then(|| (*p, v.len(), percentiles(&mut v)))
        })
        .collect()
}

/// The summary for people.
pub fn summary_text(runs: &[DrillReport]) -> String {
    let mut out = format!("{} runs (ms after the fault):\n", runs.len());
    for (p, n, s) in summary(runs) {
        out.push_str(&format!(
            "  {p:<10} min {:>6.0} · p50 {:>6.0} · p99 {:>6.0} · max {:>6.0}  ({n} runs)\n",
            s.min_ms, s.p50_ms, s.p99_ms, s.max_ms
        ));
    }
    out
}

/// Every run, the summary, and the verdict, as one JSON object.
pub fn json(runs: &[DrillReport], exit_code: u8) -> Value {
    let summary: serde_json::Map<String, Value> = summary(runs)
        .into_iter()
        .map(|(p, n, s)| (p.to_string(), json!({"runs": n, "min_ms": s.min_ms, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms})))
        .collect();
    json!({
        "drill": runs.first().map(|r| r.drill.name()),
        "runs": runs,
        "summary": summary,
        "ok": exit_code == 0,
        "exit_code": exit_code,
    })
}
