//! The agent's TOML config: parsed strictly (unknown keys are errors) and validated with
//! messages that name the key and the problem.

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf};

use nines_consensus::{Members, PeerInfo, RaftConfig};
use nines_heartbeat::{lease::LeaseConfig, DetectorConfig};
use serde::Deserialize;

/// A config that cannot be used, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("config {path}: `{key}`: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key at fault.
        key: String,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// One agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The cluster's name; recorded in the data dir at first start and carried by every peer
    /// message, so two clusters on one network never merge.
    pub cluster: String,
    /// This node's id: non-zero, unique, never reused.
    pub node_id: u64,
    /// This node's name, for people.
    pub name: String,
    /// Where the node keeps its Raft log and snapshots. Relative paths are taken from the
    /// directory the agent is started in.
    pub data_dir: PathBuf,
    /// host:port the gRPC server listens on, for peers and operators alike.
    pub listen: String,
    /// host:port peers and clients use to reach this node, if not `listen` (e.g. behind NAT).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Start with an empty log and wait to be added with `nines admin node add` instead of
    /// bootstrapping the cluster from `peers`.
    #[serde(default)]
    pub join: bool,
    /// The initial voters (this node included unless `join`). Every initial node must list the
    /// same peers.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Raft timing and sizing.
    #[serde(default)]
    pub raft: RaftSection,
    /// `[heartbeat]`: the failure detector (interval_ms 100, timeout_ms 500, flap damping).
    #[serde(default)]
    pub heartbeat: DetectorConfig,
    /// `[lease]`: how long this node may act without quorum contact, and the margin the leader
    /// adds before it declares a silent node down (see docs/design.md).
    #[serde(default = "lease_default")]
    pub lease: LeaseConfig,
    /// The Unix socket components' SDK sessions connect to (default `<data_dir>/nines.sock`).
    /// Keep the path short: Unix socket paths are limited to 107 bytes.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// `[watchdog]`: the node's watchdog device (off unless `device` is set).
    #[serde(default)]
    pub watchdog: WatchdogSection,
    /// An AMF model file (TOML) to apply when the cluster has none yet (at first start). Later
    /// changes go through `nines admin model apply FILE`. Relative to the config file.
    #[serde(default)]
    pub amf_model: Option<PathBuf>,
    /// ip:port to serve Prometheus metrics on (`GET /metrics`); none: no metrics listener.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// `[telemetry]`: trace export (OTLP) and the log format.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySection,
    /// `[drill]`: whether `nines drill` may kill or pause this agent and its components (off by
    /// default; see docs/design.md, "Drills").
    #[serde(default)]
    pub drill: DrillSection,
    /// `[limits]`: caps on what clients may send.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[tls]`: mutual TLS on the listener (peers and clients), and the certificate handed to
    /// components. Without it the agent speaks plaintext, on loopback only unless `insecure`.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Allow plaintext (no `[tls]`) on a listen address that is not loopback: anyone who reaches
    /// the port can then act as a peer or an operator. For isolated test networks only.
    #[serde(default)]
    pub insecure: bool,
    /// A plaintext listener serving only the standard gRPC health check (`grpc.health.v1`), for
    /// probes that cannot present a certificate (Kubernetes gRPC probes). It changes nothing.
    #[serde(default)]
    pub health_listen: Option<String>,
}

/// `[tls]` (paths relative to the config file's directory): this node's certificate (from `nines
/// cert node`), the cluster CA that every peer and
/// client certificate must chain to, and optionally an `app` client certificate (from `nines
/// cert client --role app`) the agent hands its components in `NINES_CA`, `NINES_CERT` and
/// `NINES_KEY`, so they can use checkpoints and events with no certificate work of their own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster CA's certificate (`ca.pem`).
    pub ca: PathBuf,
    /// This node's certificate (`node-<ID>.pem`).
    pub cert: PathBuf,
    /// Its private key (`node-<ID>.key`).
    pub key: PathBuf,
    /// The components' client certificate (role `app`), if any.
    #[serde(default)]
    pub component_cert: Option<PathBuf>,
    /// Its private key.
    #[serde(default)]
    pub component_key: Option<PathBuf>,
}

impl TlsSection {
    /// This node's files.
    pub fn node_files(&self) -> nines_tls::TlsFiles {
        nines_tls::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// The components' files, if configured.
    pub fn component_files(&self) -> Option<nines_tls::TlsFiles> {
        Some(nines_tls::TlsFiles {
            ca: self.ca.clone(),
            cert: self.component_cert.clone()?,
            key: self.component_key.clone()?,
        })
    }

    /// Check the files at start: the node's certificate must load (signed by the CA, matching
    /// its key) and be node `node_id`'s of `cluster`; the component certificate, if any, must be
    /// a client of the same CA with role app or higher. The error says which and what to do.
    pub fn check(&self, node_id: u64, cluster: &str) -> Result<(), String> {
        let node = self.node_files().load().map_err(|e| e.to_string())?;
        match &node.identity {
            nines_tls::Identity::Node { cluster: c, id, .. } if *id == node_id && c == cluster => {}
            other => {
                return Err(format!(
                    "{} is a certificate for {}, but this is node {node_id} of cluster \
                     '{cluster}'; issue one with `nines cert node --id {node_id}`",
                    self.cert.display(),
                    other.uri()
                ))
            }
        }
        if let Some(files) = self.component_files() {
            let c = files.load().map_err(|e| format!("component_cert: {e}"))?;
            match &c.identity {
                nines_tls::Identity::Client { role, .. } if role.allows(nines_tls::Role::App) => {}
                other => {
                    return Err(format!(
                        "component_cert: components need a client certificate with role app; \
                         {} is {}; issue one with `nines cert client --name components --role \
                         app`",
                        files.cert.display(),
                        other.uri()
                    ))
                }
            }
        }
        Ok(())
    }

    /// Resolve relative paths against `dir` (the config file's directory).
    fn resolve(&mut self, dir: &std::path::Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key]
            .into_iter()
            .chain(self.component_cert.as_mut())
            .chain(self.component_key.as_mut())
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

/// Default [`LimitsSection::request_bytes_max`]: 4 MiB of data (one full-size checkpoint section)
/// plus 64 KiB for the rest of the request.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024 + 64 * 1024;

/// `[limits]`: caps on client requests. Peer traffic (raft messages and snapshots, up to
/// `GRPC_MESSAGE_BYTES_MAX`) is not affected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest request a client may send to the checkpoint, event and AMF services, in bytes
    /// (default 4 MiB + 64 KiB; the membership and cluster services, whose requests are small,
    /// keep gRPC's 4 MiB). A bigger one is refused (OUT_OF_RANGE) before it is decoded.
    pub request_bytes_max: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
        }
    }
}

/// `[drill]`: the guarded drill endpoint. Off unless `enabled = true`: a drill kills processes,
/// so a node takes part only when its operator said so in its config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillSection {
    /// Serve drill requests (kill -9 / SIGSTOP of local components, kill or pause the agent).
    pub enabled: bool,
    /// The longest `nines drill pause` this agent accepts (default 60000).
    pub pause_ms_max: u64,
}

impl Default for DrillSection {
    fn default() -> Self {
        Self {
            enabled: false,
            pause_ms_max: 60_000,
        }
    }
}

/// The agent's lease: short enough that a lost node's lease has surely expired by the time the
/// detector declares it down (300 + 150 ms < the 500 ms timeout), so detection is not delayed.
fn lease_default() -> LeaseConfig {
    LeaseConfig {
        lease_ms: 300,
        drift_margin_ms: 150,
        fence_reaction_ms: 100,
    }
}

/// `[watchdog]`: the node watchdog. The agent opens `device`, sets `timeout_s`
/// (WDIOC_SETTIMEOUT) and kicks it (WDIOC_KEEPALIVE) every `timeout_s / 4` while its main loop is
/// healthy and the node is not fenced with local components still running; on a clean stop it
/// writes the magic close, so a planned stop does not reset the node. A hung agent stops kicking
/// and the device resets the node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogSection {
    /// The device, e.g. "/dev/watchdog" (none: no node watchdog).
    pub device: Option<PathBuf>,
    /// The device timeout in seconds (1 ..= 600; default 10).
    pub timeout_s: u32,
}

impl Default for WatchdogSection {
    fn default() -> Self {
        Self {
            device: None,
            timeout_s: 10,
        }
    }
}

/// One initial voter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its host:port.
    pub addr: String,
}

/// `[raft]`: timing and sizing, with the defaults the cluster is tuned for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Leader heartbeat interval (default 100).
    pub heartbeat_interval_ms: u64,
    /// Upper bound of the randomized election timeout; a follower campaigns after a silence of
    /// between half of it and all of it (default 800).
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots (default 10000).
    pub snapshot_threshold_entries: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        let d = RaftConfig::default();
        Self {
            heartbeat_interval_ms: d.heartbeat_interval_ms,
            election_timeout_ms: d.election_timeout_ms,
            snapshot_threshold_entries: d.snapshot_threshold_entries,
        }
    }
}

impl AgentConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        if let (Some(m), Some(dir)) = (cfg.amf_model.as_ref(), path.parent()) {
            if m.is_relative() {
                cfg.amf_model = Some(dir.join(m));
            }
        }
        if let (Some(t), Some(dir)) = (cfg.tls.as_mut(), path.parent()) {
            t.resolve(dir);
        }
        Ok(cfg)
    }

    /// Parse and validate config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &std::path::Path) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            problem,
        };
        if self.cluster.trim().is_empty() {
            return Err(bad("cluster", "must not be empty".into()));
        }
        if !(1..=600).contains(&self.watchdog.timeout_s) {
            return Err(bad(
                "watchdog.timeout_s",
                format!("{} is outside 1 ..= 600 seconds", self.watchdog.timeout_s),
            ));
        }
        let request_max = self.limits.request_bytes_max;
        if !(64 * 1024..=nines_core::limits::GRPC_MESSAGE_BYTES_MAX).contains(&request_max) {
            return Err(bad(
                "limits.request_bytes_max",
                format!(
                    "{request_max} is outside 65536 ..= {} bytes",
                    nines_core::limits::GRPC_MESSAGE_BYTES_MAX
                ),
            ));
        }
        if self.node_id == 0 {
            return Err(bad(
                "node_id",
                "must be a positive integer (0 means \"none\")".into(),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        let listen = self.listen.parse::<SocketAddr>().map_err(|e| {
            bad(
                "listen",
                format!("'{}' is not an ip:port address ({e})", self.listen),
            )
        })?;
        match &self.tls {
            None if !listen.ip().is_loopback() && !self.insecure => {
                return Err(bad(
                    "listen",
                    format!(
                        "{listen} is not a loopback address and there is no [tls] section: \
                         anyone who reaches the port could act as a peer or an operator. Add \
                         [tls] (ca, cert, key; see `nines cert --help`), listen on 127.0.0.1, or \
                         set `insecure = true` on an isolated test network"
                    ),
                ));
            }
            None => {}
            Some(t) if t.component_cert.is_some() != t.component_key.is_some() => {
                return Err(bad(
                    "tls.component_cert",
                    "give both component_cert and component_key, or neither".into(),
                ));
            }
            Some(_) => {}
        }
        if let Some(h) = &self.health_listen {
            h.parse::<SocketAddr>().map_err(|e| {
                bad(
                    "health_listen",
                    format!("'{h}' is not an ip:port address ({e})"),
                )
            })?;
        }
        if let Some(a) = &self.advertise {
            check_host_port(a).map_err(|p| bad("advertise", p))?;
        }
        if let Some(a) = &self.metrics_addr {
            a.parse::<SocketAddr>().map_err(|e| {
                bad(
                    "metrics_addr",
                    format!("'{a}' is not an ip:port address ({e})"),
                )
            })?;
        }
        self.telemetry
            .validate()
            .map_err(|p| bad("telemetry.otlp_endpoint", p))?;
        let mut ids = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let key = format!("peers[{i}]");
            if p.id == 0 {
                return Err(bad(
                    &format!("{key}.id"),
                    "must be a positive integer".into(),
                ));
            }
            if !ids.insert(p.id) {
                return Err(bad(
                    &format!("{key}.id"),
                    format!("node id {} is listed twice", p.id),
                ));
            }
            check_host_port(&p.addr).map_err(|e| bad(&format!("{key}.addr"), e))?;
        }
        if !self.join && !ids.contains(&self.node_id) {
            return Err(bad(
                "peers",
                format!(
                    "this node (node_id {}) is not among the peers; list it, or set `join = \
                     true` to wait to be added to a running cluster",
                    self.node_id
                ),
            ));
        }
        self.raft_config().validate().map_err(|p| bad("raft", p))?;
        self.heartbeat
            .validate()
            .map_err(|e| bad("heartbeat", e.to_string()))?;
        self.lease
            .validate()
            .map_err(|e| bad("lease", e.to_string()))?;
        Ok(())
    }

    /// Where peers and clients reach this node.
    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }

    /// The consensus layer's timing.
    pub fn raft_config(&self) -> RaftConfig {
        RaftConfig {
            heartbeat_interval_ms: self.raft.heartbeat_interval_ms,
            election_timeout_ms: self.raft.election_timeout_ms,
            snapshot_threshold_entries: self.raft.snapshot_threshold_entries,
            ..RaftConfig::default()
        }
    }

    /// The SDK socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("nines.sock"))
    }

    /// The initial voters, or none when joining.
    pub fn bootstrap_members(&self) -> Members {
        if self.join {
            return Members::new();
        }
        self.seed_members()
    }

    /// Every peer the config names: whom to talk to before the member book is known.
    pub fn seed_members(&self) -> Members {
        self.peers
            .iter()
            .map(|p| {
                let info = PeerInfo {
                    name: p.name.clone(),
                    addr: p.addr.clone(),
                    voter: true,
                };
                (p.id, info)
            })
            .collect()
    }
}

fn check_host_port(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("'{addr}' is not a host:port address")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const GOOD: &str = r#"
cluster = "c"
node_id = 1
name = "n1"
data_dir = "data/n1"
listen = "127.0.0.1:7101"

[[peers]]
id = 1
name = "n1"
addr = "127.0.0.1:7101"

[[peers]]
id = 2
name = "n2"
addr = "127.0.0.1:7102"
"#;

    fn err(text: &str) -> String {
        AgentConfig::parse(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn plaintext_is_for_loopback_unless_insecure() {
        let open = GOOD.replace("listen = \"127.0.0.1:7101\"", "listen = \"0.0.0.0:7101\"");
        let e = err(&open);
        assert!(
            e.contains("not a loopback address") && e.contains("[tls]"),
            "{e}"
        );
        let insecure = format!("insecure = true\n{open}");
        assert!(AgentConfig::parse(&insecure, Path::new("x.toml")).is_ok());
        let tls = format!("{open}\n[tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n");
        assert!(AgentConfig::parse(&tls, Path::new("x.toml")).is_ok());
        let half = format!("{tls}component_cert = \"c.pem\"\n");
        assert!(err(&half).contains("component_key"), "{}", err(&half));
    }

    #[test]
    fn tls_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "{GOOD}\n[tls]\nca = \"tls/ca.pem\"\ncert = \"/abs/n.pem\"\nkey = \"tls/n.key\"\n"
        );
        let path = dir.path().join("n1.toml");
        std::fs::write(&path, text).expect("write");
        let cfg = AgentConfig::load(&path).expect("loads");
        let t = cfg.tls.expect("tls");
        assert_eq!(t.ca, dir.path().join("tls/ca.pem"));
        assert_eq!(t.cert, Path::new("/abs/n.pem"));
        // The files do not exist: the config loads, the agent refuses them at start.
        let e = t.check(1, "c").expect_err("missing files");
        assert!(e.contains("ca.pem") || e.contains("n.pem"), "{e}");
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = AgentConfig::parse(GOOD, Path::new("x.toml")).expect("valid");
        assert_eq!(c.raft.heartbeat_interval_ms, 100);
        assert_eq!(c.bootstrap_members().len(), 2);
        assert_eq!(c.advertise_addr(), "127.0.0.1:7101");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&format!("{GOOD}\n[raft]\nheartbeat_ms = 5\n"));
        assert!(e.contains("heartbeat_ms"), "{e}");
        let e = err(&GOOD.replace("listen =", "listen_addr = \"x\"\nlisten ="));
        assert!(e.contains("listen_addr"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_problem() {
        let e = err(&GOOD.replace("node_id = 1", "node_id = 0"));
        assert!(e.contains("`node_id`"), "{e}");
        let e = err(&GOOD.replace("listen = \"127.0.0.1:7101\"", "listen = \"localhost\""));
        assert!(e.contains("`listen`"), "{e}");
        let e = err(&GOOD.replace("id = 2", "id = 1"));
        assert!(e.contains("peers[1].id") && e.contains("twice"), "{e}");
        let e = err(&GOOD.replace("node_id = 1", "node_id = 3"));
        assert!(e.contains("`peers`") && e.contains("join"), "{e}");
        let e = err(&format!("{GOOD}\n[raft]\nelection_timeout_ms = 150\n"));
        assert!(
            e.contains("`raft`") && e.contains("election_timeout_ms"),
            "{e}"
        );
        let e = err(&GOOD.replace("node_id = 1", "node_id = \"one\""));
        assert!(e.contains("node_id"), "{e}");
    }
}
