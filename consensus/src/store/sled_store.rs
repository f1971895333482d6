//! [`SledLogStore`]: the durable [`LogStore`] adapter on sled.
//!
//! One tree (sled's default tree) with the keys:
//! - `c/<8-byte big-endian index>` → a chunk: the entries of one `write_ready`, from that index
//!   on (a `u32` count, then each entry as a `u32` length and its protobuf bytes);
//! - `hs` → the `HardState`, `cs` → the `ConfState` (protobuf);
//! - `trunc` → the truncation point, `index` then `term`, each 8 bytes big-endian;
//! - `snap` → the latest snapshot's header: its piece count (`u32`), its data's length (`u64`),
//!   then the `Snapshot` without its data (protobuf); its index is always `trunc`'s;
//! - `s/<8-byte big-endian index><4-byte big-endian n>` → piece `n` of the data of the snapshot
//!   at `index` (`SNAP_PIECE_BYTES` each). Pieces are written one key at a time before the header
//!   that points at them (by [`LogStore::prepare_snapshot`] off the driver, or by the compaction
//!   itself); pieces of any other index are garbage, deleted a few per write.
//! - `m/<key>` → node metadata bytes.
//!
//! Entries are stored a chunk (one Ready's worth) per key, not one per key: sled's cost is per
//! key (insert, node split, and at compaction a delete each), so a leader that appends eight
//! proposals in one Ready pays it once. A chunk that straddles the truncation point is kept
//! whole until every entry in it is compacted; the entries in it at or below the truncation
//! point are dead and never read. Compaction deletes no chunk itself: it marks the dead ones
//! garbage, and each later write deletes a few (`GC_CHUNKS_PER_WRITE`); a restart finds any left
//! by their index and collects them the same way. Terms of the live log are kept in memory, and
//! the most recent entries too, so raft's `term` and its reads of fresh entries touch no disk.
//!
//! A plain append (no term or vote change, nothing cut) is single-key writes in log order (the
//! chunk, then a few garbage deletes): sled recovers a prefix of its log, and the garbage is not
//! part of the log's state, so each call is still atomic. A new term or vote, a snapshot install,
//! a conflicting suffix cut and a compaction each go in one atomic `sled::Batch` (rare: a batch
//! makes sled write and sync its log buffer on its own, see `Writes`). sled's background flusher
//! is off: nothing is durable until [`LogStore::sync`] (or `put_meta`, which flushes itself).

use std::collections::{BTreeMap, VecDeque};
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
const CHUNK_PREFIX: &[u8] = b"c/";
const SNAP_PIECE_PREFIX: &[u8] = b"s/";
const META_PREFIX: &[u8] = b"m/";

/// Bytes of recent entries kept in memory for raft's reads (replication and apply).
const RECENT_BYTES_DEFAULT: usize = 8 * 1024 * 1024;

/// Compacted chunks deleted per write. Compaction only marks chunks garbage (deleting thousands
/// of keys in one batch stalled the driver for hundreds of ms); each later write deletes a few.
/// Every write adds at most one chunk, so the garbage never grows between compactions.
const GC_CHUNKS_PER_WRITE: usize = 8;

/// A snapshot's data is stored in pieces of at most this many bytes. sled keeps any log record
/// over a quarter segment (128 KiB) in a blob file of its own, written and synced (file and
/// directory) while it holds its place in the log buffer: a stall of every commit, 10-40 ms per
/// snapshot. A record is a whole tree leaf when sled consolidates one, and a leaf holds up to 16
/// keys before it splits, so a piece must be small enough that 17 of them stay under 128 KiB.
const SNAP_PIECE_BYTES: usize = 4 * 1024;

/// Dead snapshot pieces deleted per write (a 550 KiB snapshot has about 140).
const GC_PIECES_PER_WRITE: usize = 64;

type PieceKey = [u8; 14];

fn snap_piece_key(index: u64, n: u32) -> PieceKey {
    let mut key = [0u8; 14];
    key[..2].copy_from_slice(SNAP_PIECE_PREFIX);
    key[2..10].copy_from_slice(&index.to_be_bytes());
    key[10..].copy_from_slice(&n.to_be_bytes());
    key
}

/// A piece key's (snapshot index, piece number).
fn piece_key_parts(key: &[u8]) -> Result<(u64, u32), StoreError> {
    key.strip_prefix(SNAP_PIECE_PREFIX)
        .filter(|k| k.len() == 12)
        .map(|k| {
            let (index, n) = k.split_at(8);
            (
                u64::from_be_bytes(index.try_into().expect("8 bytes")),
                u32::from_be_bytes(n.try_into().expect("4 bytes")),
            )
        })
        .ok_or_else(|| StoreError::Corrupt(format!("bad snapshot piece key {key:?}")))
}

/// How many pieces `len` bytes of snapshot data take.
fn piece_count(len: usize) -> u32 {
    u32::try_from(len.div_ceil(SNAP_PIECE_BYTES)).expect("snapshot piece count fits u32")
}

/// The keys of the `pieces` pieces of the snapshot at `index`.
fn piece_keys(index: u64, pieces: u32) -> impl Iterator<Item = PieceKey> {
    (0..pieces).map(move |n| snap_piece_key(index, n))
}

/// Write `snapshot`'s data in pieces, one key at a time: no batch, so nothing else waits.
fn write_pieces(db: &sled::Db, snapshot: &Snapshot) -> Result<(), StoreError> {
    let index = snapshot.get_metadata().index;
    for (n, piece) in snapshot.get_data().chunks(SNAP_PIECE_BYTES).enumerate() {
        let n = u32::try_from(n).expect("snapshot piece count fits u32");
        db.insert(snap_piece_key(index, n), piece).map_err(io_err)?;
    }
    Ok(())
}

/// Stage the header of `snapshot` (whose pieces are written): (index, piece count) it records.
fn stage_snap_header(w: &mut Writes, snapshot: &Snapshot) -> Result<(u64, u32), StoreError> {
    let data = snapshot.get_data();
    let pieces = piece_count(data.len());
    let mut meta = Snapshot::default();
    meta.set_metadata(snapshot.get_metadata().clone());
    let mut header = Vec::new();
    header.extend_from_slice(&pieces.to_be_bytes());
    header.extend_from_slice(&(data.len() as u64).to_be_bytes());
    header.extend_from_slice(&encode(&meta, "snapshot metadata")?);
    w.insert(KEY_SNAP.to_vec(), header);
    Ok((snapshot.get_metadata().index, pieces))
}

/// A snapshot header: (piece count, data length, the snapshot without its data).
fn decode_snap_header(bytes: &[u8]) -> Result<(u32, usize, Snapshot), StoreError> {
    let corrupt = || StoreError::Corrupt("the snapshot header is truncated".into());
    let pieces = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(corrupt)?;
    let len = bytes
        .get(4..12)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(corrupt)?;
    let meta = decode(&bytes[12..], "snapshot metadata")?;
    let len = usize::try_from(len)
        .map_err(|_| StoreError::Corrupt(format!("snapshot of {len} bytes")))?;
    Ok((pieces, len, meta))
}

fn chunk_key(first: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(CHUNK_PREFIX);
    key[2..].copy_from_slice(&first.to_be_bytes());
    key
}

fn chunk_first(key: &[u8]) -> Result<u64, StoreError> {
    key.strip_prefix(CHUNK_PREFIX)
        .and_then(|k| <[u8; 8]>::try_from(k).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("bad chunk key {key:?}")))
}

fn encode_chunk(entries: &[Entry]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(
        4 + entries
            .iter()
            .map(|e| 4 + e.get_data().len() + 32)
            .sum::<usize>(),
    );
    out.extend_from_slice(
        &u32::try_from(entries.len())
            .expect("chunk count fits u32")
            .to_be_bytes(),
    );
    for e in entries {
        let bytes = encode(e, "entry")?;
        out.extend_from_slice(
            &u32::try_from(bytes.len())
                .expect("entry fits u32")
                .to_be_bytes(),
        );
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

fn decode_chunk(first: u64, bytes: &[u8]) -> Result<Vec<Entry>, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("chunk {first} is truncated"));
    let word = |b: &[u8], at: usize| -> Option<usize> {
        b.get(at..at + 4)
            .map(|w| u32::from_be_bytes(w.try_into().expect("4 bytes")) as usize)
    };
    let count = word(bytes, 0).ok_or_else(corrupt)?;
    let mut at = 4;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let len = word(bytes, at).ok_or_else(corrupt)?;
        let body = bytes.get(at + 4..at + 4 + len).ok_or_else(corrupt)?;
        let entry: Entry = decode(body, "entry")?;
        if entry.index != first + i as u64 {
            return Err(StoreError::Corrupt(format!(
                "chunk {first}: entry {i} has index {}",
                entry.index
            )));
        }
        out.push(entry);
        at += 4 + len;
    }
    if out.is_empty() || at != bytes.len() {
        return Err(StoreError::Corrupt(format!("chunk {first} is malformed")));
    }
    Ok(out)
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

/// Decode bytes this store wrote. protobuf 2's parser is kept off network input
/// (`crate::wire`), not off these: they are what `encode` made of values raft handed us, and
/// every raft value from a peer was rebuilt field by field (no unknown fields) before that.
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

/// The small state cached in memory so raft's reads (and writes' checks) need no disk access.
/// Always equal to what is in the tree (updated only after a batch applied), except
/// `hard_state.commit` (see `stored_hs`).
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
    /// The stored snapshot's index (then `trunc.0`) and piece count, if one is stored.
    snap: Option<(u64, u32)>,
}

impl Cache {
    fn first_index(&self) -> u64 {
        self.trunc.0 + 1
    }
}

/// The in-memory index of the stored log.
#[derive(Debug, Default)]
struct LogIndex {
    /// Stored chunks: first index → last index. Contiguous; the first may start at or below
    /// the truncation point (its entries there are dead).
    chunks: BTreeMap<u64, u64>,
    /// Terms of the live entries `[first_index, last_index]`, in order.
    terms: VecDeque<u64>,
    /// The newest entries, contiguous and ending at `last_index`, within `recent_bytes_max`.
    recent: VecDeque<Entry>,
    recent_bytes: usize,
    /// The budget of `recent` (at least the newest entry is kept).
    recent_bytes_max: usize,
    /// Chunks wholly at or below the truncation point, still in the tree, oldest first.
    garbage: VecDeque<u64>,
}

impl LogIndex {
    /// Keep only what lies below `index` (an append from `index` on replaces the rest; a chunk
    /// it cuts short ends at `index - 1`).
    fn truncate_from(&mut self, index: u64, first_index: u64) {
        self.terms
            .truncate(index.saturating_sub(first_index) as usize);
        while self.recent.back().is_some_and(|e| e.index >= index) {
            let e = self.recent.pop_back().expect("back exists");
            self.recent_bytes -= e.get_data().len();
        }
        let _ = self.chunks.split_off(&index);
        if let Some((_, last)) = self.chunks.iter_mut().next_back() {
            *last = (*last).min(index - 1);
        }
    }

    fn push(&mut self, entries: &[Entry]) {
        for e in entries {
            self.terms.push_back(e.term);
            self.recent_bytes += e.get_data().len();
            self.recent.push_back(e.clone());
        }
        self.trim_recent();
    }

    fn trim_recent(&mut self) {
        while self.recent_bytes > self.recent_bytes_max && self.recent.len() > 1 {
            let e = self.recent.pop_front().expect("front exists");
            self.recent_bytes -= e.get_data().len();
        }
    }

    /// Forget entries up to `index` (compaction to a snapshot there).
    fn compact_to(&mut self, index: u64, first_index: u64) {
        let dead = (index + 1).saturating_sub(first_index) as usize;
        self.terms.drain(..dead.min(self.terms.len()));
        while self.recent.front().is_some_and(|e| e.index <= index) {
            let e = self.recent.pop_front().expect("front exists");
            self.recent_bytes -= e.get_data().len();
        }
    }

    /// Forget the live log (a snapshot replaces it); chunks still stored become garbage.
    fn clear(&mut self) {
        let mut garbage = std::mem::take(&mut self.garbage);
        garbage.extend(self.chunks.keys());
        *self = Self {
            recent_bytes_max: self.recent_bytes_max,
            garbage,
            ..Self::default()
        };
    }
}

/// The garbage one write deletes: up to `GC_CHUNKS_PER_WRITE` chunks and `GC_PIECES_PER_WRITE`
/// snapshot pieces, oldest first.
struct Gc {
    keys: Vec<Vec<u8>>,
    chunks: usize,
    pieces: usize,
}

impl Inner {
    fn gc(&self) -> Gc {
        let chunks = self.log.garbage.len().min(GC_CHUNKS_PER_WRITE);
        let pieces = self.pieces.garbage.len().min(GC_PIECES_PER_WRITE);
        let keys = (self.log.garbage.iter().take(chunks))
            .map(|&first| chunk_key(first).to_vec())
            .chain(self.pieces.garbage.iter().take(pieces).map(|k| k.to_vec()))
            .collect();
        Gc {
            keys,
            chunks,
            pieces,
        }
    }

    /// The tree no longer holds what `gc` deleted.
    fn collected(&mut self, gc: &Gc) {
        self.log.garbage.drain(..gc.chunks);
        self.pieces.garbage.drain(..gc.pieces);
    }
}

/// Writes that must land together (a new term or vote with its entries, a snapshot install, a
/// conflicting suffix cut, a compaction): they go in one `sled::Batch`.
///
/// Why not every write: each sled batch seals the current log buffer before and after it (sled's
/// `pin_log`), and a sealed buffer is written and synced on its own. One batch per Ready was
/// one disk write per Ready, which defeated the sync thread's group commit; single-key writes
/// collect in the buffer until the next sync writes them all at once.
#[derive(Default)]
struct Writes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((key, Some(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.0.push((key, None));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.0 {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        batch
    }
}

/// Everything behind the store's lock.
#[derive(Debug)]
struct Inner {
    cache: Cache,
    log: LogIndex,
    pieces: PieceGc,
}

/// Snapshot pieces that are no longer (or not yet) pointed at.
#[derive(Debug, Default)]
struct PieceGc {
    /// Dead pieces, still in the tree, oldest first.
    garbage: VecDeque<PieceKey>,
    /// A snapshot whose pieces [`LogStore::prepare_snapshot`] wrote: (index, piece count).
    prepared: Option<(u64, u32)>,
}

impl PieceGc {
    /// Pieces of the snapshot at `index` are about to be written: none of its keys may be
    /// deleted as garbage (a crash can leave a snapshot's pieces behind, and the node may take
    /// one at the same index again).
    fn revive(&mut self, index: u64) {
        self.garbage
            .retain(|key| piece_key_parts(key).map_or(true, |(i, _)| i != index));
    }

    /// The pieces of snapshot `old` are dead now that `current` is stored (unless it is the
    /// same one).
    fn retire(&mut self, old: Option<(u64, u32)>, current: Option<(u64, u32)>) {
        if let Some((index, pieces)) = old.filter(|o| Some(o.0) != current.map(|c| c.0)) {
            self.garbage.extend(piece_keys(index, pieces));
        }
    }
}

/// A [`LogStore`] on a sled database, opened with the background flusher off.
#[derive(Debug)]
pub struct SledLogStore {
    db: sled::Db,
    inner: RwLock<Inner>,
}

impl SledLogStore {
    /// Open (or create) the store in directory `path` and load its cached state.
    ///
    /// # Errors
    /// [`StoreError::Io`] if sled cannot open the database, [`StoreError::Corrupt`] if what it
    /// holds cannot be decoded or the log does not start right after the truncation point.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_recent_bytes(path, RECENT_BYTES_DEFAULT)
    }

    /// [`SledLogStore::open`] keeping at most `bytes` of recent entries in memory (tests use 0
    /// to make every read but the newest entry's go to disk).
    #[doc(hidden)]
    pub fn open_with_recent_bytes(path: &Path, bytes: usize) -> Result<Self, StoreError> {
        let db = open_db(path)?;
        let inner = load(&db, bytes)?;
        Ok(Self {
            db,
            inner: RwLock::new(inner),
        })
    }

    // Writes validate (and panic on caller bugs) before touching the tree or the cache, so a
    // poisoned lock still guards a consistent state.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many chunks the tree holds, live and garbage (tests check that garbage is collected).
    #[doc(hidden)]
    pub fn stored_chunks(&self) -> usize {
        let _inner = self.read();
        self.db.scan_prefix(CHUNK_PREFIX).count()
    }

    /// How many snapshot pieces the tree holds (tests check that a smaller snapshot leaves none
    /// of a bigger one's behind).
    #[doc(hidden)]
    pub fn stored_snapshot_pieces(&self) -> usize {
        let _inner = self.read();
        self.db.scan_prefix(SNAP_PIECE_PREFIX).count()
    }

    /// Read live entries `[low, high)` (which must exist), stopping once `max_size` is exceeded
    /// (the same cut as `raft::util::limit_size`: at least one entry).
    fn read_entries(
        &self,
        inner: &Inner,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let max = max_size.unwrap_or(NO_LIMIT);
        let mut out: Vec<Entry> = Vec::new();
        let mut size = 0u64;
        let mut take = |e: &Entry, out: &mut Vec<Entry>| -> bool {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                return false;
            }
            out.push(e.clone());
            true
        };
        let log = &inner.log;
        if let Some(front) = log.recent.front().filter(|f| f.index <= low) {
            let skip = (low - front.index) as usize;
            for e in log.recent.iter().skip(skip).take((high - low) as usize) {
                if !take(e, &mut out) {
                    return Ok(out);
                }
            }
        } else {
            let start = log
                .chunks
                .range(..=low)
                .next_back()
                .map(|(&first, _)| first)
                .ok_or_else(|| StoreError::Corrupt(format!("no chunk holds entry {low}")))?;
            'chunks: for (&first, _) in log.chunks.range(start..high) {
                let value = self
                    .db
                    .get(chunk_key(first))
                    .map_err(io_err)?
                    .ok_or_else(|| StoreError::Corrupt(format!("chunk {first} missing")))?;
                for e in decode_chunk(first, &value)? {
                    if e.index < low {
                        continue;
                    }
                    if e.index >= high || !take(&e, &mut out) {
                        break 'chunks;
                    }
                }
            }
        }
        let want = (high - low) as usize;
        if out.len() < want && (out.is_empty() || size <= max) {
            return Err(StoreError::Corrupt(format!(
                "log hole: entries [{low}, {high}) missing"
            )));
        }
        Ok(out)
    }

    fn read_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let Some(header) = self.db.get(KEY_SNAP).map_err(io_err)? else {
            return Ok(None);
        };
        let (pieces, len, mut snapshot) = decode_snap_header(&header)?;
        let index = snapshot.get_metadata().index;
        let mut data = Vec::with_capacity(len);
        for n in 0..pieces {
            let piece = self
                .db
                .get(snap_piece_key(index, n))
                .map_err(io_err)?
                .ok_or_else(|| StoreError::Corrupt(format!("snapshot piece {n} missing")))?;
            data.extend_from_slice(&piece);
        }
        if data.len() != len {
            return Err(StoreError::Corrupt(format!(
                "snapshot data has {} bytes, its header says {len}",
                data.len()
            )));
        }
        snapshot.set_data(data.into());
        Ok(Some(snapshot))
    }

    /// The entries of the chunk starting at `first` that lie below `below`.
    fn chunk_prefix(&self, first: u64, below: u64) -> Result<Vec<Entry>, StoreError> {
        let value = self
            .db
            .get(chunk_key(first))
            .map_err(io_err)?
            .ok_or_else(|| StoreError::Corrupt(format!("chunk {first} missing")))?;
        let mut entries = decode_chunk(first, &value)?;
        entries.retain(|e| e.index < below);
        Ok(entries)
    }
}

fn get_decoded<M: Message>(db: &sled::Db, key: &[u8], what: &str) -> Result<Option<M>, StoreError> {
    db.get(key)
        .map_err(io_err)?
        .map(|v| decode(&v, what))
        .transpose()
}

fn load(db: &sled::Db, recent_bytes_max: usize) -> Result<Inner, StoreError> {
    let trunc = db
        .get(KEY_TRUNC)
        .map_err(io_err)?
        .map(|v| decode_trunc(&v))
        .transpose()?
        .unwrap_or((0, 0));
    let mut log = LogIndex {
        recent_bytes_max,
        ..LogIndex::default()
    };
    let mut last_index = trunc.0;
    for item in db.scan_prefix(CHUNK_PREFIX) {
        let (key, value) = item.map_err(io_err)?;
        let first = chunk_first(&key)?;
        let count = value
            .get(..4)
            .map(|w| u32::from_be_bytes(w.try_into().expect("4 bytes")))
            .ok_or_else(|| StoreError::Corrupt(format!("chunk {first} is truncated")))?;
        if count == 0 {
            return Err(StoreError::Corrupt(format!("chunk {first} is empty")));
        }
        if first + u64::from(count) - 1 <= trunc.0 {
            log.garbage.push_back(first); // compacted, not yet collected
            continue;
        }
        let entries = decode_chunk(first, &value)?;
        let last = first + entries.len() as u64 - 1;
        if first > last_index + 1 || (log.chunks.is_empty() && first > trunc.0 + 1) {
            return Err(StoreError::Corrupt(format!(
                "log hole: chunk {first} follows entry {last_index} (truncation point {})",
                trunc.0
            )));
        }
        log.chunks.insert(first, last);
        let live: Vec<Entry> = entries.into_iter().filter(|e| e.index > trunc.0).collect();
        log.push(&live);
        last_index = last;
    }
    let snap = db
        .get(KEY_SNAP)
        .map_err(io_err)?
        .map(|h| decode_snap_header(&h).map(|(pieces, _, m)| (m.get_metadata().index, pieces)))
        .transpose()?;
    // Pieces of any other snapshot: replaced, or prepared and never pointed at (a crash).
    let mut garbage = VecDeque::new();
    for item in db.scan_prefix(SNAP_PIECE_PREFIX) {
        let (key, _) = item.map_err(io_err)?;
        let (index, n) = piece_key_parts(&key)?;
        if !snap.is_some_and(|(live, pieces)| index == live && n < pieces) {
            garbage.push_back(snap_piece_key(index, n));
        }
    }
    let hard_state: HardState = get_decoded(db, KEY_HS, "hard state")?.unwrap_or_default();
    let cache = Cache {
        stored_hs: hard_state.clone(),
        hard_state,
        conf_state: get_decoded(db, KEY_CS, "conf state")?.unwrap_or_default(),
        trunc,
        last_index,
        snap,
    };
    Ok(Inner {
        cache,
        log,
        pieces: PieceGc {
            garbage,
            prepared: None,
        },
    })
}

impl raft::Storage for SledLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = &self.read().cache;
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
        let inner = self.read();
        if low < inner.cache.first_index() {
            return Err(store_err(StorageError::Compacted));
        }
        check_entries_range(low, high, inner.cache.last_index);
        if low == high {
            return Ok(Vec::new());
        }
        self.read_entries(&inner, low, high, max_size.into())
            .map_err(to_raft)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let inner = self.read();
        let c = &inner.cache;
        if idx == c.trunc.0 {
            return Ok(c.trunc.1);
        }
        if idx < c.trunc.0 {
            return Err(store_err(StorageError::Compacted));
        }
        if idx > c.last_index {
            return Err(store_err(StorageError::Unavailable));
        }
        inner
            .log
            .terms
            .get((idx - c.first_index()) as usize)
            .copied()
            .ok_or_else(|| to_raft(StoreError::Corrupt(format!("no term for entry {idx}"))))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().cache.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().cache.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let inner = self.read();
        let c = &inner.cache;
        if c.snap.is_none() || c.trunc.0 < request_index {
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
        let mut guard = self.write();
        let inner = &mut *guard;
        let cache = &inner.cache;
        let cache_snap = cache.snap;
        let mut next = cache.clone();
        // Installing a snapshot or cutting a conflicting suffix (both rare) goes in one batch;
        // everything else is a few single-key writes (see `Writes`).
        let mut atomic = Writes::default();
        let install = write
            .snapshot
            .as_ref()
            .filter(|s| snapshot_installs(s, cache.trunc.0));
        if let Some(s) = install {
            let (index, term) = snap_index_term(s);
            check_append(&write.entries, index + 1, index);
            next.hard_state = raise_hard_state(&next.hard_state, index, term);
            // Chunks beyond the snapshot would look live after a restart: delete them now. The
            // rest become garbage (`LogIndex::clear`).
            for (&first, &last) in &inner.log.chunks {
                if last > index {
                    atomic.remove(chunk_key(first).to_vec());
                }
            }
            next.trunc = (index, term);
            next.conf_state = snap_conf_state(s);
            next.last_index = index;
            atomic.insert(KEY_TRUNC.to_vec(), encode_trunc(next.trunc).to_vec());
            atomic.insert(KEY_CS.to_vec(), encode(&next.conf_state, "conf state")?);
            if cache.snap.map(|(i, _)| i) != Some(index) {
                // The pieces first, one key at a time: the header in the batch points at them.
                inner.pieces.revive(index);
                write_pieces(&self.db, s)?;
                next.snap = Some(stage_snap_header(&mut atomic, s)?);
            }
            // Else it is the stored snapshot (same index, same state): its pieces stay as they
            // are, rather than be overwritten one by one under the header that points at them.
        } else {
            check_append(&write.entries, next.first_index(), next.last_index);
        }
        let mut chunk = None;
        if let (Some(head), Some(tail)) = (write.entries.first(), write.entries.last()) {
            if install.is_none() {
                // Only the chunks at or after the append can conflict (none, when it extends
                // the log): the one it cuts short, and every one starting at or after it. Not a
                // walk over the whole log, which cost a few percent of the CPU per write.
                let cut = inner.log.chunks.range(..head.index).next_back();
                if let Some((&first, _)) = cut.filter(|(_, &last)| last >= head.index) {
                    let kept = self.chunk_prefix(first, head.index)?;
                    atomic.insert(chunk_key(first).to_vec(), encode_chunk(&kept)?);
                }
                for &first in inner.log.chunks.range(head.index..).map(|(first, _)| first) {
                    atomic.remove(chunk_key(first).to_vec());
                }
            }
            chunk = Some((chunk_key(head.index), encode_chunk(&write.entries)?));
            next.last_index = tail.index;
        }
        if let Some(hs) = &write.hard_state {
            next.hard_state = hs.clone();
        }
        let vote_changed = (next.hard_state.term, next.hard_state.vote)
            != (cache.stored_hs.term, cache.stored_hs.vote);
        let mut hs = None;
        if install.is_some() || vote_changed {
            hs = Some(encode(&next.hard_state, "hard state")?);
            next.stored_hs = next.hard_state.clone();
        }
        if chunk.is_none() && hs.is_none() && atomic.is_empty() {
            // Only the commit index moved: nothing to write.
            inner.cache = next;
            return Ok(());
        }
        let gc = inner.gc();
        if atomic.is_empty() && hs.is_none() {
            // The chunk, then the garbage: sled recovers a prefix of its log, so a crash between
            // them leaves the entries written and some garbage not yet deleted, which is what a
            // later write would have found anyway. A new hard state goes in the batch below with
            // its entries: its commit may point into them (a follower's commit is capped by the
            // last entry it got), and a commit beyond the stored log would stop the node from
            // starting again.
            if let Some((key, value)) = chunk {
                self.db.insert(key, value).map_err(io_err)?;
            }
            for key in &gc.keys {
                self.db.remove(key).map_err(io_err)?;
            }
        } else {
            let mut batch = atomic.into_batch();
            if let Some(hs) = hs {
                batch.insert(KEY_HS, hs);
            }
            if let Some((key, value)) = chunk {
                batch.insert(&key[..], value);
            }
            for key in &gc.keys {
                batch.remove(&key[..]);
            }
            self.db.apply_batch(batch).map_err(io_err)?;
        }
        // The tree has it: bring the memory in line.
        inner.collected(&gc);
        if install.is_some() {
            inner.pieces.retire(cache_snap, next.snap);
            let prepared = inner.pieces.prepared.take();
            inner.pieces.retire(prepared, next.snap);
            let beyond: Vec<u64> = inner
                .log
                .chunks
                .iter()
                .filter(|(_, &last)| last > next.trunc.0)
                .map(|(&first, _)| first)
                .collect();
            for first in beyond {
                inner.log.chunks.remove(&first);
            }
            inner.log.clear();
        }
        if let Some(head) = write.entries.first() {
            let first_index = next.first_index();
            inner.log.truncate_from(head.index, first_index);
            inner.log.chunks.insert(head.index, next.last_index);
            inner.log.push(&write.entries);
        }
        inner.cache = next;
        Ok(())
    }

    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        // Kept in memory only (see `Cache::stored_hs`).
        self.write().cache.hard_state.commit = commit;
        Ok(())
    }

    fn prepare_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.write().pieces.revive(snapshot.get_metadata().index);
        // Without the lock: the driver goes on writing the log meanwhile.
        write_pieces(&self.db, snapshot)?;
        let mut inner = self.write();
        let prepared = (
            snapshot.get_metadata().index,
            piece_count(snapshot.get_data().len()),
        );
        let current = inner.cache.snap;
        // Only one is ever prepared at a time; an earlier one never compacted to is dead.
        let earlier = inner.pieces.prepared.replace(prepared);
        inner
            .pieces
            .retire(earlier.filter(|e| *e != prepared), current);
        Ok(())
    }

    fn compact_to_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut guard = self.write();
        let inner = &mut *guard;
        let (index, term) = snap_index_term(snapshot);
        let pieces = piece_count(snapshot.get_data().len());
        let prepared = inner.pieces.prepared.take();
        if index <= inner.cache.trunc.0 {
            // A newer snapshot got here first (installed from the leader).
            inner.pieces.retire(prepared, inner.cache.snap);
            return Ok(());
        }
        check_compact(index, inner.cache.last_index);
        if prepared != Some((index, pieces)) {
            inner.pieces.retire(prepared, inner.cache.snap);
            inner.pieces.revive(index);
            write_pieces(&self.db, snapshot)?;
        }
        let mut next = inner.cache.clone();
        let mut writes = Writes::default();
        // Whole chunks only: one that straddles `index` stays until all of it is compacted. The
        // dead ones become garbage, deleted a few per write.
        let dead: Vec<u64> = inner
            .log
            .chunks
            .iter()
            .take_while(|(_, &last)| last <= index)
            .map(|(&first, _)| first)
            .collect();
        let gc = inner.gc();
        for key in &gc.keys {
            writes.remove(key.clone());
        }
        next.trunc = (index, term);
        next.conf_state = snap_conf_state(snapshot);
        writes.insert(KEY_TRUNC.to_vec(), encode_trunc(next.trunc).to_vec());
        writes.insert(KEY_CS.to_vec(), encode(&next.conf_state, "conf state")?);
        next.snap = Some(stage_snap_header(&mut writes, snapshot)?);
        // The snapshot holds applied, hence committed, state.
        next.hard_state.commit = next.hard_state.commit.max(index);
        writes.insert(KEY_HS.to_vec(), encode(&next.hard_state, "hard state")?);
        next.stored_hs = next.hard_state.clone();
        self.db.apply_batch(writes.into_batch()).map_err(io_err)?;
        inner.collected(&gc);
        inner.pieces.retire(inner.cache.snap, next.snap);
        for first in dead {
            inner.log.chunks.remove(&first);
            inner.log.garbage.push_back(first);
        }
        inner.log.compact_to(index, inner.cache.first_index());
        inner.cache = next;
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(io_err)
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let _inner = self.read();
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
        let c = &self.read().cache;
        Ok(c.hard_state == HardState::default()
            && c.conf_state == ConfState::default()
            && c.last_index == 0
            && c.snap.is_none()
            && c.trunc == (0, 0))
    }
}
