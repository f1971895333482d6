//! The heartbeat driver: beats every peer directly over gRPC (not through the Raft log), feeds
//! the pure failure detector, keeps this node's lease, and — on the leader — commits `down` /
//! `up` into the replicated membership so every node sees one agreed view.
//!
//! Quorum leases (see `nines_heartbeat::lease` for the timing proof and docs/design.md, "Quorum
//! leases"): a node renews its lease from the *send* time of a beat that a majority of voters
//! (itself included) acknowledged with `granted`. Every node grants every beat unless it has
//! revoked the sender's lease. Before the leader declares a node down it revokes that node's
//! lease on a majority of voters other than the node ([`answer_revoke`]); their answers bound the
//! node's last renewal, and the leader waits one lease plus margin past that bound. Leader loss
//! does not fence anyone else: the survivors still grant each other.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use nines_consensus::{Proposer, ReadMode, Role};
use nines_core::{shutdown::ShutdownSignal, NodeId};
use nines_heartbeat::{
    lease::{earliest_replacement_ms, reported_grant_on_decider_ms, LeaseConfig, SelfLease},
    DetectorConfig, FailureDetector, Health, NodeView,
};
use nines_proto::membership::v1::{
    membership_client::MembershipClient, BeatAck, BeatRequest, RevokeLeaseReply, RevokeLeaseRequest,
};
use tokio::{sync::mpsc, time::Instant};
use tonic::transport::Channel;

use crate::{membership::AgreedState, AgentState, Command, MembershipCommand};

/// Beats (from, seq) queued from the service to the driver.
pub(crate) const BEAT_QUEUE_LEN: usize = 1_024;
/// Send times remembered for lease renewal.
const SENT_MAX: usize = 64;
/// The longest the driver waits for its stale read of the agreed membership each tick.
const AGREED_READ_TIMEOUT_MS: u64 = 30;
/// How long the leader waits before proposing the same correction again.
const REPROPOSE_AFTER_MS: u64 = 1_000;
/// What this node granted and revoked: the evidence the leader asks for before it declares a
/// node down ([`answer_revoke`]). Grants and revocations happen under one lock, so once a
/// revocation is answered no grant to that node follows it.
#[derive(Debug)]
pub(crate) struct LeaseLedger {
    started: Instant,
    /// When this node last granted each member's beat.
    granted: BTreeMap<NodeId, Instant>,
    /// Members whose lease this node revoked, with the lease epoch of the revocation.
    revoked: BTreeMap<NodeId, u64>,
    /// Whether each member said, in its last beat, that it is fenced by a revocation.
    revoked_peers: BTreeMap<NodeId, bool>,
}

impl Default for LeaseLedger {
    fn default() -> Self {
        LeaseLedger {
            started: Instant::now(),
            granted: BTreeMap::new(),
            revoked: BTreeMap::new(),
            revoked_peers: BTreeMap::new(),
        }
    }
}

impl LeaseLedger {
    /// Lift revocations the replicated membership has moved past: the node is up at a later
    /// lease epoch (or no longer a member).
    fn lift(&mut self, agreed: &BTreeMap<NodeId, AgreedState>, epochs: &BTreeMap<NodeId, u64>) {
        self.revoked.retain(|node, &mut e| match agreed.get(node) {
            None => false,
            Some(AgreedState::Up) => epochs.get(node).copied().unwrap_or(0) <= e,
            Some(_) => true,
        });
    }
}

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
    /// What this node granted and revoked.
    pub ledger: LeaseLedger,
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

    /// Ask `to` to revoke a node's lease ([`answer_revoke`]).
    fn revoke(
        &self,
        to: NodeId,
        addr: &str,
        req: RevokeLeaseRequest,
        timeout: Duration,
    ) -> nines_consensus::BoxFuture<'static, Option<RevokeLeaseReply>>;
}

/// Beats over gRPC (`nines.membership.v1.Membership/Beat`), one lazy channel per address, over
/// mutual TLS when the cluster uses it.
#[derive(Default)]
pub(crate) struct GrpcBeater {
    clients: Mutex<BTreeMap<String, MembershipClient<Channel>>>,
    tls: Option<Arc<nines_consensus::PeerTls>>,
}

impl GrpcBeater {
    /// A beater whose connections use `tls` (this node's certificate), if given.
    pub(crate) fn new(tls: Option<Arc<nines_consensus::PeerTls>>) -> Self {
        GrpcBeater {
            clients: Mutex::default(),
            tls,
        }
    }

    fn client(&self, addr: &str, timeout: Duration) -> Option<MembershipClient<Channel>> {
        let mut clients = self.clients.lock().expect("beater lock poisoned");
        if !clients.contains_key(addr) {
            let ep = match &self.tls {
                Some(tls) => tls.endpoint(addr).ok(),
                None => tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok(),
            };
            let ep = ep?;
            let ch = ep.connect_timeout(timeout).tcp_nodelay(true).connect_lazy();
            clients.insert(addr.to_string(), MembershipClient::new(ch));
        }
        clients.get(addr).cloned()
    }
}

impl Beater for GrpcBeater {
    fn beat(
        &self,
        _to: NodeId,
        addr: &str,
        req: BeatRequest,
        timeout: Duration,
    ) -> nines_consensus::BoxFuture<'static, Option<BeatAck>> {
        let client = self.client(addr, timeout);
        Box::pin(async move {
            let mut client = client?;
            let mut req = tonic::Request::new(req);
            req.set_timeout(timeout);
            client.beat(req).await.ok().map(|r| r.into_inner())
        })
    }

    fn revoke(
        &self,
        _to: NodeId,
        addr: &str,
        req: RevokeLeaseRequest,
        timeout: Duration,
    ) -> nines_consensus::BoxFuture<'static, Option<RevokeLeaseReply>> {
        let client = self.client(addr, timeout);
        Box::pin(async move {
            let mut client = client?;
            let mut req = tonic::Request::new(req);
            req.set_timeout(timeout);
            client.revoke_lease(req).await.ok().map(|r| r.into_inner())
        })
    }
}

/// Answer a beat: feed it to this node's detector, and grant it (the sender may count it
/// towards its lease) unless this node revoked the sender's lease.
pub(crate) fn answer_beat(
    id: NodeId,
    proposer: &Proposer<AgentState>,
    hb: &HeartbeatHandle,
    req: &BeatRequest,
) -> BeatAck {
    let _ = hb.beats.try_send((req.from, req.seq));
    let mut local = hb.local();
    let status = proposer.status();
    let ledger = &mut local.ledger;
    let granted = !ledger.revoked.contains_key(&req.from);
    if granted {
        ledger.granted.insert(req.from, Instant::now());
    }
    ledger.revoked_peers.insert(req.from, req.revoked);
    BeatAck {
        from: id,
        term: status.term,
        granted,
    }
}

/// Revoke `node`'s lease at lease epoch `epoch` (this node grants it nothing until its replica
/// shows the node up at a later epoch) and say how long ago this node last granted it one.
pub(crate) fn answer_revoke(
    id: NodeId,
    shared: &Mutex<LocalHealth>,
    node: NodeId,
    epoch: u64,
) -> RevokeLeaseReply {
    let mut local = shared.lock().expect("health lock poisoned");
    let ledger = &mut local.ledger;
    let e = ledger.revoked.entry(node).or_insert(epoch);
    *e = (*e).max(epoch);
    let since = ledger.granted.get(&node).copied().unwrap_or(ledger.started);
    RevokeLeaseReply {
        from: id,
        granted_age_ms: Instant::now().saturating_duration_since(since).as_millis() as u64,
    }
}

/// The leader's revocation of one node's lease: the answers so far, as the latest moment (its
/// clock) each answerer can have granted the node a renewal.
#[derive(Debug, Default)]
struct Revocation {
    epoch: u64,
    answers: BTreeMap<NodeId, u64>,
    asked_ms: Option<u64>,
}

impl Revocation {
    /// Fold an answer received at `recv_ms`.
    fn fold(&mut self, reply: &RevokeLeaseReply, recv_ms: u64) {
        let at = reported_grant_on_decider_ms(recv_ms, reply.granted_age_ms);
        self.answers.insert(reply.from, at);
    }

    /// Once enough voters other than `node` answered to meet every majority that can renew its
    /// lease (`⌈V/2⌉` of them), the earliest time the node may be declared down: one lease plus
    /// margin after the latest grant any of them reported.
    fn replacement_ms(
        &self,
        node: NodeId,
        voters: &BTreeSet<NodeId>,
        cfg: &LeaseConfig,
    ) -> Option<u64> {
        let answered: Vec<u64> = self
            .answers
            .iter()
            .filter(|(w, _)| **w != node && voters.contains(w))
            .map(|(_, &t)| t)
            .collect();
        if answered.len() < voters.len().div_ceil(2) {
            return None;
        }
        answered
            .into_iter()
            .max()
            .map(|last| earliest_replacement_ms(last, cfg))
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
    /// Told the fence deadline each time the lease is renewed: the component sessions' lease
    /// (`nines_heartbeat::lease`, "The component's lease").
    pub lease_tx: Option<tokio::sync::watch::Sender<Option<Instant>>>,
}

struct State {
    clock: Instant,
    detector: FailureDetector,
    lease: SelfLease,
    peers: BTreeMap<NodeId, String>,
    seq: u64,
    sent: VecDeque<(u64, u64)>,
    /// Per beat: the voters that granted it.
    grants: BTreeMap<u64, BTreeSet<NodeId>>,
    /// When a correction (node, kind) was last proposed.
    proposed: BTreeMap<(NodeId, Fix), u64>,
    fenced: bool,
    /// When a member last refused this node a grant.
    denied_ms: Option<u64>,
    /// As leader: revocations under way, per node.
    revocations: BTreeMap<NodeId, Revocation>,
    /// When the previous tick ran (`None` before the first).
    last_tick_ms: Option<u64>,
}

/// Whether the voters this leader hears as up (itself included), `node` left out, are a
/// majority of `voters`: only then may it judge `node` down and start revoking its lease.
pub(crate) fn hears_majority_without(
    up: &BTreeSet<NodeId>,
    voters: &BTreeSet<NodeId>,
    node: NodeId,
) -> bool {
    let heard = voters
        .iter()
        .filter(|v| **v != node && up.contains(v))
        .count();
    heard > voters.len() / 2
}

/// The corrections the leader proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fix {
    Down,
    Up,
    Reinstate,
}

/// An answer to a revocation: for which node and epoch.
type RevokeAnswer = (NodeId, u64, RevokeLeaseReply);

/// The replicated membership, read locally each tick.
struct Agreed {
    states: BTreeMap<NodeId, AgreedState>,
    epochs: BTreeMap<NodeId, u64>,
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
            grants: BTreeMap::new(),
            proposed: BTreeMap::new(),
            fenced: false,
            denied_ms: None,
            revocations: BTreeMap::new(),
            last_tick_ms: None,
        };
        let (ack_tx, mut ack_rx) = mpsc::channel::<(NodeId, u64, BeatAck)>(BEAT_QUEUE_LEN);
        let (rev_tx, mut rev_rx) = mpsc::channel::<RevokeAnswer>(BEAT_QUEUE_LEN);
        let mut tick = tokio::time::interval(Duration::from_millis(self.detector_cfg.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Beats and acknowledgements before the tick: after a stall, the tick must judge
                // the peers and the lease by what already arrived, not by a stale view (a loaded
                // leader fenced itself and suspected both peers with their beats and acks still
                // queued, and regained its lease a moment later).
                biased;
                _ = shutdown.wait() => return,
                Some((from, seq)) = self.beats.recv() => {
                    let now = st.clock.elapsed().as_millis() as u64;
                    st.detector.heartbeat(from, seq, now);
                }
                Some((from, seq, ack)) = ack_rx.recv() => {
                    // A fenced node that regains its lease may act at once, not at the next tick.
                    if self.on_ack(&mut st, from, seq, &ack) && st.fenced {
                        let now = st.clock.elapsed().as_millis() as u64;
                        self.update_fence(&mut st, now);
                    }
                }
                _ = tick.tick() => self.on_tick(&mut st, &ack_tx, &rev_tx).await,
                Some((node, epoch, reply)) = rev_rx.recv() => {
                    let now = st.clock.elapsed().as_millis() as u64;
                    if let Some(r) = st.revocations.get_mut(&node) {
                        if r.epoch == epoch {
                            r.fold(&reply, now);
                            // A majority of answers may allow the node's replacement right now.
                            if self.proposer.status().role == Role::Leader {
                                self.correct_agreed_view(&mut st, now, &rev_tx).await;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn on_tick(
        &mut self,
        st: &mut State,
        acks: &mpsc::Sender<(NodeId, u64, BeatAck)>,
        revokes: &mpsc::Sender<RevokeAnswer>,
    ) {
        let now = st.clock.elapsed().as_millis() as u64;
        let status = self.proposer.status();
        self.sync_peers(st, &status.members, now);
        st.seq += 1;
        st.sent.push_back((st.seq, now));
        while st.sent.len() > SENT_MAX {
            st.sent.pop_front();
        }
        // The only voter is its own majority.
        let voters = status.members.values().filter(|m| m.voter).count();
        if voters == 1
            && status.members.get(&self.id).is_some_and(|m| m.voter)
            && st.lease.on_quorum_contact(now)
        {
            self.publish_lease(st);
        }
        let revoked = self.revoked(st, now);
        // A grant renews from the beat's send time however late it arrives, so a slow answer
        // (a loaded peer) is still worth waiting for, up to one lease: a shorter deadline fenced
        // healthy nodes on a busy machine, and a fence stops their components.
        let timeout = Duration::from_millis(self.lease_cfg.lease_ms);
        for (&peer, addr) in &st.peers {
            let req = BeatRequest {
                cluster: self.cluster.clone(),
                from: self.id,
                seq: st.seq,
                term: status.term,
                revoked,
            };
            let beat = self.beater.beat(peer, addr, req, timeout);
            let (acks, seq) = (acks.clone(), st.seq);
            tokio::spawn(async move {
                if let Some(ack) = beat.await {
                    let _ = acks.try_send((peer, seq, ack));
                }
            });
        }
        self.forgive_own_pause(st, now);
        for t in st.detector.tick(now) {
            tracing::info!(node = t.node, "heartbeat: node {:?} -> {:?}", t.from, t.to);
        }
        self.update_fence(st, now);
        if status.role != Role::Leader {
            st.revocations.clear();
        }
        if let Some(agreed) = self.read_agreed().await {
            self.shared
                .lock()
                .expect("health lock poisoned")
                .ledger
                .lift(&agreed.states, &agreed.epochs);
            // A fenced leader corrects too: its own lease says nothing about the safety of a
            // decision (revocations do), and only a leader can reinstate itself.
            if status.role == Role::Leader {
                self.correct_with(st, now, &agreed, revokes);
            }
        }
        let mut local = self.shared.lock().expect("health lock poisoned");
        local.views = st.detector.views().collect();
        local.now_ms = now;
        local.last_tick = Some(Instant::now());
    }

    /// This driver did not run for half a detector timeout (the agent was paused or starved):
    /// the beats it did not take in during that time say nothing about its peers, so every peer
    /// not already down is heard afresh from now. Without this, a leader resumed after a pause
    /// judged both healthy peers down and had each revoke the other's lease: both fenced and
    /// killed their components (the false fences of issue 19).
    fn forgive_own_pause(&self, st: &mut State, now: u64) {
        let gap = st.last_tick_ms.map_or(0, |t| now.saturating_sub(t));
        st.last_tick_ms = Some(now);
        if gap < self.detector_cfg.timeout_ms / 2 {
            return;
        }
        let peers: Vec<NodeId> = st
            .detector
            .views()
            .filter(|(_, v)| v.health != Health::Down)
            .map(|(id, _)| id)
            .collect();
        tracing::warn!(
            gap_ms = gap,
            "the heartbeat driver did not run for {gap} ms (paused or starved): peers are heard \
             afresh rather than judged by beats it could not take in"
        );
        for id in peers {
            st.detector.remove_node(id);
            let _ = st.detector.add_node(id, now);
        }
    }

    /// Whether this node is fenced because its lease was revoked (a member refused it a grant
    /// within the last lease), not merely cut off.
    fn revoked(&self, st: &State, now: u64) -> bool {
        st.fenced
            && st
                .denied_ms
                .is_some_and(|t| now < t + self.lease_cfg.lease_ms)
    }

    /// Re-read the lease: log and announce a change of the fencing flag. Returns it.
    fn update_fence(&self, st: &mut State, now: u64) -> bool {
        let fenced = st.lease.is_fenced(now);
        if fenced != st.fenced {
            if fenced && st.lease.fence_deadline_ms().is_none() {
                // Every node starts fenced: not a loss of contact, and not counted as a fence.
                tracing::info!("no lease yet: waiting for contact with a quorum");
            } else if fenced {
                tracing::warn!(
                    "FENCED: no quorum contact within the lease; this node must not act"
                );
            } else {
                tracing::info!("lease regained: this node is in contact with a quorum");
            }
            st.fenced = fenced;
            self.shared.lock().expect("health lock poisoned").fenced = fenced;
            if let Some(tx) = &self.fenced_tx {
                let _ = tx.send(fenced);
            }
        }
        fenced
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

    /// Count a granted acknowledgement from a voter; true if it completed a majority (this
    /// node, if a voter, counting itself) and so renewed this node's lease.
    fn on_ack(&mut self, st: &mut State, from: NodeId, seq: u64, ack: &BeatAck) -> bool {
        let Some(&(_, sent_ms)) = st.sent.iter().find(|(s, _)| *s == seq) else {
            return false;
        };
        let members = self.proposer.status().members;
        let voter = |id: &NodeId| members.get(id).is_some_and(|m| m.voter);
        if ack.from != from || !voter(&from) {
            return false;
        }
        if !ack.granted {
            st.denied_ms = Some(st.clock.elapsed().as_millis() as u64);
            return false;
        }
        let voters = members.values().filter(|m| m.voter).count();
        let own = usize::from(voter(&self.id));
        let granted = st.grants.entry(seq).or_default();
        granted.insert(from);
        let renewed = granted.len() + own > voters / 2;
        st.grants.retain(|&s, _| s + SENT_MAX as u64 > seq);
        if renewed && st.lease.on_quorum_contact(sent_ms) {
            self.publish_lease(st);
        }
        renewed
    }

    /// Grant the component sessions the renewed fence deadline (on the driver's clock, whose
    /// whole-ms readings are never later than the instant they stand for).
    fn publish_lease(&self, st: &State) {
        let (Some(tx), Some(deadline_ms)) = (&self.lease_tx, st.lease.fence_deadline_ms()) else {
            return;
        };
        let deadline = st.clock + Duration::from_millis(deadline_ms);
        tx.send_if_modified(|d| {
            if d.is_some_and(|d| d >= deadline) {
                return false;
            }
            *d = Some(deadline);
            true
        });
    }

    /// The local replica's membership (a stale read: the leader's is current).
    async fn read_agreed(&self) -> Option<Agreed> {
        // Short: the driver takes in no beat or acknowledgement while it waits, and a loaded
        // raft driver can keep a read queued; the corrections are level-triggered, so a read
        // that times out is simply tried again at the next tick.
        let timeout =
            Duration::from_millis(AGREED_READ_TIMEOUT_MS.min(self.detector_cfg.interval_ms));
        self.proposer
            .read(ReadMode::Stale, timeout, |s: &AgentState| Agreed {
                states: s.membership.states.clone(),
                epochs: s.membership.lease_epochs.clone(),
            })
            .await
            .ok()
    }

    /// As leader, on a revocation answer: re-read the membership and correct it.
    async fn correct_agreed_view(
        &self,
        st: &mut State,
        now: u64,
        revokes: &mpsc::Sender<RevokeAnswer>,
    ) {
        if let Some(agreed) = self.read_agreed().await {
            self.correct_with(st, now, &agreed, revokes);
        }
    }

    /// Level-triggered: make the agreed view match the detector. A node the detector holds
    /// down has its lease revoked on a majority of the other voters, and is committed down one
    /// lease plus margin after the latest grant they reported; a node heard again is committed
    /// up; a node that is up but says it holds no lease (revoked, never declared down) is
    /// reinstated.
    fn correct_with(
        &self,
        st: &mut State,
        now: u64,
        agreed: &Agreed,
        revokes: &mpsc::Sender<RevokeAnswer>,
    ) {
        let members = self.proposer.status().members;
        let voters: BTreeSet<NodeId> = members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(&id, _)| id)
            .collect();
        let revoked_peers = self
            .shared
            .lock()
            .expect("health lock poisoned")
            .ledger
            .revoked_peers
            .clone();
        // Every peer as its detector sees it, and this node itself: alive, and revoked if its
        // own lease was refused (a restarted leader may have to reinstate itself).
        let own_revoked = self.revoked(st, now);
        let mut views: Vec<(NodeId, Health, bool)> = st
            .detector
            .views()
            .map(|(id, v): (NodeId, NodeView)| {
                let revoked = revoked_peers.get(&id).copied().unwrap_or(false);
                (id, v.health, revoked)
            })
            .collect();
        views.push((self.id, Health::Up, own_revoked));
        let up: BTreeSet<NodeId> = views
            .iter()
            .filter(|(_, h, _)| *h == Health::Up)
            .map(|(id, _, _)| *id)
            .collect();
        for (node, health, revoked) in views {
            let epoch = agreed.epochs.get(&node).copied().unwrap_or(0);
            let fix = match (agreed.states.get(&node), health) {
                (Some(AgreedState::Up), Health::Down)
                    if !hears_majority_without(&up, &voters, node) =>
                {
                    // This leader hears too few of the others to judge: it is more likely the
                    // one that stalled (a starved runtime takes in no beats) than they all
                    // failed. Revoking now had healthy nodes revoke each other and fence.
                    tracing::debug!(
                        node,
                        "not revoking: this leader hears no majority without it"
                    );
                    continue;
                }
                (Some(AgreedState::Up), Health::Down) => {
                    let r = st.revocations.entry(node).or_default();
                    if r.epoch != epoch {
                        *r = Revocation {
                            epoch,
                            ..Revocation::default()
                        };
                    }
                    match r.replacement_ms(node, &voters, &self.lease_cfg) {
                        Some(t) if now >= t => Fix::Down,
                        Some(_) => continue,
                        None => {
                            self.ask_revocations(st, node, &voters, now, revokes);
                            continue;
                        }
                    }
                }
                (Some(AgreedState::Down), Health::Up) => Fix::Up,
                (Some(AgreedState::Up), Health::Up) if revoked => {
                    st.revocations.remove(&node);
                    Fix::Reinstate
                }
                _ => {
                    // Nothing to correct: forget earlier proposals so the next one is not held.
                    if health == Health::Up {
                        st.revocations.remove(&node);
                    }
                    st.proposed.retain(|(n, _), _| *n != node);
                    continue;
                }
            };
            // Throttle only a repeat of the same correction, never another one.
            if st
                .proposed
                .get(&(node, fix))
                .is_some_and(|&t| now < t + REPROPOSE_AFTER_MS)
            {
                continue;
            }
            st.proposed.insert((node, fix), now);
            let cmd = match fix {
                Fix::Down => MembershipCommand::DownRevoked { node, epoch },
                Fix::Up => MembershipCommand::Up { node },
                Fix::Reinstate => MembershipCommand::Reinstate { node },
            };
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

    /// Ask the voters that have not answered yet to revoke `node`'s lease (at most once per
    /// interval); this node answers for itself at once.
    fn ask_revocations(
        &self,
        st: &mut State,
        node: NodeId,
        voters: &BTreeSet<NodeId>,
        now: u64,
        revokes: &mpsc::Sender<RevokeAnswer>,
    ) {
        let interval = self.detector_cfg.interval_ms;
        let Some(r) = st.revocations.get_mut(&node) else {
            return;
        };
        if r.asked_ms.is_some_and(|t| now < t + interval) {
            return;
        }
        r.asked_ms = Some(now);
        let epoch = r.epoch;
        if node != self.id && !r.answers.contains_key(&self.id) {
            let own = answer_revoke(self.id, &self.shared, node, epoch);
            r.fold(&own, now);
        }
        let missing: Vec<NodeId> = voters
            .iter()
            .filter(|&&w| w != node && w != self.id && !r.answers.contains_key(&w))
            .copied()
            .collect();
        let timeout = Duration::from_millis(interval);
        for w in missing {
            let Some(addr) = st.peers.get(&w) else {
                continue;
            };
            let req = RevokeLeaseRequest {
                cluster: self.cluster.clone(),
                from: self.id,
                node,
                epoch,
                term: self.proposer.status().term,
            };
            let ask = self.beater.revoke(w, addr, req, timeout);
            let revokes = revokes.clone();
            tokio::spawn(async move {
                if let Some(reply) = ask.await {
                    if reply.from == w {
                        let _ = revokes.try_send((node, epoch, reply));
                    }
                }
            });
        }
    }
}
