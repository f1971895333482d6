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
use std::process::Command;
use std::time::{Duration, Instant};

use nines_cli::local::{LocalCluster, LocalOptions, HOST_PORT};
use promise::{assert_never_two_actives, believed_active, model_path, nines, now_ms, settled};
use promise::{BIN, LONG};
use serde_json::Value;

/// `ip ARGS`, failing with what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The namespaces and links of one test run; removed on drop.
struct Net {
    switch: String,
    nodes: Vec<String>,
    /// The switch-side end of each node's link (index = node id - 1).
    ports: Vec<String>,
    /// Each node's address.
    hosts: Vec<String>,
}

impl Net {
    /// `n` node namespaces on one bridge, and the host on it too (to reach the agents).
    fn create(n: usize) -> Result<Net, String> {
        // Short, unique per run: interface names have 15 bytes.
        let tag = std::process::id() % 100_000;
        let subnet = 20 + std::process::id() % 200;
        let mut net = Net {
            switch: format!("n9sw{tag}"),
            nodes: Vec::new(),
            ports: Vec::new(),
            hosts: Vec::new(),
        };
        let sw = net.switch.clone();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        // The host's own port on the switch.
        let (hp, hs) = (format!("n9h{tag}"), format!("n9hs{tag}"));
        ip(&["link", "add", &hp, "type", "veth", "peer", "name", &hs])?;
        ip(&["link", "set", &hs, "netns", &sw])?;
        ip(&["-n", &sw, "link", "set", &hs, "master", "br0", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.213.{subnet}.254/24"),
            "dev",
            &hp,
        ])?;
        ip(&["link", "set", &hp, "up"])?;
        for i in 1..=n {
            let ns = format!("n9n{tag}x{i}");
            let (inner, port) = (format!("n9e{tag}x{i}"), format!("n9p{tag}x{i}"));
            ip(&["netns", "add", &ns])?;
            net.nodes.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["link", "add", &inner, "type", "veth", "peer", "name", &port])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &port, "netns", &sw])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            let host = format!("10.213.{subnet}.{i}");
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{host}/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            net.ports.push(port);
            net.hosts.push(host);
        }
        Ok(net)
    }

    /// Bring node `id`'s link up or down (at the switch).
    fn link(&self, id: u64, up: bool) {
        let port = &self.ports[id as usize - 1];
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.switch, "link", "set", port, state]).expect("flap a link");
    }

    /// The command prefix that runs a program in node `id`'s namespace.
    fn wrap(&self) -> Vec<Vec<String>> {
        self.nodes
            .iter()
            .map(|ns| vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()])
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in self.nodes.iter().chain([&self.switch]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

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
    let net = match Net::create(3) {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIPPED: cannot create network namespaces here ({why}); run as root");
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
        hosts: net.hosts.clone(),
        wrap: net.wrap(),
        ..Default::default()
    };
    let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start the agents");
    let eps: Vec<String> = net
        .hosts
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
    for _ in 0..10 {
        net.link(leader, false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        net.link(leader, true);
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
