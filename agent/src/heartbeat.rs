//! The heartbeat driver: beats every peer directly over gRPC (not through the Raft log), feeds
//! the pure failure detector, keeps this node's lease, and — on the leader — commits `down` /
//! `up` into the replicated membership so every node sees one agreed view.
//!
//! Lease wiring (see `nines_heartbeat::lease` for the proof): a node renews its lease only from
//! the *send* time of a beat the current leader acknowledged with `granted`; the leader grants
//! only while its own lease holds, and renews its own from beats a quorum acknowledged.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use nines_consensus::{Proposer, ReadMode, Role};
use nines_core::{shutdown::ShutdownSignal, NodeId};
use nines_heartbeat::{
    lease::{earliest_replacement_after_election_ms, lease_surely_expired, LeaseConfig, SelfLease},
    DetectorConfig, FailureDetector, Health, NodeView,
};
use nines_proto::membership::v1::{membership_client::MembershipClient, BeatAck, BeatRequest};
use tokio::{sync::mpsc, time::Instant};
use tonic::transport::Channel;

use crate::{membership::AgreedState, AgentState, Command, MembershipCommand};

/// Beats (from, seq) queued from the service to the driver.
pub(crate) const BEAT_QUEUE_LEN: usize = 1_024;
/// Send times remembered for lease renewal.
const SENT_MAX: usize = 64;
/// How long the leader waits before proposing the same correction again.
const REPROPOSE_AFTER_MS: u64 = 1_000;

/// What the driver shares with the gRPC service.
#[derive(Debug, Default)]
pub(crate) struct LocalHealth {
    /// This agent's detector's view of each peer, and the driver's clock reading with it.
    pub views: BTreeMap<NodeId, NodeView>,
    /// The driver's clock when `views` was taken.
    pub now_ms: u64,
    /// Whether this node's lease has run out.
    pub fenced: bool,
    /// When the driver last finished a tick: the agent's main loop is healthy while this is
    /// recent (the node watchdog and systemd's watchdog are kicked only then).
    pub last_tick: Option<tokio::time::Instant>,
}

/// The service side's handle on the driver.
#[derive(Clone)]
pub(crate) struct HeartbeatHandle {
    pub shared: Arc<Mutex<LocalHealth>>,
    pub beats: mpsc::Sender<(NodeId, u64)>,
}

impl HeartbeatHandle {
    pub(crate) fn local(&self) -> std::sync::MutexGuard<'_, LocalHealth> {
        self.shared.lock().expect("health lock poisoned")
    }
}

/// Sends one beat to a peer and returns its acknowledgement (None: no answer in time).
pub(crate) trait Beater: Send + Sync + 'static {
    /// Beat `to` at `addr`.
    fn beat(
        &self,
        to: NodeId,
        addr: &str,
        req: BeatRequest,
        timeout: Duration,
    ) -> nines_consensus::BoxFuture<'static, Option<BeatAck>>;
}

/// Beats over gRPC (`nines.membership.v1.Membership/Beat`), one lazy channel per address.
#[derive(Default)]
pub(crate) struct GrpcBeater {
    clients: Mutex<BTreeMap<String, MembershipClient<Channel>>>,
}

impl Beater for GrpcBeater {
    fn beat(
        &self,
        _to: NodeId,
        addr: &str,
        req: BeatRequest,
        timeout: Duration,
    ) -> nines_consensus::BoxFuture<'static, Option<BeatAck>> {
        let client = {
            let mut clients = self.clients.lock().expect("beater lock poisoned");
            if !clients.contains_key(addr) {
                let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                else {
                    return Box::pin(async { None });
                };
                let ch = ep.connect_timeout(timeout).tcp_nodelay(true).connect_lazy();
                clients.insert(addr.to_string(), MembershipClient::new(ch));
            }
            clients.get(addr).cloned()
        };
        Box::pin(async move {
            let mut client = client?;
            let mut req = tonic::Request::new(req);
            req.set_timeout(timeout);
            client.beat(req).await.ok().map(|r| r.into_inner())
        })
    }
}

/// Answer a beat: feed it to this node's detector, and grant a lease renewal only as a leader
/// whose own lease holds.
pub(crate) fn answer_beat(
    id: NodeId,
    proposer: &Proposer<AgentState>,
    hb: &HeartbeatHandle,
    req: &BeatRequest,
) -> BeatAck {
    let _ = hb.beats.try_send((req.from, req.seq));
    let status = proposer.status();
    let granted = status.role == Role::Leader && !hb.local().fenced;
    BeatAck {
        from: id,
        term: status.term,
        granted,
    }
}

/// Everything the driver needs.
pub(crate) struct Driver {
    pub id: NodeId,
    pub cluster: String,
    pub detector_cfg: DetectorConfig,
    pub lease_cfg: LeaseConfig,
    pub proposer: Proposer<AgentState>,
    pub shared: Arc<Mutex<LocalHealth>>,
    pub beats: mpsc::Receiver<(NodeId, u64)>,
    pub beater: Arc<dyn Beater>,
    /// Told when the fencing flag changes (the AMF's node director stops local actives).
    pub fenced_tx: Option<tokio::sync::watch::Sender<bool>>,
}

struct State {
    clock: Instant,
    detector: FailureDetector,
    lease: SelfLease,
    peers: BTreeMap<NodeId, String>,
    seq: u64,
    sent: VecDeque<(u64, u64)>,
    acks: BTreeMap<u64, usize>,
    leader_since_ms: Option<u64>,
    /// When a correction (node, down?) was last proposed.
    proposed: BTreeMap<(NodeId, bool), u64>,
    fenced: bool,
}

impl Driver {
    pub(crate) async fn run(mut self, mut shutdown: ShutdownSignal) {
        let mut st = State {
            clock: Instant::now(),
            detector: FailureDetector::new(&self.detector_cfg).expect("validated at config load"),
            lease: SelfLease::new(self.lease_cfg),
            peers: BTreeMap::new(),
            // Beat numbers must grow across restarts too (the detector ignores a number it has
            // seen), so they start from the wall clock in ms: far ahead of one beat per interval.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            sent: VecDeque::new(),
            acks: BTreeMap::new(),
            leader_since_ms: None,
            proposed: BTreeMap::new(),
            fenced: false,
        };
        let (ack_tx, mut ack_rx) = mpsc::channel::<(NodeId, u64, BeatAck)>(BEAT_QUEUE_LEN);
        let mut tick = tokio::time::interval(Duration::from_millis(self.detector_cfg.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                _ = tick.tick() => self.on_tick(&mut st, &ack_tx).await,
                Some((from, seq)) = self.beats.recv() => {
                    let now = st.clock.elapsed().as_millis() as u64;
                    st.detector.heartbeat(from, seq, now);
                }
                Some((from, seq, ack)) = ack_rx.recv() => self.on_ack(&mut st, from, seq, &ack),
            }
        }
    }

    async fn on_tick(&mut self, st: &mut State, acks: &mpsc::Sender<(NodeId, u64, BeatAck)>) {
        let now = st.clock.elapsed().as_millis() as u64;
        let status = self.proposer.status();
        self.sync_peers(st, &status.members, now);
        match (status.role == Role::Leader, st.leader_since_ms) {
            (true, None) => st.leader_since_ms = Some(now),
            (false, Some(_)) => st.leader_since_ms = None,
            _ => {}
        }
        st.seq += 1;
        st.sent.push_back((st.seq, now));
        while st.sent.len() > SENT_MAX {
            st.sent.pop_front();
        }
        let timeout = Duration::from_millis(self.detector_cfg.interval_ms);
        for (&peer, addr) in &st.peers {
            let req = BeatRequest {
                cluster: self.cluster.clone(),
                from: self.id,
                seq: st.seq,
                term: status.term,
            };
            let beat = self.beater.beat(peer, addr, req, timeout);
            let (acks, seq) = (acks.clone(), st.seq);
            tokio::spawn(async move {
                if let Some(ack) = beat.await {
                    let _ = acks.try_send((peer, seq, ack));
                }
            });
        }
        for t in st.detector.tick(now) {
            tracing::info!(node = t.node, "heartbeat: node {:?} -> {:?}", t.from, t.to);
        }
        let fenced = st.lease.is_fenced(now);
        if fenced != st.fenced {
            if fenced {
                tracing::warn!(
                    "FENCED: no quorum contact within the lease; this node must not act"
                );
            } else {
                tracing::info!("lease regained: this node is in contact with a quorum");
            }
            st.fenced = fenced;
            if let Some(tx) = &self.fenced_tx {
                let _ = tx.send(fenced);
            }
        }
        if status.role == Role::Leader && !fenced {
            self.correct_agreed_view(st, now).await;
        }
        let mut local = self.shared.lock().expect("health lock poisoned");
        local.views = st.detector.views().collect();
        local.now_ms = now;
        local.fenced = fenced;
        local.last_tick = Some(Instant::now());
    }

    fn sync_peers(&self, st: &mut State, members: &nines_consensus::Members, now: u64) {
        st.peers
            .retain(|id, addr| members.get(id).is_some_and(|m| &m.addr == addr));
        let tracked: Vec<NodeId> = st.detector.views().map(|(id, _)| id).collect();
        for id in tracked {
            if !members.contains_key(&id) {
                st.detector.remove_node(id);
            }
        }
        for (&id, m) in members {
            if id == self.id || st.peers.contains_key(&id) {
                continue;
            }
            st.peers.insert(id, m.addr.clone());
            if st.detector.state(id).is_none() {
                let _ = st.detector.add_node(id, now);
            }
        }
    }

    fn on_ack(&mut self, st: &mut State, from: NodeId, seq: u64, ack: &BeatAck) {
        let Some(&(_, sent_ms)) = st.sent.iter().find(|(s, _)| *s == seq) else {
            return;
        };
        let status = self.proposer.status();
        if ack.term > status.term {
            return;
        }
        if status.role == Role::Leader {
            let voters = status.members.values().filter(|m| m.voter).count();
            let n = st.acks.entry(seq).or_insert(0);
            *n += 1;
            if *n + 1 > voters / 2 {
                st.lease.on_quorum_contact(sent_ms);
            }
            st.acks.retain(|&s, _| s + SENT_MAX as u64 > seq);
        } else if ack.granted && status.leader_id == Some(from) {
            st.lease.on_quorum_contact(sent_ms);
        }
    }

    /// Level-triggered: make the agreed view match the detector, once a lost node's lease has
    /// surely expired (and, after an election, once the previous leader's grants have too).
    async fn correct_agreed_view(&self, st: &mut State, now: u64) {
        let elected = st.leader_since_ms.unwrap_or(now);
        if now < earliest_replacement_after_election_ms(elected, &self.lease_cfg) {
            return;
        }
        let timeout = Duration::from_millis(self.detector_cfg.interval_ms);
        let Ok(agreed) = self
            .proposer
            .read(ReadMode::Stale, timeout, |s: &AgentState| {
                s.membership.states.clone()
            })
            .await
        else {
            return;
        };
        let views: Vec<(NodeId, NodeView)> = st.detector.views().collect();
        for (node, view) in views {
            let expired = lease_surely_expired(view.last_heartbeat_ms, now, &self.lease_cfg);
            let cmd = match (agreed.get(&node), view.health) {
                (Some(AgreedState::Up), Health::Down) if expired => {
                    MembershipCommand::Down { node }
                }
                (Some(AgreedState::Down), Health::Up) => MembershipCommand::Up { node },
                _ => {
                    // Nothing to correct: forget earlier proposals so the next one is not held.
                    st.proposed.remove(&(node, true));
                    st.proposed.remove(&(node, false));
                    continue;
                }
            };
            // Throttle only a repeat of the same correction, never the opposite one.
            let key = (node, matches!(cmd, MembershipCommand::Down { .. }));
            if st
                .proposed
                .get(&key)
                .is_some_and(|&t| now < t + REPROPOSE_AFTER_MS)
            {
                continue;
            }
            st.proposed.insert(key, now);
            let proposer = self.proposer.clone();
            tokio::spawn(async move {
                tracing::info!(node, "committing membership change {cmd:?}");
                let fut = proposer.propose(&Command::Membership(cmd), Duration::from_millis(500));
                if let Err(e) = fut.await {
                    tracing::warn!(node, "membership change not committed (retried): {e}");
                }
            });
        }
    }
}
