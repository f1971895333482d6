//! Starting a node: open or bootstrap its state, spawn its driver, hand back a [`Proposer`].

use std::{
    collections::HashMap,
    sync::{atomic::AtomicBool, Arc},
};

use nines_core::{limits, shutdown::ShutdownSignal, NodeId};
use raft::{eraftpb::Snapshot, RawNode};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    driver::Driver,
    logger::raft_logger,
    members::SnapshotEnvelope,
    persist::Persister,
    status::{NodeStatus, Role},
    store::{ReadyWrite, StoreRef},
    Fatal, LogStore, Mailbox, Members, Proposer, RaftConfig, StateMachine, Transport,
};

/// Everything a node needs to know at start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The cluster's name. Recorded in the store at first start; a store of another cluster is
    /// refused, and peers of another cluster are refused by the transport.
    pub cluster: String,
    /// Timing and sizing.
    pub raft: RaftConfig,
    /// The initial voters, used only when the store is empty. If it holds this node's id, the
    /// node bootstraps the cluster with exactly these voters (every initial node must be given
    /// the same book). If empty, or without this node, the node starts empty and waits to be
    /// added by a running cluster (`add_voter`), which then sends it a snapshot.
    pub bootstrap: Members,
    /// Peers to reach before this node knows any members (a joining node): its replies to the
    /// leader need an address until the leader's snapshot brings the member book.
    pub seed_peers: Members,
}

/// A started node: its handle and its driver task.
pub struct StartedNode<M: StateMachine> {
    /// The handle for proposals, reads, membership and status.
    pub proposer: Proposer<M>,
    /// The driver task: ends `Ok` on shutdown or removal, `Err` on a fatal error (the node must
    /// then stop: nothing it says can be trusted).
    pub driver: JoinHandle<Result<(), Fatal>>,
}

/// Open `store` (bootstrapping it if empty and asked to), restore `sm` from its snapshot, and
/// spawn the driver task on the current tokio runtime.
pub fn start<S: LogStore, M: StateMachine>(
    cfg: NodeConfig,
    store: S,
    mut sm: M,
    transport: Arc<dyn Transport>,
    shutdown: ShutdownSignal,
) -> Result<StartedNode<M>, Fatal> {
    cfg.raft.validate().map_err(Fatal::Config)?;
    if cfg.id == 0 {
        return Err(Fatal::Config("node id must not be 0".into()));
    }
    check_identity(&store, &cfg)?;
    if store.is_empty()? && cfg.bootstrap.contains_key(&cfg.id) {
        bootstrap(&store, &cfg.bootstrap, &sm)?;
    }
    let store = Arc::new(store);
    let (net_tx, net_rx) = mpsc::channel(limits::DRIVER_INBOX_LEN);
    let (req_tx, req_rx) = mpsc::channel(limits::DRIVER_INBOX_LEN);
    let mailbox = Mailbox { tx: net_tx };
    transport.attach(mailbox.clone());

    let mut members = Members::new();
    let mut applied = 0;
    if let Some(snap) = store.latest_snapshot()? {
        let env: SnapshotEnvelope = postcard::from_bytes(snap.get_data())
            .map_err(|e| Fatal::StateMachine(format!("stored snapshot: bad data: {e}")))?;
        sm.restore(&env.state).map_err(Fatal::StateMachine)?;
        members = env.members;
        applied = snap.get_metadata().index;
    }
    transport.set_peers(if members.is_empty() {
        &cfg.seed_peers
    } else {
        &members
    });
    sm.on_membership(&members);

    let snapshot_wanted = Arc::new(AtomicBool::new(false));
    let raw = RawNode::new(
        &cfg.raft.to_raft(cfg.id, applied),
        StoreRef {
            store: store.clone(),
            snapshot_wanted: snapshot_wanted.clone(),
        },
        &raft_logger(),
    )?;
    let initial = NodeStatus {
        id: cfg.id,
        role: Role::Follower,
        leader_id: None,
        term: raw.raft.term,
        commit: raw.raft.raft_log.committed,
        applied,
        first_index: raw.raft.raft_log.first_index(),
        last_index: raw.raft.raft_log.last_index(),
        snapshot_index: applied,
        members: members.clone(),
    };
    let (status_tx, status_rx) = watch::channel(initial);
    // A sync thread needs a runtime that can run the driver while it waits; on a current-thread
    // runtime (simulations, paused-clock tests) the driver syncs each Ready itself.
    let persister = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => {
            Some(Persister::start(cfg.id, store.clone(), transport.clone())?)
        }
        _ => None,
    };
    let driver = Driver {
        id: cfg.id,
        tick: cfg.raft.tick(),
        snapshot_threshold_entries: cfg.raft.snapshot_threshold_entries,
        store,
        raw,
        sm,
        members,
        transport: transport.clone(),
        requests: req_rx,
        net: net_rx,
        status: status_tx,
        pending: HashMap::new(),
        answers: Vec::new(),
        reads_waiting: HashMap::new(),
        reads_ready: Default::default(),
        read_seq: rand::random::<u64>() >> 1,
        applied,
        snapshot_index: applied,
        removed: false,
        snapshot_wanted,
        persister,
        synced_reported: 0,
        synced_inline: 0,
        snapshot_bufs: crate::driver::SnapshotBufs::warm(),
        snapshot_job: None,
    };
    let proposer = Proposer::new(cfg.id, req_tx, mailbox, status_rx, transport);
    let driver = tokio::spawn(driver.run(shutdown));
    Ok(StartedNode { proposer, driver })
}

/// Refuse a store written by another cluster or another node; record identity on first start.
fn check_identity<S: LogStore>(store: &S, cfg: &NodeConfig) -> Result<(), Fatal> {
    match store.get_meta("cluster")? {
        Some(c) if c != cfg.cluster.as_bytes() => {
            return Err(Fatal::Config(format!(
                "the data dir belongs to cluster '{}' but the config names cluster '{}'; \
                 point data_dir elsewhere or fix `cluster`",
                String::from_utf8_lossy(&c),
                cfg.cluster
            )))
        }
        Some(_) => {}
        None => store.put_meta("cluster", cfg.cluster.as_bytes())?,
    }
    match store.get_meta("node_id")? {
        Some(id) if id != cfg.id.to_be_bytes() => {
            let was = <[u8; 8]>::try_from(id.as_slice())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Err(Fatal::Config(format!(
                "the data dir belongs to node {was} but the config says node {}; a node's id \
                 never changes: point data_dir elsewhere or fix `node_id`",
                cfg.id
            )))
        }
        Some(_) => Ok(()),
        None => Ok(store.put_meta("node_id", &cfg.id.to_be_bytes())?),
    }
}

/// Write the cluster's first state: a snapshot at index 1, term 1 holding the initial voters and
/// the empty state machine. Every initial node writes the identical snapshot, so their logs agree
/// from the start, and a node added later (with an empty log) is sent a snapshot, which carries
/// the member book.
fn bootstrap<S: LogStore, M: StateMachine>(
    store: &S,
    voters: &Members,
    sm: &M,
) -> Result<(), Fatal> {
    let env = SnapshotEnvelope {
        members: voters.clone(),
        state: sm.snapshot().map_err(Fatal::StateMachine)?,
    };
    let mut snap = Snapshot::default();
    snap.set_data(postcard::to_stdvec(&env).expect("snapshot encodes").into());
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.mut_conf_state().voters = voters.keys().copied().collect();
    let hs = raft::eraftpb::HardState {
        term: 1,
        commit: 1,
        ..Default::default()
    };
    store.write_ready(&ReadyWrite {
        snapshot: Some(snap),
        entries: vec![],
        hard_state: Some(hs),
    })?;
    store.sync()?;
    tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "bootstrapped a new cluster");
    Ok(())
}
