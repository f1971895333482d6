//! Real `nines agent` processes on loopback, driven through the CLI and the gRPC API.
//! Each test is a story in logged phases; every wait is bounded.

use std::{process::Command, time::Duration};

use nines_cli::{
    bench::wait_caught_up,
    client,
    local::{LocalCluster, LocalOptions},
};
use nines_proto::cluster::v1::{ProbeReadRequest, ProbeWriteRequest};

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);

async fn write(endpoints: &[String], key: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + LONG;
    let mut i = 0;
    loop {
        let ep = &endpoints[i % endpoints.len()];
        i += 1;
        let mut c = client::connect(ep).expect("endpoint");
        let req = ProbeWriteRequest {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            timeout_ms: 2_000,
        };
        match c.probe_write(req).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("  write {key} via {ep}: {}; retrying", e.message());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("write {key} never acknowledged: {e}"),
        }
    }
}

async fn read(endpoint: &str, key: &str, stale: bool) -> Option<String> {
    let mut c = client::connect(endpoint).expect("endpoint");
    let req = ProbeReadRequest {
        key: key.into(),
        stale,
        timeout_ms: 5_000,
    };
    let r = c.probe_read(req).await.expect("read").into_inner();
    r.found.then(|| String::from_utf8(r.value).expect("utf8"))
}

/// The JSON a successful `nines` run printed (fails the test with its stderr otherwise).
fn json_ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

fn nines(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run nines")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_then_new_leader_commits_and_killed_node_catches_up() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    let leader = c.wait_leader(LONG).await.expect("leader");
    eprintln!("phase: leader is {leader}; writing before the kill");
    for i in 0..20 {
        write(&c.endpoints(), &format!("k{i}"), &format!("v{i}")).await;
    }
    eprintln!("phase: kill -9 node {leader}");
    c.kill(leader).expect("kill");
    let survivors: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.addr.clone())
        .collect();
    write(&survivors, "after", "kill").await;
    // The acknowledged write proves a new leader; the status view may take a moment to say so.
    let deadline = tokio::time::Instant::now() + LONG;
    let view = loop {
        let view = client::cluster_view(&c.endpoints()).await.expect("view");
        let leads = |id| {
            view.members
                .iter()
                .any(|m| m.id == id && m.role == "leader")
        };
        if view.leader.is_some_and(|l| l != leader && leads(l)) {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader shown: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dead = view
        .members
        .iter()
        .find(|m| m.id == leader)
        .expect("member");
    assert_eq!(dead.role, "unreachable");

    eprintln!("phase: restarting node {leader}; it must catch up");
    c.spawn(leader).expect("respawn");
    wait_caught_up(&c, leader, LONG).await.expect("caught up");
    let addr = c.nodes[(leader - 1) as usize].addr.clone();
    assert_eq!(read(&addr, "after", true).await.as_deref(), Some("kill"));
    assert_eq!(read(&addr, "k19", true).await.as_deref(), Some("v19"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_a_full_restart_keeps_every_acknowledged_write() {
    let opts = LocalOptions {
        snapshot_threshold_entries: Some(20),
        ..Default::default()
    };
    let mut c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    for i in 0..50 {
        write(&c.endpoints(), &format!("k{i}"), &format!("v{i}")).await;
    }
    eprintln!("phase: SIGTERM every agent");
    for id in 1..=3 {
        let code = c
            .terminate(id, Duration::from_secs(15))
            .expect("terminates");
        assert_eq!(
            code,
            Some(0),
            "node {id} should exit 0 on SIGTERM:\n{}",
            c.log_tail(id, 20)
        );
    }
    eprintln!("phase: restart all on the same data dirs");
    for id in 1..=3 {
        c.spawn(id).expect("respawn");
    }
    c.wait_leader(LONG).await.expect("leader after restart");
    for i in 0..50 {
        let v = read(&c.nodes[0].addr, &format!("k{i}"), false).await;
        assert_eq!(v, Some(format!("v{i}")), "acknowledged write k{i} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_unreachable_members_and_fails_only_when_none_answer() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let follower = {
        let v = client::cluster_view(&c.endpoints()).await.expect("view");
        v.members
            .iter()
            .find(|m| m.role == "follower")
            .expect("follower")
            .id
    };
    c.kill(follower).expect("kill");
    let eps = c.endpoints().join(",");
    let out = nines(&["status", "-o", "json", "--endpoints", &eps]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let members = json["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    let dead = members
        .iter()
        .find(|m| m["id"] == follower)
        .expect("dead member listed");
    assert_eq!(dead["role"], "unreachable");
    assert!(json["leader"].is_u64() && json["term"].is_u64());
    for key in ["id", "name", "addr", "role", "commit", "applied"] {
        assert!(members[0].get(key).is_some(), "member lacks {key}");
    }

    let out = nines(&["status", "--endpoints", "127.0.0.1:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no agent answered"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_node_add_and_remove_change_membership() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    for i in 0..10 {
        write(&c.endpoints(), &format!("k{i}"), "x").await;
    }
    let id = c.start_joining_node().expect("joiner");
    let addr = c.nodes.last().expect("node").addr.clone();
    let eps = c.endpoints()[..3].join(",");
    eprintln!("phase: adding node {id} at {addr}");
    let out = nines(&[
        "admin",
        "node",
        "add",
        "--id",
        &id.to_string(),
        "--addr",
        &addr,
        "-o",
        "json",
        "--endpoints",
        &eps,
    ]);
    let json = json_ok(&out);
    assert_eq!(json["members"].as_array().expect("members").len(), 4);
    wait_caught_up(&c, id, LONG)
        .await
        .expect("new node catches up");
    assert_eq!(read(&addr, "k9", true).await.as_deref(), Some("x"));

    let out = nines(&[
        "admin",
        "node",
        "add",
        "--id",
        &id.to_string(),
        "--addr",
        &addr,
        "--endpoints",
        &eps,
    ]);
    assert!(!out.status.success(), "adding a member twice must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already"));

    eprintln!("phase: removing node {id}");
    let out = nines(&[
        "admin",
        "node",
        "remove",
        "--id",
        &id.to_string(),
        "-o",
        "json",
        "--endpoints",
        &eps,
    ]);
    let json = json_ok(&out);
    assert_eq!(json["members"].as_array().expect("members").len(), 3);
}

#[test]
fn a_bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "cluster = \"c\"\nnode_id = 1\nname = \"n1\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
    )
    .expect("write");
    let out = nines(&["agent", "--config", path.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_cluster_or_protocol_version_are_refused() {
    use nines_proto::raft::v1::{raft_peer_client::RaftPeerClient, MessageBatch, PeerHeader};
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.nodes[0].addr))
        .expect("endpoint")
        .connect_lazy();
    let mut peer = RaftPeerClient::new(ch);
    let batch = |cluster: &str, version: u32| MessageBatch {
        header: Some(PeerHeader {
            cluster: cluster.into(),
            from: 2,
            protocol_version: version,
        }),
        to: 1,
        messages: vec![],
    };
    let e = peer
        .send(batch("other", nines_core::PROTOCOL_VERSION))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("'other'") && e.message().contains("'local'"),
        "{}",
        e.message()
    );

    let e = peer.send(batch("local", 99)).await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("v99")
            && e.message()
                .contains(&format!("v{}", nines_core::PROTOCOL_VERSION)),
        "{}",
        e.message()
    );

    let mut stranger = batch("local", nines_core::PROTOCOL_VERSION);
    stranger.header.as_mut().expect("header").from = 42;
    let e = peer.send(stranger).await.expect_err("refused");
    assert!(e.message().contains("not a member"), "{}", e.message());

    peer.send(batch("local", nines_core::PROTOCOL_VERSION))
        .await
        .expect("a member is accepted");
}
