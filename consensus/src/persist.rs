//! Group commit: the log's fsync runs on a thread of its own, so the driver keeps stepping
//! messages and taking proposals while the disk works, and one fsync covers every `Ready` written
//! before it began.
//!
//! The driver writes each `Ready` into the store (readable at once, not yet durable), asks for
//! its number to be made durable, and holds that Ready's persisted messages (votes, append acks).
//! This thread syncs the highest number asked for, publishes it as durable and wakes the driver,
//! which then tells raft (`on_persist_ready`) and sends the held messages. A leader's appends go
//! out before its own fsync (thesis 10.2.1); its own vote in the commit quorum counts only once
//! this thread has synced.

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Instant,
};

use nines_core::NodeId;
use tokio::sync::Notify;

use crate::{Fatal, LogStore, StoreError};

#[derive(Debug, Default)]
struct State {
    /// Highest Ready number written and asked to be made durable.
    requested: u64,
    /// Highest Ready number known durable.
    durable: u64,
    /// The sync that failed: the node must stop.
    failed: Option<StoreError>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the sync thread.
    work: Condvar,
    /// Wakes the driver when `durable` moved (or the sync failed).
    done: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// Start node `node`'s sync thread over `store`.
    pub(crate) fn start<S: LogStore>(node: NodeId, store: Arc<S>) -> Result<Self, Fatal> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Notify::new(),
        });
        let thread = std::thread::Builder::new()
            .name(format!("nines-fsync-{node}"))
            .spawn({
                let shared = shared.clone();
                move || run(&shared, &*store)
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

    /// Ask for every write made so far (up to Ready `number`) to be made durable.
    pub(crate) fn request(&self, number: u64) {
        let mut st = self.shared.lock();
        if number > st.requested {
            st.requested = number;
            self.shared.work.notify_one();
        }
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
            Ok(()) => st.durable = st.durable.max(target),
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
