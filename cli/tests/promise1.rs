//! Promise 1 where the components stand: three real agents running the counter example as a 2N
//! group, each counter logging its own HA transitions with timestamps (`NINES_COUNTER_DIR`).
//! Each story injects a fault and then checks, from the components' own logs, that no two
//! components ever believed themselves active for the SI at the same time.
//!
//! - The agent hosting the active is paused (SIGSTOP) for 3 s while its components keep running:
//!   the active's SDK stops it at its lease deadline on its own, before the standby is made
//!   active elsewhere, and after the pause the cluster converges again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nines_cli::local::{LocalCluster, LocalOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(60);
const SI: &str = "counter-si";

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/model.toml")
}

fn nines(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run nines")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// One interval during which a component believed it was active for an SI: from its `set SI
/// active` line to its next line that gives the SI up (another HA state, remove, terminate), or
/// `None` when it never gave it up in its log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Believed {
    component: String,
    si: String,
    epoch: u64,
    from_ms: u64,
    to_ms: Option<u64>,
}

/// Every believed-active interval in the counters' logs (`<ms> <event> <si> <value> <epoch>`).
fn believed_active(dir: &Path) -> Vec<Believed> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("counter dir") {
        let p = e.expect("entry").path();
        let component = p.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let mut open: BTreeMap<String, Believed> = BTreeMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 5 {
                continue;
            }
            let (ms, event, si) = (f[0].parse().unwrap_or(0), f[1], f[2]);
            let gives_up = match event {
                "set" => f[3] != "active",
                "remove" => true,
                "terminate" | "registered" => {
                    // Terminate releases every SI; a new registration is a new process.
                    for (_, mut b) in std::mem::take(&mut open) {
                        b.to_ms = Some(ms);
                        out.push(b);
                    }
                    continue;
                }
                _ => false,
            };
            if gives_up {
                if let Some(mut b) = open.remove(si) {
                    b.to_ms = Some(ms);
                    out.push(b);
                }
            } else if event == "set" && !open.contains_key(si) {
                let b = Believed {
                    component: component.clone(),
                    si: si.to_string(),
                    epoch: f[4].parse().unwrap_or(0),
                    from_ms: ms,
                    to_ms: None,
                };
                open.insert(si.to_string(), b);
            }
        }
        out.extend(open.into_values());
    }
    out.sort_by_key(|b| b.from_ms);
    out
}

/// No two components believed themselves active for one SI at once. `ended` maps a component
/// whose process the story killed to when it did (its interval ends there at the latest); an
/// interval still open otherwise lasts to the end of the story. Fails when fewer than
/// `components_min` components were ever active: a check that saw nothing proves nothing.
fn assert_never_two_actives(dir: &Path, ended: &BTreeMap<String, u64>, components_min: usize) {
    let end_of_story = now_ms();
    let intervals = believed_active(dir);
    let active_components: std::collections::BTreeSet<&str> =
        intervals.iter().map(|b| b.component.as_str()).collect();
    assert!(
        active_components.len() >= components_min,
        "only {active_components:?} ever believed itself active; the story needs \
         {components_min}: {intervals:#?}"
    );
    let end = |b: &Believed| {
        let killed = ended.get(&b.component).copied().unwrap_or(u64::MAX);
        b.to_ms.unwrap_or(end_of_story).min(killed)
    };
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            if a.si != b.si || a.component == b.component {
                continue;
            }
            let overlap = a.from_ms < end(b) && b.from_ms < end(a);
            assert!(
                !overlap,
                "two components believed themselves active for {} at once: {a:?} and {b:?}\n\
                 all intervals: {intervals:#?}",
                a.si
            );
        }
    }
}

struct Story {
    c: LocalCluster,
    counter_dir: tempfile::TempDir,
}

impl Story {
    fn start() -> Story {
        let counter_dir = tempfile::tempdir().expect("tempdir");
        let opts = LocalOptions {
            amf_model: Some(model_path()),
            env: vec![(
                "NINES_COUNTER_DIR".into(),
                counter_dir.path().display().to_string(),
            )],
            ..Default::default()
        };
        let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
        Story { c, counter_dir }
    }

    /// `nines amf status -o json` through `endpoints`.
    fn status(&self, endpoints: &[String]) -> Option<Value> {
        let eps = endpoints.join(",");
        let out = nines(&["amf", "status", "-o", "json", "--endpoints", &eps]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    async fn wait_for(&self, what: &str, eps: &[String], pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LONG;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(st) = self.status(eps) {
                if pred(&st) {
                    return st;
                }
                last = st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{what}: not within {LONG:?}\nlast status: {last:#}\ncounter intervals: {:#?}",
            believed_active(self.counter_dir.path())
        );
    }
}

/// The SI's confirmed (nothing pending) active SU and its epoch, with one standby.
fn settled(st: &Value) -> Option<(String, u64)> {
    let si = st["sis"].as_array()?.iter().find(|s| s["name"] == SI)?;
    let a = si["assignments"].as_array()?;
    if a.iter().any(|x| !x["pending"].is_null()) {
        return None;
    }
    let active: Vec<&Value> = a.iter().filter(|x| x["ha_state"] == "active").collect();
    let standby = a.iter().filter(|x| x["ha_state"] == "standby").count();
    (active.len() == 1 && standby == 1).then(|| {
        (
            active[0]["su"].as_str().unwrap_or_default().to_string(),
            active[0]["epoch"].as_u64().unwrap_or(0),
        )
    })
}

/// The SI's active SU, pending or not.
fn active_su(st: &Value) -> Option<(String, u64)> {
    let si = st["sis"].as_array()?.iter().find(|s| s["name"] == SI)?;
    let a = si["assignments"].as_array()?;
    let x = a.iter().find(|x| x["ha_state"] == "active")?;
    Some((x["su"].as_str()?.to_string(), x["epoch"].as_u64()?))
}

fn node_of(st: &Value, su: &str) -> u64 {
    let node = st["sus"]
        .as_array()
        .expect("sus")
        .iter()
        .find(|s| s["name"] == su)
        .and_then(|s| s["node"].as_str())
        .expect("the SU's node");
    node.trim_start_matches('n').parse().expect("node nN")
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal the agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agents_active_stops_at_its_lease_before_the_standby_takes_over() {
    let story = Story::start();
    let all = story.c.endpoints();
    eprintln!("phase: wait for active + standby, let the active count");
    let st = story
        .wait_for("2N assignment", &all, |s| settled(s).is_some())
        .await;
    let (active, epoch) = settled(&st).expect("settled");
    let node = node_of(&st, &active);
    tokio::time::sleep(Duration::from_millis(800)).await;

    eprintln!("phase: SIGSTOP the agent of node {node} (its components keep running) for 3 s");
    let pid = story.c.pid(node).expect("the agent runs");
    let others: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != node)
        .map(|(_, e)| e.clone())
        .collect();
    let paused_at = Instant::now();
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let moved = story
        .wait_for("the standby made active elsewhere", &others, |s| {
            active_su(s).is_some_and(|(su, e)| su != active && e > epoch)
        })
        .await;
    let pause = Duration::from_secs(3);
    tokio::time::sleep(pause.saturating_sub(paused_at.elapsed())).await;
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    eprintln!("phase: resumed; the cluster settles again");
    let (new_active, _) = active_su(&moved).expect("an active");
    story
        .wait_for("settled after the pause", &all, |s| {
            settled(s).is_some_and(|(su, _)| su == new_active)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("phase: from the counters' own logs, never two actives");
    assert_never_two_actives(story.counter_dir.path(), &BTreeMap::new(), 2);
    let intervals = believed_active(story.counter_dir.path());
    let old = intervals
        .iter()
        .find(|b| b.epoch == epoch)
        .expect("the old active's interval");
    assert!(
        old.to_ms.is_some(),
        "the old active never stopped believing it was active: {intervals:#?}"
    );
}

#[test]
fn the_interval_check_fails_on_overlap_and_on_seeing_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(format!("{name}.log")), text).expect("write log")
    };
    write(
        "a",
        "1000 registered n1 - 0\n1100 set counter-si active 5\n1500 set counter-si quiesced 5\n",
    );
    write(
        "b",
        "1000 registered n2 - 0\n1200 set counter-si standby 5\n1500 set counter-si active 6\n",
    );
    let none = BTreeMap::new();
    assert_never_two_actives(dir.path(), &none, 2);
    let three = std::panic::catch_unwind(|| assert_never_two_actives(dir.path(), &none, 3));
    assert!(
        three.is_err(),
        "fewer active components than needed must fail"
    );
    write(
        "b",
        "1000 registered n2 - 0\n1200 set counter-si standby 5\n1499 set counter-si active 6\n",
    );
    let overlap = std::panic::catch_unwind(|| assert_never_two_actives(dir.path(), &none, 2));
    assert!(overlap.is_err(), "an overlap of 1 ms must fail");
    write(
        "a",
        "1000 registered n1 - 0\n1100 set counter-si active 5\n",
    );
    let open = std::panic::catch_unwind(|| assert_never_two_actives(dir.path(), &none, 2));
    assert!(
        open.is_err(),
        "an active that never gave up overlaps its successor"
    );
    let killed = BTreeMap::from([("a".to_string(), 1400)]);
    assert_never_two_actives(dir.path(), &killed, 2);
}
