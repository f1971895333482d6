//! The driver's inbox and the handles that feed it.

use nines_core::NodeId;
use raft::eraftpb::Message;
use tokio::sync::{mpsc, oneshot};

use crate::{MembershipChange, ProposeError};

/// Reply to one proposal: the encoded response, or why it failed.
pub(crate) type ProposeReply = oneshot::Sender<Result<Vec<u8>, ProposeError>>;

/// A read to run against the state machine once it is safe to (after ReadIndex, or at once when
/// stale). A read the node gives up on (deadline, shutdown) is dropped unrun.
pub(crate) type ReadFn<M> = Box<dyn FnOnce(&M) + Send>;

/// What callers (through a `Proposer`) ask of the driver task.
pub(crate) enum Request<M> {
    /// Propose a command (encoded) on this node, which must be the leader.
    Propose {
        command: Vec<u8>,
        reply: ProposeReply,
    },
    /// Propose a membership change on this node, which must be the leader.
    ChangeMembership {
        change: MembershipChange,
        reply: ProposeReply,
    },
    /// Run a read.
    Read {
        linearizable: bool,
        deadline: tokio::time::Instant,
        read: ReadFn<M>,
    },
}

/// What the network (through a [`Mailbox`]) tells the driver task.
pub(crate) enum NetInput {
    /// Raft messages from a peer (already authenticated by the transport).
    Raft(Vec<Message>),
    /// The transport could not reach a peer.
    Unreachable(NodeId),
    /// A snapshot send finished (true) or failed.
    SnapshotSent(NodeId, bool),
}

/// The handle a transport uses to deliver incoming raft messages and report send outcomes.
pub struct Mailbox {
    pub(crate) tx: mpsc::Sender<NetInput>,
}

impl Clone for Mailbox {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl Mailbox {
    /// Deliver raft messages. Never blocks: if the driver is backed up the messages are dropped
    /// and raft's own retransmission recovers.
    pub fn deliver(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        if self.tx.try_send(NetInput::Raft(msgs)).is_err() {
            tracing::debug!("driver inbox full or closed; dropped incoming raft messages");
        }
    }

    /// Tell raft a peer is unreachable.
    pub fn report_unreachable(&self, peer: NodeId) {
        let _ = self.tx.try_send(NetInput::Unreachable(peer));
    }

    /// Tell raft how a snapshot send to `peer` ended.
    pub fn report_snapshot(&self, peer: NodeId, delivered: bool) {
        let _ = self.tx.try_send(NetInput::SnapshotSent(peer, delivered));
    }
}
