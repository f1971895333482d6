//! Mutual TLS and roles on a real 3-agent cluster (the counter as a 2N group, certificates
//! made by the cluster itself). Each refusal says why: no certificate, another CA's, an expired
//! one, a node certificate used as a client, a reader calling an operator call, a client
//! certificate sending peer traffic, a node's certificate carrying another node's heartbeat.
//! Afterwards every agent runs, a leader exists, every member is up, nobody fenced itself, the
//! SI is protected and a checkpoint write and read succeed.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use nines_cli::local::{LocalCluster, LocalOptions};
use nines_proto::membership::v1::{membership_client::MembershipClient, BeatRequest};
use nines_tls::{Role, TlsFiles, Validity};

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);

/// `nines ARGS --endpoints EPS`, with `tls`'s files as --ca/--cert/--key (none: no flags).
fn nines(eps: &str, tls: Option<&TlsFiles>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    if let Some(t) = tls {
        cmd.arg("--ca").arg(&t.ca);
        cmd.arg("--cert").arg(&t.cert);
        cmd.arg("--key").arg(&t.key);
    }
    // The test's own environment must not lend it a certificate.
    cmd.env_remove("NINES_CA")
        .env_remove("NINES_CERT")
        .env_remove("NINES_KEY");
    cmd.args(args)
        .args(["--endpoints", eps])
        .output()
        .expect("run nines")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A client certificate of the cluster's CA (in `dir`) with `role`, valid as given.
fn client(dir: &Path, name: &str, role: Role, validity: Validity) -> TlsFiles {
    nines_tls::issue_client(dir, name, role, validity, false).expect("issue a client certificate");
    TlsFiles::client(dir, name)
}

/// Whether some agent's log has a line holding `word`.
fn logged(c: &LocalCluster, word: &str) -> bool {
    c.nodes.iter().any(|n| {
        std::fs::read_to_string(&n.log).is_ok_and(|log| log.lines().any(|l| l.contains(word)))
    })
}

/// Refused in the TLS handshake. Under TLS 1.3 the client may see only the broken connection
/// (the server's alert can lose the race with the close), so the reason must be in the client's
/// error or, failing that, in the agent's log of the refusal.
fn refused_in_handshake(
    o: &Output,
    c: &LocalCluster,
    what: &str,
    client_says: &str,
    agent_says: &str,
) {
    assert!(!o.status.success(), "{what}: it succeeded");
    let e = stderr(o);
    assert!(
        e.contains(client_says) || logged(c, agent_says),
        "{what}: neither the client's error says '{client_says}' nor an agent's log \
         '{agent_says}': {e}"
    );
}

fn refused(o: &Output, what: &str, because: &[&str]) {
    assert!(!o.status.success(), "{what}: it succeeded");
    let e = stderr(o);
    for word in because {
        assert!(
            e.contains(word),
            "{what}: the error does not say '{word}': {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_who_it_must_and_says_why() {
    let opts = LocalOptions {
        tls: true,
        amf_model_text: Some(nines_cli::bench_amf::COUNTER_MODEL.to_string()),
        ..Default::default()
    };
    let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints().join(",");
    let certs = c
        .certs_dir()
        .expect("a TLS cluster has certificates")
        .to_path_buf();
    let operator = c.client_tls().expect("the operator's files");
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);

    eprintln!("phase: the operator reads and the SI settles, over mTLS");
    let deadline = Instant::now() + LONG;
    loop {
        let o = nines(&eps, Some(&operator), &["amf", "status", "-o", "json"]);
        let settled = o.status.success()
            && String::from_utf8_lossy(&o.stdout).contains("\"standby\"")
            && String::from_utf8_lossy(&o.stdout).contains("\"active\"");
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "not settled: {}", stderr(&o));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("phase: no certificate");
    let o = nines(&eps, None, &["status"]);
    refused(&o, "no certificate", &["certificate"]);

    eprintln!("phase: another CA's certificate");
    let foreign = tempfile::tempdir().expect("tempdir");
    nines_tls::init_ca(foreign.path(), "local", Validity::days_from(now, 1), false).expect("ca");
    let stranger = client(
        foreign.path(),
        "stranger",
        Role::Drill,
        Validity::days_from(now, 1),
    );
    let o = nines(&eps, Some(&stranger), &["status"]);
    refused(&o, "another CA", &["certificate"]);

    eprintln!("phase: an expired certificate");
    let expired = client(
        &certs,
        "expired",
        Role::Drill,
        Validity {
            not_before: now - 3 * day,
            not_after: now - day,
        },
    );
    let o = nines(&eps, Some(&expired), &["status"]);
    refused_in_handshake(
        &o,
        &c,
        "expired",
        "CertificateExpired",
        "certificate expired",
    );

    eprintln!("phase: a node certificate used as a client");
    let node1 = TlsFiles::node(&certs, 1);
    let o = nines(&eps, Some(&node1), &["amf", "status"]);
    refused(&o, "node certificate as a client", &["node certificate"]);

    eprintln!("phase: a reader calls an operator call");
    let reader = client(&certs, "watcher", Role::Reader, Validity::days_from(now, 1));
    let o = nines(&eps, Some(&reader), &["amf", "status"]);
    assert!(o.status.success(), "a reader reads: {}", stderr(&o));
    let o = nines(&eps, Some(&reader), &["admin", "lock", "su", "counter-3"]);
    refused(
        &o,
        "a reader locking an SU",
        &["Amf/Admin", "operator", "reader"],
    );

    eprintln!("phase: peer traffic with a client certificate, and with another node's");
    let ep1 = c.endpoints()[0].clone();
    let beat = |from| BeatRequest {
        cluster: "local".into(),
        from,
        seq: u64::MAX,
        term: 1,
        revoked: false,
    };
    let ch = |files: &TlsFiles| {
        nines_sdk::grpc_endpoint(&ep1, Some(files))
            .expect("endpoint")
            .connect_lazy()
    };
    let e = MembershipClient::new(ch(&operator))
        .beat(beat(3))
        .await
        .expect_err("a client certificate cannot beat");
    assert!(e.message().contains("peer traffic"), "{}", e.message());
    let node2 = TlsFiles::node(&certs, 2);
    let e = MembershipClient::new(ch(&node2))
        .beat(beat(3))
        .await
        .expect_err("node 2's certificate cannot beat for node 3");
    assert!(
        e.message().contains("node 2's certificate"),
        "{}",
        e.message()
    );

    eprintln!("phase: the cluster is healthy, and the operator writes and reads");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ep in c.endpoints() {
        let o = nines(&ep, Some(&operator), &["members", "-o", "json"]);
        assert!(o.status.success(), "members from {ep}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["fenced"], false, "{ep}: {v:#}");
        let up = v["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["state"] == "up"));
        assert!(up, "a member is not up as {ep} sees it: {v:#}");
    }
    let o = nines(&eps, Some(&operator), &["ckpt", "create", "mtls-check"]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let o = nines(
        &eps,
        Some(&operator),
        &["ckpt", "write", "mtls-check", "s", "--data", "42"],
    );
    assert!(o.status.success(), "write: {}", stderr(&o));
    let o = nines(&eps, Some(&reader), &["ckpt", "read", "mtls-check", "s"]);
    assert!(o.status.success(), "read: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("42"));
}
