//! [`SledLogStore`]: the durable [`LogStore`] adapter on sled.
//!
//! One tree (sled's default tree) with the keys:
//! - `e/<8-byte big-endian index>` → an `Entry` (protobuf);
//! - `hs` → the `HardState`, `cs` → the `ConfState` (protobuf);
//! - `trunc` → the truncation point, `index` then `term`, each 8 bytes big-endian;
//! - `snap` → the latest `Snapshot` (protobuf), whose index is always `trunc`'s;
//! - `m/<key>` → node metadata bytes.
//!
//! Every write call is one atomic `sled::Batch`. sled's background flusher is off: nothing is
//! durable until [`LogStore::sync`] (or `put_meta`, which flushes itself).

use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError, NO_LIMIT};

use super::mem::{
    check_append, check_compact, check_entries_range, raise_hard_state, snap_conf_state,
    snap_index_term, snapshot_installs, store_err,
};
use super::{LogStore, ReadyWrite, StoreError};

const KEY_HS: &[u8] = b"hs";
const KEY_CS: &[u8] = b"cs";
const KEY_TRUNC: &[u8] = b"trunc";
const KEY_SNAP: &[u8] = b"snap";
const ENTRY_PREFIX: &[u8] = b"e/";
const META_PREFIX: &[u8] = b"m/";

fn entry_key(index: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(ENTRY_PREFIX);
    key[2..].copy_from_slice(&index.to_be_bytes());
    key
}

fn entry_index(key: &[u8]) -> Result<u64, StoreError> {
    key.strip_prefix(ENTRY_PREFIX)
        .and_then(|k| <[u8; 8]>::try_from(k).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("bad entry key {key:?}")))
}

fn meta_key(key: &str) -> Vec<u8> {
    [META_PREFIX, key.as_bytes()].concat()
}

fn encode_trunc((index, term): (u64, u64)) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_be_bytes());
    out[8..].copy_from_slice(&term.to_be_bytes());
    out
}

fn decode_trunc(bytes: &[u8]) -> Result<(u64, u64), StoreError> {
    let raw = <[u8; 16]>::try_from(bytes)
        .map_err(|_| StoreError::Corrupt(format!("trunc has {} bytes, not 16", bytes.len())))?;
    let (index, term) = raw.split_at(8);
    let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("split_at(8) of 16 bytes"));
    Ok((word(index), word(term)))
}

fn encode<M: Message>(msg: &M, what: &str) -> Result<Vec<u8>, StoreError> {
    msg.write_to_bytes()
        .map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {e}")))
}

fn decode<M: Message>(bytes: &[u8], what: &str) -> Result<M, StoreError> {
    M::parse_from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode {what}: {e}")))
}

/// How long `open` waits for a previous owner of the same directory (in this process) to let go
/// of sled's file lock: sled releases it from a background thread shortly after the last handle
/// is dropped, so an in-process restart can race it. Another process holding it is a real
/// conflict and still fails once this has passed.
const LOCK_WAIT_MS: u64 = 5_000;

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Ok(db) => return Ok(db),
            // sled reports the busy lock as ErrorKind::Other with this message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_millis(LOCK_WAIT_MS) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(io_err(e)),
        }
    }
}

fn io_err(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        e => StoreError::Io(e.to_string()),
    }
}

/// A storage failure inside a `raft::Storage` read, for raft.
fn to_raft(e: StoreError) -> raft::Error {
    store_err(StorageError::Other(Box::new(e)))
}

/// What is cached in memory so that raft's reads (and writes' checks) need no disk access.
/// Always equal to what is in the tree (updated only after a batch applied).
#[derive(Debug, Clone, Default)]
struct Cache {
    /// Raft's latest hard state. Its `commit` may be ahead of the stored one (see `stored_hs`).
    hard_state: HardState,
    /// The hard state last written to the tree. A change of `commit` alone is not written (a
    /// lost commit index is learned again from the leader); a change of term or vote is, and
    /// every batch that installs or compacts to a snapshot writes the latest, so the stored
    /// commit never falls below the truncation point.
    stored_hs: HardState,
    conf_state: ConfState,
    trunc: (u64, u64),
    /// The last entry's index, or `trunc.0` when the log is empty.
    last_index: u64,
    /// Whether `snap` is stored (its index is then `trunc.0`).
    has_snapshot: bool,
}

impl Cache {
    fn first_index(&self) -> u64 {
        self.trunc.0 + 1
    }
}

/// A [`LogStore`] on a sled database, opened with the background flusher off.
#[derive(Debug)]
pub struct SledLogStore {
    db: sled::Db,
    cache: RwLock<Cache>,
}

impl SledLogStore {
    /// Open (or create) the store in directory `path` and load its cached state.
    ///
    /// # Errors
    /// [`StoreError::Io`] if sled cannot open the database, [`StoreError::Corrupt`] if what it
    /// holds cannot be decoded or the log does not start right after the truncation point.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_db(path)?;
        let cache = load_cache(&db)?;
        Ok(Self {
            db,
            cache: RwLock::new(cache),
        })
    }

    // Writes validate (and panic on caller bugs) before touching the tree or the cache, so a
    // poisoned lock still guards a consistent cache.
    fn read_cache(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_cache(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply `batch`, then make `next` the cache (the caller holds the cache's write lock).
    fn commit(&self, cache: &mut Cache, next: Cache, batch: sled::Batch) -> Result<(), StoreError> {
        self.db.apply_batch(batch).map_err(io_err)?;
        *cache = next;
        Ok(())
    }

    /// Read entries `[low, high)` (which must exist), stopping once `max_size` is exceeded
    /// (the same cut as `raft::util::limit_size`: at least one entry).
    fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let max = max_size.unwrap_or(NO_LIMIT);
        let mut out: Vec<Entry> = Vec::new();
        let mut size = 0u64;
        for item in self.db.range(entry_key(low)..entry_key(high)) {
            let (_, value) = item.map_err(io_err)?;
            let entry: Entry = decode(&value, "entry")?;
            let expected = low + out.len() as u64;
            if entry.index != expected {
                return Err(StoreError::Corrupt(format!(
                    "log hole: expected entry {expected}, found {}",
                    entry.index
                )));
            }
            size += u64::from(entry.compute_size());
            if !out.is_empty() && size > max {
                return Ok(out);
            }
            out.push(entry);
        }
        if low + (out.len() as u64) != high {
            return Err(StoreError::Corrupt(format!(
                "log hole: entries [{low}, {high}) missing"
            )));
        }
        Ok(out)
    }

    fn read_term(&self, idx: u64) -> Result<u64, StoreError> {
        let value = self
            .db
            .get(entry_key(idx))
            .map_err(io_err)?
            .ok_or_else(|| StoreError::Corrupt(format!("entry {idx} missing")))?;
        Ok(decode::<Entry>(&value, "entry")?.term)
    }

    fn read_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        self.db
            .get(KEY_SNAP)
            .map_err(io_err)?
            .map(|v| decode(&v, "snapshot"))
            .transpose()
    }
}

fn get_decoded<M: Message>(db: &sled::Db, key: &[u8], what: &str) -> Result<Option<M>, StoreError> {
    db.get(key)
        .map_err(io_err)?
        .map(|v| decode(&v, what))
        .transpose()
}

/// The index of the first (`back == false`) or last entry key, if any.
fn edge_entry(db: &sled::Db, back: bool) -> Result<Option<u64>, StoreError> {
    let mut keys = db.scan_prefix(ENTRY_PREFIX).keys();
    let key = if back { keys.next_back() } else { keys.next() };
    key.transpose()
        .map_err(io_err)?
        .map(|k| entry_index(&k))
        .transpose()
}

fn load_cache(db: &sled::Db) -> Result<Cache, StoreError> {
    let trunc = db
        .get(KEY_TRUNC)
        .map_err(io_err)?
        .map(|v| decode_trunc(&v))
        .transpose()?
        .unwrap_or((0, 0));
    let first = edge_entry(db, false)?;
    let last = edge_entry(db, true)?;
    if let Some(first) = first {
        if first != trunc.0 + 1 {
            return Err(StoreError::Corrupt(format!(
                "log starts at {first}, truncation point is {}",
                trunc.0
            )));
        }
    }
    let hard_state: HardState = get_decoded(db, KEY_HS, "hard state")?.unwrap_or_default();
    Ok(Cache {
        stored_hs: hard_state.clone(),
        hard_state,
        conf_state: get_decoded(db, KEY_CS, "conf state")?.unwrap_or_default(),
        trunc,
        last_index: last.unwrap_or(trunc.0),
        has_snapshot: db.contains_key(KEY_SNAP).map_err(io_err)?,
    })
}

/// Stage storing `snapshot` as the truncation point, removing entries up to `clear_to`.
fn stage_snapshot(
    batch: &mut sled::Batch,
    next: &mut Cache,
    snapshot: &Snapshot,
    clear_to: u64,
) -> Result<(), StoreError> {
    for index in next.first_index()..=clear_to.min(next.last_index) {
        batch.remove(&entry_key(index)[..]);
    }
    next.trunc = snap_index_term(snapshot);
    next.conf_state = snap_conf_state(snapshot);
    next.has_snapshot = true;
    batch.insert(KEY_TRUNC, &encode_trunc(next.trunc)[..]);
    batch.insert(KEY_CS, encode(&next.conf_state, "conf state")?);
    batch.insert(KEY_SNAP, encode(snapshot, "snapshot")?);
    Ok(())
}

/// Stage deleting every entry ≥ `entries[0].index`, then inserting `entries` (checked).
fn stage_append(
    batch: &mut sled::Batch,
    next: &mut Cache,
    entries: &[Entry],
) -> Result<(), StoreError> {
    let (Some(head), Some(tail)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    for index in head.index..=next.last_index {
        batch.remove(&entry_key(index)[..]);
    }
    for entry in entries {
        batch.insert(&entry_key(entry.index)[..], encode(entry, "entry")?);
    }
    next.last_index = tail.index;
    Ok(())
}

impl raft::Storage for SledLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.read_cache();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        // The read lock is held across the tree read so no write removes entries meanwhile.
        let c = self.read_cache();
        if low < c.first_index() {
            return Err(store_err(StorageError::Compacted));
        }
        check_entries_range(low, high, c.last_index);
        self.read_entries(low, high, max_size.into())
            .map_err(to_raft)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.read_cache();
        if idx == c.trunc.0 {
            return Ok(c.trunc.1);
        }
        if idx < c.trunc.0 {
            return Err(store_err(StorageError::Compacted));
        }
        if idx > c.last_index {
            return Err(store_err(StorageError::Unavailable));
        }
        self.read_term(idx).map_err(to_raft)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read_cache().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read_cache().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let c = self.read_cache();
        if !c.has_snapshot || c.trunc.0 < request_index {
            return Err(store_err(StorageError::SnapshotTemporarilyUnavailable));
        }
        match self.read_snapshot().map_err(to_raft)? {
            Some(s) => Ok(s),
            None => Err(to_raft(StoreError::Corrupt("snapshot missing".into()))),
        }
    }
}

impl LogStore for SledLogStore {
    fn write_ready(&self, write: &ReadyWrite) -> Result<(), StoreError> {
        let mut cache = self.write_cache();
        let mut next = cache.clone();
        let mut batch = sled::Batch::default();
        let install = write
            .snapshot
            .as_ref()
            .filter(|s| snapshot_installs(s, cache.trunc.0));
        if let Some(s) = install {
            let (index, term) = snap_index_term(s);
            check_append(&write.entries, index + 1, index);
            next.hard_state = raise_hard_state(&next.hard_state, index, term);
            stage_snapshot(&mut batch, &mut next, s, u64::MAX)?;
            next.last_index = index;
        } else {
            check_append(&write.entries, next.first_index(), next.last_index);
        }
        stage_append(&mut batch, &mut next, &write.entries)?;
        if let Some(hs) = &write.hard_state {
            next.hard_state = hs.clone();
        }
        let vote_changed = (next.hard_state.term, next.hard_state.vote)
            != (cache.stored_hs.term, cache.stored_hs.vote);
        if install.is_some() || vote_changed {
            batch.insert(KEY_HS, encode(&next.hard_state, "hard state")?);
            next.stored_hs = next.hard_state.clone();
        }
        if write.entries.is_empty() && install.is_none() && !vote_changed {
            // Only the commit index moved: nothing to write.
            *cache = next;
            return Ok(());
        }
        self.commit(&mut cache, next, batch)
    }

    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        // Kept in memory only (see `Cache::stored_hs`).
        self.write_cache().hard_state.commit = commit;
        Ok(())
    }

    fn compact_to_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut cache = self.write_cache();
        let (index, _) = snap_index_term(snapshot);
        if index <= cache.trunc.0 {
            return Ok(());
        }
        check_compact(index, cache.last_index);
        let mut next = cache.clone();
        let mut batch = sled::Batch::default();
        stage_snapshot(&mut batch, &mut next, snapshot, index)?;
        // The snapshot holds applied, hence committed, state.
        next.hard_state.commit = next.hard_state.commit.max(index);
        batch.insert(KEY_HS, encode(&next.hard_state, "hard state")?);
        next.stored_hs = next.hard_state.clone();
        self.commit(&mut cache, next, batch)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(io_err)
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let _c = self.read_cache();
        self.read_snapshot()
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(meta_key(key), value);
        self.db.apply_batch(batch).map_err(io_err)?;
        self.sync()
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.db.get(meta_key(key)).map_err(io_err)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        let c = self.read_cache();
        Ok(c.hard_state == HardState::default()
            && c.conf_state == ConfState::default()
            && c.last_index == 0
            && !c.has_snapshot
            && c.trunc == (0, 0))
    }
}
