//! Network namespaces for a throw-away cluster whose links can really be cut: each node in a
//! namespace of its own, joined by a veth to a bridge in a "switch" namespace (so the host's
//! firewall is not in the path), and the host on the bridge too, to reach the agents. A link is
//! cut at the switch, which is what a pulled cable or a failed switch port does to a node.
//!
//! Needs root and iproute2 (`ip`). Everything made is removed when [`Namespaces`] is dropped.
//! `nines drill link-flap --local` and the network tests use it.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail};

/// `ip ARGS`, failing with what it printed.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| anyhow!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// The switch of a [`Namespaces`]: cuts and restores one node's link. Plain data, so a drill can
/// carry it; it acts only while the namespaces exist.
#[derive(Debug, Clone)]
pub struct LinkSwitch {
    switch: String,
    /// (node name, the switch-side end of its link).
    ports: Vec<(String, String)>,
}

impl LinkSwitch {
    /// Bring the named node's link up or down (at the switch).
    pub fn set(&self, node: &str, up: bool) -> anyhow::Result<()> {
        let port = self
            .ports
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, p)| p)
            .ok_or_else(|| anyhow!("no link for node {node} in this cluster's namespaces"))?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            port,
            if up { "up" } else { "down" },
        ])
    }

    /// The node names it has a link for.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.ports.iter().map(|(n, _)| n.as_str())
    }
}

/// The namespaces and links of one cluster; removed on drop.
#[derive(Debug)]
pub struct Namespaces {
    switch: String,
    nodes: Vec<String>,
    ports: Vec<String>,
    hosts: Vec<String>,
}

impl Namespaces {
    /// `n` node namespaces (nodes `n1`..`nN`, node `i` at `hosts()[i - 1]`) on one bridge, and
    /// the host on it too. Fails, removing what it made, where namespaces cannot be made.
    pub fn create(n: usize) -> anyhow::Result<Namespaces> {
        // Short, unique per process and call: interface names have 15 bytes.
        static MADE: AtomicU32 = AtomicU32::new(0);
        let (pid, seq) = (std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
        let tag = (pid % 10_000) * 10 + seq % 10;
        let subnet = 20 + (pid.wrapping_mul(7).wrapping_add(seq)) % 200;
        let mut net = Namespaces {
            switch: format!("n9sw{tag}"),
            nodes: Vec::new(),
            ports: Vec::new(),
            hosts: Vec::new(),
        };
        // On an error, dropping `net` removes what was made so far.
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
        let host_addr = format!("10.213.{subnet}.254/24");
        ip(&["addr", "add", &host_addr, "dev", &hp])?;
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
            let cidr = format!("{host}/24");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            net.ports.push(port);
            net.hosts.push(host);
        }
        Ok(net)
    }

    /// Each node's address (index = node id - 1).
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }

    /// The command prefix that runs a program in each node's namespace (index = node id - 1).
    pub fn wrap(&self) -> Vec<Vec<String>> {
        self.nodes
            .iter()
            .map(|ns| vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()])
            .collect()
    }

    /// The switch, to cut and restore links.
    pub fn switch(&self) -> LinkSwitch {
        LinkSwitch {
            switch: self.switch.clone(),
            ports: (1..)
                .zip(&self.ports)
                .map(|(i, p)| (format!("n{i}"), p.clone()))
                .collect(),
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in self.nodes.iter().chain([&self.switch]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
