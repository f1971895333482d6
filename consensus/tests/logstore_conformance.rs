//! One conformance suite for every [`LogStore`] adapter: each `suite_*` function runs against
//! `MemLogStore` and `SledLogStore` (a `#[test]` per case and adapter), plus sled-only restarts.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use nines_consensus::{LogStore, MemLogStore, ReadyWrite, SledLogStore, StoreError};
use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, Storage, StorageError, NO_LIMIT};
use tempfile::TempDir;

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("payload-{index}-{term}").into_bytes().into(),
        ..Entry::default()
    }
}

fn ents(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|i| ent(i, term)).collect()
}

fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        ..ConfState::default()
    }
}

fn snap(index: u64, term: u64, cs: ConfState) -> Snapshot {
    let metadata = SnapshotMetadata {
        index,
        term,
        conf_state: Some(cs).into(),
        ..SnapshotMetadata::default()
    };
    Snapshot {
        data: format!("image@{index}").into_bytes().into(),
        metadata: Some(metadata).into(),
        ..Snapshot::default()
    }
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

fn append<S: LogStore>(s: &S, entries: Vec<Entry>) {
    let w = ReadyWrite {
        entries,
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("append");
}

fn read<S: LogStore>(s: &S, low: u64, high: u64, max: Option<u64>) -> raft::Result<Vec<Entry>> {
    s.entries(low, high, max, GetEntriesContext::empty(false))
}

fn err(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

fn bounds<S: LogStore>(s: &S) -> (u64, u64) {
    (
        s.first_index().expect("first"),
        s.last_index().expect("last"),
    )
}

// ---------------------------------------------------------------- cases

fn suite_fresh<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    assert_eq!(bounds(&s), (1, 0));
    assert_eq!(s.term(0), Ok(0));
    assert_eq!(s.term(1), Err(err(StorageError::Unavailable)));
    let st = s.initial_state().expect("initial state");
    assert_eq!(st.hard_state, HardState::default());
    assert_eq!(st.conf_state, ConfState::default());
    assert_eq!(read(&s, 1, 1, None), Ok(vec![]));
    assert_eq!(
        s.snapshot(0, 2),
        Err(err(StorageError::SnapshotTemporarilyUnavailable))
    );
    assert!(s.latest_snapshot().expect("latest").is_none());
    assert!(s.is_empty().expect("is_empty"));
    s.sync().expect("sync");
}

fn suite_append_read_back<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    let all = ents(1..=5, 1);
    append(&s, all.clone());
    assert_eq!(bounds(&s), (1, 5));
    assert_eq!(s.term(0), Ok(0));
    assert_eq!(s.term(3), Ok(1));
    assert_eq!(read(&s, 1, 6, None), Ok(all.clone()));
    assert_eq!(read(&s, 1, 6, Some(NO_LIMIT)), Ok(all.clone()));
    assert_eq!(read(&s, 2, 4, None), Ok(all[1..3].to_vec()));
    assert_eq!(read(&s, 3, 3, None), Ok(vec![]));
    // max_size: always at least one entry, then while the cumulative size fits.
    assert_eq!(read(&s, 1, 6, Some(0)), Ok(all[..1].to_vec()));
    let two = u64::from(all[0].compute_size() + all[1].compute_size());
    assert_eq!(read(&s, 1, 6, Some(two)), Ok(all[..2].to_vec()));
    assert_eq!(read(&s, 1, 6, Some(two + 1)), Ok(all[..2].to_vec()));
    // Appending at last_index + 1 extends the log.
    append(&s, ents(6..=7, 2));
    assert_eq!(bounds(&s), (1, 7));
    assert_eq!(s.term(7), Ok(2));
}

fn suite_conflicting_suffix<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    append(&s, ents(1..=5, 1));
    append(&s, ents(3..=4, 2));
    assert_eq!(bounds(&s), (1, 4));
    assert_eq!(s.term(2), Ok(1));
    assert_eq!(s.term(3), Ok(2));
    assert_eq!(s.term(4), Ok(2));
    assert_eq!(s.term(5), Err(err(StorageError::Unavailable)));
    let mut expected = ents(1..=2, 1);
    expected.extend(ents(3..=4, 2));
    assert_eq!(read(&s, 1, 5, None), Ok(expected));
    // Rewriting from the very first index replaces the whole log.
    append(&s, ents(1..=1, 3));
    assert_eq!(bounds(&s), (1, 1));
    assert_eq!(s.term(1), Ok(3));
}

fn suite_hard_state<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    let w = ReadyWrite {
        entries: ents(1..=3, 2),
        hard_state: Some(hs(2, 1, 2)),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("write");
    assert_eq!(s.initial_state().expect("state").hard_state, hs(2, 1, 2));
    s.set_commit(3).expect("set_commit");
    assert_eq!(s.initial_state().expect("state").hard_state, hs(2, 1, 3));
    let w = ReadyWrite {
        hard_state: Some(hs(4, 0, 3)),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("write hs only");
    assert_eq!(s.initial_state().expect("state").hard_state, hs(4, 0, 3));
    assert_eq!(bounds(&s), (1, 3));
}

fn suite_conf_state<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    let w = ReadyWrite {
        snapshot: Some(snap(1, 1, conf(&[1], &[]))),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("bootstrap snapshot");
    assert_eq!(
        s.initial_state().expect("state").conf_state,
        conf(&[1], &[])
    );
    append(&s, ents(2..=4, 1));
    s.compact_to_snapshot(&snap(3, 1, conf(&[1, 2], &[3])))
        .expect("compact");
    assert_eq!(
        s.initial_state().expect("state").conf_state,
        conf(&[1, 2], &[3])
    );
}

fn suite_snapshot_install<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    append(&s, ents(1..=3, 1));
    s.set_commit(2).expect("commit");
    let sn = snap(10, 3, conf(&[1, 2, 3], &[]));
    let w = ReadyWrite {
        snapshot: Some(sn.clone()),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("install");
    assert_eq!(bounds(&s), (11, 10));
    assert_eq!(s.term(10), Ok(3));
    assert_eq!(s.term(9), Err(err(StorageError::Compacted)));
    assert_eq!(s.term(11), Err(err(StorageError::Unavailable)));
    assert_eq!(read(&s, 10, 11, None), Err(err(StorageError::Compacted)));
    assert_eq!(read(&s, 11, 11, None), Ok(vec![]));
    let st = s.initial_state().expect("state");
    assert_eq!((st.hard_state.commit, st.hard_state.term), (10, 3));
    assert_eq!(st.conf_state, conf(&[1, 2, 3], &[]));
    assert_eq!(s.snapshot(0, 2), Ok(sn.clone()));
    assert_eq!(s.snapshot(10, 2), Ok(sn.clone()));
    assert_eq!(
        s.snapshot(11, 2),
        Err(err(StorageError::SnapshotTemporarilyUnavailable))
    );
    assert_eq!(s.latest_snapshot().expect("latest"), Some(sn.clone()));
    assert!(!s.is_empty().expect("is_empty"));

    // Snapshot, entries and hard state in one write; an older snapshot is ignored.
    let newer = snap(20, 4, conf(&[1, 2], &[]));
    let w = ReadyWrite {
        snapshot: Some(newer.clone()),
        entries: ents(21..=22, 4),
        hard_state: Some(hs(4, 2, 21)),
    };
    s.write_ready(&w).expect("install with entries");
    let w = ReadyWrite {
        snapshot: Some(sn),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("stale snapshot");
    assert_eq!(bounds(&s), (21, 22));
    assert_eq!(s.term(20), Ok(4));
    assert_eq!(read(&s, 21, 23, None), Ok(ents(21..=22, 4)));
    assert_eq!(s.initial_state().expect("state").hard_state, hs(4, 2, 21));
    assert_eq!(s.latest_snapshot().expect("latest"), Some(newer));
}

fn suite_compaction<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    append(&s, ents(1..=5, 1));
    append(&s, ents(6..=10, 2));
    s.set_commit(8).expect("commit");
    let sn = snap(6, 2, conf(&[1, 2, 3], &[]));
    s.compact_to_snapshot(&sn).expect("compact");
    assert_eq!(bounds(&s), (7, 10));
    assert_eq!(s.term(6), Ok(2));
    assert_eq!(s.term(5), Err(err(StorageError::Compacted)));
    assert_eq!(read(&s, 6, 8, None), Err(err(StorageError::Compacted)));
    assert_eq!(read(&s, 7, 11, None), Ok(ents(7..=10, 2)));
    assert_eq!(s.snapshot(0, 3), Ok(sn.clone()));
    assert_eq!(s.initial_state().expect("state").hard_state.commit, 8);
    // Older or equal snapshots change nothing.
    s.compact_to_snapshot(&snap(3, 1, conf(&[9], &[])))
        .expect("old");
    s.compact_to_snapshot(&snap(6, 2, conf(&[9], &[])))
        .expect("same");
    assert_eq!(bounds(&s), (7, 10));
    assert_eq!(s.latest_snapshot().expect("latest"), Some(sn));
    // Compacting the whole log leaves it empty at the truncation point.
    let all = snap(10, 2, conf(&[1, 2, 3], &[]));
    s.compact_to_snapshot(&all).expect("compact all");
    assert_eq!(bounds(&s), (11, 10));
    assert_eq!(s.term(10), Ok(2));
    append(&s, ents(11..=11, 3));
    assert_eq!(bounds(&s), (11, 11));
}

fn suite_out_of_range<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    append(&s, ents(1..=3, 1));
    assert_eq!(s.term(4), Err(err(StorageError::Unavailable)));
    assert_eq!(s.term(100), Err(err(StorageError::Unavailable)));
    let beyond = catch_unwind(AssertUnwindSafe(|| read(&s, 1, 5, None)));
    assert!(beyond.is_err(), "entries past last_index + 1 must panic");
    // The store stays usable after a caller-bug panic.
    assert_eq!(read(&s, 1, 4, None), Ok(ents(1..=3, 1)));
}

fn suite_append_caller_bugs<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    append(&s, ents(1..=5, 1));
    let gap = catch_unwind(AssertUnwindSafe(|| append(&s, ents(7..=8, 1))));
    assert!(gap.is_err(), "a gap must panic");
    s.compact_to_snapshot(&snap(3, 1, ConfState::default()))
        .expect("compact");
    let below = catch_unwind(AssertUnwindSafe(|| append(&s, ents(3..=6, 2))));
    assert!(below.is_err(), "overwriting compacted entries must panic");
    let beyond = catch_unwind(AssertUnwindSafe(|| {
        s.compact_to_snapshot(&snap(9, 1, ConfState::default()))
    }));
    assert!(beyond.is_err(), "compacting past last_index must panic");
    // Nothing changed, and the store still works.
    assert_eq!(bounds(&s), (4, 5));
    assert_eq!(read(&s, 4, 6, None), Ok(ents(4..=5, 1)));
    append(&s, ents(6..=6, 1));
    assert_eq!(bounds(&s), (4, 6));
}

fn suite_meta<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    assert_eq!(s.get_meta("cluster").expect("get"), None);
    s.put_meta("cluster", b"alpha").expect("put");
    s.put_meta("node_id", &7u64.to_be_bytes()).expect("put");
    assert_eq!(s.get_meta("cluster").expect("get"), Some(b"alpha".to_vec()));
    s.put_meta("cluster", b"beta").expect("overwrite");
    assert_eq!(s.get_meta("cluster").expect("get"), Some(b"beta".to_vec()));
    assert_eq!(
        s.get_meta("node_id").expect("get"),
        Some(7u64.to_be_bytes().to_vec())
    );
    // Metadata is not Raft state: the log is still empty.
    assert!(s.is_empty().expect("is_empty"));
    assert_eq!(bounds(&s), (1, 0));
}

fn suite_is_empty<S: LogStore>(make: impl Fn() -> S) {
    let s = make();
    assert!(s.is_empty().expect("is_empty"));
    append(&s, ents(1..=1, 1));
    assert!(!s.is_empty().expect("is_empty"));

    let s = make();
    s.set_commit(0).expect("no-op commit");
    assert!(s.is_empty().expect("is_empty"));
    let w = ReadyWrite {
        hard_state: Some(hs(1, 1, 0)),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("hs");
    assert!(!s.is_empty().expect("is_empty"));

    let s = make();
    let w = ReadyWrite {
        snapshot: Some(snap(1, 1, conf(&[1], &[]))),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("snapshot");
    assert!(!s.is_empty().expect("is_empty"));
}

// ---------------------------------------------------------------- sled-only

/// Fresh sled stores, each in its own temporary directory that lives as long as `self`.
#[derive(Default)]
struct SledDirs(RefCell<Vec<TempDir>>);

impl SledDirs {
    fn make(&self) -> SledLogStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledLogStore::open(dir.path()).expect("open sled store");
        self.0.borrow_mut().push(dir);
        store
    }

    /// A store that keeps only the newest entry in memory: reads come from the chunks on disk.
    fn make_uncached(&self) -> SledLogStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("open sled store");
        self.0.borrow_mut().push(dir);
        store
    }
}

#[test]
fn sled_reopen_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = snap(5, 2, conf(&[1, 2, 3], &[4]));
    {
        let s = SledLogStore::open(dir.path()).expect("open");
        append(&s, ents(1..=4, 1));
        append(&s, ents(5..=9, 2));
        s.compact_to_snapshot(&sn).expect("compact");
        let w = ReadyWrite {
            entries: ents(8..=10, 3),
            hard_state: Some(hs(3, 2, 9)),
            ..ReadyWrite::default()
        };
        s.write_ready(&w).expect("write");
        s.put_meta("cluster", b"alpha").expect("meta");
        s.sync().expect("sync");
    }
    let s = SledLogStore::open(dir.path()).expect("reopen");
    assert_eq!(bounds(&s), (6, 10));
    assert_eq!(s.term(5), Ok(2));
    assert_eq!(s.term(4), Err(err(StorageError::Compacted)));
    assert_eq!(s.term(7), Ok(2));
    assert_eq!(s.term(8), Ok(3));
    let mut expected = ents(6..=7, 2);
    expected.extend(ents(8..=10, 3));
    assert_eq!(read(&s, 6, 11, None), Ok(expected));
    let st = s.initial_state().expect("state");
    assert_eq!(st.hard_state, hs(3, 2, 9));
    assert_eq!(st.conf_state, conf(&[1, 2, 3], &[4]));
    assert_eq!(s.snapshot(0, 2), Ok(sn.clone()));
    assert_eq!(s.latest_snapshot().expect("latest"), Some(sn));
    assert_eq!(
        s.get_meta("cluster").expect("meta"),
        Some(b"alpha".to_vec())
    );
    assert!(!s.is_empty().expect("is_empty"));
}

#[test]
fn sled_commit_alone_is_not_written_and_never_below_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = SledLogStore::open(dir.path()).expect("open");
        let w = ReadyWrite {
            entries: ents(1..=6, 2),
            hard_state: Some(hs(2, 1, 2)),
            ..ReadyWrite::default()
        };
        s.write_ready(&w).expect("write");
        let w = ReadyWrite {
            hard_state: Some(hs(2, 1, 4)),
            ..ReadyWrite::default()
        };
        s.write_ready(&w).expect("commit only");
        s.set_commit(5).expect("set_commit");
        assert_eq!(s.initial_state().expect("state").hard_state, hs(2, 1, 5));
        s.sync().expect("sync");
    }
    {
        let s = SledLogStore::open(dir.path()).expect("reopen");
        // The commit index alone was not written: it is learned again from the leader.
        assert_eq!(s.initial_state().expect("state").hard_state, hs(2, 1, 2));
        s.compact_to_snapshot(&snap(4, 2, conf(&[1], &[])))
            .expect("compact");
        s.sync().expect("sync");
    }
    let s = SledLogStore::open(dir.path()).expect("reopen");
    let st = s.initial_state().expect("state");
    assert_eq!(
        st.hard_state,
        hs(2, 1, 4),
        "commit raised to the truncation point"
    );
    assert_eq!(bounds(&s), (5, 6));
}

#[test]
fn sled_reopen_after_snapshot_install() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sn = snap(1, 1, conf(&[1], &[]));
    {
        let s = SledLogStore::open(dir.path()).expect("open");
        let w = ReadyWrite {
            snapshot: Some(sn.clone()),
            ..ReadyWrite::default()
        };
        s.write_ready(&w).expect("install");
        s.sync().expect("sync");
    }
    let s = SledLogStore::open(dir.path()).expect("reopen");
    assert_eq!(bounds(&s), (2, 1));
    assert_eq!(s.term(1), Ok(1));
    let st = s.initial_state().expect("state");
    assert_eq!((st.hard_state.commit, st.hard_state.term), (1, 1));
    assert_eq!(st.conf_state, conf(&[1], &[]));
    assert_eq!(s.snapshot(1, 2), Ok(sn));
}

/// Entries are stored a chunk per write: reads across chunks, a conflicting suffix that cuts a
/// chunk, and a compaction that straddles one all survive a reopen, from disk.
#[test]
fn sled_chunks_cut_and_straddled_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("open");
        append(&s, ents(1..=4, 1));
        append(&s, ents(5..=9, 1));
        append(&s, ents(10..=12, 1));
        // Replaces 7..=12: the chunk 5..=9 is cut to 5..=6, the chunk 10..=12 goes.
        append(&s, ents(7..=8, 2));
        assert_eq!(bounds(&s), (1, 8));
        // Straddles the chunk 5..=6: it stays, entry 5 is dead.
        s.compact_to_snapshot(&snap(5, 1, conf(&[1], &[])))
            .expect("compact");
        s.sync().expect("sync");
        let mut want = ents(6..=6, 1);
        want.extend(ents(7..=8, 2));
        assert_eq!(read(&s, 6, 9, None), Ok(want));
    }
    let s = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("reopen");
    assert_eq!(bounds(&s), (6, 8));
    assert_eq!(s.term(5), Ok(1));
    assert_eq!(s.term(6), Ok(1));
    assert_eq!(s.term(8), Ok(2));
    assert_eq!(read(&s, 5, 9, None), Err(err(StorageError::Compacted)));
    let mut want = ents(6..=6, 1);
    want.extend(ents(7..=8, 2));
    assert_eq!(read(&s, 6, 9, None), Ok(want.clone()));
    assert_eq!(read(&s, 6, 9, Some(0)), Ok(want[..1].to_vec()));
    append(&s, ents(9..=9, 3));
    assert_eq!(read(&s, 7, 10, None).map(|v| v.len()), Ok(3));
}

/// Compaction leaves the dead chunks to later writes; a restart with some still stored, and a
/// snapshot install over them, lose nothing live and resurrect nothing dead.
#[test]
fn sled_compacted_chunks_are_collected_by_later_writes_and_survive_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("open");
        for i in 0..40u64 {
            append(&s, ents(i * 2 + 1..=i * 2 + 2, 1));
        }
        s.compact_to_snapshot(&snap(70, 1, conf(&[1], &[])))
            .expect("compact");
        s.sync().expect("sync");
    }
    {
        // 35 chunks are garbage on disk: a restart must not take them for the log.
        let s = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("reopen");
        assert_eq!(s.stored_chunks(), 40, "35 garbage chunks and 5 live ones");
        assert_eq!(bounds(&s), (71, 80));
        assert_eq!(read(&s, 71, 81, None), Ok(ents(71..=80, 1)));
        assert_eq!(s.term(70), Ok(1));
        for i in 0..3u64 {
            append(&s, ents(81 + i..=81 + i, 2));
        }
        // Each write added a chunk and deleted 8 garbage ones.
        assert_eq!(s.stored_chunks(), 40 + 3 - 3 * 8);
        s.sync().expect("sync");
    }
    {
        let s = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("reopen");
        assert_eq!(bounds(&s), (71, 83));
        let mut want = ents(71..=80, 1);
        want.extend(ents(81..=83, 2));
        assert_eq!(read(&s, 71, 84, None), Ok(want));
        // A snapshot from a leader replaces everything, garbage and live chunks alike.
        let w = ReadyWrite {
            snapshot: Some(snap(90, 3, conf(&[1], &[]))),
            entries: ents(91..=92, 3),
            ..ReadyWrite::default()
        };
        s.write_ready(&w).expect("install");
        s.sync().expect("sync");
        assert_eq!(bounds(&s), (91, 92));
        // 11 garbage left, 8 of them deleted by the install's write, the 8 live ones became
        // garbage, plus the new chunk.
        assert_eq!(s.stored_chunks(), 11 - 8 + 8 + 1);
    }
    let s = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("reopen");
    assert_eq!(bounds(&s), (91, 92));
    assert_eq!(read(&s, 91, 93, None), Ok(ents(91..=92, 3)));
    assert_eq!(s.term(90), Ok(3));
}

/// A value over a quarter of sled's segment lives in a blob file (synced before the log points
/// to it): a large entry's chunk reads back after a reopen.
#[test]
fn sled_large_chunk_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut chunk = ents(1..=2, 1);
    chunk[1].data = vec![9u8; 300 * 1024].into();
    {
        let s = SledLogStore::open(dir.path()).expect("open");
        append(&s, chunk.clone());
        s.sync().expect("sync");
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(blobs > 0, "the large chunk was expected in a blob file");
    let s = SledLogStore::open_with_recent_bytes(dir.path(), 0).expect("reopen");
    assert_eq!(read(&s, 1, 3, None), Ok(chunk));
}

/// A snapshot is stored in pieces small enough to stay out of sled's blob files (each blob is
/// written and synced while it holds sled's log buffer: a stall of every commit). The pieces of
/// a replaced snapshot are garbage, deleted by later writes; every snapshot reads back after a
/// reopen, whether taken locally or installed from a leader.
#[test]
fn sled_snapshots_are_stored_in_pieces_without_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut big = snap(4, 1, conf(&[1, 2, 3], &[]));
    big.data = (0..(1u32 << 20))
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut small = snap(6, 1, conf(&[1, 2, 3], &[]));
    small.data = vec![5u8; 100 * 1024].into();
    {
        let s = SledLogStore::open(dir.path()).expect("open");
        append(&s, ents(1..=6, 1));
        s.compact_to_snapshot(&big).expect("compact");
        s.sync().expect("sync");
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "a snapshot piece went to a blob file");
        assert_eq!(s.stored_snapshot_pieces(), 256);
        assert_eq!(s.latest_snapshot().expect("latest"), Some(big.clone()));
    }
    {
        let s = SledLogStore::open(dir.path()).expect("reopen");
        assert_eq!(s.latest_snapshot().expect("latest"), Some(big.clone()));
        assert_eq!(s.snapshot(4, 2), Ok(big));
        s.compact_to_snapshot(&small).expect("compact");
        assert_eq!(
            s.stored_snapshot_pieces(),
            256 + 25,
            "the old ones wait for writes"
        );
        for i in 7..=11 {
            append(&s, ents(i..=i, 1));
        }
        assert_eq!(
            s.stored_snapshot_pieces(),
            25,
            "later writes deleted the old ones"
        );
        s.sync().expect("sync");
    }
    let mut installed = snap(20, 2, conf(&[1, 2, 3], &[]));
    installed.data = vec![3u8; 200 * 1024].into();
    {
        let s = SledLogStore::open(dir.path()).expect("reopen");
        assert_eq!(s.latest_snapshot().expect("latest"), Some(small));
        let w = ReadyWrite {
            snapshot: Some(installed.clone()),
            ..ReadyWrite::default()
        };
        s.write_ready(&w).expect("install");
        append(&s, ents(21..=21, 2));
        assert_eq!(s.stored_snapshot_pieces(), 50);
        s.sync().expect("sync");
    }
    let s = SledLogStore::open(dir.path()).expect("reopen");
    assert_eq!(s.latest_snapshot().expect("latest"), Some(installed));
    assert_eq!(bounds(&s), (21, 21));
}

/// A snapshot's pieces written ahead (`prepare_snapshot`, off the driver) are used by the
/// compaction; pieces prepared but never compacted to (a crash in between) are garbage after a
/// restart, and preparing a snapshot at that same index again loses none of its pieces.
#[test]
fn sled_prepared_snapshots_compact_and_survive_a_crash_in_between() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut at8 = snap(8, 1, conf(&[1, 2, 3], &[]));
    at8.data = vec![8u8; 40 * 1024].into();
    {
        let s = SledLogStore::open(dir.path()).expect("open");
        append(&s, ents(1..=10, 1));
        s.prepare_snapshot(&at8).expect("prepare");
        assert_eq!(s.stored_snapshot_pieces(), 10);
        assert_eq!(
            s.latest_snapshot().expect("latest"),
            None,
            "not pointed at yet"
        );
        s.sync().expect("sync");
        // Dropped before compacting: as if the node died here.
    }
    {
        let s = SledLogStore::open(dir.path()).expect("reopen");
        assert_eq!(s.latest_snapshot().expect("latest"), None);
        assert_eq!(bounds(&s), (1, 10));
        // The same snapshot again, then the compaction to it: the pieces found at the restart
        // as garbage must not be collected now that they are this snapshot's.
        s.prepare_snapshot(&at8).expect("prepare again");
        s.compact_to_snapshot(&at8).expect("compact");
        for i in 11..=15 {
            append(&s, ents(i..=i, 1));
        }
        assert_eq!(s.stored_snapshot_pieces(), 10);
        assert_eq!(s.latest_snapshot().expect("latest"), Some(at8.clone()));
        s.sync().expect("sync");
    }
    let s = SledLogStore::open(dir.path()).expect("reopen");
    assert_eq!(s.latest_snapshot().expect("latest"), Some(at8));
    assert_eq!(bounds(&s), (9, 15));
    // A prepared snapshot a newer one overtook: its pieces are garbage.
    let mut at12 = snap(12, 1, conf(&[1, 2, 3], &[]));
    at12.data = vec![12u8; 8 * 1024].into();
    let mut installed = snap(20, 2, conf(&[1, 2, 3], &[]));
    installed.data = vec![20u8; 4 * 1024].into();
    s.prepare_snapshot(&at12).expect("prepare");
    let w = ReadyWrite {
        snapshot: Some(installed.clone()),
        ..ReadyWrite::default()
    };
    s.write_ready(&w).expect("install");
    s.compact_to_snapshot(&at12)
        .expect("an older snapshot is ignored");
    append(&s, ents(21..=21, 2));
    assert_eq!(s.stored_snapshot_pieces(), 1);
    assert_eq!(s.latest_snapshot().expect("latest"), Some(installed));
}

/// Group commit: a plain append (no vote change, nothing to cut) is not written to disk on its
/// own; the next sync writes every append made since in one go. (A `sled::Batch` per append had
/// sled write and sync each one separately.)
#[test]
fn sled_plain_appends_reach_the_disk_only_at_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_file = dir.path().join("db");
    let s = SledLogStore::open(dir.path()).expect("open");
    let first = ReadyWrite {
        entries: ents(1..=1, 1),
        hard_state: Some(hs(1, 1, 0)),
        ..ReadyWrite::default()
    };
    s.write_ready(&first).expect("write");
    s.sync().expect("sync");
    let before = std::fs::read(&log_file).expect("read sled's log file");
    for i in 2..=50 {
        append(&s, ents(i..=i, 1));
    }
    // Time for any write handed to sled's IO threads to land.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let unsynced = std::fs::read(&log_file).expect("read sled's log file");
    assert!(
        unsynced == before,
        "appends reached the log file before a sync asked for them"
    );
    s.sync().expect("sync");
    let synced = std::fs::read(&log_file).expect("read sled's log file");
    assert!(synced != before, "the sync wrote nothing");
    drop(s);
    let s = SledLogStore::open(dir.path()).expect("reopen");
    assert_eq!(read(&s, 1, 51, None), Ok(ents(1..=50, 1)));
}

/// sled's log file is allocated ahead of the log (`fallocate`; third_party/README.md change 6):
/// log writes then land in allocated blocks, and a sync need not commit a new file size. The
/// space past the log reads as free segments: reopening, over and over while the log grows across
/// segment boundaries, finds every entry. (Crash recovery with preallocated files is covered by
/// the agents' `kill -9` tests.)
#[test]
fn sled_log_file_is_allocated_ahead_and_reopens_whole() {
    const SEGMENT: u64 = 512 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let log_file = dir.path().join("db");
    let payload = vec![7u8; 4096];
    let entry = |i: u64| Entry {
        index: i,
        term: 1,
        data: payload.clone().into(),
        ..Entry::default()
    };
    let mut last = 0;
    for round in 0..4 {
        let s = SledLogStore::open(dir.path()).expect("open");
        if round == 0 {
            s.write_ready(&ReadyWrite {
                hard_state: Some(hs(1, 1, 0)),
                ..ReadyWrite::default()
            })
            .expect("write");
        }
        // About 1.2 MiB a round: the log crosses segment boundaries every round.
        for _ in 0..300 {
            last += 1;
            append(&s, vec![entry(last)]);
        }
        s.sync().expect("sync");
        let len = std::fs::metadata(&log_file)
            .expect("stat sled's log file")
            .len();
        // Without preallocation the file ends where the last write ended, inside a segment.
        let log_bytes = last * 4096;
        assert!(
            len.is_multiple_of(SEGMENT) && len >= log_bytes,
            "round {round}: the log file is {len} bytes for a log of {log_bytes}: nothing \
             allocated ahead"
        );
        let got = read(&s, 1, last + 1, None).expect("read back");
        assert_eq!(got.len() as u64, last, "round {round}");
        assert!(got
            .iter()
            .zip(1..)
            .all(|(e, i)| e.index == i && e.data == payload));
    }
}

#[test]
fn sled_reopen_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SledLogStore::open(dir.path()).expect("open"));
    let s = SledLogStore::open(dir.path()).expect("reopen");
    assert!(s.is_empty().expect("is_empty"));
    assert_eq!(bounds(&s), (1, 0));
}

#[test]
fn store_error_displays() {
    assert_eq!(
        StoreError::Io("disk".into()).to_string(),
        "storage I/O failed: disk"
    );
}

// ---------------------------------------------------------------- one test per (case, adapter)

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(
                #[test]
                fn $case() {
                    super::$case(nines_consensus::MemLogStore::new);
                }
            )*
        }
        mod sled {
            $(
                #[test]
                fn $case() {
                    let dirs = super::SledDirs::default();
                    super::$case(|| dirs.make());
                }
            )*
        }
        mod sled_uncached {
            $(
                #[test]
                fn $case() {
                    let dirs = super::SledDirs::default();
                    super::$case(|| dirs.make_uncached());
                }
            )*
        }
    };
}

conformance!(
    suite_fresh,
    suite_append_read_back,
    suite_conflicting_suffix,
    suite_hard_state,
    suite_conf_state,
    suite_snapshot_install,
    suite_compaction,
    suite_out_of_range,
    suite_append_caller_bugs,
    suite_meta,
    suite_is_empty,
);

#[test]
fn mem_store_is_a_log_store() {
    fn assert_store<S: LogStore>(_: &S) {}
    assert_store(&MemLogStore::new());
}
