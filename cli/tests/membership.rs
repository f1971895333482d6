//! Heartbeat membership on three real agents: a paused (SIGSTOP) node is agreed down by every
//! other member, and up again after SIGCONT; a watch sees exactly one down and one up event.

use std::time::Duration;

use nines_cli::local::{LocalCluster, LocalOptions};
use nines_proto::membership::v1::{
    membership_client::MembershipClient, ChangeKind, MemberState, MembersRequest, WatchRequest,
};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);

fn client(addr: &str) -> MembershipClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    MembershipClient::new(ch)
}

async fn state_seen_by(addr: &str, node: u64) -> Option<MemberState> {
    let v = client(addr)
        .members(MembersRequest {})
        .await
        .ok()?
        .into_inner();
    v.members.iter().find(|m| m.id == node).map(|m| m.state())
}

/// Wait (bounded) until every observer reports `node` in `want`.
async fn wait_all_see(observers: &[String], node: u64, want: MemberState) {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let mut all = true;
        for o in observers {
            all &= state_seen_by(o, node).await == Some(want);
        }
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {node} never became {want:?} everywhere"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pause_and_resume(c: &LocalCluster, node: u64) {
    let observers: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.id != node)
        .map(|n| n.addr.clone())
        .collect();
    let mut watch = client(&observers[0])
        .watch(WatchRequest {})
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("snapshot");
    assert_eq!(first.kind(), ChangeKind::Snapshot);

    let pid = Pid::from_raw(c.pid(node).expect("running") as i32);
    eprintln!("phase: SIGSTOP node {node}");
    kill(pid, Signal::SIGSTOP).expect("stop");
    wait_all_see(&observers, node, MemberState::Down).await;
    eprintln!("phase: SIGCONT node {node}");
    kill(pid, Signal::SIGCONT).expect("cont");
    wait_all_see(&observers, node, MemberState::Up).await;

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let ev = tokio::time::timeout(LONG, watch.message())
            .await
            .expect("event in time")
            .expect("stream")
            .expect("event");
        if ev.node == node {
            kinds.push(ev.kind());
        }
    }
    assert_eq!(
        kinds,
        vec![ChangeKind::Down, ChangeKind::Up],
        "one down, then one up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_follower_and_leader_are_agreed_down_then_up() {
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    let leader = c.wait_leader(LONG).await.expect("leader");
    let follower = (1..=3).find(|&n| n != leader).expect("follower");
    pause_and_resume(&c, follower).await;

    eprintln!("phase: the same for the leader {leader}");
    pause_and_resume(&c, leader).await;
    let new = c.wait_leader(LONG).await.expect("a leader");
    eprintln!("leader after the pause: {new}");
}

fn nines(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run nines")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_cli_restart_is_up_again_and_drain_is_left_not_down() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    let leader = c.wait_leader(LONG).await.expect("leader");
    let victim = (1..=3).find(|&n| n != leader).expect("follower");
    let eps = c.endpoints().join(",");
    let observers: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.id != victim)
        .map(|n| n.addr.clone())
        .collect();
    wait_all_see(&observers, victim, MemberState::Up).await;

    let out = nines(&["members", "-o", "json", "--endpoints", &eps]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["view"].as_u64().expect("view") >= 3);
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for key in ["id", "name", "state", "last_heartbeat_ms"] {
        assert!(members[0].get(key).is_some(), "member lacks {key}: {v}");
    }

    eprintln!("phase: kill -9 node {victim}, then restart it on its data");
    c.kill(victim).expect("kill");
    wait_all_see(&observers, victim, MemberState::Down).await;
    c.spawn(victim).expect("restart");
    wait_all_see(&observers, victim, MemberState::Up).await;

    eprintln!("phase: drain node {victim}");
    let out = nines(&[
        "admin",
        "node",
        "drain",
        "--id",
        &victim.to_string(),
        "--endpoints",
        &eps,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_all_see(&observers, victim, MemberState::Left).await;
    c.kill(victim).expect("stop the drained node");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for o in &observers {
        assert_eq!(
            state_seen_by(o, victim).await,
            Some(MemberState::Left),
            "a drained node is never reported down"
        );
    }
}
