//! A throw-away cluster of real `nines agent` processes on loopback: temporary data dirs, free
//! ports, logs in files, every process killed when the cluster is dropped.
//!
//! With [`LocalOptions::tls`] the cluster runs with mutual TLS on certificates it makes itself
//! in `ROOT/certs` (see [`LocalCluster::certs_dir`]): a CA for cluster `local`, one node
//! certificate per agent, an `operator` client (role `drill`, for whoever drives the cluster:
//! [`LocalCluster::client_tls`]) and a `components` client (role `app`, handed by each agent to
//! its components).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use nines_tls::{Role, TlsFiles, Validity};

use crate::client;

/// How long a local cluster's certificates are valid: it is thrown away long before.
const LOCAL_CERT_DAYS: u32 = 30;
/// The local cluster's client certificate for whoever drives it (role `drill`: everything).
pub const OPERATOR_CLIENT: &str = "operator";
/// The local cluster's client certificate its agents hand their components (role `app`).
pub const COMPONENTS_CLIENT: &str = "components";

/// One agent of a [`LocalCluster`].
#[derive(Debug)]
pub struct LocalNode {
    /// Node id (1-based).
    pub id: u64,
    /// Its gRPC address.
    pub addr: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    /// Where it serves Prometheus metrics, if [`LocalOptions::metrics`].
    pub metrics_addr: Option<String>,
    child: Option<Child>,
}

/// Set (to anything) to keep every throw-away cluster's directory — configs, data and agent
/// logs — after `nines demo`, `nines bench` or a test, to see what happened.
pub const KEEP_ENV: &str = "NINES_KEEP_LOCAL";

/// Timing overrides for a local cluster (the defaults are the product defaults).
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// `[raft] snapshot_threshold_entries`, if not the default.
    pub snapshot_threshold_entries: Option<u64>,
    /// Keep the temporary directory when dropped (for debugging).
    pub keep: bool,
    /// An AMF model file every agent applies at first start (`amf_model`).
    pub amf_model: Option<PathBuf>,
    /// An AMF model's text, written to `model.toml` in the cluster's directory and used as
    /// `amf_model` (instead of `amf_model`).
    pub amf_model_text: Option<String>,
    /// Extra environment for the agents (their components inherit it).
    pub env: Vec<(String, String)>,
    /// Serve Prometheus metrics on a free port per agent (`metrics_addr`; see
    /// [`LocalNode::metrics_addr`]).
    pub metrics: bool,
    /// TOML appended to every agent's config (tables only, e.g. `[telemetry]`).
    pub extra_config: String,
    /// Enable the drill endpoint (`[drill] enabled = true`) on every agent.
    pub drill: bool,
    /// One host (an IP address) per node instead of 127.0.0.1 with a free port: node `i`
    /// listens on `hosts[i - 1]:7100`. For agents in network namespaces of their own.
    pub hosts: Vec<String>,
    /// One command prefix per node that its agent is started under (e.g. `ip netns exec ns1`);
    /// empty: started directly. The prefix must exec the agent, keeping its pid.
    pub wrap: Vec<Vec<String>>,
    /// Run with mutual TLS: make a CA and certificates in `ROOT/certs` and give every agent a
    /// `[tls]` section (clients then need [`LocalCluster::client_tls`]).
    pub tls: bool,
}

/// The port agents listen on when they have hosts of their own ([`LocalOptions::hosts`]).
pub const HOST_PORT: u16 = 7100;

/// N agents on 127.0.0.1.
#[derive(Debug)]
pub struct LocalCluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    bin: PathBuf,
    /// The agents, by index (node id - 1).
    pub nodes: Vec<LocalNode>,
    env: Vec<(String, String)>,
    /// Per-node command prefixes ([`LocalOptions::wrap`]).
    wrap: Vec<Vec<String>>,
    /// The certificate directory, when the cluster runs with mutual TLS.
    certs: Option<PathBuf>,
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn config_text(
    id: u64,
    addr: &str,
    data_dir: &Path,
    peers: &[(u64, String)],
    opts: &LocalOptions,
    join: bool,
    metrics_addr: Option<&str>,
) -> String {
    let mut s = format!(
        "cluster = \"local\"\nnode_id = {id}\nname = \"n{id}\"\ndata_dir = \"{}\"\nlisten = \"{addr}\"\njoin = {join}\n",
        data_dir.display()
    );
    if let Some(m) = &opts.amf_model {
        s.push_str(&format!("amf_model = \"{}\"\n", m.display()));
    }
    if !opts.hosts.is_empty() && !opts.tls {
        // Plaintext on addresses of their own: the network namespaces the caller made, which
        // nothing else can reach (the agent refuses a non-loopback plaintext listener otherwise).
        s.push_str("insecure = true\n");
    }
    if let Some(m) = metrics_addr {
        s.push_str(&format!("metrics_addr = \"{m}\"\n"));
    }
    for (pid, paddr) in peers {
        s.push_str(&format!(
            "\n[[peers]]\nid = {pid}\nname = \"n{pid}\"\naddr = \"{paddr}\"\n"
        ));
    }
    if let Some(t) = opts.snapshot_threshold_entries {
        s.push_str(&format!("\n[raft]\nsnapshot_threshold_entries = {t}\n"));
    }
    if !opts.extra_config.is_empty() {
        s.push('\n');
        s.push_str(&opts.extra_config);
        s.push('\n');
    }
    if opts.drill {
        s.push_str("\n[drill]\nenabled = true\n");
    }
    s
}

/// Validity of a local cluster's certificates, from now.
fn local_validity() -> Validity {
    Validity::days_from(std::time::SystemTime::now(), LOCAL_CERT_DAYS)
}

/// Make the CA (cluster `local`) and the two client certificates in `certs`.
fn init_certs(certs: &Path) -> anyhow::Result<()> {
    nines_tls::init_ca(certs, "local", local_validity(), false)
        .context("cannot make the local cluster's CA")?;
    for (name, role) in [
        (OPERATOR_CLIENT, Role::Drill),
        (COMPONENTS_CLIENT, Role::App),
    ] {
        nines_tls::issue_client(certs, name, role, local_validity(), false)
            .with_context(|| format!("cannot make the local cluster's {name} certificate"))?;
    }
    Ok(())
}

/// Issue node `id`'s certificate for 127.0.0.1 and the host of `addr` (when it has one of its
/// own), and return the `[tls]` section of its config.
fn node_tls(certs: &Path, id: u64, addr: &str) -> anyhow::Result<String> {
    let mut addrs = vec!["127.0.0.1".to_string()];
    if let Some((host, _port)) = addr.rsplit_once(':') {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !addrs.iter().any(|a| a == host) {
            addrs.push(host.to_string());
        }
    }
    nines_tls::issue_node(
        certs,
        id,
        &format!("n{id}"),
        &addrs,
        local_validity(),
        false,
    )
    .with_context(|| format!("cannot make node {id}'s certificate"))?;
    let node = TlsFiles::node(certs, id);
    let comp = TlsFiles::client(certs, COMPONENTS_CLIENT);
    Ok(format!(
        "\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncomponent_cert = \"{}\"\n\
         component_key = \"{}\"\n",
        node.ca.display(),
        node.cert.display(),
        node.key.display(),
        comp.cert.display(),
        comp.key.display()
    ))
}

impl LocalCluster {
    /// Write configs for `n` agents and start them with the `nines` binary at `bin`; with
    /// [`LocalOptions::tls`], make their certificates first.
    pub fn start(bin: &Path, n: u64, opts: LocalOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("nines-local-").tempdir()?;
        let root = dir.path().to_path_buf();
        let mut peers = Vec::new();
        for id in 1..=n {
            let addr = match opts.hosts.get(id as usize - 1) {
                Some(host) => format!("{host}:{HOST_PORT}"),
                None => format!("127.0.0.1:{}", free_port()?),
            };
            peers.push((id, addr));
        }
        let certs = match opts.tls {
            true => {
                let certs = root.join("certs");
                init_certs(&certs)?;
                Some(certs)
            }
            false => None,
        };
        let mut opts = opts;
        if let Some(text) = opts.amf_model_text.take() {
            let path = root.join("model.toml");
            fs::write(&path, text)?;
            opts.amf_model = Some(path);
        }
        let mut nodes = Vec::new();
        for (id, addr) in &peers {
            let config = root.join(format!("n{id}.toml"));
            let data = root.join(format!("data-n{id}"));
            let metrics_addr = match opts.metrics {
                true => Some(format!("127.0.0.1:{}", free_port()?)),
                false => None,
            };
            let mut text = config_text(
                *id,
                addr,
                &data,
                &peers,
                &opts,
                false,
                metrics_addr.as_deref(),
            );
            if let Some(certs) = &certs {
                text.push_str(&node_tls(certs, *id, addr)?);
            }
            fs::write(&config, text)?;
            nodes.push(LocalNode {
                id: *id,
                addr: addr.clone(),
                config,
                log: root.join(format!("n{id}.log")),
                metrics_addr,
                child: None,
            });
        }
        let mut c = Self {
            dir: Some(dir),
            root,
            bin: bin.to_path_buf(),
            nodes,
            env: opts.env.clone(),
            wrap: opts.wrap.clone(),
            certs,
        };
        if opts.keep || std::env::var_os(KEEP_ENV).is_some() {
            let _ = c.dir.take().map(|d| d.keep());
        }
        for id in 1..=n {
            c.spawn(id)?;
        }
        Ok(c)
    }

    /// Write a config for one more node (`join = true`, the current nodes as peers; a certificate
    /// of its own when the cluster runs with mutual TLS) and start it; it waits until `nines
    /// admin node add` adds it. Returns its id.
    pub fn start_joining_node(&mut self) -> anyhow::Result<u64> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let peers: Vec<(u64, String)> = self.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        let config = self.root.join(format!("n{id}.toml"));
        let data = self.root.join(format!("data-n{id}"));
        let mut text = config_text(
            id,
            &addr,
            &data,
            &peers,
            &LocalOptions::default(),
            true,
            None,
        );
        if let Some(certs) = &self.certs {
            text.push_str(&node_tls(certs, id, &addr)?);
        }
        fs::write(&config, text)?;
        self.nodes.push(LocalNode {
            id,
            addr,
            config,
            log: self.root.join(format!("n{id}.log")),
            metrics_addr: None,
            child: None,
        });
        self.spawn(id)?;
        Ok(id)
    }

    /// The directory holding configs, data dirs and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files a client of this cluster needs when it runs with mutual TLS (the `operator`
    /// certificate, role `drill`); `None` for a plaintext cluster.
    pub fn client_tls(&self) -> Option<TlsFiles> {
        self.certs
            .as_ref()
            .map(|certs| TlsFiles::client(certs, OPERATOR_CLIENT))
    }

    /// The directory of the cluster's CA and certificates, when it runs with mutual TLS.
    pub fn certs_dir(&self) -> Option<&Path> {
        self.certs.as_deref()
    }

    /// Every agent's address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    fn node(&mut self, id: u64) -> anyhow::Result<&mut LocalNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no local node {id}"))
    }

    /// Start node `id`'s agent (again).
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let env = self.env.clone();
        let wrap = self
            .wrap
            .get(id as usize - 1)
            .filter(|w| !w.is_empty())
            .cloned();
        let node = self.node(id)?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = match &wrap {
            Some(w) => {
                let mut c = Command::new(&w[0]);
                c.args(&w[1..]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("agent")
            .arg("--config")
            .arg(&node.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// The agent's process id, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.id == id)?
            .child
            .as_ref()
            .map(Child::id)
    }

    /// `kill -9` every agent and reap them (what dropping the cluster does, but keeping its
    /// directory).
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// `kill -9` node `id`'s agent and reap it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node(id)?;
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Send SIGTERM to node `id` and wait (up to `limit`) for it to exit; returns its exit code.
    pub fn terminate(&mut self, id: u64, limit: Duration) -> anyhow::Result<Option<i32>> {
        let node = self.node(id)?;
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if std::time::Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                bail!("node {id} did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until some node reports itself leader (asked over the cluster's own TLS, if any);
    /// returns its id.
    pub async fn wait_leader(&self, limit: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + limit;
        let tls = self.client_tls();
        loop {
            if let Ok(view) = client::cluster_view_with(&self.endpoints(), tls.as_ref()).await {
                if let Some(l) = view.leader {
                    if view.members.iter().any(|m| m.id == l && m.role == "leader") {
                        return Ok(l);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no leader within {limit:?}; logs are in {}",
                    self.root.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of node `id`'s log, for error reports.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Some(n) = self.nodes.iter().find(|n| n.id == id) else {
            return String::new();
        };
        let text = fs::read_to_string(&n.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_tls::Identity;

    #[test]
    fn a_tls_node_gets_a_certificate_for_its_addresses_and_a_tls_section() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let certs = tmp.path().join("certs");
        init_certs(&certs)?;
        let section = node_tls(&certs, 2, "10.0.0.7:7100")?;
        let doc: toml::Table = toml::from_str(&section)?;
        let tls = doc
            .get("tls")
            .and_then(toml::Value::as_table)
            .context("no [tls] table")?;
        let path = |k: &str| tls.get(k).and_then(toml::Value::as_str).map(PathBuf::from);
        let node = TlsFiles::node(&certs, 2);
        let comp = TlsFiles::client(&certs, COMPONENTS_CLIENT);
        assert_eq!(path("ca"), Some(node.ca.clone()));
        assert_eq!(path("cert"), Some(node.cert.clone()));
        assert_eq!(path("key"), Some(node.key.clone()));
        assert_eq!(path("component_cert"), Some(comp.cert.clone()));
        assert_eq!(path("component_key"), Some(comp.key.clone()));

        let loaded = node.load()?;
        let summary = nines_tls::describe(&loaded.chain[0])?;
        assert_eq!(summary.addrs, ["127.0.0.1", "10.0.0.7"]);
        assert!(
            matches!(loaded.identity, Identity::Node { id: 2, ref cluster, .. } if cluster == "local")
        );
        let role = |files: &TlsFiles| match files.load().map(|t| t.identity) {
            Ok(Identity::Client { role, .. }) => Some(role),
            _ => None,
        };
        assert_eq!(
            role(&TlsFiles::client(&certs, OPERATOR_CLIENT)),
            Some(Role::Drill)
        );
        assert_eq!(role(&comp), Some(Role::App));

        // A loopback node is not given 127.0.0.1 twice.
        node_tls(&certs, 3, "127.0.0.1:7103")?;
        let n3 = TlsFiles::node(&certs, 3).load()?;
        assert_eq!(nines_tls::describe(&n3.chain[0])?.addrs, ["127.0.0.1"]);
        Ok(())
    }
}
