//! Group commit: the log's fsync runs on a thread of its own, so the driver keeps stepping
//! messages and taking proposals while the disk works, and one fsync covers every `Ready` written
//! before it began.
//!
//! The driver writes each `Ready` into the store (readable at once, not yet durable), and hands
//! this thread the Ready's number with its persisted messages (votes, append acks) to hold.
//! This thread syncs the highest number asked for, sends the messages that sync released, in
//! order, publishes the number as durable and wakes the driver, which then tells raft
//! (`on_persist_ready`). Sending here, not from the driver, keeps a wake-up of the driver off
//! every follower's ack (design.md, "Where the time goes"). A leader's appends go out before its
//! own fsync (thesis 10.2.1); its own vote in the commit quorum counts only once this thread has
//! synced.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Instant,
};

use nines_core::NodeId;
use tokio::sync::Notify;

use raft::eraftpb::Message;

use crate::{Fatal, LogStore, StoreError, Transport};

/// One Ready's persisted messages (votes, append acks), waiting for the sync that covers it.
pub(crate) struct Held {
    pub(crate) number: u64,
    pub(crate) msgs: Vec<Message>,
    /// False for a Ready that wrote nothing needing a sync: it only keeps its place in line.
    pub(crate) needs_sync: bool,
}

#[derive(Default)]
struct State {
    /// Highest Ready number written and asked to be made durable.
    requested: u64,
    /// Highest Ready number known durable.
    durable: u64,
    /// The sync that failed: the node must stop.
    failed: Option<StoreError>,
    stop: bool,
    /// Persisted messages waiting for their Ready to be durable, in Ready order.
    held: VecDeque<Held>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the sync thread.
    work: Condvar,
    /// Wakes the driver when `durable` moved (or the sync failed).
    done: Notify,
    transport: Arc<dyn Transport>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Send what is held up to `durable` (and the sync-free Readys queued behind it). Called with
    /// the lock held, so nothing the driver sends later can overtake it.
    fn release(&self, st: &mut State) {
        let mut out = Vec::new();
        while st
            .held
            .front()
            .is_some_and(|h| !h.needs_sync || h.number <= st.durable)
        {
            out.extend(st.held.pop_front().expect("front exists").msgs);
        }
        if !out.is_empty() {
            self.transport.send(out);
        }
    }
}

/// The handle the driver holds; dropping it stops the thread (and waits for a sync in flight).
pub(crate) struct Persister {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the driver awaits to learn that a sync finished.
#[derive(Clone)]
pub(crate) struct PersistWaker(Arc<Shared>);

impl PersistWaker {
    /// Resolves after the next sync finishes (at once if one finished since the last call).
    pub(crate) async fn synced(&self) {
        self.0.done.notified().await;
    }
}

impl Persister {
    /// Start node `node`'s sync thread over `store`, sending released messages on `transport`.
    /// Must be called on a tokio runtime (the transport may spawn tasks from the thread).
    pub(crate) fn start<S: LogStore>(
        node: NodeId,
        store: Arc<S>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, Fatal> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Notify::new(),
            transport,
        });
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("nines-fsync-{node}"))
            .spawn({
                let shared = shared.clone();
                move || {
                    let _runtime = runtime.enter();
                    let _stops_the_node = PanicGuard(&shared);
                    run(&shared, &*store)
                }
            })
            .map_err(|e| Fatal::Config(format!("cannot start the log sync thread: {e}")))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn waker(&self) -> PersistWaker {
        PersistWaker(self.shared.clone())
    }

    /// Queue a Ready's persisted messages. One that `needs_sync` asks for every write made so far
    /// (up to its number) to be made durable, and its messages go out after that sync; the others
    /// go out at once unless something is held before them.
    pub(crate) fn hold(&self, held: Held) {
        let mut st = self.shared.lock();
        if held.needs_sync {
            if held.number > st.requested {
                st.requested = held.number;
                self.shared.work.notify_one();
            }
        } else if held.msgs.is_empty() {
            return;
        } else if st.held.is_empty() {
            self.shared.transport.send(held.msgs);
            return;
        }
        st.held.push_back(held);
    }

    /// Send everything held, in order: a sync made outside this thread (a snapshot install)
    /// covered it all. Nothing goes out if this thread's sync failed: a later sync succeeding
    /// does not prove the writes before the failure are on disk (Linux clears the error).
    pub(crate) fn release_all(&self) -> Result<(), Fatal> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.failed {
            return Err(Fatal::Store(e.clone()));
        }
        let out: Vec<_> = st.held.drain(..).flat_map(|h| h.msgs).collect();
        if !out.is_empty() {
            self.shared.transport.send(out);
        }
        Ok(())
    }

    /// The highest Ready number known durable, or the storage failure that stops the node.
    pub(crate) fn durable(&self) -> Result<u64, Fatal> {
        let st = self.shared.lock();
        match &st.failed {
            Some(e) => Err(Fatal::Store(e.clone())),
            None => Ok(st.durable),
        }
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Turns a panic of the sync thread into a storage failure: the driver stops the node instead of
/// waiting forever for a sync.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = self.0.lock();
            if st.failed.is_none() {
                st.failed = Some(StoreError::Io("the log sync thread panicked".into()));
            }
            drop(st);
            self.0.done.notify_one();
        }
    }
}

fn run<S: LogStore>(shared: &Shared, store: &S) {
    let m = &crate::metrics::RAFT;
    let mut st = shared.lock();
    loop {
        while !st.stop && st.requested <= st.durable {
            st = shared.work.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if st.stop {
            return;
        }
        // Every write the driver made before asking for `target` is covered by this sync.
        let target = st.requested;
        drop(st);
        let started = Instant::now();
        let result = store.sync();
        m.fsync_latency.observe(started.elapsed());
        m.fsyncs.inc();
        st = shared.lock();
        match result {
            Ok(()) => {
                st.durable = st.durable.max(target);
                shared.release(&mut st);
            }
            Err(e) => {
                tracing::error!("log sync failed; the node stops: {e}");
                st.failed = Some(e);
                shared.done.notify_one();
                return;
            }
        }
        shared.done.notify_one();
    }
}
