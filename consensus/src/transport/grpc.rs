//! The peer transport of real agents: raft messages on a raft link per peer (`link.rs`),
//! snapshots and forwarded requests by gRPC; one sender task per peer, batching, reconnect with
//! backoff, and a deadline on every call.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use nines_core::{limits, NodeId, PROTOCOL_VERSION};
use nines_proto::raft::v1::{
    forward_response, raft_peer_client::RaftPeerClient, ForwardRequest, MessageBatch, PeerHeader,
};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::{sync::mpsc, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};

use super::tls::PeerTls;

use super::{
    link::{encode_frame, Link},
    BoxFuture, ForwardKind, Transport,
};
use crate::{Mailbox, Members, ProposeError};

/// First pause after a failed send to a peer; doubles up to `PEER_BACKOFF_MAX_MS`.
const BACKOFF_START_MS: u64 = 20;

struct Peer {
    addr: String,
    channel: Channel,
    tx: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    mailbox: Option<Mailbox>,
    peers: HashMap<NodeId, Peer>,
}

/// Sends raft messages and forwarded requests to peers over gRPC (`nines.raft.v1.RaftPeer`).
pub struct GrpcTransport {
    id: NodeId,
    cluster: String,
    state: Mutex<State>,
    tls: Option<Arc<PeerTls>>,
}

impl GrpcTransport {
    /// The transport of node `id` in `cluster`, in plaintext.
    pub fn new(id: NodeId, cluster: impl Into<String>) -> Arc<Self> {
        Self::with_tls(id, cluster, None)
    }

    /// The transport of node `id` in `cluster`; with `tls`, every connection to a peer (gRPC
    /// and raft link) is mutual TLS with this node's certificate.
    pub fn with_tls(
        id: NodeId,
        cluster: impl Into<String>,
        tls: Option<Arc<PeerTls>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            cluster: cluster.into(),
            state: Mutex::default(),
            tls,
        })
    }

    fn header(&self) -> PeerHeader {
        PeerHeader {
            cluster: self.cluster.clone(),
            from: self.id,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("transport lock poisoned")
    }
}

/// A lazily connecting channel to `addr` (host:port), over mutual TLS with `tls`.
pub(crate) fn channel_to(addr: &str, tls: Option<&PeerTls>) -> Result<Channel, String> {
    let ep = match tls {
        Some(tls) => tls.endpoint(addr)?,
        None => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address '{addr}': {e}"))?,
    };
    let ep = ep
        .connect_timeout(Duration::from_millis(limits::PEER_RPC_TIMEOUT_MS))
        .tcp_nodelay(true);
    Ok(ep.connect_lazy())
}

fn client(channel: Channel) -> RaftPeerClient<Channel> {
    RaftPeerClient::new(channel)
        .max_decoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
}

impl Transport for GrpcTransport {
    fn attach(&self, mailbox: Mailbox) {
        self.lock().mailbox = Some(mailbox);
    }

    fn set_peers(&self, members: &Members) {
        let header = self.header();
        let mut st = self.lock();
        st.peers
            .retain(|id, p| members.get(id).is_some_and(|m| m.addr == p.addr));
        let Some(mailbox) = st.mailbox.clone() else {
            return;
        };
        for (&id, info) in members {
            if id == self.id || st.peers.contains_key(&id) {
                continue;
            }
            let channel = match channel_to(&info.addr, self.tls.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(peer = id, "{e}");
                    continue;
                }
            };
            let (tx, rx) = mpsc::channel(limits::PEER_QUEUE_LEN);
            let sender = PeerSender {
                to: id,
                addr: info.addr.clone(),
                client: client(channel.clone()),
                header: header.clone(),
                mailbox: mailbox.clone(),
                link: None,
                tls: self.tls.clone(),
            };
            let task = tokio::spawn(sender.run(rx));
            st.peers.insert(
                id,
                Peer {
                    addr: info.addr.clone(),
                    channel,
                    tx,
                    task,
                },
            );
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        let st = self.lock();
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let queued = st.peers.get(&to).map(|p| p.tx.try_send(m).is_ok());
            if queued != Some(true) {
                if let Some(mb) = &st.mailbox {
                    mb.report_unreachable(to);
                    if snapshot {
                        mb.report_snapshot(to, false);
                    }
                }
            }
        }
    }

    fn forward(
        &self,
        to: NodeId,
        kind: ForwardKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, ProposeError>> {
        let channel = self.lock().peers.get(&to).map(|p| p.channel.clone());
        let header = self.header();
        Box::pin(async move {
            let Some(channel) = channel else {
                return Err(ProposeError::Dropped(format!(
                    "no address known for node {to}"
                )));
            };
            let kind = match kind {
                ForwardKind::Propose => nines_proto::raft::v1::ForwardKind::Propose,
                ForwardKind::ChangeMembership => nines_proto::raft::v1::ForwardKind::ConfChange,
            };
            let mut req = tonic::Request::new(ForwardRequest {
                header: Some(header),
                kind: kind as i32,
                payload,
                timeout_ms: timeout.as_millis() as u64,
            });
            req.set_timeout(timeout);
            match client(channel).forward(req).await {
                Ok(resp) => match resp.into_inner().result {
                    Some(forward_response::Result::Response(bytes)) => Ok(bytes),
                    Some(forward_response::Result::Failure(f)) => {
                        Err(ProposeError::from_wire(f.kind, f.leader_hint, f.message))
                    }
                    None => Err(ProposeError::Unknown("empty forward response".into())),
                },
                // Only a failed connect proves the request never reached the leader.
                Err(s) if s.code() == tonic::Code::Unavailable && is_connect_error(&s) => Err(
                    ProposeError::Dropped(format!("leader {to} unreachable: {}", s.message())),
                ),
                Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ProposeError::Timeout),
                Err(s) => Err(ProposeError::Unknown(format!(
                    "forward to {to}: {}",
                    s.message()
                ))),
            }
        })
    }
}

fn is_connect_error(s: &tonic::Status) -> bool {
    let m = s.message().to_ascii_lowercase();
    m.contains("connect error") || m.contains("connection refused")
}

/// Largest sum of encoded message sizes in one batch; a snapshot always travels alone.
const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a successful send shows about the peer.
enum Sent {
    /// It takes our messages: a snapshot call answered, or a link open long enough that a
    /// refusal would have come (`Link::is_proven`) took it.
    Proven,
    /// Written into a link just opened: the peer may still refuse it.
    Unproven,
}

/// The task that owns one peer's queue.
struct PeerSender {
    /// Mutual TLS for its raft link, if the cluster uses it.
    tls: Option<Arc<PeerTls>>,
    to: NodeId,
    addr: String,
    client: RaftPeerClient<Channel>,
    header: PeerHeader,
    mailbox: Mailbox,
    link: Option<Link>,
}

impl PeerSender {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut backoff_ms = BACKOFF_START_MS;
        let mut failing = false;
        // The reason last logged.
        let mut warned = String::new();
        let mut carry: Option<Message> = None;
        loop {
            let first = match carry.take() {
                Some(m) => m,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => break,
                },
            };
            let has_snapshot = first.get_msg_type() == MessageType::MsgSnapshot;
            let mut bytes = first.compute_size() as usize;
            let mut batch = vec![first];
            while !has_snapshot && batch.len() < limits::PEER_BATCH_LEN {
                match rx.try_recv() {
                    Ok(m)
                        if m.get_msg_type() == MessageType::MsgSnapshot
                            || bytes + m.compute_size() as usize > BATCH_BYTES_MAX =>
                    {
                        carry = Some(m);
                        break;
                    }
                    Ok(m) => {
                        bytes += m.compute_size() as usize;
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            match self.send(batch, has_snapshot).await {
                // Written into a link just opened: a peer that refuses links would look
                // reachable on every reconnect, and the backoff would never grow.
                Ok(Sent::Unproven) => {}
                Ok(Sent::Proven) => {
                    if failing {
                        tracing::info!(peer = self.to, addr = %self.addr, "peer reachable again");
                    }
                    failing = false;
                    backoff_ms = BACKOFF_START_MS;
                    if has_snapshot {
                        self.mailbox.report_snapshot(self.to, true);
                    }
                }
                Err(status) => {
                    // Once per outage, and again when the reason changes (a peer restarting
                    // closes the link, refuses connections, then perhaps speaks another version).
                    if !failing || warned != status.message() {
                        tracing::warn!(peer = self.to, addr = %self.addr,
                            "cannot send to peer: {}", status.message());
                        warned = status.message().to_owned();
                    }
                    failing = true;
                    self.mailbox.report_unreachable(self.to);
                    if has_snapshot {
                        self.mailbox.report_snapshot(self.to, false);
                    }
                    // Stale messages are worthless after a pause: raft resends what matters.
                    for m in carry
                        .take()
                        .into_iter()
                        .chain(std::iter::from_fn(|| rx.try_recv().ok()))
                    {
                        if m.get_msg_type() == MessageType::MsgSnapshot {
                            self.mailbox.report_snapshot(self.to, false);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(limits::PEER_BACKOFF_MAX_MS);
                }
            }
        }
    }

    /// Send one batch: snapshots by a unary gRPC call whose answer confirms delivery, everything
    /// else on the raft link (no round trip per batch).
    async fn send(
        &mut self,
        batch: Vec<Message>,
        has_snapshot: bool,
    ) -> Result<Sent, tonic::Status> {
        let messages = batch
            .iter()
            .map(|m| m.write_to_bytes().expect("raft messages encode"))
            .collect();
        let batch = MessageBatch {
            header: Some(self.header.clone()),
            to: self.to,
            messages,
        };
        if !has_snapshot {
            return self.send_linked(batch).await;
        }
        let mut req = tonic::Request::new(batch);
        req.set_timeout(Duration::from_millis(limits::SNAPSHOT_RPC_TIMEOUT_MS));
        self.client.send(req).await.map(|_| Sent::Proven)
    }

    /// The first frame of a new link: the header and `to`, no messages (`link.rs`).
    fn hello(&self) -> Result<Vec<u8>, tonic::Status> {
        let hello = MessageBatch {
            header: Some(self.header.clone()),
            to: self.to,
            messages: Vec::new(),
        };
        let mut frame = Vec::new();
        encode_frame(&hello, &mut frame).map_err(tonic::Status::internal)?;
        Ok(frame)
    }

    /// Send on the raft link, opening it first if needed.
    async fn send_linked(&mut self, batch: MessageBatch) -> Result<Sent, tonic::Status> {
        let mut frame = Vec::new();
        encode_frame(&batch, &mut frame).map_err(tonic::Status::invalid_argument)?;
        if let Some(link) = self.link.take_if(|l| l.is_closed()) {
            return Err(tonic::Status::unavailable(
                link.reason().unwrap_or_default(),
            ));
        }
        let timeout = Duration::from_millis(limits::PEER_RPC_TIMEOUT_MS);
        let sent = match &self.link {
            Some(link) if link.is_proven() => Sent::Proven,
            _ => Sent::Unproven,
        };
        let link = match &mut self.link {
            Some(link) => link,
            None => match tokio::time::timeout(
                timeout,
                Link::connect(&self.addr, &self.hello()?, self.tls.as_deref()),
            )
            .await
            {
                Ok(Ok(link)) => self.link.insert(link),
                Ok(Err(e)) => {
                    return Err(tonic::Status::unavailable(format!(
                        "cannot connect to {}: {e}",
                        self.addr
                    )))
                }
                Err(_) => {
                    return Err(tonic::Status::deadline_exceeded(format!(
                        "no connection to {} within {timeout:?}",
                        self.addr
                    )))
                }
            },
        };
        match tokio::time::timeout(timeout, link.write_all(&frame)).await {
            Ok(Ok(())) => Ok(sent),
            Ok(Err(reason)) => {
                self.link = None;
                Err(tonic::Status::unavailable(reason))
            }
            Err(_) => {
                self.link = None;
                Err(tonic::Status::deadline_exceeded(
                    "the peer stopped reading its raft link",
                ))
            }
        }
    }
}
