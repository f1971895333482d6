//! raft-rs owns its storage; the driver shares it through this `Arc` wrapper.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use raft::{
    eraftpb::{Entry, Snapshot},
    GetEntriesContext, RaftState,
};

use super::LogStore;

/// A shared reference to a [`LogStore`], handed to raft-rs as its `Storage`.
///
/// It also catches one case the stored snapshot cannot serve: a snapshot whose conf state does
/// not include the receiver (taken before that node was added) would be ignored by it forever.
/// Then it answers "temporarily unavailable" and raises `snapshot_wanted`, and the driver takes a
/// fresh snapshot; raft retries the send on a later heartbeat.
pub(crate) struct StoreRef<S> {
    pub(crate) store: Arc<S>,
    pub(crate) snapshot_wanted: Arc<AtomicBool>,
}

impl<S: LogStore> raft::Storage for StoreRef<S> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.store.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.store.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.store.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.store.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.store.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let snap = self.store.snapshot(request_index, to)?;
        let cs = snap.get_metadata().get_conf_state();
        if cs.voters.contains(&to) || cs.learners.contains(&to) {
            return Ok(snap);
        }
        self.snapshot_wanted.store(true, Ordering::Relaxed);
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}
