//! The task that owns raft-rs's `RawNode`: ticks, steps messages, handles `Ready` in the order
//! RAFT-NOTES.md §1 spells out, applies committed entries and answers proposals and reads.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nines_core::{limits, shutdown::ShutdownSignal, NodeId};
use raft::{
    eraftpb::{ConfChange, ConfChangeType},
    RawNode, SnapshotStatus, StateRole,
};
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    inbound,
    mailbox::{NetInput, ProposeReply, ReadFn, Request},
    persist::{PersistWaker, Persister},
    status::NodeStatus,
    store::StoreRef,
    Fatal, LogStore, Members, MembershipChange, ProposeError, StateMachine, Transport,
};

/// A read waiting for its ReadIndex round.
pub(crate) struct PendingRead<M> {
    pub(crate) deadline: Instant,
    pub(crate) issued_at: Instant,
    pub(crate) read: ReadFn<M>,
}

/// The single owner of one Raft node.
pub(crate) struct Driver<S: LogStore, M: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) tick: Duration,
    pub(crate) snapshot_threshold_entries: u64,
    pub(crate) store: Arc<S>,
    pub(crate) raw: RawNode<StoreRef<S>>,
    pub(crate) sm: M,
    pub(crate) members: Members,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) requests: mpsc::Receiver<Request<M>>,
    pub(crate) net: mpsc::Receiver<NetInput>,
    pub(crate) status: watch::Sender<NodeStatus>,
    /// Proposals in the log awaiting apply: index → (term proposed in, reply).
    pub(crate) pending: HashMap<u64, (u64, ProposeReply)>,
    /// Answers to applied proposals, sent at the end of the driver's turn.
    pub(crate) answers: Vec<(ProposeReply, Result<Vec<u8>, ProposeError>)>,
    /// Reads waiting for their ReadIndex answer, by request context.
    pub(crate) reads_waiting: HashMap<Vec<u8>, PendingRead<M>>,
    /// Reads whose ReadIndex is known, waiting for apply to reach it.
    pub(crate) reads_ready: BTreeMap<u64, Vec<ReadFn<M>>>,
    pub(crate) read_seq: u64,
    pub(crate) applied: u64,
    pub(crate) snapshot_index: u64,
    /// Set when this node applied its own removal: it stops.
    pub(crate) removed: bool,
    /// Raised by the storage when the leader needs a fresher snapshot to send.
    pub(crate) snapshot_wanted: Arc<AtomicBool>,
    /// The sync thread (group commit), on a multi-thread runtime; without one the driver syncs
    /// each Ready itself.
    pub(crate) persister: Option<Persister>,
    /// The highest Ready number reported to raft as persisted.
    pub(crate) synced_reported: u64,
    /// The highest Ready number the driver synced itself (no sync thread).
    pub(crate) synced_inline: u64,
    /// Buffers kept from one snapshot to the next (see [`StateMachine::snapshot_into`]).
    pub(crate) snapshot_bufs: SnapshotBufs,
    /// The snapshot whose data a thread is writing into the store, if any.
    pub(crate) snapshot_job: Option<SnapshotJob>,
}

/// A snapshot taken, whose data a thread of its own writes into the store
/// ([`LogStore::prepare_snapshot`]) while the driver goes on; the driver compacts to it when the
/// thread is done.
pub(crate) struct SnapshotJob {
    pub(crate) snap: raft::eraftpb::Snapshot,
    pub(crate) started: std::time::Instant,
    pub(crate) serialize: Duration,
    pub(crate) thread: std::thread::JoinHandle<Result<(), crate::StoreError>>,
    pub(crate) done: tokio::sync::oneshot::Receiver<()>,
}

/// Resolves when the snapshot job's thread is done; never without a job.
async fn snapshot_written(job: &mut Option<SnapshotJob>) {
    match job {
        Some(j) => {
            let _ = (&mut j.done).await;
        }
        None => std::future::pending().await,
    }
}

/// The state image and the snapshot data of the last snapshot, emptied, kept for the next.
pub(crate) struct SnapshotBufs {
    pub(crate) state: Vec<u8>,
    pub(crate) data: Vec<u8>,
}

/// Bytes of each snapshot buffer written once when the node starts. The first write to memory
/// costs a page fault per 4 KiB, expensive on a VM: without this, a node's first snapshot (550
/// KiB of event-service state) took 15-45 ms, later ones about 1.
const SNAPSHOT_BUF_WARM_BYTES: usize = 1 << 20;

impl SnapshotBufs {
    /// Both buffers with [`SNAPSHOT_BUF_WARM_BYTES`] already written once.
    pub(crate) fn warm() -> Self {
        let touched = || {
            let mut buf = vec![0u8; 0];
            buf.resize(SNAPSHOT_BUF_WARM_BYTES, 1);
            buf.clear();
            buf
        };
        Self {
            state: touched(),
            data: touched(),
        }
    }

    /// `buf` emptied, to be used again; dropped instead when far bigger than what it held (a
    /// state that shrank should not pin its old size).
    pub(crate) fn keep(mut buf: Vec<u8>) -> Vec<u8> {
        if buf.capacity() > 2 * buf.len() + (1 << 20) {
            return Vec::new();
        }
        buf.clear();
        buf
    }
}

/// Resolves when the sync thread finished a sync; never without one.
async fn synced(waker: Option<PersistWaker>) {
    match waker {
        Some(w) => w.synced().await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<S: LogStore, M: StateMachine> Driver<S, M> {
    /// Run until shutdown, removal, or a fatal error.
    pub(crate) async fn run(mut self, shutdown: ShutdownSignal) -> Result<(), Fatal> {
        let result = self.drive(shutdown).await;
        if let Some(job) = self.snapshot_job.take() {
            // Let a snapshot writer finish before the store is dropped, however the loop ended
            // (its pieces are garbage to the next start unless compacted to).
            let _ = job.thread.join();
        }
        result
    }

    async fn drive(&mut self, mut shutdown: ShutdownSignal) -> Result<(), Fatal> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.publish_status();
        let waker = self.persister.as_ref().map(Persister::waker);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = synced(waker.clone()) => {}
                _ = snapshot_written(&mut self.snapshot_job) => {
                    self.finish_snapshot()?;
                    self.publish_status();
                }
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.on_tick();
                }
                Some(input) = self.net.recv() => {
                    self.on_net(input);
                    for _ in 0..limits::DRIVER_BUDGET_MSGS {
                        match self.net.try_recv() {
                            Ok(input) => self.on_net(input),
                            Err(_) => break,
                        }
                    }
                }
                Some(req) = self.requests.recv() => {
                    self.on_request(req);
                    for _ in 0..limits::DRIVER_BUDGET_MSGS {
                        match self.requests.try_recv() {
                            Ok(req) => self.on_request(req),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.handle_ready()?;
            if self.removed {
                tracing::warn!(
                    node = self.id,
                    "this node was removed from the cluster; stopping"
                );
                break;
            }
        }
        Ok(())
    }

    fn on_net(&mut self, input: NetInput) {
        match input {
            NetInput::Raft(msgs) => {
                for m in msgs {
                    if m.to != self.id {
                        tracing::warn!(to = m.to, "dropped a raft message addressed elsewhere");
                        continue;
                    }
                    // The checks that need the log, against its state right now (the
                    // transport ran the rest): what raft-rs would panic on never reaches it.
                    let log = &self.raw.raft.raft_log;
                    let local = inbound::LocalLog {
                        term: self.raw.raft.term,
                        committed: log.committed,
                        last_index: log.last_index(),
                    };
                    if let Err(refused) =
                        inbound::check_against_log(&m, &local, |i| log.term(i).ok())
                    {
                        // The transport checked that `from` is the sender it authenticated.
                        inbound::report(&refused, &m, Some(m.from));
                        continue;
                    }
                    if let Err(e) = self.raw.step(m) {
                        tracing::debug!("raft refused a message: {e}");
                    }
                }
            }
            NetInput::Unreachable(peer) => self.raw.report_unreachable(peer),
            NetInput::SnapshotSent(peer, ok) => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(peer, status);
            }
        }
    }

    fn on_request(&mut self, req: Request<M>) {
        match req {
            Request::Propose { command, reply } => self.propose(command, reply),
            Request::ChangeMembership { change, reply } => self.change_membership(change, reply),
            Request::Read {
                linearizable,
                deadline,
                read,
            } => {
                if linearizable {
                    self.issue_read(PendingRead {
                        deadline,
                        issued_at: Instant::now(),
                        read,
                    });
                } else {
                    read(&self.sm);
                }
            }
        }
    }

    fn leader_hint(&self) -> ProposeError {
        let l = self.raw.raft.leader_id;
        ProposeError::NotLeader {
            leader_hint: (l != 0).then_some(l),
        }
    }

    fn propose(&mut self, command: Vec<u8>, reply: ProposeReply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.leader_hint()));
            return;
        }
        if command.len() > limits::PROPOSAL_BYTES_MAX {
            let _ = reply.send(Err(ProposeError::Rejected(format!(
                "command of {} bytes exceeds the {} byte limit",
                command.len(),
                limits::PROPOSAL_BYTES_MAX
            ))));
            return;
        }
        if let Err(e) = postcard::from_bytes::<M::Command>(&command) {
            let _ = reply.send(Err(ProposeError::Rejected(format!(
                "undecodable command: {e}"
            ))));
            return;
        }
        let stamp = now_ms().to_be_bytes().to_vec();
        match self.raw.propose(stamp, command) {
            Ok(()) => self.track(reply),
            Err(e) => {
                let _ = reply.send(Err(ProposeError::Dropped(e.to_string())));
            }
        }
    }

    /// Remember the entry just appended at the end of the log as `reply`'s.
    fn track(&mut self, reply: ProposeReply) {
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        self.pending.insert(index, (term, reply));
    }

    fn change_membership(&mut self, change: MembershipChange, reply: ProposeReply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.leader_hint()));
            return;
        }
        if self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied {
            let _ = reply.send(Err(ProposeError::Dropped(
                "another membership change is in progress".into(),
            )));
            return;
        }
        let mut cc = ConfChange::default();
        match change {
            MembershipChange::AddVoter { id, info } => {
                if id == 0 || info.addr.is_empty() {
                    let _ = reply.send(Err(ProposeError::Rejected(
                        "a new member needs a non-zero id and an address".into(),
                    )));
                    return;
                }
                if self.members.get(&id).is_some_and(|m| m.voter) {
                    let _ = reply.send(Err(ProposeError::Rejected(format!(
                        "node {id} is already a voter"
                    ))));
                    return;
                }
                cc.set_change_type(ConfChangeType::AddNode);
                cc.node_id = id;
                cc.context = postcard::to_stdvec(&info).expect("PeerInfo encodes").into();
            }
            MembershipChange::Remove { id } => {
                if !self.members.contains_key(&id) {
                    let _ = reply.send(Err(ProposeError::Rejected(format!(
                        "node {id} is not a member"
                    ))));
                    return;
                }
                if self.members.len() == 1 {
                    let _ = reply.send(Err(ProposeError::Rejected(
                        "cannot remove the last member".into(),
                    )));
                    return;
                }
                if id == self.id {
                    // raft-rs 0.7: a removed leader keeps heartbeating (RAFT-NOTES §4), so the
                    // leader hands over first and the caller's retry reaches the new leader.
                    let msg = match self.transfer_target() {
                        Some(to) => {
                            self.raw.transfer_leader(to);
                            format!("node {id} is the leader; leadership is moving to node {to}")
                        }
                        None => format!("node {id} is the leader and no other voter is ready"),
                    };
                    let _ = reply.send(Err(ProposeError::Dropped(msg)));
                    return;
                }
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = id;
            }
        }
        match self.raw.propose_conf_change(vec![], cc) {
            Ok(()) => self.track(reply),
            Err(e) => {
                let _ = reply.send(Err(ProposeError::Dropped(e.to_string())));
            }
        }
    }

    /// The voter best placed to take over leadership: recently active, most caught up.
    fn transfer_target(&self) -> Option<NodeId> {
        let prs = self.raw.raft.prs();
        prs.conf()
            .voters()
            .ids()
            .iter()
            .filter(|&id| id != self.id)
            .filter_map(|id| {
                prs.get(id)
                    .filter(|p| p.recent_active)
                    .map(|p| (p.matched, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    fn issue_read(&mut self, read: PendingRead<M>) {
        // Unique across nodes and restarts: raft-rs ignores a context already pending, and a
        // late answer to a previous life's read must not match a new one.
        self.read_seq = self.read_seq.wrapping_add(1);
        let mut ctx = self.id.to_be_bytes().to_vec();
        ctx.extend_from_slice(&self.read_seq.to_be_bytes());
        self.raw.read_index(ctx.clone());
        self.reads_waiting.insert(ctx, read);
    }

    /// Expire reads past their deadline and re-issue those whose ReadIndex round got lost
    /// (raft-rs drops them silently with no leader or right after an election).
    fn on_tick(&mut self) {
        let now = Instant::now();
        let retry_after = self.tick * 4;
        let stale: Vec<Vec<u8>> = self
            .reads_waiting
            .iter()
            .filter(|(_, r)| r.deadline <= now || now - r.issued_at >= retry_after)
            .map(|(k, _)| k.clone())
            .collect();
        for ctx in stale {
            let Some(mut r) = self.reads_waiting.remove(&ctx) else {
                continue;
            };
            if r.deadline > now {
                r.issued_at = now;
                self.issue_read(r);
            }
        }
    }
}
