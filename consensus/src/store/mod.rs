//! The durable Raft log behind the [`LogStore`] trait, with a sled adapter and an in-memory one.
//!
//! raft-rs reads the log through its own `Storage` trait; the driver writes through
//! [`LogStore`]. Both adapters pass one conformance suite (`tests/logstore_conformance.rs`).

mod mem;
mod sled_store;
mod store_ref;

pub use mem::MemLogStore;
pub use sled_store::SledLogStore;
pub(crate) use store_ref::StoreRef;

use raft::eraftpb::{Entry, HardState, Snapshot};

/// A storage failure. The driver treats every one as fatal for the node: it stops rather than
/// acknowledge anything after a write it cannot trust.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The engine reported an I/O error.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// What is on disk cannot be decoded or breaks an invariant.
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
}

/// One `Ready`'s durable part, written atomically (one batch) by [`LogStore::write_ready`].
#[derive(Debug, Default, Clone)]
pub struct ReadyWrite {
    /// A snapshot to install first: replaces the log (cleared), sets the truncation point to the
    /// snapshot's (index, term), the conf state to its conf state, `commit` to at least its index
    /// and stores the snapshot itself for [`raft::Storage::snapshot`].
    pub snapshot: Option<Snapshot>,
    /// Entries to append; every stored entry with index ≥ `entries[0].index` is deleted first.
    pub entries: Vec<Entry>,
    /// A new hard state (term, vote, commit).
    pub hard_state: Option<HardState>,
}

/// The durable Raft log and its metadata.
///
/// Layout it keeps: entries by index, the hard state, the conf state and the latest snapshot
/// (its metadata and data), and the truncation point `(index, term)` so that
/// `term(first_index - 1)` answers after compaction.
///
/// # Correctness
/// - Writes are atomic per call: after a crash either all of a `write_ready` is visible or none.
/// - Nothing written is durable until [`LogStore::sync`] returns `Ok`; the driver calls it before
///   sending persisted messages or advancing, so an acknowledgement never outruns the disk.
/// - `append` of entries starting below `first_index` or above `last_index + 1` is a caller bug
///   and panics, as raft-rs's `MemStorage` does.
/// - Reads through [`raft::Storage`] see every write made before, synced or not.
///
/// # Errors
/// Every error is a [`StoreError`] and the driver stops the node on it.
pub trait LogStore: raft::Storage + Send + Sync + 'static {
    /// Write one Ready's snapshot, entries and hard state in one atomic batch (see
    /// [`ReadyWrite`]). Not durable until [`LogStore::sync`].
    fn write_ready(&self, write: &ReadyWrite) -> Result<(), StoreError>;

    /// Record a new commit index. A store may keep it in memory only, as it may a `write_ready`
    /// whose hard state changed only in `commit`: a lost commit index is learned again from the
    /// leader. The stored commit must never fall below the truncation point.
    fn set_commit(&self, commit: u64) -> Result<(), StoreError>;

    /// Write the bulk of `snapshot` (made locally at an applied index) ahead of
    /// [`LogStore::compact_to_snapshot`], from a thread of its own while the driver goes on: a
    /// store that can stores the data where nothing reads it until the compaction points at it,
    /// so the compaction itself is short. The default does nothing (the compaction writes it
    /// all).
    fn prepare_snapshot(&self, _snapshot: &Snapshot) -> Result<(), StoreError> {
        Ok(())
    }

    /// Store `snapshot` (made locally at an applied index) and compact the log: delete entries
    /// with index ≤ the snapshot's index, set the truncation point to the snapshot's (index,
    /// term) and the stored conf state to the snapshot's. A snapshot older than the stored one
    /// is ignored.
    fn compact_to_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// Make every write so far durable (fsync).
    fn sync(&self) -> Result<(), StoreError>;

    /// The latest stored snapshot (metadata and data), if any.
    fn latest_snapshot(&self) -> Result<Option<Snapshot>, StoreError>;

    /// A small key → bytes area for node metadata (cluster name, node id), written durably.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Read a metadata key.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether nothing has ever been written (no hard state, no entries, no snapshot).
    fn is_empty(&self) -> Result<bool, StoreError>;
}
