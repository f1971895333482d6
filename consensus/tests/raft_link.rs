//! The real peer transport over loopback: raft messages on the raft link, snapshots and forwarded
//! proposals by gRPC, both on one port ([`PeerPort`]); and what a link that may not speak is told.
//! Every wait is bounded.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Counter, Op};
use nines_consensus::{
    start, GrpcTransport, MemLogStore, Members, NodeConfig, PeerInfo, PeerPort, PeerService,
    Proposer, RaftConfig, Role,
};
use nines_core::shutdown::Shutdown;
use nines_proto::raft::v1::{raft_peer_server::RaftPeerServer, MessageBatch, PeerHeader};
use prost::Message as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const LONG: Duration = Duration::from_secs(20);

/// The link's first bytes: part of the wire contract between agents, so spelled out here.
const MAGIC: &[u8; 8] = b"NINESRL1";

struct Node {
    proposer: Proposer<Counter>,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Start nodes `1..=n` of cluster "link", each serving its peer port on its own listener.
async fn start_nodes(n: u64) -> (Vec<Node>, Vec<SocketAddr>) {
    start_with_strangers(n, &[]).await
}

/// Nodes `1..=n`, with `strangers` (addresses nothing of ours serves) as voters `n+1...` in the
/// member book.
async fn start_with_strangers(n: u64, strangers: &[SocketAddr]) -> (Vec<Node>, Vec<SocketAddr>) {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .chain(strangers.iter().copied())
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
            cluster: "link".into(),
            raft: RaftConfig::default(),
            bootstrap: book.clone(),
            seed_peers: book.clone(),
        };
        let (shutdown, signal) = Shutdown::new();
        let links_stop = signal.clone();
        let transport = GrpcTransport::new(id, "link");
        let started = start(
            cfg,
            MemLogStore::new(),
            Counter::default(),
            transport,
            signal,
        )
        .expect("node starts");
        let service = PeerService::new(started.proposer.clone(), "link");
        let incoming = PeerPort::incoming(listener, service.clone(), links_stop);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftPeerServer::new(service))
                .serve_with_incoming(incoming),
        );
        nodes.push(Node {
            proposer: started.proposer,
            shutdown,
            server,
        });
    }
    (nodes, addrs)
}

async fn wait_leader(nodes: &[Node]) -> u64 {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(n) = nodes
            .iter()
            .find(|n| n.proposer.status().role == Role::Leader)
        {
            return n.proposer.id();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within {LONG:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_forward_over_one_port_each() {
    let (nodes, _) = start_nodes(3).await;
    let leader = wait_leader(&nodes).await;
    eprintln!("phase: leader {leader}; proposing through every node (followers forward by gRPC)");
    let mut last = 0;
    for i in 0..60u64 {
        let via = &nodes[(i % 3) as usize].proposer;
        let r = via
            .propose(&Op::Add(i), LONG)
            .await
            .unwrap_or_else(|e| panic!("proposal {i} via node {}: {e}", via.id()));
        last = r.applied_index;
    }
    eprintln!("phase: waiting for all three to apply index {last}");
    let deadline = tokio::time::Instant::now() + LONG;
    for n in &nodes {
        while n.proposer.status().applied < last {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} applied only {} of {last}",
                n.proposer.id(),
                n.proposer.status().applied
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Open a raw link to `addr` and send one frame holding `batch` (or `raw` bytes as is).
async fn link_with(addr: SocketAddr, frame: Vec<u8>) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(MAGIC).await.expect("magic");
    conn.write_all(&frame).await.expect("frame");
    conn
}

fn frame_of(batch: &MessageBatch) -> Vec<u8> {
    let body = batch.encode_to_vec();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

fn batch_from(cluster: &str, from: u64, to: u64) -> MessageBatch {
    MessageBatch {
        header: Some(PeerHeader {
            cluster: cluster.into(),
            from,
            protocol_version: nines_core::PROTOCOL_VERSION,
        }),
        to,
        messages: vec![],
    }
}

/// The refusal frame the node writes, then the end of the connection.
async fn refusal(mut conn: TcpStream) -> String {
    let read = async {
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).await.expect("a refusal frame");
        let mut reason = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut reason).await.expect("the reason");
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.expect("then the end");
        assert!(rest.is_empty(), "bytes after the refusal: {rest:?}");
        String::from_utf8(reason).expect("utf-8 reason")
    };
    tokio::time::timeout(LONG, read)
        .await
        .expect("refused within the bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_may_not_speak_is_told_why_and_closed() {
    let (nodes, addrs) = start_nodes(1).await;
    wait_leader(&nodes).await;
    let addr = addrs[0];

    eprintln!("phase: another cluster");
    let why = refusal(link_with(addr, frame_of(&batch_from("other", 2, 1))).await).await;
    assert!(why.contains("belongs to cluster 'other'"), "{why}");

    eprintln!("phase: a node that is not a member");
    let why = refusal(link_with(addr, frame_of(&batch_from("link", 9, 1))).await).await;
    assert!(why.contains("node 9 is not a member"), "{why}");

    eprintln!("phase: messages for another node");
    let why = refusal(link_with(addr, frame_of(&batch_from("link", 1, 5))).await).await;
    assert!(why.contains("messages for node 5 reached node 1"), "{why}");

    eprintln!("phase: a frame longer than the limit, and bytes that are no batch");
    let why = refusal(link_with(addr, u32::MAX.to_be_bytes().to_vec()).await).await;
    assert!(why.contains("exceeds the limit"), "{why}");
    let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff].to_vec();
    let why = refusal(link_with(addr, garbage).await).await;
    assert!(why.contains("undecodable"), "{why}");

    eprintln!("phase: a newer link from the same node replaces the older one");
    let mut older = link_with(addr, frame_of(&batch_from("link", 1, 1))).await;
    let newer = link_with(addr, frame_of(&batch_from("link", 1, 1))).await;
    // Once the node has taken the newer link's batch, the older link's next one is refused.
    let deadline = tokio::time::Instant::now() + LONG;
    let why = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the older link was never replaced"
        );
        let _ = older.write_all(&frame_of(&batch_from("link", 1, 1))).await;
        let mut len = [0u8; 4];
        let wait = Duration::from_millis(100);
        if let Ok(Ok(_)) = tokio::time::timeout(wait, older.read_exact(&mut len)).await {
            let mut reason = vec![0u8; u32::from_be_bytes(len) as usize];
            older.read_exact(&mut reason).await.expect("the reason");
            break String::from_utf8(reason).expect("utf-8 reason");
        }
    };
    assert!(why.contains("a newer link from node 1 replaced"), "{why}");
    drop(newer);

    eprintln!("phase: the node still serves (a proposal commits)");
    nodes[0]
        .proposer
        .propose(&Op::Add(1), LONG)
        .await
        .expect("the node works after the refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_keep_delivering_after_the_grpc_server_stops_until_the_node_stops() {
    let (nodes, addrs) = start_nodes(1).await;
    wait_leader(&nodes).await;
    let mut conn = link_with(addrs[0], frame_of(&batch_from("link", 1, 1))).await;

    eprintln!("phase: the gRPC server ends (as when an agent starts draining)");
    let Node {
        proposer,
        shutdown,
        server,
    } = nodes.into_iter().next().expect("one node");
    server.abort();
    let _ = server.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.write_all(&frame_of(&batch_from("link", 1, 1)))
        .await
        .expect("the link still takes batches");
    let mut byte = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut byte)).await;
    assert!(
        still_open.is_err(),
        "the link answered or closed while the node runs: {still_open:?}"
    );

    eprintln!("phase: the node stops; its links close");
    shutdown.trigger();
    let closed = tokio::time::timeout(LONG, conn.read(&mut byte))
        .await
        .expect("the link closes within the bound");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "expected the end of the link, got {closed:?}"
    );
    drop(proposer);
}

/// A peer port that accepts links and refuses every one of them at once, counting connections.
async fn refusing_peer() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut magic = [0u8; 8];
                if conn.read_exact(&mut magic).await.is_ok() {
                    let reason = b"refused by the test";
                    let mut frame = (reason.len() as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(reason);
                    let _ = conn.write_all(&frame).await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_refuses_every_link_is_retried_with_a_growing_backoff() {
    // Two real nodes and a third member that refuses every link: the leader sends it a
    // heartbeat every tick, and each reconnect must count as a failure, not a success.
    let (stranger, connections) = refusing_peer().await;
    let (nodes, _) = start_with_strangers(2, &[stranger]).await;
    wait_leader(&nodes).await;
    let start = connections.load(std::sync::atomic::Ordering::SeqCst);
    let window = Duration::from_secs(5);
    eprintln!("phase: counting reconnects to the refusing peer for {window:?}");
    tokio::time::sleep(window).await;
    let made = connections.load(std::sync::atomic::Ordering::SeqCst) - start;
    // A backoff doubling from 20 ms to 1 s allows about ten in five seconds; reconnecting after
    // every refused heartbeat made 25 or more.
    assert!(
        made <= 14,
        "{made} links opened to a refusing peer in {window:?}"
    );
    assert!(made >= 1, "the leader never tried the third member");
}
