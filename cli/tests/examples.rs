//! The examples on three real agents, each a story in logged phases:
//!
//! - `examples/events`: alarms of several severities are raised; a subscriber filtering on a
//!   severity (exactly, or by prefix) receives exactly the matching ones in order; a console
//!   watching one source sees its alarm and then the clear; a late console gets only the
//!   alarms still active; a subscriber with a state file resumes where it stopped.
//! - `examples/session-server`: its own `model.toml` (one port per instance) runs it as a 2N
//!   SG; a client counts a session to 5, the active component is killed with SIGKILL, and the
//!   same client reconnects to the new active and continues at 6, served from the checkpoint;
//!   after a switchover (si-swap: the active quiesces and closes first) it continues at 7.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nines_cli::local::{free_port, LocalCluster, LocalOptions};
use nines_example_events::cli::{self as events_cli, Cli};
use nines_example_session_server::SessionClient;
use nines_sdk::EventClient;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nines");
/// Every wait in these stories is bounded by this (generous: the machine is shared).
const LONG: Duration = Duration::from_secs(60);

fn phase(what: &str) {
    eprintln!("--- {what}");
}

// ---------------------------------------------------------------------------------------------
// events

/// A writer the test can read while a subscriber still writes to it.
#[derive(Clone, Default)]
struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("out lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedOut {
    /// The complete lines written so far, as JSON.
    fn json_lines(&self) -> Vec<Value> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("out lock")).to_string();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// `nines-events --endpoints eps --json ARGS`, in this process, into `out` (within `LONG`).
async fn events_into(eps: &str, args: &[&str], out: SharedOut) {
    let mut all = vec!["nines-events", "--endpoints", eps, "--json"];
    all.extend(args);
    let cli = Cli::try_parse_from(&all).unwrap_or_else(|e| panic!("{all:?}: {e}"));
    let mut w = out;
    match tokio::time::timeout(LONG, events_cli::run(cli, &mut w)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{all:?} failed: {e:#}"),
        Err(_) => panic!(
            "{all:?} did not finish within {LONG:?}; output: {:?}",
            w.json_lines()
        ),
    }
}

/// `nines-events ... --json ARGS`: its output lines.
async fn events(eps: &str, args: &[&str]) -> Vec<Value> {
    let out = SharedOut::default();
    events_into(eps, args, out.clone()).await;
    out.json_lines()
}

/// Raise an alarm; its id.
async fn raise(eps: &str, severity: &str, source: &str) -> u64 {
    let out = events(
        eps,
        &[
            "publish",
            "--severity",
            severity,
            "--source",
            source,
            "--text",
            &format!("{severity} on {source}"),
        ],
    )
    .await;
    out[0]["id"].as_u64().expect("the alarm's id")
}

/// (id, severity, source) of each alarm line.
fn alarms(lines: &[Value]) -> Vec<(u64, String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("not an alarm: {l}")),
                l["severity"].as_str().expect("severity").to_string(),
                l["source"].as_str().expect("source").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_example_filters_retains_clears_and_resumes() {
    phase("start 3 agents");
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints().join(",");

    phase("raise alarms of four severities (all retained)");
    let crit = raise(&eps, "critical", "eth0").await;
    let major1 = raise(&eps, "major", "eth1").await;
    let minor = raise(&eps, "minor", "eth2").await;
    let major3 = raise(&eps, "major", "eth3").await;
    assert!(
        crit < major1 && major1 < minor && minor < major3,
        "one order per channel"
    );

    phase("a subscriber filtering severity=major gets exactly the majors, in order");
    let got = alarms(&events(&eps, &["subscribe", "--severity", "major", "--count", "2"]).await);
    assert_eq!(
        got,
        vec![
            (major1, "major".into(), "eth1".into()),
            (major3, "major".into(), "eth3".into())
        ]
    );

    phase("a prefix filter: severity mi*");
    let got = alarms(&events(&eps, &["subscribe", "--severity", "mi*", "--count", "1"]).await);
    assert_eq!(got, vec![(minor, "minor".into(), "eth2".into())]);

    phase("a console on source eth1 sees its alarm, then the clear");
    let watch = SharedOut::default();
    let console = {
        let (eps, watch) = (eps.clone(), watch.clone());
        tokio::spawn(async move {
            events_into(
                &eps,
                &["subscribe", "--source", "eth1", "--count", "2"],
                watch,
            )
            .await
        })
    };
    let deadline = Instant::now() + LONG;
    while watch.json_lines().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the console got nothing within {LONG:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cleared = events(
        &eps,
        &[
            "publish",
            "--clear",
            &major1.to_string(),
            "--source",
            "eth1",
        ],
    )
    .await;
    assert_eq!(cleared[0]["was_retained"], true, "{cleared:?}");
    console.await.expect("console task");
    let lines = watch.json_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["id"].as_u64(), Some(major1));
    assert_eq!(lines[1]["severity"], "cleared");
    assert_eq!(lines[1]["clears"].as_u64(), Some(major1));
    assert_eq!(lines[1]["retained"], false);

    phase("a late console gets only the alarms still active");
    let client = EventClient::connect(&c.endpoints()).await.expect("client");
    let ch = client.channels().await.expect("channels");
    let alarms_ch = ch
        .iter()
        .find(|c| c.name == "alarms")
        .expect("the alarms channel");
    assert_eq!(alarms_ch.retained, 3, "{ch:?}");
    let mut got = alarms(&events(&eps, &["subscribe", "--count", "3"]).await);
    got.sort();
    assert_eq!(
        got,
        vec![
            (crit, "critical".into(), "eth0".into()),
            (minor, "minor".into(), "eth2".into()),
            (major3, "major".into(), "eth3".into())
        ]
    );

    phase("a subscriber with a state file resumes where it stopped");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("console.last");
    let state_arg = state.display().to_string();
    let last = cleared[0]["id"].as_u64().expect("the clear's id");
    let w1 = raise(&eps, "warning", "fan1").await;
    let got = events(
        &eps,
        &[
            "subscribe",
            "--from",
            &last.to_string(),
            "--state-file",
            &state_arg,
            "--count",
            "1",
        ],
    )
    .await;
    assert_eq!(alarms(&got), vec![(w1, "warning".into(), "fan1".into())]);
    assert_eq!(read_number(&state), w1);
    let w2 = raise(&eps, "warning", "fan2").await;
    let got = events(
        &eps,
        &["subscribe", "--state-file", &state_arg, "--count", "1"],
    )
    .await;
    assert_eq!(alarms(&got), vec![(w2, "warning".into(), "fan2".into())]);
    assert_eq!(read_number(&state), w2);
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .expect("state file")
        .trim()
        .parse()
        .expect("a number")
}

// ---------------------------------------------------------------------------------------------
// session-server

const SI: &str = "session-si";

/// The example's model, with one port per instance instead of the shared `listen` attribute.
fn session_model(ports: &[u16; 3]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/session-server/model.toml");
    let mut text = std::fs::read_to_string(&path).expect("examples/session-server/model.toml");
    let shared = "attributes = { listen = \"127.0.0.1:7300\" }";
    assert!(text.contains(shared), "the model's listen attribute moved");
    text = text.replace(shared, "");
    for (i, port) in ports.iter().enumerate() {
        let at = format!("su = \"session-server-{}\"\n", i + 1);
        assert!(
            text.contains(&at),
            "no component for session-server-{}",
            i + 1
        );
        text = text.replace(
            &at,
            &format!("{at}env = {{ NINES_SESSION_LISTEN = \"127.0.0.1:{port}\" }}\n"),
        );
    }
    text
}

fn amf_status(eps: &str) -> Option<Value> {
    let out = Command::new(BIN)
        .args(["amf", "status", "-o", "json", "--endpoints", eps])
        .output()
        .expect("run nines");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The SI's confirmed active SU's component (name, pid), once there is also a standby and
/// nothing is pending.
fn active_component(st: &Value) -> Option<(String, u32)> {
    let si = st["sis"].as_array()?.iter().find(|s| s["name"] == SI)?;
    let a = si["assignments"].as_array()?;
    if a.iter().any(|x| !x["pending"].is_null()) {
        return None;
    }
    let active: Vec<&Value> = a.iter().filter(|x| x["ha_state"] == "active").collect();
    let standbys = a.iter().filter(|x| x["ha_state"] == "standby").count();
    if active.len() != 1 || standbys != 1 {
        return None;
    }
    let su = active[0]["su"].as_str()?;
    let comp = st["components"]
        .as_array()?
        .iter()
        .find(|c| c["su"] == su)?;
    let pid = comp["pid"].as_u64().filter(|p| *p > 0)?;
    Some((comp["name"].as_str()?.to_string(), u32::try_from(pid).ok()?))
}

/// Wait (within `LONG`) for a settled SI whose active component is not `not`.
async fn wait_active(c: &LocalCluster, not: Option<&str>) -> (String, u32) {
    let eps = c.endpoints().join(",");
    let deadline = Instant::now() + LONG;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(st) = amf_status(&eps) {
            if let Some((name, pid)) = active_component(&st) {
                if Some(name.as_str()) != not {
                    return (name, pid);
                }
            }
            last = st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no settled active (other than {not:?}) within {LONG:?}\nlast status: {last:#}\nn1 log:\n{}",
        c.log_tail(1, 40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_server_sessions_survive_a_kill_and_a_switchover() {
    phase("start 3 agents with the session server's model, one port per instance");
    let ports = [
        free_port().expect("port"),
        free_port().expect("port"),
        free_port().expect("port"),
    ];
    let opts = LocalOptions {
        amf_model_text: Some(session_model(&ports)),
        ..Default::default()
    };
    let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    wait_active(&c, None).await;

    phase("a client counts its session to 5");
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut client = SessionClient::new(addrs.clone(), "s1", LONG).expect("client");
    for expected in 1..=5 {
        let a = client.incr().await.expect("incr");
        assert_eq!(a.state.count, expected, "{a:?}");
    }

    // Read the active afresh: on a loaded machine a node may have been fenced meanwhile.
    let (first, pid) = wait_active(&c, None).await;
    phase(&format!("kill -9 the active component {first} (pid {pid})"));
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 {pid}");

    phase("the same client reconnects to the new active and continues at 6");
    let a = client.incr().await.expect("incr after the failover");
    assert_eq!(a.state.count, 6, "the session continued: {a:?}");
    assert_ne!(a.served_by, first, "served by the new active: {a:?}");
    assert!(a.reconnected, "{a:?}");
    let (second, _) = wait_active(&c, Some(&first)).await;
    assert_eq!(a.served_by, second, "the status shows who served it");

    phase("a switchover (si-swap): the active quiesces and closes, the client follows");
    let swap = Command::new(BIN)
        .args([
            "admin",
            "si-swap",
            SI,
            "--endpoints",
            &c.endpoints().join(","),
        ])
        .output()
        .expect("run nines");
    assert!(
        swap.status.success(),
        "si-swap: {}",
        String::from_utf8_lossy(&swap.stderr)
    );
    let (third, _) = wait_active(&c, Some(&second)).await;
    let a = client.incr().await.expect("incr after the switchover");
    assert_eq!(
        (a.state.count, a.served_by.as_str()),
        (7, third.as_str()),
        "{a:?}"
    );

    phase("a new client of the same session reads 7 from the checkpoint");
    let mut fresh = SessionClient::new(addrs, "s1", LONG).expect("client");
    let a = fresh.get().await.expect("get");
    assert_eq!((a.state.count, a.state.seq), (7, 7), "{a:?}");
}
