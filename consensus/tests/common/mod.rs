//! Test harness: a counter state machine and an in-process cluster of nodes.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use nines_consensus::{
    start, ApplyContext, InProcessNetwork, MemLogStore, Members, NodeConfig, PeerInfo, Proposer,
    RaftConfig, ReadMode, Role, SledLogStore, StateMachine,
};
use nines_core::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// A command of the test state machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    Add(u64),
}

/// The outcome of one `Op`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub applied_index: u64,
    pub count: u64,
}

/// Records every value in apply order, with a running digest of (index, value).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Counter {
    pub values: Vec<u64>,
    pub digest: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub count: u64,
    pub digest: u64,
}

impl StateMachine for Counter {
    type Command = Op;
    type Response = Applied;

    fn apply(&mut self, ctx: ApplyContext, cmd: Op) -> Result<Applied, String> {
        let Op::Add(v) = cmd;
        self.values.push(v);
        self.digest = self
            .digest
            .wrapping_mul(1_000_003)
            .wrapping_add(v ^ 0x9e37_79b9)
            .rotate_left(7);
        Ok(Applied {
            applied_index: ctx.index,
            count: self.values.len() as u64,
        })
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(self).map_err(|e| e.to_string())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        *self = postcard::from_bytes(data).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Running {
    proposer: Proposer<Counter>,
    shutdown: Shutdown,
    driver: JoinHandle<Result<(), nines_consensus::Fatal>>,
}

/// N nodes on one in-process network.
pub struct Cluster {
    pub net: InProcessNetwork,
    nodes: BTreeMap<u64, Option<Running>>,
    dir: Option<PathBuf>,
    raft: RaftConfig,
    book: Members,
}

fn book(n: u64) -> Members {
    (1..=n)
        .map(|i| {
            let info = PeerInfo {
                name: format!("n{i}"),
                addr: format!("inproc-{i}"),
                voter: true,
            };
            (i, info)
        })
        .collect()
}

impl Cluster {
    pub async fn mem(n: u64) -> Self {
        Self::new(n, None, 10_000).await
    }

    pub async fn sled(n: u64, dir: &Path, snapshot_threshold_entries: u64) -> Self {
        Self::new(n, Some(dir.to_path_buf()), snapshot_threshold_entries).await
    }

    async fn new(n: u64, dir: Option<PathBuf>, snapshot_threshold_entries: u64) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let raft = RaftConfig {
            snapshot_threshold_entries,
            ..RaftConfig::default()
        };
        let mut c = Cluster {
            net: InProcessNetwork::new(),
            nodes: BTreeMap::new(),
            dir,
            raft,
            book: book(n),
        };
        for id in 1..=n {
            c.start_node(id, c.book.clone());
        }
        c
    }

    fn start_node(&mut self, id: u64, bootstrap: Members) {
        let cfg = NodeConfig {
            id,
            cluster: "test".into(),
            raft: self.raft.clone(),
            bootstrap,
            seed_peers: self.book.clone(),
        };
        let (shutdown, signal) = Shutdown::new();
        let transport = self.net.transport(id);
        let started = match &self.dir {
            Some(dir) => {
                let store = SledLogStore::open(&dir.join(format!("n{id}"))).expect("open sled");
                start(cfg, store, Counter::default(), transport, signal)
            }
            None => start(
                cfg,
                MemLogStore::new(),
                Counter::default(),
                transport,
                signal,
            ),
        }
        .expect("node starts");
        self.net.register(id, Arc::new(started.proposer.clone()));
        self.nodes.insert(
            id,
            Some(Running {
                proposer: started.proposer,
                shutdown,
                driver: started.driver,
            }),
        );
    }

    pub fn proposer(&self, id: u64) -> Proposer<Counter> {
        self.nodes[&id]
            .as_ref()
            .expect("node is running")
            .proposer
            .clone()
    }

    pub fn peer_info(&self, id: u64) -> PeerInfo {
        book(id.max(3))[&id].clone()
    }

    fn running(&self) -> impl Iterator<Item = (u64, &Running)> {
        self.nodes
            .iter()
            .filter_map(|(id, r)| r.as_ref().map(|r| (*id, r)))
    }

    pub async fn stop(&mut self, id: u64) {
        let r = self
            .nodes
            .get_mut(&id)
            .and_then(Option::take)
            .expect("node is running");
        self.net.remove(id);
        r.shutdown.trigger();
        r.driver
            .await
            .expect("driver joins")
            .expect("driver ends cleanly");
    }

    pub async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.running().map(|(id, _)| id).collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    pub async fn restart(&mut self, id: u64) {
        assert!(self.dir.is_some(), "restart needs a durable store");
        self.start_node(id, self.book.clone());
    }

    pub async fn restart_joining(&mut self, id: u64) {
        self.start_node(id, Members::new());
    }

    pub fn wipe(&self, id: u64) {
        let dir = self
            .dir
            .as_ref()
            .expect("durable store")
            .join(format!("n{id}"));
        std::fs::remove_dir_all(dir).expect("wipe");
    }

    pub async fn wait_leader(&self, limit: Duration) -> u64 {
        self.wait_leader_where(limit, |_| true).await
    }

    pub async fn wait_leader_other_than(&self, old: u64, limit: Duration) -> u64 {
        self.wait_leader_where(limit, |id| id != old).await
    }

    async fn wait_leader_where(&self, limit: Duration, ok: impl Fn(u64) -> bool) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            for (id, r) in self.running() {
                if ok(id) && r.proposer.status().role == Role::Leader {
                    return id;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until every running node has applied the same entries; returns their digests.
    pub async fn wait_converged(&self, limit: Duration) -> Vec<Digest> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut digests = Vec::new();
            for (_, r) in self.running() {
                let d = r
                    .proposer
                    .read(ReadMode::Stale, Duration::from_secs(2), |sm: &Counter| {
                        Digest {
                            count: sm.values.len() as u64,
                            digest: sm.digest,
                        }
                    })
                    .await
                    .expect("stale read");
                digests.push(d);
            }
            if digests.windows(2).all(|w| w[0] == w[1]) {
                return digests;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nodes did not converge within {limit:?}: {digests:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
