//! The failure detector: heartbeats and time in, health transitions out.

use std::collections::{BTreeMap, VecDeque};

use nines_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, DetectorConfig, Resolved};

/// Most nodes one detector tracks. It bounds the detector's memory and the transitions one
/// [`FailureDetector::tick`] can return (at most one per node).
pub const NODES_MAX: usize = 1024;

/// Largest forward step between two accepted heartbeat numbers of one node (one number per
/// beat: at the default 100 ms interval, 100 s of beats lost in between). A bigger jump must be
/// confirmed by the next beat ([`FailureDetector::heartbeat`]).
pub const SEQ_STEP_MAX: u64 = 1_000;

/// How far below the last accepted number a heartbeat is simply late or duplicated (ignored,
/// never believed) rather than a renumbering to be confirmed by the next beat: 20 beats, 2 s at
/// the default interval, far more than a beat stays in flight.
pub const SEQ_LATE_MAX: u64 = 20;

/// A node's health as this observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Health {
    /// Heard within the suspicion threshold.
    Up,
    /// Silent longer than the suspicion threshold but not yet the timeout. Informational: the
    /// cluster acts only on [`Health::Down`].
    Suspect,
    /// Silent longer than the timeout, or held down because it flaps.
    Down,
}

/// A change of one node's health, reported by exactly one [`FailureDetector::tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The node whose health changed.
    pub node: NodeId,
    /// Its health before.
    pub from: Health,
    /// Its health now.
    pub to: Health,
    /// The tick's time: when the detector noticed (on the observer's monotonic clock).
    pub at_ms: u64,
    /// When the node was last heard (or added, if never heard) — the decider's last contact,
    /// which [`crate::lease::earliest_replacement_ms`] measures from.
    pub last_heartbeat_ms: u64,
}

/// What the detector currently believes about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The health last reported for the node.
    pub health: Health,
    /// When the node was last heard (or added, if never heard).
    pub last_heartbeat_ms: u64,
    /// When it entered `health` (its add time for the initial [`Health::Up`]).
    pub since_ms: u64,
    /// Whether flap damping holds it down: it stays [`Health::Down`] until heard continuously
    /// for `hold_down_ms`.
    pub held_down: bool,
}

/// What [`FailureDetector::heartbeat`] did with a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Recorded: the node was heard now.
    Accepted,
    /// Ignored: its sequence number was not above `last_seq` (late, duplicated, reordered or
    /// replayed). If the node's next heartbeat is above this one (and within [`SEQ_STEP_MAX`]),
    /// it is accepted: the node restarted with a lower number, or `last_seq` was forged.
    Stale {
        /// The highest sequence number seen from the node.
        last_seq: u64,
    },
    /// Ignored for now: its sequence number jumped more than [`SEQ_STEP_MAX`] above `last_seq`.
    /// Believed (and accepted) only if the node's next heartbeat follows it within the step: a
    /// restart renumbers the beats that way, while one forged number stays alone.
    Unconfirmed {
        /// The highest sequence number accepted from the node.
        last_seq: u64,
    },
    /// Ignored: the node is not tracked.
    Unknown,
}

/// Why [`FailureDetector::add_node`] refused a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectorError {
    /// Node id 0 is reserved for "none".
    #[error("node id 0 is reserved; give the node an id of 1 or more")]
    ZeroNodeId,
    /// The node is tracked already.
    #[error("node {0} is already tracked; remove it first to start it afresh")]
    AlreadyTracked(NodeId),
    /// The detector tracks [`NODES_MAX`] nodes already.
    #[error("cannot track node {node}: the detector already tracks {max} nodes (NODES_MAX)")]
    TooManyNodes {
        /// The refused node.
        node: NodeId,
        /// The limit.
        max: usize,
    },
}

/// One tracked node.
#[derive(Debug, Clone)]
struct NodeState {
    health: Health,
    since_ms: u64,
    last_heartbeat_ms: u64,
    /// Highest accepted sequence number; `None` until the first heartbeat.
    last_seq: Option<u64>,
    /// The last heartbeat's number if it was not accepted (stale or a jump): the next one
    /// confirms it by following it within [`SEQ_STEP_MAX`].
    unconfirmed_seq: Option<u64>,
    /// Start of the current unbroken run of contact (no gap above the suspicion threshold).
    run_start_ms: u64,
    held_down: bool,
    /// Times of the latest reported recoveries (down → up); at most `flap_threshold` of them.
    recoveries_ms: VecDeque<u64>,
}

impl NodeState {
    fn view(&self) -> NodeView {
        NodeView {
            health: self.health,
            last_heartbeat_ms: self.last_heartbeat_ms,
            since_ms: self.since_ms,
            held_down: self.held_down,
        }
    }
}

/// The failure detector of one observing agent: it turns heartbeats and the passage of time into
/// health [`Transition`]s of the nodes it watches.
///
/// Pure and deterministic: no clock, no I/O. The driver passes `now_ms` from a monotonic clock it
/// owns, feeds every received heartbeat to [`heartbeat`](Self::heartbeat) and calls
/// [`tick`](Self::tick) every `interval_ms` (and may call it right after heartbeats for a prompt
/// recovery report). Only `tick` reports transitions.
///
/// # Correctness
/// - Silence longer than the suspicion threshold makes an up node [`Health::Suspect`]; silence
///   longer than `timeout_ms` makes it [`Health::Down`], at the first tick after
///   `last_heartbeat_ms + timeout_ms` (a tick that comes late may go straight from up to down:
///   one transition, never two for one tick).
/// - A heartbeat whose sequence number is not above the highest seen is ignored, so a delayed or
///   reordered heartbeat never moves `last_heartbeat_ms` and never resurrects a node.
/// - A down node comes back up only at a tick where it is fresh (heard within the suspicion
///   threshold), and, if it recovered more than `flap_threshold` times within
///   `flap_window_ms`, only once heard continuously for `hold_down_ms`: a flapping node yields a
///   bounded number of transitions.
/// - Each transition's `from` is the previously reported health; per tick, transitions come in
///   node id order.
/// - `now_ms` never goes backwards across calls (asserted: a driver passing another clock is a
///   bug that would break every deadline).
#[derive(Debug, Clone)]
pub struct FailureDetector {
    cfg: Resolved,
    nodes: BTreeMap<NodeId, NodeState>,
    /// The latest `now_ms` seen.
    clock_ms: u64,
}

impl FailureDetector {
    /// A detector watching no nodes yet.
    ///
    /// # Errors
    /// The configuration's first broken rule (see [`DetectorConfig::validate`]).
    pub fn new(cfg: &DetectorConfig) -> Result<Self, ConfigError> {
        Ok(FailureDetector {
            cfg: cfg.resolve()?,
            nodes: BTreeMap::new(),
            clock_ms: 0,
        })
    }

    /// Starts watching `id`, as up and as if heard at `now_ms`: a node that never speaks is
    /// suspected and then down on the usual schedule from its add time.
    ///
    /// # Errors
    /// [`DetectorError`]: id 0, a node already tracked, or [`NODES_MAX`] reached.
    pub fn add_node(&mut self, id: NodeId, now_ms: u64) -> Result<(), DetectorError> {
        self.advance(now_ms);
        if id == 0 {
            return Err(DetectorError::ZeroNodeId);
        }
        if self.nodes.contains_key(&id) {
            return Err(DetectorError::AlreadyTracked(id));
        }
        if self.nodes.len() >= NODES_MAX {
            return Err(DetectorError::TooManyNodes {
                node: id,
                max: NODES_MAX,
            });
        }
        let state = NodeState {
            health: Health::Up,
            since_ms: now_ms,
            last_heartbeat_ms: now_ms,
            last_seq: None,
            unconfirmed_seq: None,
            run_start_ms: now_ms,
            held_down: false,
            recoveries_ms: VecDeque::new(),
        };
        self.nodes.insert(id, state);
        Ok(())
    }

    /// Stops watching `id` without reporting a transition (leaving is the membership layer's
    /// event, not a failure). Returns its last view, or `None` if it was not tracked.
    pub fn remove_node(&mut self, id: NodeId) -> Option<NodeView> {
        self.nodes.remove(&id).map(|n| n.view())
    }

    /// Records a heartbeat from `id` carrying the sender's sequence number `sent_seq`.
    ///
    /// A number is accepted when it moves forward from the last accepted one by at most
    /// [`SEQ_STEP_MAX`]. One at most [`SEQ_LATE_MAX`] below it is late or duplicated, and
    /// ignored. Any other number — far below the last (a sender restarted with a lower count,
    /// or a forged last number), or too far above it (a restart renumbering its beats, or a
    /// forged number) — is held as unconfirmed; it is accepted, and the count re-anchored on
    /// it, only if the node's next heartbeat follows it within the step.
    ///
    /// # Correctness
    /// The sender numbers its beats increasingly for the life of one process (one per beat).
    /// Across a restart it may renumber them freely: the second beat of the new process
    /// confirms the new count, so a restart costs one beat. A forged or replayed number cannot
    /// lock a node out for long: it is not believed unless followed, and once the forger stops,
    /// the node's own beats win the count back within two beats (or, for a forged number less
    /// than [`SEQ_LATE_MAX`] ahead, once they count past it). A late beat never resurrects a
    /// node: it is ignored, not confirmable.
    pub fn heartbeat(&mut self, id: NodeId, sent_seq: u64, now_ms: u64) -> HeartbeatOutcome {
        self.advance(now_ms);
        let suspect_after_ms = self.cfg.suspect_after_ms;
        let Some(node) = self.nodes.get_mut(&id) else {
            return HeartbeatOutcome::Unknown;
        };
        let follows = |from: u64| sent_seq > from && sent_seq - from <= SEQ_STEP_MAX;
        if let Some(last_seq) = node.last_seq {
            if sent_seq <= last_seq && last_seq - sent_seq <= SEQ_LATE_MAX {
                return HeartbeatOutcome::Stale { last_seq };
            }
            let confirmed = node.unconfirmed_seq.is_some_and(follows);
            if !follows(last_seq) && !confirmed {
                node.unconfirmed_seq = Some(sent_seq);
                return match sent_seq <= last_seq {
                    true => HeartbeatOutcome::Stale { last_seq },
                    false => HeartbeatOutcome::Unconfirmed { last_seq },
                };
            }
        }
        node.unconfirmed_seq = None;
        if now_ms - node.last_heartbeat_ms > suspect_after_ms {
            node.run_start_ms = now_ms;
        }
        node.last_seq = Some(sent_seq);
        node.last_heartbeat_ms = now_ms;
        HeartbeatOutcome::Accepted
    }

    /// Evaluates every node at `now_ms` and returns the transitions, in node id order.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Transition> {
        self.advance(now_ms);
        let cfg = self.cfg;
        let mut out = Vec::new();
        for (&id, node) in &mut self.nodes {
            let Some(to) = next_health(node, now_ms, &cfg) else {
                continue;
            };
            assert_ne!(to, node.health, "a transition changes the health");
            out.push(Transition {
                node: id,
                from: node.health,
                to,
                at_ms: now_ms,
                last_heartbeat_ms: node.last_heartbeat_ms,
            });
            node.health = to;
            node.since_ms = now_ms;
        }
        out
    }

    /// The current view of `id`, or `None` if it is not tracked.
    pub fn state(&self, id: NodeId) -> Option<NodeView> {
        self.nodes.get(&id).map(NodeState::view)
    }

    /// Every tracked node's view, in node id order.
    pub fn views(&self) -> impl Iterator<Item = (NodeId, NodeView)> + '_ {
        self.nodes.iter().map(|(&id, n)| (id, n.view()))
    }

    /// How many nodes are tracked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is tracked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn advance(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.clock_ms,
            "now_ms went backwards ({now_ms} < {}): the driver must pass one monotonic clock",
            self.clock_ms
        );
        self.clock_ms = now_ms;
    }
}

/// The health `node` moves to at `now_ms`, or `None` if it stays.
fn next_health(node: &mut NodeState, now_ms: u64, cfg: &Resolved) -> Option<Health> {
    let silence_ms = now_ms - node.last_heartbeat_ms;
    let fresh = silence_ms <= cfg.suspect_after_ms;
    match node.health {
        Health::Up | Health::Suspect if silence_ms > cfg.timeout_ms => Some(Health::Down),
        Health::Up if !fresh => Some(Health::Suspect),
        Health::Suspect if fresh => Some(Health::Up),
        Health::Up | Health::Suspect => None,
        Health::Down if fresh => recover(node, now_ms, cfg).then_some(Health::Up),
        Health::Down => None,
    }
}

/// Decides whether a fresh down node is reported up now, applying flap damping; records the
/// recovery if so.
fn recover(node: &mut NodeState, now_ms: u64, cfg: &Resolved) -> bool {
    while node
        .recoveries_ms
        .front()
        .is_some_and(|&t| now_ms - t >= cfg.flap_window_ms)
    {
        node.recoveries_ms.pop_front();
    }
    let threshold = cfg.flap_threshold as usize;
    if node.recoveries_ms.len() >= threshold {
        node.held_down = true;
    }
    if node.held_down && now_ms - node.run_start_ms < cfg.hold_down_ms {
        return false;
    }
    node.held_down = false;
    node.recoveries_ms.push_back(now_ms);
    if node.recoveries_ms.len() > threshold {
        node.recoveries_ms.pop_front();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> FailureDetector {
        FailureDetector::new(&DetectorConfig::default()).expect("defaults are valid")
    }

    #[test]
    fn add_refuses_zero_duplicates_and_past_the_limit() {
        let mut d = detector();
        assert_eq!(d.add_node(0, 0), Err(DetectorError::ZeroNodeId));
        d.add_node(1, 0).expect("first add");
        assert_eq!(d.add_node(1, 0), Err(DetectorError::AlreadyTracked(1)));
        for id in 2..=NODES_MAX as u64 {
            d.add_node(id, 0).expect("within the limit");
        }
        let next = NODES_MAX as u64 + 1;
        assert_eq!(
            d.add_node(next, 0),
            Err(DetectorError::TooManyNodes {
                node: next,
                max: NODES_MAX
            })
        );
        assert_eq!(d.len(), NODES_MAX);
    }

    #[test]
    fn a_forged_number_cannot_lock_a_node_out() {
        let mut d = detector();
        d.add_node(3, 0).expect("add");
        assert_eq!(d.heartbeat(3, 100, 10), HeartbeatOutcome::Accepted);
        // One forged beat far ahead is not believed, and the node's own beats go on counting.
        assert_eq!(
            d.heartbeat(3, u64::MAX, 20),
            HeartbeatOutcome::Unconfirmed { last_seq: 100 }
        );
        assert_eq!(d.heartbeat(3, 101, 30), HeartbeatOutcome::Accepted);
        // Two forged beats in a row are believed (nothing tells them from a restart) ...
        assert_eq!(
            d.heartbeat(3, u64::MAX - 1, 40),
            HeartbeatOutcome::Unconfirmed { last_seq: 101 }
        );
        assert_eq!(d.heartbeat(3, u64::MAX, 50), HeartbeatOutcome::Accepted);
        // ... but once the forger stops, the node's own next two beats win the count back.
        assert_eq!(
            d.heartbeat(3, 102, 60),
            HeartbeatOutcome::Stale { last_seq: u64::MAX }
        );
        assert_eq!(d.heartbeat(3, 103, 70), HeartbeatOutcome::Accepted);
        assert_eq!(d.heartbeat(3, 104, 80), HeartbeatOutcome::Accepted);
    }

    #[test]
    fn a_restart_renumbering_its_beats_costs_one_beat() {
        let mut d = detector();
        d.add_node(2, 0).expect("add");
        assert_eq!(d.heartbeat(2, 5_000, 10), HeartbeatOutcome::Accepted);
        // Restarted, numbering from its new boot time: the first is held, the second confirms.
        assert_eq!(
            d.heartbeat(2, 9_000_000, 20),
            HeartbeatOutcome::Unconfirmed { last_seq: 5_000 }
        );
        assert_eq!(d.heartbeat(2, 9_000_001, 30), HeartbeatOutcome::Accepted);
        // Restarted with a lower count (its clock was set back): the same.
        assert_eq!(
            d.heartbeat(2, 4_000, 40),
            HeartbeatOutcome::Stale {
                last_seq: 9_000_001
            }
        );
        assert_eq!(d.heartbeat(2, 4_001, 50), HeartbeatOutcome::Accepted);
        // Late or duplicated beats (just below the last) are ignored and confirm nothing.
        for seq in [3_995, 3_996, 4_001] {
            assert_eq!(
                d.heartbeat(2, seq, 55),
                HeartbeatOutcome::Stale { last_seq: 4_001 }
            );
        }
        // Replays never confirm each other: a repeated number does not follow itself.
        assert_eq!(
            d.heartbeat(2, 3_000, 60),
            HeartbeatOutcome::Stale { last_seq: 4_001 }
        );
        assert_eq!(
            d.heartbeat(2, 3_000, 70),
            HeartbeatOutcome::Stale { last_seq: 4_001 }
        );
    }

    #[test]
    fn unknown_and_stale_heartbeats_change_nothing() {
        let mut d = detector();
        d.add_node(1, 0).expect("add");
        assert_eq!(d.heartbeat(2, 1, 10), HeartbeatOutcome::Unknown);
        assert_eq!(d.heartbeat(1, 7, 20), HeartbeatOutcome::Accepted);
        assert_eq!(
            d.heartbeat(1, 7, 30),
            HeartbeatOutcome::Stale { last_seq: 7 }
        );
        assert_eq!(
            d.heartbeat(1, 3, 40),
            HeartbeatOutcome::Stale { last_seq: 7 }
        );
        assert_eq!(d.state(1).expect("tracked").last_heartbeat_ms, 20);
    }

    #[test]
    #[should_panic(expected = "now_ms went backwards")]
    fn time_going_backwards_is_a_driver_bug() {
        let mut d = detector();
        let _ = d.tick(100);
        let _ = d.tick(99);
    }

    #[test]
    fn late_tick_goes_straight_to_down_once() {
        let mut d = detector();
        d.add_node(1, 0).expect("add");
        let t = d.tick(10_000);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].from, t[0].to, t[0].last_heartbeat_ms),
            (Health::Up, Health::Down, 0)
        );
        assert!(d.tick(10_100).is_empty());
    }
}
