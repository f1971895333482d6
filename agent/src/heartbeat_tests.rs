//! Fencing, exactly: three agents' cores (raft node + heartbeat driver) on the in-process
//! network, on tokio's paused clock. The isolated node must raise "fenced" within its lease, and
//! the majority must commit it down strictly after that.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use nines_consensus::{
    start, InProcessNetwork, MemLogStore, Members, NodeConfig, PeerInfo, Proposer, RaftConfig,
    ReadMode, Role,
};
use nines_core::{shutdown::Shutdown, NodeId};
use nines_heartbeat::{lease::LeaseConfig, DetectorConfig};
use nines_proto::membership::v1::{BeatAck, BeatRequest, RevokeLeaseReply, RevokeLeaseRequest};
use tokio::time::Instant;

use crate::{
    heartbeat::{
        answer_beat, answer_revoke, Beater, Driver, HeartbeatHandle, LocalHealth, BEAT_QUEUE_LEN,
    },
    membership::AgreedState,
    AgentState,
};

type Registry = Arc<Mutex<BTreeMap<NodeId, (Proposer<AgentState>, HeartbeatHandle)>>>;

/// Beats delivered in-process, dropped in either direction by the network's filters.
struct InProcBeater {
    from: NodeId,
    net: InProcessNetwork,
    nodes: Registry,
}

impl Beater for InProcBeater {
    fn beat(
        &self,
        to: NodeId,
        _addr: &str,
        req: BeatRequest,
        _timeout: Duration,
    ) -> nines_consensus::BoxFuture<'static, Option<BeatAck>> {
        let blocked = self.net.is_blocked(self.from, to) || self.net.is_blocked(to, self.from);
        let target = self.nodes.lock().expect("registry").get(&to).cloned();
        let ack = match (blocked, target) {
            (false, Some((p, hb))) => Some(answer_beat(to, &p, &hb, &req)),
            _ => None,
        };
        Box::pin(async move { ack })
    }

    fn revoke(
        &self,
        to: NodeId,
        _addr: &str,
        req: RevokeLeaseRequest,
        _timeout: Duration,
    ) -> nines_consensus::BoxFuture<'static, Option<RevokeLeaseReply>> {
        let blocked = self.net.is_blocked(self.from, to) || self.net.is_blocked(to, self.from);
        let target = self.nodes.lock().expect("registry").get(&to).cloned();
        let reply = match (blocked, target) {
            (false, Some((_, hb))) => Some(answer_revoke(to, &hb.shared, req.node, req.epoch)),
            _ => None,
        };
        Box::pin(async move { reply })
    }
}

fn book() -> Members {
    (1..=3)
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

/// The lease settings of the agent's defaults.
const LEASE: LeaseConfig = LeaseConfig {
    lease_ms: 300,
    drift_margin_ms: 150,
    fence_reaction_ms: 100,
};

type Keep = Vec<(Shutdown, nines_consensus::StartedNode<AgentState>)>;

/// Three agents' cores on one in-process network; returns once one of them leads.
async fn three_agents() -> (Keep, Registry, InProcessNetwork, NodeId) {
    let lease = LEASE;
    let detector = DetectorConfig::default();
    let net = InProcessNetwork::new();
    let nodes: Registry = Arc::default();
    let mut keep = Vec::new();
    for id in 1..=3 {
        let cfg = NodeConfig {
            id,
            cluster: "test".into(),
            raft: RaftConfig::default(),
            bootstrap: book(),
            seed_peers: book(),
        };
        let (shutdown, signal) = Shutdown::new();
        let started = start(
            cfg,
            MemLogStore::new(),
            AgentState::default(),
            net.transport(id),
            signal.clone(),
        )
        .expect("node starts");
        net.register(id, Arc::new(started.proposer.clone()));
        let (beats_tx, beats_rx) = tokio::sync::mpsc::channel(BEAT_QUEUE_LEN);
        let shared = Arc::new(Mutex::new(LocalHealth::default()));
        let handle = HeartbeatHandle {
            shared: shared.clone(),
            beats: beats_tx,
        };
        nodes
            .lock()
            .expect("registry")
            .insert(id, (started.proposer.clone(), handle));
        let driver = Driver {
            id,
            cluster: "test".into(),
            detector_cfg: detector.clone(),
            lease_cfg: lease,
            proposer: started.proposer.clone(),
            shared,
            beats: beats_rx,
            beater: Arc::new(InProcBeater {
                from: id,
                net: net.clone(),
                nodes: nodes.clone(),
            }),
            fenced_tx: None,
            lease_tx: None,
        };
        tokio::spawn(driver.run(signal));
        keep.push((shutdown, started));
    }
    let find_leader = || {
        keep.iter()
            .map(|(_, s)| s.proposer.status())
            .find(|s| s.role == Role::Leader)
            .map(|s| s.id)
    };
    let mut leader = None;
    for _ in 0..1000 {
        leader = find_leader();
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = leader.expect("a leader");
    (keep, nodes, net, leader)
}

/// Whether `node` is agreed down, read on `reader`.
async fn agreed_down(reader: &Proposer<AgentState>, node: NodeId) -> bool {
    let agreed = reader
        .read(
            ReadMode::Stale,
            Duration::from_secs(1),
            move |s: &AgentState| s.membership.states.get(&node).copied(),
        )
        .await
        .expect("read");
    agreed == Some(AgreedState::Down)
}

#[tokio::test(start_paused = true)]
async fn isolated_node_fences_itself_before_the_majority_declares_it_down() {
    let lease = LEASE;
    let detector = DetectorConfig::default();
    let (keep, nodes, net, leader) = three_agents().await;
    // Let leases and the detector settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = (1..=3).find(|&n| n != leader).expect("a follower");
    let victim_hb = nodes.lock().expect("registry")[&victim].1.clone();
    assert!(
        !victim_hb.local().fenced,
        "a connected node must not be fenced"
    );
    let leader_p = keep[(leader - 1) as usize].1.proposer.clone();

    eprintln!("phase: isolating node {victim} (leader is {leader})");
    net.isolate(victim);
    let isolated_at = Instant::now();
    let (mut fenced_at, mut down_at) = (None, None);
    for _ in 0..5_000 {
        if fenced_at.is_none() && victim_hb.local().fenced {
            fenced_at = Some(Instant::now());
        }
        if down_at.is_none() {
            let agreed = leader_p
                .read(
                    ReadMode::Stale,
                    Duration::from_secs(1),
                    move |s: &AgentState| s.membership.states.get(&victim).copied(),
                )
                .await
                .expect("read");
            if agreed == Some(AgreedState::Down) {
                down_at = Some(Instant::now());
            }
        }
        if fenced_at.is_some() && down_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fenced = fenced_at.expect("the isolated node raised fenced") - isolated_at;
    let down = down_at.expect("the majority committed it down") - isolated_at;
    eprintln!("fenced after {fenced:?}, agreed down after {down:?}");
    let bound = Duration::from_millis(lease.lease_ms + detector.interval_ms);
    assert!(
        fenced <= bound,
        "fenced after {fenced:?}, later than lease + one interval ({bound:?})"
    );
    assert!(
        down > fenced,
        "declared down ({down:?}) before the node fenced itself ({fenced:?})"
    );
}

/// The lost node is the leader: the survivors keep their leases (they grant each other), the new
/// leader revokes the old one's lease on the majority and declares it down one lease after the
/// last grant they report — only after the old leader fenced itself, and without the former
/// post-election wait of 2 × (lease + margin).
#[tokio::test(start_paused = true)]
async fn lost_leader_is_declared_down_after_it_fenced_and_survivors_keep_their_leases() {
    let (keep, nodes, net, old) = three_agents().await;
    // Let leases and the detector settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let old_hb = nodes.lock().expect("registry")[&old].1.clone();
    assert!(!old_hb.local().fenced, "a connected leader is not fenced");

    eprintln!("phase: isolating the leader, node {old}");
    net.isolate(old);
    let isolated_at = Instant::now();
    let (mut fenced_at, mut elected, mut down_at) = (None, None, None);
    for _ in 0..5_000 {
        if fenced_at.is_none() && old_hb.local().fenced {
            fenced_at = Some(Instant::now());
        }
        for n in (1..=3).filter(|&n| n != old) {
            let survivor = nodes.lock().expect("registry")[&n].1.clone();
            assert!(
                !survivor.local().fenced,
                "node {n} fenced itself after {:?}: losing the leader must not fence the \
                 majority (it still grants itself leases)",
                isolated_at.elapsed()
            );
        }
        if elected.is_none() {
            elected = keep
                .iter()
                .map(|(_, s)| s.proposer.clone())
                .find(|p| p.status().role == Role::Leader && p.status().id != old)
                .map(|p| (p, Instant::now()));
        }
        if let Some((new, _)) = &elected {
            if down_at.is_none() && agreed_down(new, old).await {
                down_at = Some(Instant::now());
            }
        }
        if fenced_at.is_some() && down_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fenced = fenced_at.expect("the isolated leader raised fenced") - isolated_at;
    let (_, elected_at) = elected.expect("a new leader was elected");
    let down = down_at.expect("the new leader committed the old one down") - isolated_at;
    let elected = elected_at - isolated_at;
    eprintln!("fenced after {fenced:?}, new leader after {elected:?}, down after {down:?}");
    assert!(
        down > fenced,
        "declared down ({down:?}) before the old leader fenced itself ({fenced:?})"
    );
    // Paused clock: this is the rule's logic, not a speed: the former rule waited
    // 2 × (lease + margin) from the election.
    let wait = Duration::from_millis(2 * (LEASE.lease_ms + LEASE.drift_margin_ms));
    assert!(
        down < elected + wait,
        "declared down after {down:?}: the post-election wait is back (elected {elected:?})"
    );
}

/// A node cut off from the leader only (a one-sided fault: the third node still hears it and
/// grants its beats): the leader must have the third node revoke the node's lease before it
/// declares it down, or the node would keep renewing — and acting — through the third node's
/// grants while its replacement starts. The revocation rule is what fences it here.
#[tokio::test(start_paused = true)]
async fn a_node_cut_off_from_the_leader_only_is_fenced_by_revocation_before_it_is_declared_down() {
    let (keep, nodes, net, leader) = three_agents().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = (1..=3).find(|&n| n != leader).expect("a follower");
    let victim_hb = nodes.lock().expect("registry")[&victim].1.clone();
    assert!(!victim_hb.local().fenced, "a connected node is not fenced");
    let leader_p = keep[(leader - 1) as usize].1.proposer.clone();

    eprintln!("phase: cutting node {victim} off from the leader {leader} only");
    net.cut(leader, victim);
    net.cut(victim, leader);
    let cut_at = Instant::now();
    let (mut fenced_at, mut down_at) = (None, None);
    for _ in 0..5_000 {
        if fenced_at.is_none() && victim_hb.local().fenced {
            fenced_at = Some(Instant::now());
        }
        if down_at.is_none() && agreed_down(&leader_p, victim).await {
            down_at = Some(Instant::now());
        }
        if fenced_at.is_some() && down_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let down = down_at.expect("the leader committed the node down") - cut_at;
    let fenced = fenced_at.expect(
        "the node was declared down but never fenced: it kept renewing its lease through the \
         third node's grants (no revocation)",
    ) - cut_at;
    eprintln!("fenced after {fenced:?}, agreed down after {down:?}");
    assert!(
        down > fenced,
        "declared down ({down:?}) before the node fenced itself ({fenced:?})"
    );
}

#[test]
fn a_leader_judges_a_node_down_only_while_it_hears_a_majority_without_it() {
    use crate::heartbeat::hears_majority_without;
    use std::collections::BTreeSet;
    let voters: BTreeSet<NodeId> = [1, 2, 3].into();
    // Leader 1 hears 2: it may judge 3.
    assert!(hears_majority_without(&[1, 2].into(), &voters, 3));
    // Leader 1 hears nobody (it stalled): it judges no one.
    assert!(!hears_majority_without(&[1].into(), &voters, 3));
    assert!(!hears_majority_without(&[1].into(), &voters, 2));
    let five: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
    assert!(hears_majority_without(&[1, 2, 3].into(), &five, 5));
    assert!(!hears_majority_without(&[1, 2, 5].into(), &five, 5));
}
