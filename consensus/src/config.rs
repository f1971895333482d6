//! Raft timing and sizing for one node.

use std::time::Duration;

/// Raft ticks per heartbeat interval.
const TICKS_PER_HEARTBEAT: usize = 10;

/// How a node ticks, elects and compacts.
///
/// Timings are given the way operators think of them (heartbeat interval, election timeout) and
/// turned into raft-rs's logical ticks: one tick is a tenth of a heartbeat interval (fine ticks
/// make two followers' randomised timeouts rarely land on the same tick, which would split the
/// vote and cost a whole extra election round), and a follower
/// that hears nothing from a leader campaigns after a random time in
/// `[election_timeout_ms / 2, election_timeout_ms)`. Randomising over that range is what keeps
/// split votes rare; pre-vote and check-quorum are always on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// How often the leader heartbeats its followers.
    pub heartbeat_interval_ms: u64,
    /// The upper bound of a follower's randomised election timeout.
    pub election_timeout_ms: u64,
    /// Applied entries past the last snapshot that trigger a new snapshot and log compaction.
    pub snapshot_threshold_entries: u64,
    /// Largest batch of entries in one append message.
    pub max_size_per_msg_bytes: u64,
    /// Appends in flight to one follower.
    pub max_inflight_msgs: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 800,
            snapshot_threshold_entries: 10_000,
            max_size_per_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
        }
    }
}

impl RaftConfig {
    /// One logical raft tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis((self.heartbeat_interval_ms / TICKS_PER_HEARTBEAT as u64).max(1))
    }

    /// Check the values make sense together; the error names the key and the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval_ms < TICKS_PER_HEARTBEAT as u64 {
            return Err(format!(
                "heartbeat_interval_ms must be at least {TICKS_PER_HEARTBEAT}"
            ));
        }
        // Saturating: a config may give any u64 (a huge interval is refused here, not wrapped).
        if self.election_timeout_ms < self.heartbeat_interval_ms.saturating_mul(4) {
            return Err(format!(
                "election_timeout_ms ({}) must be at least 4 x heartbeat_interval_ms ({}), or \
                 followers campaign against a live leader",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.snapshot_threshold_entries < 1 {
            return Err("snapshot_threshold_entries must be at least 1".into());
        }
        if self.max_size_per_msg_bytes < 1024 {
            return Err("max_size_per_msg_bytes must be at least 1024".into());
        }
        Ok(())
    }

    /// The raft-rs config for node `id` that has applied up to `applied`.
    pub(crate) fn to_raft(&self, id: u64, applied: u64) -> raft::Config {
        let tick_ms = self.tick().as_millis() as u64;
        let election_max = (self.election_timeout_ms / tick_ms) as usize;
        let election_min = (election_max / 2).max(TICKS_PER_HEARTBEAT + 1);
        raft::Config {
            id,
            applied,
            heartbeat_tick: TICKS_PER_HEARTBEAT,
            election_tick: election_min,
            min_election_tick: election_min,
            max_election_tick: election_max.max(election_min + 1),
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: self.max_size_per_msg_bytes,
            max_inflight_msgs: self.max_inflight_msgs,
            max_uncommitted_size: 64 * self.max_size_per_msg_bytes,
            batch_append: true,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timings_map_to_raft_ticks() {
        let c = RaftConfig::default();
        c.validate().expect("defaults are valid");
        assert_eq!(c.tick(), Duration::from_millis(10));
        let r = c.to_raft(1, 0);
        r.validate().expect("raft accepts it");
        // Heartbeat every 100 ms; campaign after a silence in [400, 800) ms.
        assert_eq!(
            (r.heartbeat_tick, r.min_election_tick, r.max_election_tick),
            (10, 40, 80)
        );
    }

    #[test]
    fn election_shorter_than_heartbeats_is_refused() {
        let c = RaftConfig {
            election_timeout_ms: 150,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("election_timeout_ms"));
    }
}
