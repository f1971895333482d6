//! Errors of the consensus layer: [`ProposeError`] for callers, [`Fatal`] for the node.

use nines_core::{AisError, ErrorCode, NodeId};

use crate::store::StoreError;

/// Why a proposal or read did not succeed. Whether it may have taken effect is part of the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader and could not forward (no leader known, or forwarding is not
    /// allowed for this call). Nothing was proposed.
    #[error("node is not the leader (leader: {})", leader_hint.map_or("unknown".into(), |l| l.to_string()))]
    NotLeader {
        /// The leader this node knows of.
        leader_hint: Option<NodeId>,
    },
    /// The deadline passed. The proposal may or may not have been committed.
    #[error("deadline passed before the outcome was known; it may or may not have taken effect")]
    Timeout,
    /// The node is stopping or stopped.
    #[error("the raft node is stopped")]
    Stopped,
    /// Raft refused it before it entered the log (no leader, leadership transfer, too much
    /// uncommitted data). Nothing was proposed; retrying is safe.
    #[error("proposal dropped: {0}")]
    Dropped(String),
    /// The request is invalid and was not proposed (undecodable command, bad membership change).
    #[error("proposal rejected: {0}")]
    Rejected(String),
    /// Leadership changed after the entry was appended: it may or may not be committed.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

impl ProposeError {
    /// Whether the request certainly did not take effect, so sending it again is safe.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NotLeader { .. } | Self::Dropped(_))
    }

    /// Stable wire number (see `nines.raft.v1.ProposeFailure.kind`).
    pub fn kind_u32(&self) -> u32 {
        match self {
            Self::NotLeader { .. } => 1,
            Self::Timeout => 2,
            Self::Stopped => 3,
            Self::Dropped(_) => 4,
            Self::Rejected(_) => 5,
            Self::Unknown(_) => 6,
        }
    }

    /// Rebuild from the wire.
    pub fn from_wire(kind: u32, leader_hint: u64, message: String) -> Self {
        match kind {
            1 => Self::NotLeader {
                leader_hint: (leader_hint != 0).then_some(leader_hint),
            },
            2 => Self::Timeout,
            3 => Self::Stopped,
            4 => Self::Dropped(message),
            5 => Self::Rejected(message),
            _ => Self::Unknown(message),
        }
    }
}

impl From<ProposeError> for AisError {
    fn from(e: ProposeError) -> Self {
        let code = match &e {
            ProposeError::NotLeader { .. } | ProposeError::Dropped(_) => ErrorCode::TryAgain,
            ProposeError::Timeout | ProposeError::Unknown(_) => ErrorCode::Timeout,
            ProposeError::Stopped => ErrorCode::Unavailable,
            ProposeError::Rejected(_) => ErrorCode::InvalidParam,
        };
        let hint = match &e {
            ProposeError::NotLeader { .. } | ProposeError::Dropped(_) => {
                "; the cluster may be electing a leader: retry in a moment"
            }
            ProposeError::Timeout | ProposeError::Unknown(_) => {
                "; check `nines status` for a leader and quorum, then read before retrying"
            }
            ProposeError::Stopped => "; the agent is shutting down or has stopped",
            ProposeError::Rejected(_) => "",
        };
        AisError::new(code, format!("{e}{hint}"))
    }
}

/// A failure that stops the node: it must not go on and acknowledge anything.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// The log store failed; nothing after this write can be trusted.
    #[error("log store failed: {0}")]
    Store(#[from] StoreError),
    /// raft-rs reported an error it cannot recover from.
    #[error("raft failed: {0}")]
    Raft(#[from] raft::Error),
    /// The state machine found corruption (undecodable entry, broken invariant).
    #[error("state machine failed: {0}")]
    StateMachine(String),
    /// The node's data or configuration is inconsistent (wrong cluster, unknown format).
    #[error("{0}")]
    Config(String),
}
