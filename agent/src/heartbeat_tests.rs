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
use nines_proto::membership::v1::{BeatAck, BeatRequest};
use tokio::time::Instant;

use crate::{
    heartbeat::{answer_beat, Beater, Driver, HeartbeatHandle, LocalHealth, BEAT_QUEUE_LEN},
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

#[tokio::test(start_paused = true)]
async fn isolated_node_fences_itself_before_the_majority_declares_it_down() {
    let lease = LeaseConfig {
        lease_ms: 300,
        drift_margin_ms: 150,
        fence_reaction_ms: 100,
    };
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
    // Let leases and the detector settle (and the post-election wait pass).
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
