//! What the promise-1 stories share: the `nines` binary, reading the counters' own timestamped
//! logs (`NINES_COUNTER_DIR`) as believed-active intervals, the check that no two components
//! believed themselves active at once, and reading `nines amf status -o json`.
#![allow(dead_code)] // each story file uses its own part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_nines");
pub const LONG: Duration = Duration::from_secs(60);
pub const SI: &str = "counter-si";

pub fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/model.toml")
}

pub fn nines(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run nines")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// One interval during which a component believed it was active for an SI: from its `set SI
/// active` line to its next line that gives the SI up (another HA state, remove, terminate), or
/// `None` when it never gave it up in its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Believed {
    pub component: String,
    pub si: String,
    pub epoch: u64,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

/// Every believed-active interval in the counters' logs (`<ms> <event> <si> <value> <epoch>`).
pub fn believed_active(dir: &Path) -> Vec<Believed> {
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
                "terminate" | "started" => {
                    // Terminate releases every SI; `started` is a new process (the counter notes
                    // it before its session, whose callbacks may come before `registered`).
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

/// Every counter log, whole, for a failure message.
pub fn raw_logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).expect("counter dir") {
        let p = e.expect("entry").path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        out.push_str(&format!("== {}\n{text}", p.display()));
    }
    out
}

/// No two components believed themselves active for one SI at once. `ended` maps a component
/// whose process the story killed to when it did (its interval ends there at the latest); an
/// interval still open otherwise lasts to the end of the story. Fails when fewer than
/// `components_min` components were ever active: a check that saw nothing proves nothing.
pub fn assert_never_two_actives(dir: &Path, ended: &BTreeMap<String, u64>, components_min: usize) {
    let end_of_story = now_ms();
    let intervals = believed_active(dir);
    let active_components: std::collections::BTreeSet<&str> =
        intervals.iter().map(|b| b.component.as_str()).collect();
    assert!(
        active_components.len() >= components_min,
        "only {active_components:?} ever believed itself active; the story needs \
         {components_min}: {intervals:#?}\nthe counters' logs:\n{}",
        raw_logs(dir)
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
            if overlap {
                panic!(
                    "two components believed themselves active for {} at once: {a:?} and \
                     {b:?}\nall intervals: {intervals:#?}\nthe counters' logs:\n{}",
                    a.si,
                    raw_logs(dir)
                );
            }
        }
    }
}

/// The SI's confirmed (nothing pending) active SU and its epoch, with one standby.
pub fn settled(st: &Value) -> Option<(String, u64)> {
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
pub fn active_su(st: &Value) -> Option<(String, u64)> {
    let si = st["sis"].as_array()?.iter().find(|s| s["name"] == SI)?;
    let a = si["assignments"].as_array()?;
    let x = a.iter().find(|x| x["ha_state"] == "active")?;
    Some((x["su"].as_str()?.to_string(), x["epoch"].as_u64()?))
}

pub fn node_of(st: &Value, su: &str) -> u64 {
    let node = st["sus"]
        .as_array()
        .expect("sus")
        .iter()
        .find(|s| s["name"] == su)
        .and_then(|s| s["node"].as_str())
        .expect("the SU's node");
    node.trim_start_matches('n').parse().expect("node nN")
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal the agent");
}

/// The component and pid of SU `su`.
pub fn component_of(st: &Value, su: &str) -> (String, u32) {
    let c = st["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["su"] == su)
        .expect("the SU's component");
    let name = c["name"].as_str().expect("name").to_string();
    (name, c["pid"].as_u64().unwrap_or(0) as u32)
}
