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

/// [`SnapshotEnvelope`] by reference, for writing one without copying the state image into it.
/// Encodes exactly as a `SnapshotEnvelope` does.
#[derive(Serialize)]
pub(crate) struct SnapshotEnvelopeRef<'a> {
    pub members: &'a Members,
    #[serde(serialize_with = "nines_core::bytes::serialize")]
    pub state: &'a [u8],
}

/// What a snapshot's data holds: the member book and the state machine image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotEnvelope {
    pub members: Members,
    /// Copied as one byte string (the same encoding as before), not byte by byte.
    #[serde(with = "nines_core::bytes")]
    pub state: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_written_by_reference_reads_back_as_an_envelope() {
        let mut members = Members::new();
        members.insert(
            7,
            PeerInfo {
                name: "n7".into(),
                addr: "127.0.0.1:7107".into(),
                voter: true,
            },
        );
        let state = vec![1u8, 2, 3, 250];
        let by_ref = SnapshotEnvelopeRef {
            members: &members,
            state: &state,
        };
        let bytes = postcard::to_stdvec(&by_ref).expect("encodes");
        let owned = SnapshotEnvelope {
            members: members.clone(),
            state: state.clone(),
        };
        assert_eq!(bytes, postcard::to_stdvec(&owned).expect("encodes"));
        let back: SnapshotEnvelope = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!((back.members, back.state), (members, state));
    }
}
