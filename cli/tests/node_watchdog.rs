//! The node's watchdogs on real agents. Under systemd (NOTIFY_SOCKET set) an agent sends
//! READY=1 once it knows a leader, WATCHDOG=1 at half of WATCHDOG_USEC while healthy, and
//! STOPPING=1 on SIGTERM (a test listener on a Unix datagram socket stands in for systemd). A
//! `[watchdog] device` that is not a watchdog is refused at start with a reason (the ioctl path
//! runs against a stand-in file; the kick/stop/magic-close logic is tested against a stand-in
//! device in nines-watchdog).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nines_cli::local::{LocalCluster, LocalOptions};

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);

/// Datagrams received until `until` holds for the collected set (bounded by LONG).
fn receive_until(sock: &UnixDatagram, got: &mut Vec<String>, until: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + LONG;
    let mut buf = [0u8; 4096];
    while !until(got) {
        assert!(
            Instant::now() < deadline,
            "systemd notifications not complete within {LONG:?}: {got:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
}

#[test]
fn agents_notify_ready_then_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the stand-in systemd socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let opts = LocalOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Default::default()
    };
    let mut c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
    let mut got = Vec::new();
    let count = |got: &[String], what: &str| got.iter().filter(|m| m.contains(what)).count();
    eprintln!("phase: READY=1 from every agent, then periodic WATCHDOG=1");
    receive_until(&sock, &mut got, |g| {
        count(g, "READY=1") >= 3 && count(g, "WATCHDOG=1") >= 6
    });
    let first_ready = got
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("ready");
    let first_watchdog = got
        .iter()
        .position(|m| m.contains("WATCHDOG=1"))
        .expect("watchdog");
    assert!(first_ready < first_watchdog, "READY=1 comes first: {got:?}");

    eprintln!("phase: SIGTERM → STOPPING=1");
    c.terminate(3, LONG).expect("agent 3 stops");
    receive_until(&sock, &mut got, |g| count(g, "STOPPING=1") >= 1);
}

#[test]
fn a_watchdog_device_that_is_not_one_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("not-a-watchdog");
    std::fs::write(&fake, b"").expect("stand-in file");
    let port = nines_cli::local::free_port().expect("port");
    let config = dir.path().join("n1.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = \"wd\"\nnode_id = 1\nname = \"n1\"\ndata_dir = \"{}\"\n\
             listen = \"127.0.0.1:{port}\"\n\n[[peers]]\nid = 1\nname = \"n1\"\n\
             addr = \"127.0.0.1:{port}\"\n\n[watchdog]\ndevice = \"{}\"\ntimeout_s = 5\n",
            dir.path().join("data").display(),
            fake.display()
        ),
    )
    .expect("config");
    let out = std::process::Command::new(BIN)
        .args(["agent", "--config", config.to_str().expect("path")])
        .output()
        .expect("run the agent");
    assert!(!out.status.success(), "the agent must refuse the device");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-a-watchdog") && err.contains("watchdog"),
        "the error names the device: {err}"
    );
}
