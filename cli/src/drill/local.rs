//! A throw-away local cluster for drills: the counter example (2N) on three agents with the
//! drill endpoint enabled, and a supervisor that restarts an agent that died — the part systemd's
//! `Restart=always` or a container restart policy plays in production (`nines drill --local`,
//! `nines demo`, the tests).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bench_amf::COUNTER_MODEL;
use crate::local::{LocalCluster, LocalOptions};
use crate::netns::{LinkSwitch, Namespaces};

/// How often the supervisor looks for dead agents.
const SUPERVISE_INTERVAL_MS: u64 = 100;
/// How long the supervisor waits before restarting a dead agent (systemd's `RestartSec=`): longer
/// than the cluster takes to declare a silent node down (~0.5 s), so that a node kill is a node
/// loss. An agent back sooner than that is a different story — its node is never declared down
/// and its components' failures are found by the restarted director — which drills of an
/// operator's real supervisor measure as it is configured.
const RESTART_DELAY_MS: u64 = 2_000;

/// A local drill cluster whose dead agents are restarted.
pub struct SupervisedCluster {
    cluster: Arc<Mutex<LocalCluster>>,
    endpoints: Vec<String>,
    /// The operator's TLS files when the cluster runs with mutual TLS.
    client_tls: Option<nines_tls::TlsFiles>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// The namespaces the agents run in, if any (after `cluster`: removed once it is stopped).
    net: Option<Namespaces>,
}

/// Whether process `pid` has exited (a zombie not yet reaped, or gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: "pid (comm) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

impl SupervisedCluster {
    /// Start the counter example on three local agents with drills enabled, in plaintext; `env`
    /// goes to the agents (and their components).
    pub fn start(bin: &std::path::Path, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        Self::start_with(bin, env, false)
    }

    /// [`start`](Self::start), with mutual TLS on certificates the cluster makes when `tls`
    /// (clients then need [`client_tls`](Self::client_tls)).
    pub fn start_with(
        bin: &std::path::Path,
        env: Vec<(String, String)>,
        tls: bool,
    ) -> anyhow::Result<Self> {
        let opts = LocalOptions {
            amf_model_text: Some(COUNTER_MODEL.to_string()),
            drill: true,
            env,
            tls,
            ..Default::default()
        };
        Ok(Self::supervise(LocalCluster::start(bin, 3, opts)?))
    }

    /// [`start_with`](Self::start_with), each agent in a network namespace of its own whose
    /// link can be cut ([`links`](Self::links)). Needs root and iproute2.
    pub fn start_in_namespaces(
        bin: &std::path::Path,
        env: Vec<(String, String)>,
        tls: bool,
    ) -> anyhow::Result<Self> {
        let net = Namespaces::create(3).map_err(|e| {
            anyhow::anyhow!(
                "cannot put the local cluster in network namespaces (this needs root and \
                 iproute2): {e:#}"
            )
        })?;
        let opts = LocalOptions {
            amf_model_text: Some(COUNTER_MODEL.to_string()),
            drill: true,
            env,
            hosts: net.hosts(),
            wrap: net.wrap(),
            tls,
            ..Default::default()
        };
        let mut c = Self::supervise(LocalCluster::start(bin, 3, opts)?);
        c.net = Some(net);
        Ok(c)
    }

    /// The switch that cuts the agents' links, when they run in namespaces.
    pub fn links(&self) -> Option<LinkSwitch> {
        self.net.as_ref().map(Namespaces::switch)
    }

    /// Supervise an already started cluster.
    pub fn supervise(cluster: LocalCluster) -> Self {
        let endpoints = cluster.endpoints();
        let client_tls = cluster.client_tls();
        let cluster = Arc::new(Mutex::new(cluster));
        let (stop, mut stopped) = watch::channel(false);
        let c = cluster.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(SUPERVISE_INTERVAL_MS)) => {}
                }
                let dead: Vec<u64> = {
                    let c = c.lock().expect("cluster lock");
                    c.nodes
                        .iter()
                        .filter(|n| c.pid(n.id).is_some_and(exited))
                        .map(|n| n.id)
                        .collect()
                };
                if dead.is_empty() {
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(RESTART_DELAY_MS)).await;
                let mut c = c.lock().expect("cluster lock");
                for id in dead {
                    // Reap the dead agent, then start it again on the same data dir.
                    let _ = c.kill(id);
                    if let Err(e) = c.spawn(id) {
                        eprintln!("nines drill: cannot restart local node {id}: {e:#}");
                    }
                }
            }
        });
        SupervisedCluster {
            cluster,
            endpoints,
            client_tls,
            stop,
            task: Some(task),
            net: None,
        }
    }

    /// Every agent's address.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// The files a client of the cluster needs when it runs with mutual TLS (the operator's,
    /// role `drill`); `None` in plaintext.
    pub fn client_tls(&self) -> Option<nines_tls::TlsFiles> {
        self.client_tls.clone()
    }

    /// The cluster (for logs, its directory, waiting for a leader).
    pub fn with<T>(&self, f: impl FnOnce(&LocalCluster) -> T) -> T {
        f(&self.cluster.lock().expect("cluster lock"))
    }

    /// Stop supervising and stop every agent (dropping the cluster removes its directory).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        // Stop the agents before their namespaces go.
        if let Ok(mut c) = self.cluster.lock() {
            c.stop_all();
        }
    }
}

impl Drop for SupervisedCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
