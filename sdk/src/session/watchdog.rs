//! The component's watchdog: [`Kicker`] and [`Progress`] count kicks with one atomic increment,
//! and the session's flusher sends the count to the agent, coalesced, a few times per watchdog
//! period.
//!
//! The decision (is a kick due? how often to look?) is pure ([`flush_interval`], [`Coalesce`]);
//! the flusher task only reads the counter on a timer and sends.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use nines_proto::amf::v1::{component_message, ComponentMessage, Kick};
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    time::MissedTickBehavior,
};

use super::dispatch::Shared;

/// Kicks are flushed at least this far apart, however short the watchdog.
const FLUSH_INTERVAL_MIN_MS: u64 = 5;
/// The flush interval of a component without a watchdog (its kicks are only informative).
const FLUSH_INTERVAL_NO_WATCHDOG_MS: u64 = 250;
/// Flushes per watchdog period: one missed flush (a busy runtime) does not miss the watchdog.
const FLUSHES_PER_WATCHDOG: u64 = 4;

/// Kicks the component's watchdog: cheap enough for a hot loop (one relaxed atomic increment: no
/// system call, lock or allocation). The session sends the kicks to the agent, coalesced, a few
/// times per watchdog period ([`Session::watchdog_ms`](crate::Session::watchdog_ms)).
///
/// Get one with [`Session::kicker`](crate::Session::kicker); clones share the session's count.
///
/// # Correctness
///
/// A watchdog catches a component that stopped doing its work only if the kicks come from the
/// work: kick (or better, [`Progress::advance`]) from the work loop itself. **Do not kick from a
/// timer task**: a timer keeps kicking while the work loop is deadlocked or stuck, and the stuck
/// component is never caught.
#[derive(Debug, Clone)]
pub struct Kicker {
    /// The session's kicks so far: the flusher sends it when it changed.
    count: Arc<AtomicU64>,
}

impl Kicker {
    pub(crate) fn new(count: Arc<AtomicU64>) -> Self {
        Self { count }
    }

    /// Count one kick. The next flush tells the agent (kicks between two flushes coalesce into
    /// one message).
    pub fn kick(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A progress marker for the application's work loop: call [`Progress::advance`] at the top
    /// of each iteration, and the watchdog is kicked only while the loop goes round.
    pub fn progress(&self) -> Progress {
        Progress {
            count: self.count.clone(),
        }
    }
}

/// Marks the progress of the application's work loop: the watchdog is kicked only while
/// [`Progress::advance`] is called. If the loop stops (a deadlock, a blocked call, a busy loop
/// elsewhere), the count stops, no kick reaches the agent even though the session's flusher
/// still runs, and the agent's watchdog fires.
///
/// Get one with [`Kicker::progress`]; it shares the session's kick count (an advance is a
/// kick).
///
/// ```no_run
/// # async fn demo(session: nines_sdk::Session, jobs: tokio::sync::mpsc::Receiver<u64>) {
/// let progress = session.kicker().progress();
/// let mut jobs = jobs;
/// while let Some(job) = jobs.recv().await {
///     progress.advance(); // call advance() from your work loop, not from a timer task
///     let _ = job; // ... do the work ...
/// }
/// # }
/// ```
///
/// # Correctness
///
/// Call `advance()` from your work loop; do not call [`Kicker::kick`] (or `advance()`) from a
/// timer task, or a stuck loop will not be caught. A loop that may legitimately wait longer than
/// the watchdog period for work must wait with a timeout and advance on each wake-up.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The session's kick count, shared with its [`Kicker`].
    count: Arc<AtomicU64>,
}

impl Progress {
    /// The work loop went round once: counts as one kick (one relaxed atomic increment).
    pub fn advance(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// How often the flusher looks at the kick count, for a watchdog of `watchdog_ms` (0 = none).
pub(crate) fn flush_interval(watchdog_ms: u64) -> Duration {
    let ms = if watchdog_ms == 0 {
        FLUSH_INTERVAL_NO_WATCHDOG_MS
    } else {
        (watchdog_ms / FLUSHES_PER_WATCHDOG).max(FLUSH_INTERVAL_MIN_MS)
    };
    Duration::from_millis(ms)
}

/// Which kick count to send: one only when the count changed since the last one sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Coalesce {
    /// The count the agent was last sent (0: none yet, and the count starts at 0).
    sent: u64,
}

impl Coalesce {
    /// The count to send at a flush that reads `count`, if any.
    pub(crate) fn due(&self, count: u64) -> Option<u64> {
        (count != self.sent).then_some(count)
    }

    /// `count` was sent.
    pub(crate) fn sent(&mut self, count: u64) {
        self.sent = count;
    }
}

/// Send the kick count to the agent every [`flush_interval`] when it changed, until the session
/// closes. A flush that finds the outbound queue full sends nothing (it never delays an answer
/// to the agent); the next one sends the newer count.
/// Calls of this process to the cluster in flight right now ([`WaitingOnNines`]).
static CALLS_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// Held while the application waits on a call to the cluster (a checkpoint write stuck behind a
/// leader change, say): meanwhile the flusher sends kicks as if the work loop advanced, so the
/// component watchdog does not count time the application spends waiting on nines itself.
/// Every such call has a deadline, so a call cannot hold the watchdog off for ever.
pub(crate) struct WaitingOnNines(());

impl WaitingOnNines {
    pub(crate) fn start() -> Self {
        CALLS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        WaitingOnNines(())
    }
}

impl Drop for WaitingOnNines {
    fn drop(&mut self) {
        CALLS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn flush(
    shared: Arc<Shared>,
    count: Arc<AtomicU64>,
    watchdog_ms: u64,
    outbound: mpsc::Sender<ComponentMessage>,
) {
    let mut ticks = tokio::time::interval(flush_interval(watchdog_ms));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut closed = shared.closed.subscribe();
    let mut coalesce = Coalesce::default();
    loop {
        tokio::select! {
            biased;
            _ = closed.wait_for(Option::is_some) => return,
            _ = ticks.tick() => {}
        }
        if CALLS_IN_FLIGHT.load(Ordering::Relaxed) > 0 {
            // Waiting on nines counts as progress.
            count.fetch_add(1, Ordering::Relaxed);
        }
        let Some(now) = coalesce.due(count.load(Ordering::Relaxed)) else {
            continue;
        };
        let msg = ComponentMessage {
            msg: Some(component_message::Msg::Kick(Kick { count: now })),
        };
        match outbound.try_send(msg) {
            Ok(()) => coalesce.sent(now),
            Err(TrySendError::Full(_)) => tracing::debug!(count = now, "kick deferred: queue full"),
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flush_interval_is_a_quarter_of_the_watchdog_within_bounds() {
        assert_eq!(flush_interval(0), Duration::from_millis(250));
        assert_eq!(flush_interval(1), Duration::from_millis(5));
        assert_eq!(flush_interval(20), Duration::from_millis(5));
        assert_eq!(flush_interval(100), Duration::from_millis(25));
        assert_eq!(flush_interval(4_000), Duration::from_millis(1_000));
    }

    #[test]
    fn only_a_changed_count_is_sent() {
        let mut c = Coalesce::default();
        assert_eq!(c.due(0), None, "no kick yet");
        assert_eq!(c.due(10_000), Some(10_000), "many kicks: one message");
        c.sent(10_000);
        assert_eq!(c.due(10_000), None, "no kick since");
        assert_eq!(c.due(10_001), Some(10_001));
    }

    #[test]
    fn kicks_and_advances_share_one_count() {
        let count = Arc::new(AtomicU64::new(0));
        let kicker = Kicker::new(count.clone());
        let progress = kicker.clone().progress();
        kicker.kick();
        progress.advance();
        progress.clone().advance();
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }
}
