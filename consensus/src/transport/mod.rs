//! Peer transports: how raft messages and forwarded proposals travel between nodes.
//!
//! Two implementations: [`GrpcTransport`] for real agents and [`InProcessNetwork`] for tests,
//! with drop, delay and partition filters.

mod grpc;
mod inproc;
mod link;
mod service;
mod tls;

pub use grpc::GrpcTransport;
pub use inproc::{InProcessNetwork, InProcessTransport};
pub(crate) use link::LinkRefusal;
pub use link::PeerPort;
pub use service::PeerService;
pub use tls::{host_of, PeerConn, PeerTls, ALPN_H2, ALPN_LINK, HANDSHAKE_TIMEOUT_MS};

use std::{future::Future, pin::Pin, time::Duration};

use nines_core::NodeId;
use raft::eraftpb::Message;

use crate::{Mailbox, Members, ProposeError};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a forwarded request asks the leader to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// Propose an encoded state-machine command.
    Propose,
    /// Apply an encoded [`crate::MembershipChange`].
    ChangeMembership,
}

/// The receiving side of forwarding: run a request on this node as leader.
pub trait ForwardHandler: Send + Sync + 'static {
    /// Run `payload` as `kind` on this node, which must be the leader (no further forwarding).
    fn handle_forward(
        &self,
        kind: ForwardKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, ProposeError>>;
}

/// Moves raft messages to peers and forwards proposals to the leader.
///
/// # Correctness
/// - `send` never blocks the driver; it may drop messages (raft retransmits) but must not
///   reorder messages to one peer or deliver them to the wrong node.
/// - A send failure is reported through the attached [`Mailbox`] (`report_unreachable`), and a
///   snapshot message's outcome through `report_snapshot`, so raft probes again.
/// - `forward` returns a [`ProposeError`] that is retryable only when the request surely did not
///   reach the leader's log.
pub trait Transport: Send + Sync + 'static {
    /// Where to report send outcomes; called once by the driver at start.
    fn attach(&self, mailbox: Mailbox);

    /// The member book changed: connect to new peers, drop removed ones.
    fn set_peers(&self, members: &Members);

    /// Queue messages for their `to` nodes.
    fn send(&self, msgs: Vec<Message>);

    /// Ask node `to` (the leader) to run a request.
    fn forward(
        &self,
        to: NodeId,
        kind: ForwardKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, ProposeError>>;
}
