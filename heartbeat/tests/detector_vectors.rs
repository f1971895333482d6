//! Data-driven tests of the failure detector.
//!
//! Every `testdata/*.toml` file is one story: a detector built from the file's `[config]`
//! (defaults for anything left out) and `[[step]]`s applied in order. `testdata/README.md`
//! describes the format.
//!
//! Beyond what each step states, the runner checks on every tick that each transition's `from`
//! is the health last reported for that node, that `to` differs, that `at_ms` is the tick's time,
//! that transitions come in strictly increasing node id order, and that `state()` afterwards
//! agrees with the last reported health.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nines_core::NodeId;
use nines_heartbeat::{DetectorConfig, FailureDetector, Health, HeartbeatOutcome, Transition};
use serde::Deserialize;

/// One data file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    /// What the story shows.
    #[allow(dead_code)]
    about: String,
    #[serde(default)]
    config: DetectorConfig,
    step: Vec<Step>,
}

/// One step: an action at `at_ms` (or a `drive` over a span) and the checks after it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    note: Option<String>,
    /// The step's time; default: the previous step's.
    at_ms: Option<u64>,
    #[serde(default)]
    add: Vec<NodeId>,
    #[serde(default)]
    remove: Vec<NodeId>,
    /// Expected `remove_node` result per removed node (true = was tracked); default all true.
    removed: Option<bool>,
    heartbeat: Option<HeartbeatStep>,
    #[serde(default)]
    tick: bool,
    drive: Option<Drive>,
    /// The exact transitions of this step's tick(s); default: none.
    #[serde(default)]
    transitions: Vec<ExpectedTransition>,
    /// With `drive`: expected counts instead of (or besides) the exact list.
    #[serde(default)]
    counts: Vec<Count>,
    /// With `drive`: skip the exact `transitions` comparison (use `counts`).
    #[serde(default)]
    any_transitions: bool,
    #[serde(default)]
    state: Vec<ExpectedState>,
    /// Nodes `state()` must not know.
    #[serde(default)]
    absent: Vec<NodeId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatStep {
    node: NodeId,
    /// Default: one above the highest sequence number this story sent the node.
    seq: Option<u64>,
    /// "accepted" (default), "stale" or "unknown".
    expect: Option<String>,
}

/// Ticks every `every_ms` from `from_ms` while `< until_ms`; before each tick every node in
/// `nodes` sends a heartbeat (auto sequence number) if `(t − from_ms) % period_ms < on_ms`
/// (always, without `period_ms`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Drive {
    from_ms: u64,
    until_ms: u64,
    every_ms: u64,
    #[serde(default)]
    nodes: Vec<NodeId>,
    period_ms: Option<u64>,
    on_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedTransition {
    node: NodeId,
    from: Health,
    to: Health,
    /// Default: the step's `at_ms`.
    at_ms: Option<u64>,
    last_heartbeat_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Count {
    node: NodeId,
    from: Health,
    to: Health,
    n: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedState {
    node: NodeId,
    health: Health,
    last_heartbeat_ms: Option<u64>,
    since_ms: Option<u64>,
    held_down: Option<bool>,
}

/// The runner's memory of a story in progress.
struct Run {
    detector: FailureDetector,
    /// Highest sequence number sent per node.
    seq: BTreeMap<NodeId, u64>,
    /// Health last reported (or initial Up) per tracked node.
    reported: BTreeMap<NodeId, Health>,
    now_ms: u64,
}

impl Run {
    fn tick(&mut self, now_ms: u64, ctx: &str) -> Vec<Transition> {
        let out = self.detector.tick(now_ms);
        for pair in out.windows(2) {
            assert!(
                pair[0].node < pair[1].node,
                "{ctx}: not in node id order: {out:?}"
            );
        }
        for t in &out {
            assert_eq!(t.at_ms, now_ms, "{ctx}: at_ms is the tick's time");
            assert_ne!(t.from, t.to, "{ctx}: a transition changes something");
            let last = self.reported.insert(t.node, t.to);
            assert_eq!(
                last,
                Some(t.from),
                "{ctx}: from must be the last reported health"
            );
        }
        for (&id, &health) in &self.reported {
            let view = self.detector.state(id).expect("reported nodes are tracked");
            assert_eq!(view.health, health, "{ctx}: state of node {id} after tick");
        }
        out
    }

    fn heartbeat(&mut self, hb: &HeartbeatStep, now_ms: u64, ctx: &str) {
        let next = self.seq.get(&hb.node).map_or(1, |s| s + 1);
        let seq = hb.seq.unwrap_or(next);
        let sent = self.seq.entry(hb.node).or_insert(0);
        *sent = (*sent).max(seq);
        let outcome = self.detector.heartbeat(hb.node, seq, now_ms);
        let got = match outcome {
            HeartbeatOutcome::Accepted => "accepted",
            HeartbeatOutcome::Stale { .. } => "stale",
            HeartbeatOutcome::Unconfirmed { .. } => "unconfirmed",
            HeartbeatOutcome::Unknown => "unknown",
        };
        let want = hb.expect.as_deref().unwrap_or("accepted");
        assert_eq!(got, want, "{ctx}: heartbeat {seq} from {}", hb.node);
    }

    fn drive(&mut self, d: &Drive, ctx: &str) -> Vec<Transition> {
        assert!(d.every_ms > 0 && d.from_ms < d.until_ms, "{ctx}: bad drive");
        let mut out = Vec::new();
        let mut t = d.from_ms;
        while t < d.until_ms {
            let on = match (d.period_ms, d.on_ms) {
                (Some(period), Some(on)) => (t - d.from_ms) % period < on,
                _ => true,
            };
            if on {
                for &node in &d.nodes {
                    let hb = HeartbeatStep {
                        node,
                        seq: None,
                        expect: None,
                    };
                    self.heartbeat(&hb, t, ctx);
                }
            }
            out.extend(self.tick(t, ctx));
            t += d.every_ms;
        }
        self.now_ms = t - d.every_ms;
        out
    }
}

fn run_step(run: &mut Run, step: &Step, ctx: &str) {
    let now_ms = step.at_ms.unwrap_or(run.now_ms);
    run.now_ms = now_ms;
    for &id in &step.add {
        run.detector
            .add_node(id, now_ms)
            .unwrap_or_else(|e| panic!("{ctx}: add {id}: {e}"));
        run.reported.insert(id, Health::Up);
    }
    for &id in &step.remove {
        let was = run.detector.remove_node(id).is_some();
        assert_eq!(was, step.removed.unwrap_or(true), "{ctx}: remove {id}");
        run.reported.remove(&id);
    }
    if let Some(hb) = &step.heartbeat {
        run.heartbeat(hb, now_ms, ctx);
    }
    let mut got = Vec::new();
    if step.tick {
        got.extend(run.tick(now_ms, ctx));
    }
    if let Some(d) = &step.drive {
        got.extend(run.drive(d, ctx));
    }
    check_transitions(step, &got, now_ms, ctx);
    check_states(run, step, ctx);
}

fn check_transitions(step: &Step, got: &[Transition], now_ms: u64, ctx: &str) {
    if !step.any_transitions {
        let brief: Vec<_> = got
            .iter()
            .map(|t| (t.node, t.from, t.to, t.at_ms))
            .collect();
        assert_eq!(
            got.len(),
            step.transitions.len(),
            "{ctx}: transitions {brief:?}"
        );
        for (g, w) in got.iter().zip(&step.transitions) {
            let want = (w.node, w.from, w.to, w.at_ms.unwrap_or(now_ms));
            assert_eq!(
                (g.node, g.from, g.to, g.at_ms),
                want,
                "{ctx}: transitions {brief:?}"
            );
            if let Some(last) = w.last_heartbeat_ms {
                assert_eq!(
                    g.last_heartbeat_ms, last,
                    "{ctx}: last_heartbeat_ms of {g:?}"
                );
            }
        }
    }
    for c in &step.counts {
        let n = got
            .iter()
            .filter(|t| (t.node, t.from, t.to) == (c.node, c.from, c.to))
            .count();
        assert_eq!(
            n, c.n,
            "{ctx}: count of {} {:?} -> {:?}",
            c.node, c.from, c.to
        );
    }
}

fn check_states(run: &Run, step: &Step, ctx: &str) {
    for s in &step.state {
        let view = run
            .detector
            .state(s.node)
            .unwrap_or_else(|| panic!("{ctx}: {} unknown", s.node));
        assert_eq!(view.health, s.health, "{ctx}: health of {}", s.node);
        let checks = [
            (
                "last_heartbeat_ms",
                s.last_heartbeat_ms,
                view.last_heartbeat_ms,
            ),
            ("since_ms", s.since_ms, view.since_ms),
        ];
        for (name, want, got) in checks {
            if let Some(want) = want {
                assert_eq!(got, want, "{ctx}: {name} of {}", s.node);
            }
        }
        if let Some(held) = s.held_down {
            assert_eq!(view.held_down, held, "{ctx}: held_down of {}", s.node);
        }
    }
    for &id in &step.absent {
        assert_eq!(
            run.detector.state(id),
            None,
            "{ctx}: node {id} must be unknown"
        );
    }
}

fn run_file(path: &Path) {
    let text = fs::read_to_string(path).expect("read test vector");
    let v: Vector = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let detector = FailureDetector::new(&v.config).expect("vector config is valid");
    let mut run = Run {
        detector,
        seq: BTreeMap::new(),
        reported: BTreeMap::new(),
        now_ms: 0,
    };
    for (i, step) in v.step.iter().enumerate() {
        let note = step.note.as_deref().unwrap_or("");
        let ctx = format!("{} step {} ({note})", path.display(), i + 1);
        run_step(&mut run, step, &ctx);
    }
}

fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("testdata dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn detector_vectors() {
    let files = vector_files();
    assert!(
        files.len() >= 9,
        "expected the full set of vectors, found {}",
        files.len()
    );
    for path in files {
        eprintln!("vector {}", path.display());
        run_file(&path);
    }
}
