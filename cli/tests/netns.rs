//! Promise 1 under real network faults: three agents, each in a network namespace this test
//! creates (a veth to a bridge in a "switch" namespace of its own, so the host's firewall is not
//! in the path), the counter as a 2N group. The leader's link flaps — down 300 ms, up 300 ms,
//! for 6 s — while the counter counts; then, from the counters' own timestamped logs, no two
//! components ever believed themselves active at once, and the SI is protected again.
//!
//! Needs root and `ip` (iproute2); skips with a message where namespaces cannot be made. Every
//! namespace, link and process it made is removed however it ends.

mod promise;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nines_cli::local::{LocalCluster, LocalOptions, HOST_PORT};
use nines_cli::netns::Namespaces;
use promise::{assert_never_two_actives, believed_active, model_path, nines, now_ms, settled};
use promise::{BIN, LONG};
use serde_json::Value;

fn status(eps: &str) -> Option<Value> {
    let out = nines(&["amf", "status", "-o", "json", "--endpoints", eps]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

async fn wait_settled(eps: &str, what: &str) -> Value {
    let deadline = Instant::now() + LONG;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(st) = status(eps) {
            if settled(&st).is_some() {
                return st;
            }
            last = st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not settled within {LONG:?}; last status: {last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_leader_link_never_leaves_two_actives() {
    let net = match Namespaces::create(3) {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIPPED: cannot create network namespaces here ({why:#}); run as root");
            return;
        }
    };
    let counter_dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        amf_model: Some(model_path()),
        env: vec![(
            "NINES_COUNTER_DIR".into(),
            counter_dir.path().display().to_string(),
        )],
        hosts: net.hosts(),
        wrap: net.wrap(),
        ..Default::default()
    };
    let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start the agents");
    let eps: Vec<String> = net
        .hosts()
        .iter()
        .map(|h| format!("{h}:{HOST_PORT}"))
        .collect();
    let eps = eps.join(",");
    eprintln!("phase: wait for active + standby");
    wait_settled(&eps, "2N assignment").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = c.wait_leader(LONG).await.expect("a leader");

    eprintln!("phase: flap node {leader}'s link (the leader's): 300 ms down, 300 ms up, 6 s");
    let flap_start = now_ms();
    let (switch, node) = (net.switch(), format!("n{leader}"));
    for _ in 0..10 {
        switch.set(&node, false).expect("cut the link");
        tokio::time::sleep(Duration::from_millis(300)).await;
        switch.set(&node, true).expect("restore the link");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("phase: the link stays up; the SI settles again");
    wait_settled(&eps, "after the flapping").await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    eprintln!("phase: from the counters' own logs, never two actives");
    assert_never_two_actives(counter_dir.path(), &BTreeMap::new(), 1);
    let by = believed_active(counter_dir.path()).into_iter().fold(
        BTreeMap::<String, usize>::new(),
        |mut m, b| {
            *m.entry(b.component).or_default() += 1;
            m
        },
    );
    eprintln!(
        "figures: flapping from {flap_start}; believed-active intervals per component: {by:?}"
    );
    drop(c);
    drop(net);
}

/// `nines drill link-flap --local`, as an operator runs it: the drill makes its own namespaces,
/// flaps the active's link, and judges the three promises (promise 1 from the components'
/// beliefs too). Its JSON verdict must be ok, with samples seen.
#[test]
fn the_link_flap_drill_runs_as_documented() {
    if let Err(why) = Namespaces::create(1) {
        eprintln!("SKIPPED: cannot create network namespaces here ({why:#}); run as root");
        return;
    }
    let out = nines(&["drill", "link-flap", "--local", "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "the drill printed no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "the drill failed: {doc:#}");
    assert_eq!(doc["ok"], Value::Bool(true), "{doc:#}");
    let run = &doc["runs"][0];
    assert_eq!(run["drill"], "link-flap", "{doc:#}");
    let p1 = run["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["promise"] == 1))
        .unwrap_or_else(|| panic!("no promise-1 check: {doc:#}"));
    assert!(
        p1["detail"].as_str().is_some_and(|d| d.contains("beliefs")),
        "promise 1 was not judged from the components' beliefs: {p1:#}"
    );
}
