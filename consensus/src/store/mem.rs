//! [`MemLogStore`]: the in-memory [`LogStore`] adapter (tests, simulations).
//!
//! Also holds the few rules shared with the sled adapter (`pub(super)` helpers), so that both
//! adapters decide the same way what a write does.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::{LogStore, ReadyWrite, StoreError};

/// `(index, term)` of a snapshot's metadata (`(0, 0)` when it has none).
pub(super) fn snap_index_term(snapshot: &Snapshot) -> (u64, u64) {
    snapshot
        .metadata
        .as_ref()
        .map_or((0, 0), |m| (m.index, m.term))
}

/// The conf state carried by a snapshot's metadata (default when it has none).
pub(super) fn snap_conf_state(snapshot: &Snapshot) -> ConfState {
    snapshot
        .metadata
        .as_ref()
        .and_then(|m| m.conf_state.as_ref())
        .cloned()
        .unwrap_or_default()
}

/// Whether `write_ready` installs `snapshot` given the current truncated index: an empty
/// snapshot (index 0, raft's "no snapshot") or one older than the truncation point is ignored.
pub(super) fn snapshot_installs(snapshot: &Snapshot, trunc_index: u64) -> bool {
    let (index, _) = snap_index_term(snapshot);
    index != 0 && index >= trunc_index
}

/// The hard state after installing a snapshot at `(index, term)`: commit and term never drop.
pub(super) fn raise_hard_state(hs: &HardState, index: u64, term: u64) -> HardState {
    let mut hs = hs.clone();
    hs.commit = hs.commit.max(index);
    hs.term = hs.term.max(term);
    hs
}

/// Panics unless `entries` may be appended to a log spanning `[first, last]` (a caller bug,
/// as in raft-rs's `MemStorage`): no overwrite of compacted entries, no gap, contiguous.
pub(super) fn check_append(entries: &[Entry], first: u64, last: u64) {
    let Some(head) = entries.first() else { return };
    assert!(
        head.index >= first,
        "overwrite compacted raft logs, compacted: {}, append: {}",
        first - 1,
        head.index
    );
    assert!(
        head.index <= last + 1,
        "raft logs should be continuous, last index: {last}, new appended: {}",
        head.index
    );
    assert!(
        entries.windows(2).all(|w| w[1].index == w[0].index + 1),
        "appended raft entries must have contiguous indexes"
    );
}

/// Panics unless `[low, high)` is a valid request against a log ending at `last`.
pub(super) fn check_entries_range(low: u64, high: u64, last: u64) {
    assert!(
        low <= high,
        "invalid entries range: low {low} > high {high}"
    );
    assert!(
        high <= last + 1,
        "entries' high ({high}) is out of bound, last index: {last}"
    );
}

/// Panics unless a compaction to `index` stays within a log ending at `last`.
pub(super) fn check_compact(index: u64, last: u64) {
    assert!(
        index <= last,
        "compact to snapshot index {index} beyond the last log index {last}"
    );
}

/// A `raft::Error` for a storage error code.
pub(super) fn store_err(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

/// What [`MemLogStore`] holds.
#[derive(Debug, Default)]
struct Inner {
    hard_state: HardState,
    conf_state: ConfState,
    /// `(index, term)` of the last entry removed from the log (by snapshot or compaction).
    trunc: (u64, u64),
    /// The log: `entries[i].index == trunc.0 + 1 + i`.
    entries: Vec<Entry>,
    snapshot: Option<Snapshot>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl Inner {
    fn first_index(&self) -> u64 {
        self.trunc.0 + 1
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.trunc.0, |e| e.index)
    }

    /// Position in `entries` of the entry at `index` (which must be ≥ `first_index`).
    fn offset(&self, index: u64) -> usize {
        usize::try_from(index - self.first_index()).expect("log offset fits in usize")
    }

    /// Store `snapshot` and make it the truncation point, with the log entries up to `clear_to`
    /// removed (`u64::MAX` clears the whole log).
    fn set_snapshot(&mut self, snapshot: &Snapshot, clear_to: u64) {
        let (index, term) = snap_index_term(snapshot);
        let drop = self.entries.partition_point(|e| e.index <= clear_to);
        self.entries.drain(..drop);
        self.trunc = (index, term);
        self.conf_state = snap_conf_state(snapshot);
        self.snapshot = Some(snapshot.clone());
    }

    /// Delete every entry with index ≥ `entries[0].index`, then append `entries`.
    fn append(&mut self, entries: &[Entry]) {
        let Some(head) = entries.first() else { return };
        let keep = self.offset(head.index);
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }
}

/// An in-memory [`LogStore`]: the same semantics as the sled adapter, nothing durable.
/// [`LogStore::sync`] is a no-op.
#[derive(Debug, Default)]
pub struct MemLogStore {
    inner: RwLock<Inner>,
}

impl MemLogStore {
    /// An empty store: `first_index() == 1`, `last_index() == 0`, default hard and conf state.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    // Writes validate (and panic on caller bugs) before mutating, so a poisoned lock still
    // guards a consistent state.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl raft::Storage for MemLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let g = self.read();
        Ok(RaftState::new(g.hard_state.clone(), g.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let g = self.read();
        if low < g.first_index() {
            return Err(store_err(StorageError::Compacted));
        }
        check_entries_range(low, high, g.last_index());
        let mut out = g.entries[g.offset(low)..g.offset(high)].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let g = self.read();
        if idx == g.trunc.0 {
            return Ok(g.trunc.1);
        }
        if idx < g.trunc.0 {
            return Err(store_err(StorageError::Compacted));
        }
        if idx > g.last_index() {
            return Err(store_err(StorageError::Unavailable));
        }
        Ok(g.entries[g.offset(idx)].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let g = self.read();
        match &g.snapshot {
            Some(s) if snap_index_term(s).0 >= request_index => Ok(s.clone()),
            _ => Err(store_err(StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

impl LogStore for MemLogStore {
    fn write_ready(&self, write: &ReadyWrite) -> Result<(), StoreError> {
        let mut g = self.write();
        let install = write
            .snapshot
            .as_ref()
            .filter(|s| snapshot_installs(s, g.trunc.0));
        let (first, last) = match install {
            Some(s) => {
                let (index, _) = snap_index_term(s);
                (index + 1, index)
            }
            None => (g.first_index(), g.last_index()),
        };
        check_append(&write.entries, first, last);
        if let Some(s) = install {
            let (index, term) = snap_index_term(s);
            g.hard_state = raise_hard_state(&g.hard_state, index, term);
            g.set_snapshot(s, u64::MAX);
        }
        g.append(&write.entries);
        if let Some(hs) = &write.hard_state {
            g.hard_state = hs.clone();
        }
        Ok(())
    }

    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        self.write().hard_state.commit = commit;
        Ok(())
    }

    fn compact_to_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut g = self.write();
        let (index, _) = snap_index_term(snapshot);
        if index <= g.trunc.0 {
            return Ok(());
        }
        check_compact(index, g.last_index());
        g.set_snapshot(snapshot, index);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.read().snapshot.clone())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write().meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().meta.get(key).cloned())
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let g = self.read();
        Ok(g.hard_state == HardState::default()
            && g.conf_state == ConfState::default()
            && g.entries.is_empty()
            && g.snapshot.is_none()
            && g.trunc == (0, 0))
    }
}
