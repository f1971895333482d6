//! AMF on three real agents with the counter example (deploy/local/model.toml): the model is
//! applied at first start, the 2N SG gets one active and one standby; killing the active
//! component (kill -9) or its whole node promotes the standby, which resumes from the checkpoint
//! with nothing acknowledged lost and never overlaps the old active; admin operations and bad
//! input behave as an operator expects.

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

/// One line of the counter's log: (ms, event, si, value or HA state, epoch).
type LogLine = (u64, String, String, String, u64);

struct Amf {
    c: LocalCluster,
    counter_dir: tempfile::TempDir,
}

impl Amf {
    fn start() -> Amf {
        Amf::start_with(model_path())
    }

    fn start_with(model: PathBuf) -> Amf {
        let counter_dir = tempfile::tempdir().expect("tempdir");
        let opts = LocalOptions {
            amf_model: Some(model),
            env: vec![(
                "NINES_COUNTER_DIR".into(),
                counter_dir.path().display().to_string(),
            )],
            ..Default::default()
        };
        let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
        Amf { c, counter_dir }
    }

    fn endpoints(&self) -> String {
        self.c.endpoints().join(",")
    }

    fn status(&self) -> Option<Value> {
        let out = nines(&[
            "amf",
            "status",
            "-o",
            "json",
            "--endpoints",
            &self.endpoints(),
        ]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Wait until `pred` holds on the status; panics with the last status and logs otherwise.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LONG;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(st) = self.status() {
                if pred(&st) {
                    return st;
                }
                last = st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let history = nines(&["amf", "history", "--endpoints", &self.endpoints()]);
        panic!(
            "{what}: not within {LONG:?}\nlast status: {last:#}\nhistory:\n{}\ncounter logs: \
             {:#?}",
            String::from_utf8_lossy(&history.stdout),
            self.counter_logs()
        );
    }

    /// No agent restarted in these stories, so no component may have been reported as left
    /// unsupervised (that would be a director misreading its own lagging view).
    fn assert_no_spurious_faults(&self) {
        let out = nines(&["amf", "history", "--endpoints", &self.endpoints()]);
        let h = String::from_utf8_lossy(&out.stdout);
        assert!(!h.contains("no longer supervised"), "{h}");
    }

    /// The counter's log lines per component: (ms, event, si, value, epoch).
    fn counter_logs(&self) -> BTreeMap<String, Vec<LogLine>> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(self.counter_dir.path()).expect("counter dir") {
            let p = e.expect("entry").path();
            let comp = p.file_stem().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines = text
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(' ').collect();
                    (f.len() >= 5).then(|| {
                        (
                            f[0].parse().unwrap_or(0),
                            f[1].to_string(),
                            f[2].to_string(),
                            f[3].to_string(),
                            f[4].parse().unwrap_or(0),
                        )
                    })
                })
                .collect();
            out.insert(comp, lines);
        }
        out
    }
}

/// The SI's confirmed (nothing pending) active and standby SUs, with the active's epoch.
fn settled(st: &Value) -> Option<(String, String, u64)> {
    let si = st["sis"].as_array()?.iter().find(|s| s["name"] == SI)?;
    let a = si["assignments"].as_array()?;
    if a.iter().any(|x| !x["pending"].is_null()) {
        return None;
    }
    let active: Vec<&Value> = a.iter().filter(|x| x["ha_state"] == "active").collect();
    let standby: Vec<&Value> = a.iter().filter(|x| x["ha_state"] == "standby").collect();
    if active.len() != 1 || standby.len() != 1 {
        return None;
    }
    Some((
        active[0]["su"].as_str()?.to_string(),
        standby[0]["su"].as_str()?.to_string(),
        active[0]["epoch"].as_u64()?,
    ))
}

fn component_of(st: &Value, su: &str) -> (String, u32) {
    let c = st["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["su"] == su)
        .expect("the SU's component");
    (
        c["name"].as_str().expect("name").to_string(),
        c["pid"].as_u64().map(|p| p as u32).unwrap_or(0),
    )
}

fn node_id(st: &Value, su: &str) -> u64 {
    let node = st["sus"]
        .as_array()
        .expect("sus")
        .iter()
        .find(|s| s["name"] == su)
        .and_then(|s| s["node"].as_str())
        .expect("the SU's node");
    node.trim_start_matches('n').parse().expect("node nN")
}

/// The last value an instance wrote (acknowledged), and the first value the next one resumed.
fn check_no_loss_and_no_overlap(amf: &Amf, old: &str, new: &str, killed_at_ms: u64) {
    let logs = amf.counter_logs();
    let old_lines = logs.get(old).cloned().unwrap_or_default();
    let new_lines = logs.get(new).cloned().unwrap_or_default();
    // A check that saw nothing proves nothing: the old active must have counted.
    assert!(
        old_lines.iter().any(|l| l.1 == "set" && l.3 == "active")
            && old_lines.iter().any(|l| l.1 == "wrote"),
        "{old} never logged being active and writing, so the story checks nothing: {logs:#?}"
    );
    let last_written: u64 = old_lines
        .iter()
        .filter(|l| l.1 == "wrote")
        .map(|l| l.3.parse().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let resumed = new_lines
        .iter()
        .find(|l| l.1 == "resumed" && l.0 >= killed_at_ms)
        .map(|l| l.3.parse::<u64>().unwrap_or(0))
        .expect("the new active resumed from the checkpoint");
    assert!(
        resumed >= last_written,
        "the new active resumed at {resumed} but {old} had an acknowledged write of \
         {last_written}: an acknowledged write was lost"
    );
    let became_active = new_lines
        .iter()
        .filter(|l| l.1 == "set" && l.3 == "active")
        .map(|l| l.0)
        .max()
        .expect("the new active was set active");
    assert!(
        became_active >= killed_at_ms,
        "{new} became active at {became_active} ms, before {old} was killed at {killed_at_ms} \
         ms: two actives overlapped"
    );
    let old_after = old_lines
        .iter()
        .any(|l| l.1 == "wrote" && l.0 > became_active);
    assert!(!old_after, "{old} still wrote after {new} became active");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_is_applied_and_a_killed_active_component_fails_over_without_loss() {
    let amf = Amf::start();
    eprintln!("phase: wait for active + standby");
    let st = amf
        .wait_for("2N assignment", |s| settled(s).is_some())
        .await;
    let (active, standby, epoch) = settled(&st).expect("settled");
    assert_eq!(active, "counter-1", "the best-ranked SU is active: {st:#}");
    assert_eq!(standby, "counter-2");
    assert!(epoch > 0);
    for c in st["components"].as_array().expect("components") {
        assert_eq!(c["presence"], "instantiated", "{c}");
        assert!(c["pid"].as_u64().is_some(), "{c}");
    }
    for s in st["sus"].as_array().expect("sus") {
        assert_eq!(s["admin_state"], "unlocked");
        assert_eq!(s["oper_state"], "enabled");
    }

    eprintln!("phase: let the active count, then kill -9 its component");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (old_comp, pid) = component_of(&st, &active);
    assert!(pid > 0);
    let killed_at = now_ms();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the active component");
    let st = amf
        .wait_for("standby promoted", |s| {
            settled(s).is_some_and(|(a, _, e)| a != active && e > epoch)
        })
        .await;
    let (new_active, new_standby, _) = settled(&st).expect("settled");
    assert_eq!(new_active, standby, "the standby took over: {st:#}");
    assert_ne!(
        new_standby, active,
        "the failed SU is not standby right away"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (new_comp, _) = component_of(&st, &new_active);
    check_no_loss_and_no_overlap(&amf, &old_comp, &new_comp, killed_at);

    eprintln!("phase: history names the detection and the decision");
    let out = nines(&[
        "amf",
        "history",
        "-o",
        "json",
        "--endpoints",
        &amf.endpoints(),
    ]);
    let h: Value = serde_json::from_slice(&out.stdout).expect("history json");
    let kinds: Vec<&str> = h
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"detected") && kinds.contains(&"decided"),
        "{h:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_active_node_promotes_the_standby_and_admin_operations_work() {
    let mut amf = Amf::start();
    let st = amf
        .wait_for("2N assignment", |s| settled(s).is_some())
        .await;
    let (active, standby, epoch) = settled(&st).expect("settled");
    let ep = amf.endpoints();

    eprintln!("phase: switchover (si-swap)");
    let out = nines(&["admin", "si-swap", SI, "--endpoints", &ep]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = amf
        .wait_for("swapped", |s| {
            settled(s).is_some_and(|(a, b, _)| a == standby && b == active)
        })
        .await;
    let (active, standby, epoch2) = settled(&st).expect("settled");
    assert!(epoch2 > epoch);
    let _ = epoch2;

    eprintln!("phase: bad input is refused with a reason, nothing changes");
    let out = nines(&["admin", "lock", "su", "no-such-su", "--endpoints", &ep]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-su"), "{err}");
    let bad = amf.counter_dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[sg]]\nname = \"x\"\nredundancy = \"2N\"\n[[su]]\nname = \"x-1\"\nsg = \"x\"\nnode = \"n9\"\n",
    )
    .expect("write bad model");
    let out = nines(&[
        "admin",
        "model",
        "apply",
        bad.to_str().unwrap(),
        "--endpoints",
        &ep,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x-1") && err.contains("n9"), "{err}");
    std::fs::remove_file(&bad).expect("rm");
    let out = nines(&[
        "admin",
        "model",
        "apply",
        model_path().to_str().unwrap(),
        "--endpoints",
        &ep,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    let st = amf.status().expect("status");
    assert_eq!(
        settled(&st).map(|(a, b, _)| (a, b)),
        Some((active.clone(), standby.clone()))
    );

    eprintln!("phase: lock the active's SU: switchover without loss");
    let locked_at = now_ms();
    let out = nines(&["admin", "lock", "su", &active, "--endpoints", &ep]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = amf
        .wait_for("switched over by the lock", |s| {
            settled(s).is_some_and(|(a, b, _)| a == standby && b != active)
        })
        .await;
    let (old_comp, _) = component_of(&st, &active);
    let (new_comp, _) = component_of(&st, &standby);
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_no_loss_and_no_overlap(&amf, &old_comp, &new_comp, locked_at);
    let out = nines(&["admin", "unlock", "su", &active, "--endpoints", &ep]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = amf
        .wait_for("unlocked SU back in service", |s| {
            s["sus"]
                .as_array()
                .is_some_and(|v| v.iter().all(|x| x["admin_state"] == "unlocked"))
                && settled(s).is_some()
        })
        .await;
    let (_, _, epoch2) = settled(&st).expect("settled");

    eprintln!("phase: kill -9 the active's node");
    let (active, standby, _) = settled(&st).expect("settled");
    let node = node_id(&st, &active);
    let killed_at = now_ms();
    amf.c.kill(node).expect("kill the active's agent");
    let st = amf
        .wait_for("standby promoted after node loss", |s| {
            settled(s).is_some_and(|(a, _, e)| a == standby && e > epoch2)
        })
        .await;
    let (_, new_standby, _) = settled(&st).expect("settled");
    assert_ne!(new_standby, active, "the lost node's SU is not standby");
    amf.assert_no_spurious_faults();
    let (old_comp, _) = component_of(&st, &active);
    let (new_comp, _) = component_of(&st, &standby);
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_no_loss_and_no_overlap(&amf, &old_comp, &new_comp, killed_at);
}

/// The deploy model with a fault injected into one component (and extra component keys).
fn faulty_model(dir: &Path, comp: &str, fault: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(model_path()).expect("model");
    let anchor = format!("name = \"{comp}\"\n");
    assert!(text.contains(&anchor));
    let text = text.replace(
        &anchor,
        &format!("{anchor}env = {{ NINES_COUNTER_FAULT = \"{fault}\" }}\n{extra}"),
    );
    let p = dir.join(format!("model-{fault}.toml"));
    std::fs::write(&p, text).expect("write model");
    p
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_ignoring_terminate_is_cleaned_up_and_a_hung_healthcheck_recovers() {
    let models = tempfile::tempdir().expect("tempdir");
    let model = faulty_model(
        models.path(),
        "counter-3-app",
        "ignore-terminate",
        "terminate_timeout_ms = 500\ncleanup_timeout_ms = 2000\n",
    );
    let amf = Amf::start_with(model);
    let st = amf
        .wait_for("2N assignment", |s| settled(s).is_some())
        .await;
    let ep = amf.endpoints();

    eprintln!("phase: lock + lock-instantiation of the spare whose component ignores terminate");
    let (_, pid) = component_of(&st, "counter-3");
    assert!(pid > 0 && pid_alive(pid));
    for op in ["lock", "lock-instantiation"] {
        let out = nines(&["admin", op, "su", "counter-3", "--endpoints", &ep]);
        assert!(
            out.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    amf.wait_for("counter-3 terminated", |s| {
        s["components"].as_array().is_some_and(|v| {
            v.iter().any(|c| {
                c["name"] == "counter-3-app"
                    && c["presence"] == "uninstantiated"
                    && c["pid"].is_null()
            })
        })
    })
    .await;
    let deadline = Instant::now() + LONG;
    while pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !pid_alive(pid),
        "the component that ignored terminate is still running"
    );
    let logs = amf.counter_logs();
    assert!(
        logs["counter-3-app"]
            .iter()
            .any(|l| l.1 == "terminate-ignored"),
        "the terminate callback was invoked and ignored: {logs:#?}"
    );
    drop(amf);

    eprintln!("phase: a hung healthcheck on the active triggers its failover");
    let model = faulty_model(
        models.path(),
        "counter-1-app",
        "hang-healthcheck",
        "healthcheck_period_ms = 300\nhealthcheck_timeout_ms = 300\n",
    );
    let amf = Amf::start_with(model);
    let st = amf
        .wait_for("the active moved off the hung SU", |s| {
            settled(s).is_some_and(|(a, _, _)| a != "counter-1")
        })
        .await;
    let out = nines(&[
        "amf",
        "history",
        "-o",
        "json",
        "--endpoints",
        &amf.endpoints(),
    ]);
    let h = String::from_utf8_lossy(&out.stdout);
    assert!(h.contains("healthcheck failed"), "{h}");
    // The hung instance kept counting until its agent killed it; the kill comes before the
    // standby is made active, so the two never overlap and nothing acknowledged is lost.
    let (new_active, _, _) = settled(&st).expect("settled");
    let (new_comp, _) = component_of(&st, &new_active);
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_no_loss_and_no_overlap(&amf, "counter-1-app", &new_comp, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_stuck_active_is_caught_by_its_watchdog_and_its_standby_takes_over() {
    let amf = Amf::start();
    let st = amf
        .wait_for("2N assignment", |s| settled(s).is_some())
        .await;
    let (active, standby, epoch) = settled(&st).expect("settled");

    eprintln!("phase: every running component kicks its watchdog");
    let st = amf
        .wait_for("watchdogs reported", |s| {
            s["components"].as_array().is_some_and(|v| {
                v.iter()
                    .all(|c| c["watchdog"] == "ok" && c["watchdog_ms"] == 1500)
            })
        })
        .await;
    for c in st["components"].as_array().expect("components") {
        let age = c["last_kick_age_ms"].as_u64().expect("kick age");
        assert!(age < 1500, "a healthy component kicked {age} ms ago: {c}");
    }

    eprintln!("phase: SIGSTOP the active component");
    let (comp, pid) = component_of(&st, &active);
    let stopped_at = now_ms();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    amf.wait_for("the standby took over", |s| {
        settled(s).is_some_and(|(a, _, e)| a == standby && e > epoch)
    })
    .await;
    let out = nines(&[
        "amf",
        "history",
        "-o",
        "json",
        "--endpoints",
        &amf.endpoints(),
    ]);
    let h: Value = serde_json::from_slice(&out.stdout).expect("history json");
    let entries = h.as_array().expect("entries");
    let expiry = entries
        .iter()
        .find(|e| {
            e["kind"] == "detected"
                && e["entity"] == comp.as_str()
                && e["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("watchdog expired"))
        })
        .unwrap_or_else(|| panic!("no watchdog expiry of {comp} in {h:#}"));
    let detected = expiry["time_ms"].as_u64().expect("time");
    assert!(
        detected >= stopped_at + 1_000,
        "the watchdog fired {} ms after the stop, before a period without kicks had passed",
        detected.saturating_sub(stopped_at)
    );
    eprintln!(
        "measured: SIGSTOP → watchdog expiry {} ms (period 1500 ms)",
        detected - stopped_at
    );
    let deadline = Instant::now() + LONG;
    while pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!pid_alive(pid), "the stopped component was not cleaned up");
    drop(amf);

    eprintln!("phase: an active whose work loop stalls (session still answering) is caught");
    let models = tempfile::tempdir().expect("tempdir");
    let model = faulty_model(models.path(), "counter-1-app", "stall-loop", "");
    let amf = Amf::start_with(model);
    amf.wait_for("the active moved off the stalled SU", |s| {
        settled(s).is_some_and(|(a, _, _)| a != "counter-1")
    })
    .await;
    let out = nines(&["amf", "history", "--endpoints", &amf.endpoints()]);
    let h = String::from_utf8_lossy(&out.stdout);
    assert!(h.contains("watchdog expired"), "{h}");
    let logs = amf.counter_logs();
    assert!(
        logs["counter-1-app"].iter().any(|l| l.1 == "stalled"),
        "the stall was injected: {logs:#?}"
    );
}
