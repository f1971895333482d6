//! Who is in the cluster, as the replicated log says.

use std::collections::BTreeMap;

use nines_core::NodeId;
use serde::{Deserialize, Serialize};

/// What the cluster knows of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The member's name, for people.
    pub name: String,
    /// Where peers and clients reach it (host:port).
    pub addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
}

/// Members by id, in id order.
pub type Members = BTreeMap<NodeId, PeerInfo>;

/// A membership change request (consensus-internal encoding, carried by `Forward`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a voter.
    AddVoter {
        /// Its id (new, non-zero).
        id: NodeId,
        /// Its name and address.
        info: PeerInfo,
    },
    /// Remove a member.
    Remove {
        /// Its id.
        id: NodeId,
    },
}

/// What a snapshot's data holds: the member book and the state machine image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotEnvelope {
    pub members: Members,
    pub state: Vec<u8>,
}
