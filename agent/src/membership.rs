//! The replicated membership view (like AIS CLM): every member's agreed state — up, down or
//! left — and a view number that grows with every change. The leader commits `down` / `up` from
//! its failure detector and `left` on a planned drain; membership changes (add / remove) arrive
//! through [`MembershipState::on_members`].

use std::collections::BTreeMap;

use nines_consensus::Members;
use nines_core::{AisError, ErrorCode, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events buffered per watcher before it is told it lagged (and gets a fresh snapshot).
pub const WATCH_BUFFER_LEN: usize = 1_024;

/// A member's agreed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgreedState {
    /// Alive as far as the cluster agreed.
    Up,
    /// Declared failed by the leader's detector.
    Down,
    /// Leaving by plan (drained); never reported as a failure.
    Left,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Added to the cluster.
    Joined,
    /// Removed from the cluster, or drained.
    Left,
    /// Declared down.
    Down,
    /// Back up.
    Up,
}

/// One committed change, as watchers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The view number after the change.
    pub view: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// To whom.
    pub node: NodeId,
}

/// Commands of the membership part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipCommand {
    /// The leader's detector declared `node` down.
    Down {
        /// The node.
        node: NodeId,
    },
    /// The leader's detector hears `node` again.
    Up {
        /// The node.
        node: NodeId,
    },
    /// `node` is leaving by plan.
    Leave {
        /// The node.
        node: NodeId,
    },
    /// The leader declared `node` down after a majority revoked its lease at lease epoch
    /// `epoch`; refused if the epoch moved since (the revocations may have been lifted).
    DownRevoked {
        /// The node.
        node: NodeId,
        /// Its lease epoch when the revocations were made.
        epoch: u64,
    },
    /// `node` is up but holds no lease (revoked, never declared down): a new lease epoch lifts
    /// the revocations, and any decision based on them is refused from now on.
    Reinstate {
        /// The node.
        node: NodeId,
    },
}

/// The membership part of the agent state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct MembershipState {
    /// Grows by one per change.
    pub view: u64,
    /// Agreed state per member.
    pub states: BTreeMap<NodeId, AgreedState>,
    /// Lease epoch per member: grows when it comes back up or is reinstated. A revocation of its
    /// lease holds on each node until that node sees a later epoch (docs/design.md).
    pub lease_epochs: BTreeMap<NodeId, u64>,
    /// Where committed changes are announced (not part of the replicated state).
    #[serde(skip)]
    events: Option<broadcast::Sender<Change>>,
}

impl MembershipState {
    /// Announce committed changes on `tx`.
    pub fn set_events(&mut self, tx: broadcast::Sender<Change>) {
        self.events = Some(tx);
    }

    /// Move the event sender out (to survive a snapshot restore).
    pub(crate) fn take_events(&mut self) -> Option<broadcast::Sender<Change>> {
        self.events.take()
    }

    fn record(&mut self, node: NodeId, kind: ChangeKind) {
        self.view += 1;
        if let Some(tx) = &self.events {
            let _ = tx.send(Change {
                view: self.view,
                kind,
                node,
            });
        }
    }

    /// A member's lease epoch (0 until it first changes).
    pub fn lease_epoch(&self, node: NodeId) -> u64 {
        self.lease_epochs.get(&node).copied().unwrap_or(0)
    }

    /// Apply a command; an unknown node is NOT_EXIST, a no-op change is not a change, a
    /// `DownRevoked` at an old lease epoch is TRY_AGAIN.
    pub fn apply(&mut self, cmd: MembershipCommand) -> Result<u64, AisError> {
        let (node, to, kind) = match cmd {
            MembershipCommand::Down { node } => (node, AgreedState::Down, ChangeKind::Down),
            MembershipCommand::DownRevoked { node, epoch } => {
                if epoch != self.lease_epoch(node) {
                    return Err(AisError::new(
                        ErrorCode::TryAgain,
                        format!(
                            "node {node}'s lease epoch is {} now, not {epoch}: revoke again",
                            self.lease_epoch(node)
                        ),
                    ));
                }
                (node, AgreedState::Down, ChangeKind::Down)
            }
            MembershipCommand::Reinstate { node } => {
                if self.states.get(&node) == Some(&AgreedState::Up) {
                    *self.lease_epochs.entry(node).or_insert(0) += 1;
                }
                return Ok(self.view);
            }
            MembershipCommand::Up { node } => (node, AgreedState::Up, ChangeKind::Up),
            MembershipCommand::Leave { node } => (node, AgreedState::Left, ChangeKind::Left),
        };
        let Some(state) = self.states.get_mut(&node) else {
            return Err(AisError::new(
                ErrorCode::NotExist,
                format!("node {node} is not a member"),
            ));
        };
        // A drained node stays left until it is removed; only a drain or removal changes that.
        if *state == to || (*state == AgreedState::Left && kind != ChangeKind::Left) {
            return Ok(self.view);
        }
        *state = to;
        if to == AgreedState::Up {
            *self.lease_epochs.entry(node).or_insert(0) += 1;
        }
        self.record(node, kind);
        Ok(self.view)
    }

    /// The member book changed: new members join (up), removed ones leave.
    pub fn on_members(&mut self, members: &Members) {
        let gone: Vec<NodeId> = self
            .states
            .keys()
            .filter(|id| !members.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.states.remove(&id);
            self.lease_epochs.remove(&id);
            self.record(id, ChangeKind::Left);
        }
        for id in members.keys() {
            if !self.states.contains_key(id) {
                self.states.insert(*id, AgreedState::Up);
                self.record(*id, ChangeKind::Joined);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_consensus::PeerInfo;

    fn book(ids: &[u64]) -> Members {
        ids.iter()
            .map(|&i| {
                (
                    i,
                    PeerInfo {
                        name: format!("n{i}"),
                        addr: format!("a{i}"),
                        voter: true,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn changes_bump_the_view_once_each_and_are_announced() {
        let (tx, mut rx) = broadcast::channel(16);
        let mut m = MembershipState::default();
        m.set_events(tx);
        m.on_members(&book(&[1, 2, 3]));
        assert_eq!(m.view, 3);
        assert_eq!(
            m.apply(MembershipCommand::Down { node: 2 })
                .expect("member"),
            4
        );
        assert_eq!(
            m.apply(MembershipCommand::Down { node: 2 })
                .expect("member"),
            4,
            "no-op"
        );
        assert_eq!(
            m.apply(MembershipCommand::Up { node: 2 }).expect("member"),
            5
        );
        assert_eq!(
            m.apply(MembershipCommand::Leave { node: 3 })
                .expect("member"),
            6
        );
        assert_eq!(
            m.apply(MembershipCommand::Up { node: 3 }).expect("member"),
            6,
            "left stays left"
        );
        assert!(m.apply(MembershipCommand::Down { node: 9 }).is_err());
        // Lease epochs: up and reinstate move them; a revoked down at an old epoch is refused.
        assert_eq!(m.lease_epoch(2), 1, "came back up once");
        assert!(m.apply(MembershipCommand::Reinstate { node: 2 }).is_ok());
        assert_eq!(m.lease_epoch(2), 2);
        let stale = m.apply(MembershipCommand::DownRevoked { node: 2, epoch: 1 });
        assert_eq!(stale.map_err(|e| e.code), Err(ErrorCode::TryAgain));
        assert_eq!(
            m.states[&2],
            AgreedState::Up,
            "a refused down changes nothing"
        );
        assert_eq!(
            m.apply(MembershipCommand::DownRevoked { node: 2, epoch: 2 })
                .expect("member"),
            7
        );
        assert_eq!(m.states[&2], AgreedState::Down);
        assert!(m.apply(MembershipCommand::Reinstate { node: 2 }).is_ok());
        assert_eq!(m.lease_epoch(2), 2, "a down node is not reinstated");
        m.on_members(&book(&[1, 2]));
        assert_eq!(m.states.len(), 2);
        let kinds: Vec<ChangeKind> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.kind)
            .collect();
        use ChangeKind::*;
        assert_eq!(
            kinds,
            vec![Joined, Joined, Joined, Down, Up, Left, Down, Left]
        );
    }
}
