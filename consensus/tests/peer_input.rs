//! Nothing a peer sends may crash a node: a real three-node cluster on loopback (raft links and
//! gRPC on one port each) is sent, over both, the messages that used to stop a node, and then
//! must still have every node running, a leader, and commit a proposal. Every wait is bounded.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Counter, Op};
use nines_consensus::{
    metrics::RAFT, start, GrpcTransport, MemLogStore, Members, NodeConfig, PeerInfo, PeerPort,
    PeerService, Proposer, RaftConfig, Role,
};
use nines_core::shutdown::Shutdown;
use nines_proto::raft::v1::{
    raft_peer_client::RaftPeerClient, raft_peer_server::RaftPeerServer, MessageBatch, PeerHeader,
};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const LONG: Duration = Duration::from_secs(20);

/// The link's first bytes (part of the wire contract between agents, so spelled out here).
const MAGIC: &[u8; 8] = b"NINESRL1";

const CLUSTER: &str = "peer-input";

struct Node {
    proposer: Proposer<Counter>,
    driver: tokio::task::JoinHandle<Result<(), nines_consensus::Fatal>>,
    _shutdown: Shutdown,
    _server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start_nodes(n: u64) -> (Vec<Node>, Vec<SocketAddr>) {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let book: Members = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let id = i as u64 + 1;
            let info = PeerInfo {
                name: format!("n{id}"),
                addr: a.to_string(),
                voter: true,
            };
            (id, info)
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let cfg = NodeConfig {
            id,
            cluster: CLUSTER.into(),
            raft: RaftConfig::default(),
            bootstrap: book.clone(),
            seed_peers: book.clone(),
        };
        let (shutdown, signal) = Shutdown::new();
        let transport = GrpcTransport::new(id, CLUSTER);
        let started = start(
            cfg,
            MemLogStore::new(),
            Counter::default(),
            transport,
            signal.clone(),
        )
        .expect("node starts");
        let service = PeerService::new(started.proposer.clone(), CLUSTER);
        let incoming = PeerPort::incoming(listener, service.clone(), signal);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftPeerServer::new(service))
                .serve_with_incoming(incoming),
        );
        nodes.push(Node {
            proposer: started.proposer,
            driver: started.driver,
            _shutdown: shutdown,
            _server: server,
        });
    }
    (nodes, addrs)
}

async fn wait_leader(nodes: &[Node]) -> usize {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(i) = nodes
            .iter()
            .position(|n| n.proposer.status().role == Role::Leader)
        {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within {LONG:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header(from: u64) -> PeerHeader {
    PeerHeader {
        cluster: CLUSTER.into(),
        from,
        protocol_version: nines_core::PROTOCOL_VERSION,
    }
}

fn raft_msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn batch(from: u64, to: u64, msgs: Vec<Vec<u8>>) -> MessageBatch {
    MessageBatch {
        header: Some(header(from)),
        to,
        messages: msgs,
    }
}

fn encoded(m: &Message) -> Vec<u8> {
    m.write_to_bytes().expect("raft-rs encodes")
}

fn frame_of(b: &MessageBatch) -> Vec<u8> {
    let body = b.encode_to_vec();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// The number of peer messages refused so far for `reason` (process-wide: every node here).
fn refused(reason: &str) -> u64 {
    RAFT.refused_messages
        .by_label()
        .into_iter()
        .find(|(l, _)| *l == reason)
        .map_or_else(|| panic!("no reason {reason}"), |(_, v)| v)
}

fn link_refused(reason: &str) -> u64 {
    RAFT.link_refusals
        .by_label()
        .into_iter()
        .find(|(l, _)| *l == reason)
        .map_or_else(|| panic!("no reason {reason}"), |(_, v)| v)
}

/// Wait until the counter `read` passes `before`.
async fn counted(what: &str, before: u64, read: impl Fn() -> u64) {
    let deadline = tokio::time::Instant::now() + LONG;
    while read() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} was never counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Send `b` by the gRPC `RaftPeer/Send` call.
async fn grpc_send(addr: SocketAddr, b: MessageBatch) -> Result<(), tonic::Status> {
    let mut client = RaftPeerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client.send(b).await.map(|_| ())
}

/// Read the refusal frame a node writes before closing a link.
async fn refusal(conn: &mut TcpStream, within: Duration) -> String {
    let read = async {
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).await.expect("a refusal frame");
        let mut reason = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut reason).await.expect("the reason");
        String::from_utf8(reason).expect("utf-8 reason")
    };
    tokio::time::timeout(within, read)
        .await
        .expect("refused within the bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_used_to_crash_a_node_are_refused_and_the_cluster_goes_on() {
    let (nodes, addrs) = start_nodes(3).await;
    let li = wait_leader(&nodes).await;
    let leader = nodes[li].proposer.id();
    let term = nodes[li].proposer.status().term;
    let followers: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    let (f1, f2) = (followers[0], followers[1]);
    let (f1_id, f2_id) = (nodes[f1].proposer.id(), nodes[f2].proposer.id());
    nodes[li]
        .proposer
        .propose(&Op::Add(1), LONG)
        .await
        .expect("a first proposal commits");

    eprintln!("phase: an empty MsgPropose to leader {leader}, claiming follower {f1_id}, by gRPC");
    let before = refused("propose");
    let propose = raft_msg(MessageType::MsgPropose, f1_id, leader, 0);
    grpc_send(addrs[li], batch(f1_id, leader, vec![encoded(&propose)]))
        .await
        .expect("the batch authenticates; its message is dropped");
    counted("the MsgPropose", before, || refused("propose")).await;

    eprintln!("phase: a heartbeat with commit u64::MAX to follower {f1_id}, by gRPC");
    let before = refused("heartbeat_commit_beyond_log");
    let mut hb = raft_msg(MessageType::MsgHeartbeat, leader, f1_id, term);
    hb.commit = u64::MAX;
    grpc_send(addrs[f1], batch(leader, f1_id, vec![encoded(&hb)]))
        .await
        .expect("the batch authenticates");
    counted("the heartbeat", before, || {
        refused("heartbeat_commit_beyond_log")
    })
    .await;

    eprintln!("phase: a message for another node, and one whose sender is forged");
    let (wrong, forged) = (refused("wrong_recipient"), refused("forged_sender"));
    let elsewhere = raft_msg(MessageType::MsgHeartbeat, leader, f2_id, term);
    let mut claims_leader = raft_msg(MessageType::MsgHeartbeat, leader, f1_id, term);
    claims_leader.commit = u64::MAX;
    grpc_send(
        addrs[f1],
        batch(
            f2_id,
            f1_id,
            vec![encoded(&elsewhere), encoded(&claims_leader)],
        ),
    )
    .await
    .expect("the batch authenticates");
    counted("the misaddressed message", wrong, || {
        refused("wrong_recipient")
    })
    .await;
    counted("the forged sender", forged, || refused("forged_sender")).await;
    let whole = grpc_send(addrs[f1], batch(leader, f2_id, vec![encoded(&hb)])).await;
    let status = whole.expect_err("a batch for another node is refused whole");
    assert!(
        status.message().contains("reached node"),
        "{}",
        status.message()
    );

    eprintln!("phase: nested groups (protobuf 2's stack overflow) as a raft message");
    let before = refused("undecodable");
    let nested: Vec<u8> = std::iter::repeat_n([0x9b_u8, 0x06], 50_000)
        .flatten()
        .collect();
    grpc_send(addrs[f2], batch(leader, f2_id, vec![nested]))
        .await
        .expect("the batch authenticates");
    counted("the nested message", before, || refused("undecodable")).await;

    eprintln!("phase: the same heartbeat over a raft link to follower {f2_id}, after a hello");
    let before = refused("heartbeat_commit_beyond_log");
    let mut link = TcpStream::connect(addrs[f2]).await.expect("connect");
    link.write_all(MAGIC).await.expect("magic");
    link.write_all(&frame_of(&batch(leader, f2_id, vec![])))
        .await
        .expect("hello");
    let mut hb2 = raft_msg(MessageType::MsgHeartbeat, leader, f2_id, term);
    hb2.commit = u64::MAX;
    link.write_all(&frame_of(&batch(leader, f2_id, vec![encoded(&hb2)])))
        .await
        .expect("heartbeat");
    counted("the linked heartbeat", before, || {
        refused("heartbeat_commit_beyond_log")
    })
    .await;

    eprintln!("phase: the link then half-sends a 60 MiB frame; it is dropped after its deadline");
    let before = link_refused("frame_deadline");
    link.write_all(&(60u32 << 20).to_be_bytes())
        .await
        .expect("length");
    link.write_all(&[0u8; 1024]).await.expect("a little of it");
    let why = refusal(&mut link, LONG).await;
    assert!(why.contains("did not arrive whole"), "{why}");
    assert!(link_refused("frame_deadline") > before);

    eprintln!("phase: a new link whose first frame claims 60 MiB is refused by its length");
    let before = link_refused("hello_too_large");
    let mut big = TcpStream::connect(addrs[li]).await.expect("connect");
    big.write_all(MAGIC).await.expect("magic");
    big.write_all(&(60u32 << 20).to_be_bytes())
        .await
        .expect("length");
    let why = refusal(&mut big, LONG).await;
    assert!(why.contains("exceeds the limit"), "{why}");
    assert!(link_refused("hello_too_large") > before);

    eprintln!("phase: every node still runs, a leader exists, and a proposal commits");
    for n in &nodes {
        assert!(!n.driver.is_finished(), "node {} stopped", n.proposer.id());
    }
    let li = wait_leader(&nodes).await;
    let applied = nodes[li]
        .proposer
        .propose(&Op::Add(2), LONG)
        .await
        .expect("a proposal commits after all that")
        .applied_index;
    let deadline = tokio::time::Instant::now() + LONG;
    for n in &nodes {
        while n.proposer.status().applied < applied {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} did not apply {applied}",
                n.proposer.id()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!n.driver.is_finished(), "node {} stopped", n.proposer.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_dropped_after_the_hello_deadline() {
    let (nodes, addrs) = start_nodes(1).await;
    wait_leader(&nodes).await;
    let before = link_refused("hello_deadline");
    let mut conn = TcpStream::connect(addrs[0]).await.expect("connect");
    // The first byte makes it a link; then nothing.
    conn.write_all(&MAGIC[..1]).await.expect("one byte");
    let why = refusal(&mut conn, LONG).await;
    assert!(why.contains("first frame within"), "{why}");
    assert!(link_refused("hello_deadline") > before);
    assert!(!nodes[0].driver.is_finished());
}
