//! Promise 2 under disk failure and slow disks: a node whose fsync fails stops with a fatal error
//! and never acknowledges the write that needed it, and a write is acknowledged only once a
//! quorum has synced it (the sync runs on its own thread; acknowledgements wait for it).

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{Counter, Op};
use nines_consensus::{
    start, Fatal, InProcessNetwork, LogStore, MemLogStore, NodeConfig, PeerInfo, RaftConfig,
    ReadyWrite, StoreError,
};
use nines_core::shutdown::Shutdown;
use raft::{
    eraftpb::{Entry, Snapshot},
    GetEntriesContext, RaftState,
};

/// A memory store whose `sync` fails once `broken` is set, and waits while `gated` is set.
struct FailingStore {
    inner: MemLogStore,
    broken: Arc<AtomicBool>,
    gated: Arc<AtomicBool>,
}

impl raft::Storage for FailingStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.inner.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max: impl Into<Option<u64>>,
        ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.inner.entries(low, high, max, ctx)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.inner.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.inner.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.inner.last_index()
    }
    fn snapshot(&self, i: u64, to: u64) -> raft::Result<Snapshot> {
        self.inner.snapshot(i, to)
    }
}

impl LogStore for FailingStore {
    fn write_ready(&self, w: &ReadyWrite) -> Result<(), StoreError> {
        self.inner.write_ready(w)
    }
    fn set_commit(&self, c: u64) -> Result<(), StoreError> {
        self.inner.set_commit(c)
    }
    fn compact_to_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        self.inner.compact_to_snapshot(s)
    }
    fn sync(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.gated.load(Ordering::SeqCst) {
            if std::time::Instant::now() > deadline {
                return Err(StoreError::Io("test gate never opened".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected fsync failure".into()));
        }
        self.inner.sync()
    }
    fn latest_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        self.inner.latest_snapshot()
    }
    fn put_meta(&self, k: &str, v: &[u8]) -> Result<(), StoreError> {
        self.inner.put_meta(k, v)
    }
    fn get_meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(k)
    }
    fn is_empty(&self) -> Result<bool, StoreError> {
        self.inner.is_empty()
    }
}

/// Three in-process nodes on [`FailingStore`]s: the nodes, each one's `broken` and `gated`
/// switches, and their shutdown triggers.
#[allow(clippy::type_complexity)]
fn start_three() -> (
    Vec<nines_consensus::StartedNode<Counter>>,
    Vec<Arc<AtomicBool>>,
    Vec<Arc<AtomicBool>>,
    Vec<Shutdown>,
) {
    let book: nines_consensus::Members = (1..=3)
        .map(|i| {
            let info = PeerInfo {
                name: format!("n{i}"),
                addr: format!("inproc-{i}"),
                voter: true,
            };
            (i, info)
        })
        .collect();
    let net = InProcessNetwork::new();
    let mut nodes = Vec::new();
    let mut switches = Vec::new();
    let mut gates = Vec::new();
    let mut triggers = Vec::new();
    for id in 1..=3u64 {
        let broken = Arc::new(AtomicBool::new(false));
        let gated = Arc::new(AtomicBool::new(false));
        let store = FailingStore {
            inner: MemLogStore::new(),
            broken: broken.clone(),
            gated: gated.clone(),
        };
        let cfg = NodeConfig {
            id,
            cluster: "test".into(),
            raft: RaftConfig::default(),
            bootstrap: book.clone(),
            seed_peers: book.clone(),
        };
        let (shutdown, signal) = Shutdown::new();
        let started =
            start(cfg, store, Counter::default(), net.transport(id), signal).expect("starts");
        net.register(id, Arc::new(started.proposer.clone()));
        nodes.push(started);
        switches.push(broken);
        gates.push(gated);
        triggers.push(shutdown);
    }
    (nodes, switches, gates, triggers)
}

async fn wait_leader(nodes: &[nines_consensus::StartedNode<Counter>]) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = nodes
            .iter()
            .find(|n| n.proposer.status().role == nines_consensus::Role::Leader)
        {
            return n.proposer.id();
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_acknowledged_only_once_a_quorum_has_synced_it() {
    let (nodes, _switches, gates, triggers) = start_three();
    let leader = wait_leader(&nodes).await;
    let p = nodes[(leader - 1) as usize].proposer.clone();
    p.propose(&Op::Add(1), Duration::from_secs(10))
        .await
        .expect("healthy write");
    let followers: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    eprintln!("phase: syncs held on followers {followers:?}; only the leader's disk answers");
    for &f in &followers {
        gates[(f - 1) as usize].store(true, Ordering::SeqCst);
    }
    let write = tokio::spawn({
        let p = p.clone();
        async move { p.propose(&Op::Add(2), Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "a write was answered while only the leader had synced it"
    );
    eprintln!("phase: follower {} syncs", followers[0]);
    gates[(followers[0] - 1) as usize].store(false, Ordering::SeqCst);
    let r = tokio::time::timeout(Duration::from_secs(20), write)
        .await
        .expect("acknowledged once a quorum synced")
        .expect("joins");
    assert!(r.is_ok(), "the write failed: {r:?}");
    gates[(followers[1] - 1) as usize].store(false, Ordering::SeqCst);
    drop(triggers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_node_and_nothing_is_acknowledged() {
    let (mut nodes, switches, _gates, triggers) = start_three();
    let leader = loop {
        if let Some(n) = nodes
            .iter()
            .find(|n| n.proposer.status().role == nines_consensus::Role::Leader)
        {
            break n.proposer.id();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let p = nodes[(leader - 1) as usize].proposer.clone();
    p.propose(&Op::Add(1), Duration::from_secs(10))
        .await
        .expect("healthy write");

    eprintln!("phase: breaking fsync on leader {leader}");
    switches[(leader - 1) as usize].store(true, Ordering::SeqCst);
    let r = p.propose(&Op::Add(2), Duration::from_secs(5)).await;
    assert!(
        r.is_err(),
        "a write whose fsync failed on the proposing node was acknowledged: {r:?}"
    );

    let node = nodes.remove((leader - 1) as usize);
    let outcome = tokio::time::timeout(Duration::from_secs(10), node.driver)
        .await
        .expect("the node stops")
        .expect("driver joins");
    assert!(
        matches!(outcome, Err(Fatal::Store(StoreError::Io(_)))),
        "expected a fatal store error, got {outcome:?}"
    );
    drop(triggers);
}
