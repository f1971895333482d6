//! `Ready` handling and apply, in raft-rs's documented order (RAFT-NOTES.md §1).

use std::sync::atomic::Ordering;

use raft::{
    eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Snapshot},
    StateRole,
};

use crate::{
    driver::{Driver, SnapshotBufs, SnapshotJob},
    members::{Members, SnapshotEnvelope, SnapshotEnvelopeRef},
    persist::Held,
    status::{NodeStatus, Role},
    store::ReadyWrite,
    ApplyContext, Fatal, LogStore, PeerInfo, ProposeError, StateMachine, StoreError,
};

/// fsync without stalling the runtime's other tasks (timers, transport) where the runtime allows.
fn sync_blocking<S: LogStore>(store: &S) -> Result<(), Fatal> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| store.sync())?;
    } else {
        store.sync()?;
    }
    Ok(())
}

impl<S: LogStore, M: StateMachine> Driver<S, M> {
    /// Handle every pending `Ready` (RAFT-NOTES.md §1, async variant): write → send the leader's
    /// messages → hold the persisted messages until the sync covers this Ready → apply → advance.
    /// Loops until raft has nothing more, including what a finished sync made possible.
    pub(crate) fn handle_ready(&mut self) -> Result<(), Fatal> {
        let result = self.ready_turn();
        // Also when the turn failed: an entry applied before the failure was committed, and its
        // caller is owed the answer.
        self.send_answers();
        result
    }

    fn ready_turn(&mut self) -> Result<(), Fatal> {
        let mut changed = self.on_synced()?;
        loop {
            while self.raw.has_ready() {
                changed = true;
                let rd = self.raw.ready();
                if !rd.snapshot().is_empty() {
                    self.handle_snapshot_ready(rd)?;
                } else {
                    self.handle_log_ready(rd)?;
                }
                if self.removed {
                    break;
                }
            }
            if self.removed || !self.on_synced()? {
                break;
            }
            changed = true;
        }
        let wanted = self.snapshot_wanted.swap(false, Ordering::Relaxed);
        if changed || wanted {
            self.serve_ready_reads();
            self.publish_status();
            // Before a snapshot, which may take the driver a while (the status is published
            // first: a caller answered sees its entry applied there).
            self.send_answers();
            let snapshot_index = self.snapshot_index;
            self.maybe_snapshot(wanted)?;
            if self.snapshot_index != snapshot_index {
                self.publish_status();
            }
        }
        Ok(())
    }

    /// A Ready's first steps: note a role change, and send a leader's messages at once, in
    /// parallel with the local write (thesis 10.2.1).
    fn ready_role_and_messages(&mut self, rd: &mut raft::Ready) {
        if let Some(ss) = rd.ss() {
            self.on_role_change(ss.raft_state);
        }
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
    }

    /// A Ready without a snapshot: its writes become durable through the sync thread (or at
    /// once, without one); the driver goes on meanwhile.
    fn handle_log_ready(&mut self, mut rd: raft::Ready) -> Result<(), Fatal> {
        self.ready_role_and_messages(&mut rd);
        let write = ReadyWrite {
            snapshot: None,
            entries: rd.take_entries(),
            hard_state: rd.hs().cloned(),
        };
        if !write.entries.is_empty() || write.hard_state.is_some() {
            crate::metrics::RAFT
                .entries_appended
                .add(write.entries.len() as u64);
            let started = std::time::Instant::now();
            self.store.write_ready(&write)?;
            crate::metrics::RAFT
                .log_write_latency
                .observe(started.elapsed());
        }
        // Votes and append acks: only once the write is durable, and in order.
        let msgs = rd.take_persisted_messages();
        let number = rd.number();
        let held = Held {
            number,
            msgs,
            needs_sync: rd.must_sync(),
        };
        if held.needs_sync {
            crate::metrics::RAFT.readies_synced.inc();
        }
        match &self.persister {
            Some(p) => p.hold(held),
            None => {
                if held.needs_sync {
                    sync_blocking(&*self.store)?;
                    crate::metrics::RAFT.fsyncs.inc();
                    self.synced_inline = number;
                }
                // Synced inline: nothing is ever left held here.
                if !held.msgs.is_empty() {
                    self.transport.send(held.msgs);
                }
            }
        }
        for rs in rd.take_read_states() {
            self.on_read_state(rs.index, rs.request_ctx);
        }
        // Committed entries are never beyond what this node has persisted.
        self.apply_entries(rd.take_committed_entries())?;
        self.raw.advance_append_async(rd);
        self.raw.advance_apply();
        Ok(())
    }

    /// A Ready that installs a snapshot (rare): written and synced here, which also makes every
    /// earlier Ready durable, so everything held goes out.
    fn handle_snapshot_ready(&mut self, mut rd: raft::Ready) -> Result<(), Fatal> {
        // Earlier Readys' answers do not wait for the install.
        self.send_answers();
        // A local snapshot still being written goes first (the store takes one at a time).
        self.finish_snapshot()?;
        self.ready_role_and_messages(&mut rd);
        let snapshot = rd.snapshot().clone();
        self.store.write_ready(&ReadyWrite {
            snapshot: Some(snapshot.clone()),
            entries: rd.take_entries(),
            hard_state: rd.hs().cloned(),
        })?;
        sync_blocking(&*self.store)?;
        crate::metrics::RAFT.fsyncs.inc();
        self.install_snapshot(&snapshot)?;
        if let Some(p) = &self.persister {
            p.release_all()?;
        }
        let out = rd.take_persisted_messages();
        if !out.is_empty() {
            self.transport.send(out);
        }
        for rs in rd.take_read_states() {
            self.on_read_state(rs.index, rs.request_ctx);
        }
        self.apply_entries(rd.take_committed_entries())?;
        // Marks every Ready so far persisted: true, the sync above covered them all.
        self.synced_reported = self.synced_reported.max(rd.number());
        self.synced_inline = self.synced_inline.max(rd.number());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit)?;
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        Ok(())
    }

    /// Report syncs finished since the last call to raft (the sync thread sent the messages they
    /// released). Returns whether raft learned anything new.
    fn on_synced(&mut self) -> Result<bool, Fatal> {
        let durable = match &self.persister {
            Some(p) => p.durable()?,
            None => self.synced_inline,
        };
        let progressed = durable > self.synced_reported;
        if progressed {
            self.raw.on_persist_ready(durable);
            self.synced_reported = durable;
        }
        Ok(progressed)
    }

    fn on_role_change(&mut self, role: StateRole) {
        tracing::info!(
            node = self.id,
            term = self.raw.raft.term,
            leader = self.raw.raft.leader_id,
            "raft role is now {role:?}"
        );
        if role != StateRole::Leader && !self.pending.is_empty() {
            for (_, (_, reply)) in self.pending.drain() {
                let _ = reply.send(Err(ProposeError::Unknown(
                    "leadership was lost before the entry was seen committed".into(),
                )));
            }
        }
    }

    fn on_read_state(&mut self, index: u64, ctx: Vec<u8>) {
        if let Some(r) = self.reads_waiting.remove(&ctx) {
            self.reads_ready.entry(index).or_default().push(r.read);
        }
    }

    fn serve_ready_reads(&mut self) {
        while let Some(entry) = self.reads_ready.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for read in entry.remove() {
                read(&self.sm);
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), Fatal> {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&e)?,
                EntryType::EntryConfChange => {
                    // The entry's bytes came from the leader: decoded without protobuf 2.
                    let cc = crate::wire::decode_conf_change(e.get_data()).map_err(|err| {
                        Fatal::StateMachine(format!("entry {}: bad conf change: {err}", e.index))
                    })?;
                    self.apply_conf_change(&e, &cc)?;
                }
                EntryType::EntryConfChangeV2 => {
                    // We propose only V1 changes; an empty V2 is raft's auto-leave entry.
                    let cc = if e.get_data().is_empty() {
                        ConfChangeV2::default()
                    } else {
                        crate::wire::decode_conf_change_v2(e.get_data()).map_err(|err| {
                            Fatal::StateMachine(format!(
                                "entry {}: bad conf change: {err}",
                                e.index
                            ))
                        })?
                    };
                    self.raw.apply_conf_change(&cc)?;
                }
            }
            self.applied = e.index;
        }
        // Anything still pending at or below applied was overwritten by another leader's entry.
        let applied = self.applied;
        let gone: Vec<u64> = self
            .pending
            .keys()
            .copied()
            .filter(|&i| i <= applied)
            .collect();
        for i in gone {
            if let Some((_, reply)) = self.pending.remove(&i) {
                let _ = reply.send(Err(ProposeError::Dropped(
                    "the entry was replaced by another leader's".into(),
                )));
            }
        }
        Ok(())
    }

    fn apply_normal(&mut self, e: &Entry) -> Result<(), Fatal> {
        if e.get_data().is_empty() {
            // A new leader's empty entry, or a conf change raft turned into an empty entry
            // because another was still pending.
            self.reply(
                e,
                Err(ProposeError::Dropped(
                    "another membership change was in progress".into(),
                )),
            );
            return Ok(());
        }
        let cmd: M::Command = postcard::from_bytes(e.get_data())
            .map_err(|err| Fatal::StateMachine(format!("entry {}: bad command: {err}", e.index)))?;
        let time_ms = e
            .get_context()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let ctx = ApplyContext {
            index: e.index,
            term: e.term,
            time_ms,
        };
        let resp = self.sm.apply(ctx, cmd).map_err(|err| {
            Fatal::StateMachine(format!("apply of entry {} failed: {err}", e.index))
        })?;
        let bytes = postcard::to_stdvec(&resp).expect("responses encode");
        self.reply(e, Ok(bytes));
        Ok(())
    }

    fn apply_conf_change(&mut self, e: &Entry, cc: &ConfChange) -> Result<(), Fatal> {
        self.raw.apply_conf_change(cc)?;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let mut info: PeerInfo = postcard::from_bytes(cc.get_context()).map_err(|err| {
                    Fatal::StateMachine(format!("entry {}: bad member info: {err}", e.index))
                })?;
                info.voter = cc.get_change_type() == ConfChangeType::AddNode;
                tracing::info!(node = cc.node_id, addr = %info.addr, "member added");
                self.members.insert(cc.node_id, info);
            }
            ConfChangeType::RemoveNode => {
                tracing::info!(node = cc.node_id, "member removed");
                self.members.remove(&cc.node_id);
                if cc.node_id == self.id {
                    self.removed = true;
                }
            }
        }
        self.transport.set_peers(&self.members);
        self.sm.on_membership(&self.members);
        // A node added from now on must get a snapshot whose conf state includes it and that
        // postdates any earlier removal of its id: take one after every membership change.
        self.snapshot_wanted.store(true, Ordering::Relaxed);
        let bytes = postcard::to_stdvec(&self.members).expect("members encode");
        self.reply(e, Ok(bytes));
        Ok(())
    }

    /// Answer the proposal waiting on `e`'s index, if any: with `result` if it is this very
    /// entry (same term), else as dropped (another leader's entry took the index).
    fn reply(&mut self, e: &Entry, result: Result<Vec<u8>, ProposeError>) {
        if let Some((term, reply)) = self.pending.remove(&e.index) {
            let result = if term == e.term {
                result
            } else {
                Err(ProposeError::Dropped(
                    "the entry was replaced by another leader's".into(),
                ))
            };
            if self.persister.is_some() {
                self.answers.push((reply, result));
            } else {
                // A current-thread runtime (no sync thread) has no LIFO slot to gain, and the
                // turn's later Readys sync on the driver: answer now.
                let _ = reply.send(result);
            }
        }
    }

    /// Send the answers of the entries applied in this turn, the driver's last wake-ups before
    /// it yields: the task woken last runs first on this thread (tokio's LIFO slot), so a caller
    /// answered here no longer waits behind the peer senders and status watchers this turn woke
    /// (about 40 µs of a sequential write). Best effort: only the last answer gets that slot,
    /// and a busy driver may wake other tasks before it yields.
    fn send_answers(&mut self) {
        for (reply, result) in self.answers.drain(..) {
            let _ = reply.send(result);
        }
    }

    /// Replace the state machine and member book with a snapshot's.
    pub(crate) fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), Fatal> {
        let meta = snap.get_metadata();
        let env: SnapshotEnvelope = postcard::from_bytes(snap.get_data())
            .map_err(|e| Fatal::StateMachine(format!("snapshot {}: bad data: {e}", meta.index)))?;
        self.sm
            .restore(&env.state)
            .map_err(|e| Fatal::StateMachine(format!("snapshot {}: {e}", meta.index)))?;
        self.members = env.members;
        self.transport.set_peers(&self.members);
        self.sm.on_membership(&self.members);
        self.applied = meta.index;
        self.snapshot_index = meta.index;
        crate::metrics::RAFT.snapshots_installed.inc();
        tracing::info!(node = self.id, index = meta.index, "installed snapshot");
        Ok(())
    }

    /// Snapshot the state machine once enough has been applied. The state is serialized here;
    /// writing it into the store happens on a thread of its own (multi-thread runtimes), and the
    /// log is compacted when that is done ([`Driver::finish_snapshot`]).
    fn maybe_snapshot(&mut self, forced: bool) -> Result<(), Fatal> {
        if forced {
            // After a membership change: the store must serve a snapshot that includes it before
            // the driver takes its next request (a node added next must not get an older one),
            // so this one is written here and now, after any in flight.
            self.finish_snapshot()?;
        } else if self.snapshot_job.is_some() {
            return Ok(());
        }
        let due = self.applied >= self.snapshot_index + self.snapshot_threshold_entries;
        if !(due || forced && self.applied > self.snapshot_index) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut state = std::mem::take(&mut self.snapshot_bufs.state);
        self.sm
            .snapshot_into(&mut state)
            .map_err(Fatal::StateMachine)?;
        let serialize = started.elapsed();
        let env = SnapshotEnvelopeRef {
            members: &self.members,
            state: &state,
        };
        let mut data = std::mem::take(&mut self.snapshot_bufs.data);
        data.clear();
        let data = postcard::to_extend(&env, data).expect("snapshot encodes");
        self.snapshot_bufs.state = SnapshotBufs::keep(state);
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = self.raw.raft.raft_log.term(self.applied)?;
        meta.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        if forced || self.persister.is_none() {
            // Forced, or a current-thread runtime (everything inline, deterministic).
            return self.complete_snapshot(snap, started, serialize);
        }
        let (tx, done) = tokio::sync::oneshot::channel();
        let (store, job_snap) = (self.store.clone(), snap.clone());
        let thread = std::thread::Builder::new()
            .name(format!("nines-snap-{}", self.id))
            .spawn(move || {
                let written = store.prepare_snapshot(&job_snap);
                drop(job_snap);
                let _ = tx.send(());
                written
            })
            .map_err(|e| {
                Fatal::Store(StoreError::Io(format!(
                    "cannot start the snapshot writer thread: {e}"
                )))
            })?;
        self.snapshot_job = Some(SnapshotJob {
            snap,
            started,
            serialize,
            thread,
            done,
        });
        Ok(())
    }

    /// The snapshot job's thread is done (or must be, before a snapshot from the leader is
    /// installed): wait for it, then compact to its snapshot.
    pub(crate) fn finish_snapshot(&mut self) -> Result<(), Fatal> {
        let Some(job) = self.snapshot_job.take() else {
            return Ok(());
        };
        job.thread.join().map_err(|_| {
            Fatal::Store(StoreError::Io("the snapshot writer thread panicked".into()))
        })??;
        self.complete_snapshot(job.snap, job.started, job.serialize)
    }

    /// Compact the log to `snap`, whose data is written (or is written now).
    fn complete_snapshot(
        &mut self,
        mut snap: Snapshot,
        started: std::time::Instant,
        serialize: std::time::Duration,
    ) -> Result<(), Fatal> {
        let compacting = std::time::Instant::now();
        self.store.compact_to_snapshot(&snap)?;
        let index = snap.get_metadata().index;
        let bytes = snap.get_data().len();
        // The store copied it: take the buffer back for the next snapshot.
        if let Ok(data) = snap.take_data().try_into_mut() {
            self.snapshot_bufs.data = SnapshotBufs::keep(data.into());
        }
        self.snapshot_index = self.snapshot_index.max(index);
        crate::metrics::RAFT.snapshots_taken.inc();
        tracing::info!(
            node = self.id,
            index,
            bytes,
            serialize_ms = serialize.as_millis() as u64,
            compact_ms = compacting.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot taken; log compacted"
        );
        Ok(())
    }

    pub(crate) fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        let learner = raft.prs().conf().learners().contains(&self.id);
        let role = match raft.state {
            StateRole::Leader => Role::Leader,
            _ if learner => Role::Learner,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
        };
        let mut status = NodeStatus {
            id: self.id,
            role,
            leader_id: (raft.leader_id != 0).then_some(raft.leader_id),
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied,
            first_index: raft.raft_log.first_index(),
            last_index: raft.raft_log.last_index(),
            snapshot_index: self.snapshot_index,
            members: Members::new(),
        };
        let members = &self.members;
        // Published every turn: the member book (a map) is copied only when it changed.
        self.status.send_if_modified(|s| {
            let old_members = std::mem::take(&mut s.members);
            let same_members = old_members == *members;
            // Both hold an empty member book now: this compares the rest.
            let changed = *s != status || !same_members;
            status.members = if same_members {
                old_members
            } else {
                members.clone()
            };
            *s = status;
            changed
        });
    }
}
