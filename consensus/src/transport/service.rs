//! The receiving side of the gRPC peer protocol (and of the raft link, which ends here too):
//! authenticate, decode without protobuf 2 (`wire`), check each message (`inbound`), hand the
//! rest to the driver.

use std::time::Duration;

use nines_core::NodeId;
use nines_core::{limits, PROTOCOL_VERSION};
use nines_proto::raft::v1::{
    forward_response, raft_peer_server::RaftPeer, ForwardRequest, ForwardResponse, MessageBatch,
    PeerHeader, ProposeFailure, SendAck,
};
use tonic::{Request, Response, Status, Streaming};

use super::{tls, ForwardHandler, ForwardKind};
use crate::{inbound, wire, Proposer, StateMachine};

/// Longest time a forwarded request may ask the leader to work on it.
const FORWARD_TIMEOUT_MAX_MS: u64 = 60_000;

/// `nines.raft.v1.RaftPeer` for one node. Raft bytes are decoded only after the header proved
/// the sender is a member of this cluster speaking this protocol version.
pub struct PeerService<M: StateMachine> {
    proposer: Proposer<M>,
    cluster: String,
}

impl<M: StateMachine> Clone for PeerService<M> {
    fn clone(&self) -> Self {
        Self {
            proposer: self.proposer.clone(),
            cluster: self.cluster.clone(),
        }
    }
}

impl<M: StateMachine> PeerService<M> {
    /// The service for the node behind `proposer`, in `cluster`.
    pub fn new(proposer: Proposer<M>, cluster: impl Into<String>) -> Self {
        Self {
            proposer,
            cluster: cluster.into(),
        }
    }

    /// Authenticate a batch, decode it, and hand its acceptable messages to the driver.
    ///
    /// # Errors
    /// A batch whose header does not authenticate, or addressed to another node, is refused
    /// whole. Within an authenticated batch, a message that does not decode or breaks a rule
    /// of `inbound` is dropped (counted and logged) and the others are delivered.
    ///
    /// Over mutual TLS, `certified` is the node whose certificate the batch came with: its
    /// header must name that node.
    fn deliver_certified(
        &self,
        batch: MessageBatch,
        certified: Option<NodeId>,
    ) -> Result<(), Status> {
        let sender = self.check(batch.header.as_ref())?;
        Self::same_sender(sender, certified)?;
        self.deliver_from(sender, batch)
    }

    /// A message's claimed sender must be the node whose certificate it came with.
    fn same_sender(claimed: NodeId, certified: Option<NodeId>) -> Result<(), Status> {
        match certified {
            Some(c) if c != claimed => {
                tracing::warn!(
                    claimed,
                    certified = c,
                    "refused peer traffic claiming node {claimed} sent with node {c}'s certificate"
                );
                Err(Status::permission_denied(format!(
                    "the message claims node {claimed} but came with node {c}'s certificate"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Deliver a batch sent by `sender`, the node the transport authenticated (the batch
    /// header's `from` today; a certificate's node id once peers use TLS).
    pub(super) fn deliver_from(&self, sender: NodeId, batch: MessageBatch) -> Result<(), Status> {
        let me = self.proposer.id();
        if batch.to != me {
            return Err(Status::failed_precondition(format!(
                "messages for node {} reached node {me}; check the peer addresses in the configs",
                batch.to,
            )));
        }
        let mut msgs = Vec::with_capacity(batch.messages.len());
        for bytes in &batch.messages {
            let m = match wire::decode_message(bytes) {
                Ok(m) => m,
                Err(e) => {
                    inbound::report_undecodable(&e.to_string(), sender);
                    continue;
                }
            };
            match inbound::check_message(&m, me, sender) {
                Ok(()) => msgs.push(m),
                Err(refused) => inbound::report(&refused, &m, Some(sender)),
            }
        }
        self.proposer.mailbox().deliver(msgs);
        Ok(())
    }

    /// Authenticate a request's header; the sender's node id if it may speak.
    pub(super) fn check(&self, header: Option<&PeerHeader>) -> Result<NodeId, Status> {
        let h = header.ok_or_else(|| Status::invalid_argument("missing peer header"))?;
        if h.protocol_version != PROTOCOL_VERSION {
            let msg = format!(
                "node {} speaks nines wire protocol v{} but this node speaks v{}; run one \
                 version across the cluster",
                h.from, h.protocol_version, PROTOCOL_VERSION
            );
            tracing::warn!("refused peer: {msg}");
            return Err(Status::failed_precondition(msg));
        }
        if h.cluster != self.cluster {
            let msg = format!(
                "node {} belongs to cluster '{}' but this node to cluster '{}'; check peer \
                 addresses",
                h.from, h.cluster, self.cluster
            );
            tracing::warn!("refused peer: {msg}");
            return Err(Status::permission_denied(msg));
        }
        let status = self.proposer.watch_status();
        let members = &status.borrow().members;
        if !members.is_empty() && !members.contains_key(&h.from) {
            let msg = format!(
                "node {} is not a member of cluster '{}'",
                h.from, self.cluster
            );
            tracing::debug!("refused peer: {msg}");
            return Err(Status::permission_denied(msg));
        }
        Ok(h.from)
    }
}

#[tonic::async_trait]
impl<M: StateMachine> RaftPeer for PeerService<M> {
    async fn send(&self, req: Request<MessageBatch>) -> Result<Response<SendAck>, Status> {
        let certified = tls::node_of(&req);
        self.deliver_certified(req.into_inner(), certified)?;
        Ok(Response::new(SendAck {}))
    }

    async fn stream(
        &self,
        req: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<SendAck>, Status> {
        let certified = tls::node_of(&req);
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            self.deliver_certified(batch, certified)?;
        }
        Ok(Response::new(SendAck {}))
    }

    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let certified = tls::node_of(&req);
        let req = req.into_inner();
        let sender = self.check(req.header.as_ref())?;
        Self::same_sender(sender, certified)?;
        let kind = match req.kind() {
            nines_proto::raft::v1::ForwardKind::Propose => ForwardKind::Propose,
            nines_proto::raft::v1::ForwardKind::ConfChange => ForwardKind::ChangeMembership,
            nines_proto::raft::v1::ForwardKind::Unspecified => {
                return Err(Status::invalid_argument("forward kind missing"))
            }
        };
        if req.payload.len() > limits::PROPOSAL_BYTES_MAX {
            return Err(Status::invalid_argument("forwarded payload too large"));
        }
        let timeout = Duration::from_millis(req.timeout_ms.clamp(1, FORWARD_TIMEOUT_MAX_MS));
        let result = match self
            .proposer
            .handle_forward(kind, req.payload, timeout)
            .await
        {
            Ok(bytes) => forward_response::Result::Response(bytes),
            Err(e) => {
                let leader_hint = match &e {
                    crate::ProposeError::NotLeader { leader_hint } => leader_hint.unwrap_or(0),
                    _ => 0,
                };
                forward_response::Result::Failure(ProposeFailure {
                    kind: e.kind_u32(),
                    leader_hint,
                    message: e.to_string(),
                })
            }
        };
        Ok(Response::new(ForwardResponse {
            result: Some(result),
        }))
    }
}
