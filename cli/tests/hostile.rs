//! Forged tokens against a real 3-agent cluster, sent as an attacker on the network would: a
//! heartbeat numbered 2^64-1 claiming to be n3, a lease revocation at lease epoch 2^64-1, a
//! checkpoint write at fencing epoch 2^64-1, a request over the client request cap. Each is
//! refused or not believed, and afterwards
//! every agent runs, a leader exists, every member is up, no agent fenced itself, acknowledged
//! values are intact and the legitimate writer can still write; n3 restarted rejoins as up.

use std::time::{Duration, Instant};

use nines_cli::local::{LocalCluster, LocalOptions};
use nines_proto::ckpt::v1::{
    checkpoint_client::CheckpointClient, CreationAttributes, OpenRequest, ReadRequest, SectionRead,
    SectionWrite, WriteKind, WriteRequest,
};
use nines_proto::membership::v1::{
    membership_client::MembershipClient, BeatRequest, RevokeLeaseRequest,
};
use serde_json::Value;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);

fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn members(eps: &str) -> Option<Value> {
    let out = std::process::Command::new(BIN)
        .args(["members", "-o", "json", "--endpoints", eps])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Every member up, as the agent at `ep` sees it.
fn all_up(v: &Value) -> bool {
    v["members"]
        .as_array()
        .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["state"] == "up"))
}

async fn wait_all_up(ep: &str, what: &str) {
    let deadline = Instant::now() + LONG;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(v) = members(ep) {
            if all_up(&v) {
                return;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not every member up within {LONG:?}: {last:#}");
}

fn upsert(data: &[u8]) -> SectionWrite {
    SectionWrite {
        section: "state".into(),
        kind: WriteKind::Upsert as i32,
        offset: 0,
        data: data.to_vec(),
    }
}

async fn write(ep: &str, data: &[u8], epoch: u64) -> Result<(), tonic::Status> {
    let req = WriteRequest {
        checkpoint: "hostile".into(),
        writes: vec![upsert(data)],
        epoch,
        options: None,
    };
    CheckpointClient::new(channel(ep))
        .write(req)
        .await
        .map(|_| ())
}

async fn read(ep: &str) -> Vec<u8> {
    let req = ReadRequest {
        checkpoint: "hostile".into(),
        reads: vec![SectionRead {
            section: "state".into(),
            offset: 0,
            len: 0,
        }],
        stale: false,
        options: None,
    };
    let r = CheckpointClient::new(channel(ep))
        .read(req)
        .await
        .expect("read")
        .into_inner();
    r.sections.into_iter().next().expect("one section").data
}

/// Lines saying an agent lost its lease, in every agent's log.
fn fence_lines(c: &LocalCluster) -> Vec<String> {
    c.nodes
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(&n.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("FENCED"))
                .map(|l| format!("n{}: {l}", n.id))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_and_leave_the_cluster_healthy() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints();
    let all = eps.join(",");
    wait_all_up(&all, "at start").await;
    // An acknowledged value to find intact at the end (no epoch: an unfenced checkpoint).
    let open = OpenRequest {
        name: "hostile".into(),
        create: true,
        attributes: Some(CreationAttributes::default()),
        options: None,
    };
    CheckpointClient::new(channel(&eps[0]))
        .open(open)
        .await
        .expect("create");
    write(&eps[0], b"before", 0).await.expect("write before");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fences_before = fence_lines(&c).len();

    eprintln!("phase: heartbeats numbered 2^64-1 (one alone, then two in a row) claiming n3");
    for ep in &eps[..2] {
        let mut m = MembershipClient::new(channel(ep));
        for seq in [u64::MAX, 1, u64::MAX - 1, u64::MAX] {
            let beat = BeatRequest {
                cluster: "local".into(),
                from: 3,
                seq,
                term: 1,
                revoked: false,
            };
            let _ = m.beat(beat).await;
        }
    }

    eprintln!("phase: a lease revocation of n3 at lease epoch 2^64-1");
    for ep in &eps[..2] {
        let req = RevokeLeaseRequest {
            cluster: "local".into(),
            from: 1,
            node: 3,
            epoch: u64::MAX,
            term: u64::MAX,
        };
        let e = MembershipClient::new(channel(ep))
            .revoke_lease(req)
            .await
            .expect_err("a revocation at an epoch never issued is refused");
        assert!(e.message().contains("never"), "{}", e.message());
    }

    eprintln!("phase: a checkpoint write at fencing epoch 2^64-1");
    let e = write(&eps[1], b"forged", u64::MAX)
        .await
        .expect_err("a fencing epoch never issued is refused");
    assert!(e.message().contains("never issued"), "{}", e.message());

    eprintln!("phase: a 5 MiB checkpoint write (over the 4 MiB + 64 KiB request cap)");
    let e = write(&eps[0], &vec![7; 5 * 1024 * 1024], 0)
        .await
        .expect_err("a request over the cap is refused");
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("too large"), "{}", e.message());

    eprintln!("phase: the cluster stays healthy");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &c.nodes {
        let pid = c.pid(n.id).expect("running");
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "agent n{} died",
            n.id
        );
    }
    c.wait_leader(LONG)
        .await
        .expect("a leader after the forgeries");
    for ep in &eps {
        let v = members(ep).expect("members answer");
        assert!(all_up(&v), "a member is not up, as {ep} sees it: {v:#}");
        assert_eq!(v["fenced"], false, "{ep} is fenced: {v:#}");
    }
    let fences = fence_lines(&c);
    assert_eq!(
        fences.len(),
        fences_before,
        "an agent fenced itself after the forgeries: {fences:#?}"
    );
    assert_eq!(read(&eps[2]).await, b"before", "the acknowledged value");
    write(&eps[2], b"after", 0)
        .await
        .expect("the legitimate writer can still write");
    assert_eq!(read(&eps[0]).await, b"after");

    eprintln!("phase: n3 restarted rejoins as up");
    c.kill(3).expect("kill n3");
    c.spawn(3).expect("restart n3");
    wait_all_up(&eps[0], "after n3's restart").await;
}
