//! The component watchdog deadline table: kicks and time in, expiries out. No I/O, no clock.
//!
//! Each watched key (a component) has a period `watchdog_ms` and a deadline. A kick moves the
//! deadline to `now + watchdog_ms`; a key whose deadline has come (`deadline <= now`) is
//! reported by [`DeadlineTable::expire`] exactly once, then stays expired (and out of
//! [`DeadlineTable::next_deadline`]) until it is kicked or re-armed.
//!
//! Times are milliseconds on one monotonic clock chosen by the driver (see
//! [`crate::driver`]); they must never go backwards across calls that take `now_ms` by value on
//! `&mut self` (asserted: a clock that runs backwards is a bug in the driver, not an input).

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

/// Most keys one table watches. Sized for every component of a large node with room to spare;
/// an [`DeadlineTable::arm`] of a new key past it is refused with [`ArmError::TableFull`].
pub const WATCHED_MAX: usize = 4096;

/// Longest watchdog period accepted: one hour (a component silent longer is not being watched).
pub const WATCHDOG_MS_MAX: u64 = 3_600_000;

/// Why [`DeadlineTable::arm`] refused a key. The table is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArmError {
    /// The table already watches [`WATCHED_MAX`] keys and this one is new.
    #[error(
        "cannot watch another component: {watched_max} are watched already (the limit); \
         disarm components that are gone before registering new ones"
    )]
    TableFull {
        /// The limit that was hit ([`WATCHED_MAX`]).
        watched_max: usize,
    },
    /// The period is 0 or above [`WATCHDOG_MS_MAX`].
    #[error(
        "watchdog period {watchdog_ms} ms is out of range: use 1 to {max_ms} ms",
        max_ms = WATCHDOG_MS_MAX
    )]
    PeriodOutOfRange {
        /// The refused period.
        watchdog_ms: u64,
    },
}

/// One missed deadline, as [`DeadlineTable::expire`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry<K> {
    /// Whose deadline passed.
    pub key: K,
    /// The last kick (or the arming time if never kicked).
    pub last_kick_ms: u64,
    /// The deadline that passed: `last_kick_ms + watchdog_ms`.
    pub deadline_ms: u64,
    /// The period in force when it passed.
    pub watchdog_ms: u64,
}

/// What [`DeadlineTable::state`] says about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchState {
    /// The period in force.
    pub watchdog_ms: u64,
    /// Time since the last kick (or arming) at the asked time; 0 if asked about an earlier time.
    pub last_kick_age_ms: u64,
    /// Whether the expiry was reported and no kick or re-arm has come since.
    pub expired: bool,
}

/// One watched key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The period: a kick buys this much time.
    watchdog_ms: u64,
    /// The last kick, or the arming time.
    last_kick_ms: u64,
    /// `last_kick_ms + watchdog_ms` (saturating).
    deadline_ms: u64,
    /// Reported by `expire` and not kicked since; such a key is not in `by_deadline`.
    expired: bool,
}

/// The deadline table of the component watchdogs (see the module docs).
///
/// Deterministic: [`expire`](Self::expire) reports in deadline order, ties in key order.
#[derive(Debug, Clone)]
pub struct DeadlineTable<K: Ord + Clone> {
    /// Every watched key, armed or expired. At most [`WATCHED_MAX`].
    entries: BTreeMap<K, Entry>,
    /// `(deadline_ms, key)` of every armed (not expired) key: the timer's queue.
    by_deadline: BTreeSet<(u64, K)>,
    /// The latest `now_ms` seen by a mutating call, to catch a clock running backwards.
    latest_ms: u64,
}

impl<K: Ord + Clone> Default for DeadlineTable<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone> DeadlineTable<K> {
    /// An empty table.
    pub fn new() -> Self {
        DeadlineTable {
            entries: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            latest_ms: 0,
        }
    }

    /// Arms `key` with period `watchdog_ms` at `now_ms`, or re-arms it with a new period.
    ///
    /// - A new key, or one whose expiry was reported, gets a full period: its deadline is
    ///   `now_ms + watchdog_ms`.
    /// - An armed key keeps its last kick: its deadline moves to `last_kick + watchdog_ms`. A
    ///   shorter period may put that at or before `now_ms`; the next [`expire`](Self::expire)
    ///   reports it.
    ///
    /// # Errors
    /// [`ArmError::PeriodOutOfRange`] unless `1 <= watchdog_ms <= WATCHDOG_MS_MAX`;
    /// [`ArmError::TableFull`] for a new key when [`WATCHED_MAX`] keys are watched. Either way the
    /// table is unchanged (an armed key keeps its old period).
    ///
    /// # Panics
    /// If `now_ms` is earlier than a time an earlier call passed in.
    pub fn arm(&mut self, key: K, watchdog_ms: u64, now_ms: u64) -> Result<(), ArmError> {
        if !(1..=WATCHDOG_MS_MAX).contains(&watchdog_ms) {
            return Err(ArmError::PeriodOutOfRange { watchdog_ms });
        }
        self.observe(now_ms);
        let last_kick_ms = match self.entries.get(&key) {
            Some(old) if !old.expired => {
                self.by_deadline.remove(&(old.deadline_ms, key.clone()));
                old.last_kick_ms
            }
            Some(_) => now_ms,
            None if self.entries.len() >= WATCHED_MAX => {
                return Err(ArmError::TableFull {
                    watched_max: WATCHED_MAX,
                })
            }
            None => now_ms,
        };
        self.insert_armed(key, watchdog_ms, last_kick_ms);
        Ok(())
    }

    /// Stops watching `key`. Returns whether it was watched.
    pub fn disarm(&mut self, key: &K) -> bool {
        let Some(old) = self.entries.remove(key) else {
            return false;
        };
        if !old.expired {
            let removed = self.by_deadline.remove(&(old.deadline_ms, key.clone()));
            assert!(removed, "an armed key is in the deadline queue");
        }
        self.check_sizes();
        true
    }

    /// A kick of `key` at `now_ms`: its deadline becomes `now_ms + watchdog_ms`, and an expired
    /// key is armed again. Returns `false` (and changes nothing) for a key not watched.
    ///
    /// # Panics
    /// If `now_ms` is earlier than a time an earlier call passed in.
    pub fn kick(&mut self, key: &K, now_ms: u64) -> bool {
        let Some(old) = self.entries.get(key).copied() else {
            return false;
        };
        self.observe(now_ms);
        if !old.expired {
            self.by_deadline.remove(&(old.deadline_ms, key.clone()));
        }
        self.insert_armed(key.clone(), old.watchdog_ms, now_ms);
        true
    }

    /// The keys whose deadline has come (`deadline_ms <= now_ms`), each reported once: it is
    /// marked expired until kicked or re-armed. In deadline order, ties in key order.
    ///
    /// # Panics
    /// If `now_ms` is earlier than a time an earlier call passed in.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Expiry<K>> {
        self.observe(now_ms);
        let mut out = Vec::new();
        while let Some((deadline_ms, _)) = self.by_deadline.first() {
            if *deadline_ms > now_ms {
                break;
            }
            let (deadline_ms, key) = self.by_deadline.pop_first().expect("first() was Some");
            let entry = self
                .entries
                .get_mut(&key)
                .expect("every queued key is watched");
            assert!(
                !entry.expired && entry.deadline_ms == deadline_ms,
                "the queue agrees with the entry"
            );
            entry.expired = true;
            out.push(Expiry {
                key,
                last_kick_ms: entry.last_kick_ms,
                deadline_ms,
                watchdog_ms: entry.watchdog_ms,
            });
        }
        self.check_sizes();
        out
    }

    /// The earliest deadline of an armed (not expired) key: when the driver's timer should
    /// fire next. `None` when nothing is armed.
    pub fn next_deadline(&self) -> Option<u64> {
        self.by_deadline
            .first()
            .map(|(deadline_ms, _)| *deadline_ms)
    }

    /// What the table knows about `key` at `now_ms`, or `None` if it is not watched.
    pub fn state(&self, key: &K, now_ms: u64) -> Option<WatchState> {
        self.entries.get(key).map(|e| WatchState {
            watchdog_ms: e.watchdog_ms,
            last_kick_age_ms: now_ms.saturating_sub(e.last_kick_ms),
            expired: e.expired,
        })
    }

    /// Every watched key with its state at `now_ms`, in key order: a snapshot for status
    /// displays (keys are cloned so the snapshot can outlive the table's borrow).
    pub fn states(&self, now_ms: u64) -> impl Iterator<Item = (K, WatchState)> + '_ {
        self.entries.keys().map(move |k| {
            let state = self
                .state(k, now_ms)
                .expect("a key of the table is watched");
            (k.clone(), state)
        })
    }

    /// How many keys are watched (armed or expired).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is watched.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records `key` as armed with the given period and last kick.
    fn insert_armed(&mut self, key: K, watchdog_ms: u64, last_kick_ms: u64) {
        let deadline_ms = last_kick_ms.saturating_add(watchdog_ms);
        self.by_deadline.insert((deadline_ms, key.clone()));
        self.entries.insert(
            key,
            Entry {
                watchdog_ms,
                last_kick_ms,
                deadline_ms,
                expired: false,
            },
        );
        self.check_sizes();
    }

    /// Asserts the clock did not run backwards and remembers `now_ms`.
    fn observe(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.latest_ms,
            "watchdog clock ran backwards: {now_ms} ms after {} ms",
            self.latest_ms
        );
        self.latest_ms = now_ms;
    }

    /// The cheap invariants: the queue never holds more than the table, the table is bounded.
    fn check_sizes(&self) {
        assert!(self.by_deadline.len() <= self.entries.len());
        assert!(self.entries.len() <= WATCHED_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_bounded_and_a_refused_arm_changes_nothing() {
        let mut t = DeadlineTable::new();
        for k in 0..WATCHED_MAX {
            t.arm(k, 100, 0).expect("room");
        }
        assert_eq!(
            t.arm(WATCHED_MAX, 100, 0),
            Err(ArmError::TableFull {
                watched_max: WATCHED_MAX
            })
        );
        assert_eq!(t.len(), WATCHED_MAX);
        // Re-arming a watched key is not a new key.
        t.arm(0, 50, 10).expect("reconfigure at the limit");
        assert_eq!(t.next_deadline(), Some(50));
    }

    #[test]
    fn periods_out_of_range_are_refused() {
        let mut t = DeadlineTable::new();
        t.arm("a", 100, 0).expect("valid");
        let refused = |ms| Err(ArmError::PeriodOutOfRange { watchdog_ms: ms });
        assert_eq!(t.arm("a", 0, 5), refused(0));
        assert_eq!(
            t.arm("a", WATCHDOG_MS_MAX + 1, 5),
            refused(WATCHDOG_MS_MAX + 1)
        );
        assert_eq!(t.state(&"a", 5).map(|s| s.watchdog_ms), Some(100));
        t.arm("b", WATCHDOG_MS_MAX, 5).expect("the max is allowed");
    }

    #[test]
    #[should_panic(expected = "clock ran backwards")]
    fn a_clock_running_backwards_is_a_bug() {
        let mut t = DeadlineTable::new();
        t.arm(1, 100, 50).expect("valid");
        t.expire(49);
    }
}
