//! `nines drill` against real local clusters. One cluster (drills enabled, a supervisor that
//! restarts killed agents, as systemd would) runs every drill in turn — component-kill,
//! switchover, component-hang, pause, node-kill, leader-kill — and each JSON report must have
//! every phase, in order, with the three promises held and the cluster left as found. A second
//! cluster, with drills disabled, must refuse a drill clearly, and once its standby and spare are
//! locked, must report that the SI cannot fail over (and why) instead of hanging.

use std::time::Duration;

use nines_cli::bench_amf::{self, COUNTER_SI};
use nines_cli::drill::{local::SupervisedCluster, observe};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nines");
/// Generous: the suite shares two cores with other builds.
const LONG: Duration = Duration::from_secs(120);
const PHASES: [&str; 5] = ["injected", "detected", "decided", "confirmed", "restored"];

/// Run `nines ARGS --endpoints EPS -o json` (bounded); returns (exit code, stdout, stderr).
async fn nines(eps: &[String], args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .args(["--endpoints", &eps.join(","), "-o", "json"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("nines {args:?} did not finish within 300 s"))
        .expect("run nines");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run one drill; its single run's report must pass every check and have `phases` present,
/// in order.
async fn drill(eps: &[String], args: &[&str], phases: &[&str]) -> Value {
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    // Deadlines far above any failover seen, so that a slow run on a loaded machine is not
    // mistaken for a broken promise: this test checks the story, not the speed.
    all.extend_from_slice(&[
        "--si",
        COUNTER_SI,
        "--timeout",
        "90s",
        "--rejoin-timeout",
        "120s",
    ]);
    let (code, out, err) = nines(eps, &all).await;
    let doc: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}\nstderr:\n{err}"));
    let run = doc["runs"][0].clone();
    assert_eq!(code, 0, "{args:?} failed: {run:#}\nstderr:\n{err}");
    assert_eq!(doc["ok"], true, "{doc:#}");
    for c in run["checks"].as_array().expect("checks") {
        assert_eq!(
            c["ok"], true,
            "{args:?}: promise {} broken: {run:#}",
            c["promise"]
        );
    }
    assert_eq!(run["left_as_found"], true, "{run:#}");
    let got: Vec<(String, Option<f64>)> = run["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| (p["phase"].as_str().unwrap().to_string(), p["ms"].as_f64()))
        .collect();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, PHASES, "{run:#}");
    let mut prev = f64::MIN;
    for (name, ms) in &got {
        match ms {
            Some(ms) => {
                assert!(
                    *ms >= prev,
                    "{args:?}: {name} at {ms} ms before {prev}: {run:#}"
                );
                prev = *ms;
            }
            None => assert!(
                !phases.contains(&name.as_str()),
                "{args:?}: no {name}: {run:#}"
            ),
        }
    }
    assert!(run["probe"]["acked"].as_u64().unwrap() > 0, "{run:#}");
    assert!(
        run["probe"]["lost"].as_array().unwrap().is_empty(),
        "{run:#}"
    );
    eprintln!("drill {args:?}: {}", run["phases"]);
    run
}

/// The node hosting the counter SI's active, and the raft leader's node name.
async fn active_and_leader(eps: &[String]) -> (String, String, String) {
    let st = observe::wait_settled(eps, COUNTER_SI, LONG)
        .await
        .expect("settled");
    let (active, standby) = observe::settled(&st, COUNTER_SI).expect("settled");
    let node = |su: &str| observe::node_of_su(&st, su).expect("node");
    let leader = nines_cli::drill::fault::NodeEndpoint::leader(eps)
        .await
        .expect("leader")
        .node;
    (node(&active), node(&standby), leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_drill_runs_on_one_cluster_and_keeps_the_promises() {
    let cluster = SupervisedCluster::start(BIN.as_ref(), vec![]).expect("start");
    let eps = cluster.endpoints();
    observe::wait_settled(&eps, COUNTER_SI, LONG)
        .await
        .expect("the counter deployed");
    let every = &PHASES[..];
    eprintln!("phase 1: component-kill");
    drill(&eps, &["component-kill"], every).await;
    eprintln!("phase 2: switchover");
    let run = drill(&eps, &["switchover"], every).await;
    assert_ne!(run["new_active"], run["old_active"], "{run:#}");
    eprintln!("phase 3: component-hang (the watchdog path)");
    drill(&eps, &["component-hang"], every).await;
    eprintln!("phase 4: pause the active's node for 3 s");
    drill(&eps, &["agent-pause", "--for", "3s"], every).await;
    eprintln!("phase 5: node-kill of the active's node (the supervisor restarts it)");
    drill(&eps, &["node-kill"], every).await;
    eprintln!("phase 6: leader-kill");
    let (active, standby, leader) = active_and_leader(&eps).await;
    if leader == standby {
        // Put the active on the leader so that the leader kill is also a failover.
        drill(&eps, &["switchover"], every).await;
    }
    let (active2, _, leader2) = active_and_leader(&eps).await;
    let _ = active;
    if active2 == leader2 {
        drill(&eps, &["leader-kill"], every).await;
    } else {
        // The leader hosts the spare: nothing fails over, the node is still lost and restored.
        let run = drill(
            &eps,
            &["leader-kill"],
            &["injected", "detected", "restored"],
        )
        .await;
        assert!(run["phases"][3]["ms"].is_null(), "{run:#}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_refuses_when_disabled_and_reports_a_missing_standby() {
    let c = bench_amf::start_counter_cluster(BIN.as_ref()).expect("start");
    let eps = c.endpoints();
    let st = observe::wait_settled(&eps, COUNTER_SI, LONG)
        .await
        .expect("the counter deployed");
    let (active, standby) = observe::settled(&st, COUNTER_SI).expect("settled");

    eprintln!("phase 1: drills are off by default: refused, nothing broken");
    let (code, out, err) = nines(&eps, &["drill", "component-kill"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("drills are disabled on node"), "{err}");
    assert!(err.contains("enabled = true"), "{err}");
    let doc: Value = serde_json::from_str(&out).expect("a JSON verdict for scripts");
    assert_eq!(doc["ok"], false, "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("drills are disabled"),
        "{doc}"
    );

    eprintln!("phase 2: lock the standby and the spare");
    let spare = st
        .sus
        .iter()
        .map(|s| s.name.clone())
        .find(|s| *s != active && *s != standby)
        .expect("a spare SU");
    for su in [&standby, &spare] {
        // The SG is busy (TRY_AGAIN) until the previous lock's changes are done.
        let deadline = std::time::Instant::now() + LONG;
        loop {
            let (code, out, err) = nines(&eps, &["admin", "lock", "su", su]).await;
            if code == 0 {
                break;
            }
            assert!(err.contains("TRY_AGAIN"), "lock {su}: {out}{err}");
            assert!(std::time::Instant::now() < deadline, "lock {su}: {err}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let st = observe::status(&eps, None).await;
        let alone = st.as_ref().is_some_and(|st| {
            let si = observe::si(st, COUNTER_SI).expect("si");
            si.assignments.len() == 1 && si.assignments[0].pending.is_empty()
        });
        if alone {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not alone: {st:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid_before = observe::status(&eps, None)
        .await
        .map(|st| observe::running_components(&st, &active));

    eprintln!("phase 3: a drill says it cannot fail over, and why");
    let (code, out, err) = nines(&eps, &["drill", "component-kill"]).await;
    assert_eq!(code, 3, "{out}\n{err}");
    let doc: Value = serde_json::from_str(&out).expect("json");
    let check = &doc["runs"][0]["checks"][0];
    assert_eq!(check["promise"], 3, "{doc:#}");
    assert_eq!(check["ok"], false, "{doc:#}");
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("no standby"), "{detail}");
    assert!(detail.contains(&format!("{standby} on")), "{detail}");
    assert!(detail.contains("locked"), "{detail}");
    assert!(err.contains("promise 3 broken"), "{err}");
    let pid_after = observe::status(&eps, None)
        .await
        .map(|st| observe::running_components(&st, &active));
    assert_eq!(
        pid_before, pid_after,
        "the drill must not break an unprotected SI"
    );
}

#[test]
fn every_drill_has_an_example_and_completions_know_the_drills() {
    for d in [
        "component-kill",
        "component-hang",
        "node-kill",
        "leader-kill",
        "switchover",
        "agent-pause",
        "pause",
    ] {
        let out = std::process::Command::new(BIN)
            .args(["drill", d, "--help"])
            .output()
            .expect("run nines");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Example: nines drill"), "{d}: {help}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run nines");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("component-kill"), "{shell}: {script}");
    }
}
