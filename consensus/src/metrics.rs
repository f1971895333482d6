//! Process-wide counters and histograms: a tiny lock-free registry the services share.
//!
//! Each crate keeps its own `static` metrics built from [`Counter`] and [`Histogram`] (plain
//! atomics, `const`-constructible, never a lock on a hot path); the agent reads them at scrape
//! time and renders the Prometheus text format. Gauges are not kept here: the agent derives them
//! from the status APIs when it is scraped. One agent runs per process, so process-wide statics
//! are per node; several nodes in one test process add up.
//!
//! This crate's own series are in [`RAFT`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Most bucket bounds a [`Histogram`] may have.
pub const HISTOGRAM_BOUNDS_MAX: usize = 16;

/// Bucket bounds (seconds) for request latencies: 0.5 ms .. 10 s.
pub const LATENCY_BOUNDS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds (seconds) for disk syncs: 50 µs .. 1 s.
pub const FSYNC_BOUNDS_S: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one family, one per label value (a reason, a kind), Prometheus style.
#[derive(Debug)]
pub struct LabeledCounters<const N: usize> {
    labels: [&'static str; N],
    counts: [Counter; N],
}

impl<const N: usize> LabeledCounters<N> {
    /// All zero, one counter per label in `labels`.
    pub const fn new(labels: [&'static str; N]) -> Self {
        Self {
            labels,
            counts: [const { Counter::new() }; N],
        }
    }

    /// Add one to the counter at `index` (the label's position).
    pub(crate) fn inc(&self, index: usize) {
        if let Some(c) = self.counts.get(index) {
            c.inc();
        }
    }

    /// The counter at `index`; 0 past the end.
    pub fn get(&self, index: usize) -> u64 {
        self.counts.get(index).map_or(0, Counter::get)
    }

    /// (label, value) of every counter, in label order.
    pub fn by_label(&self) -> Vec<(&'static str, u64)> {
        self.labels
            .iter()
            .zip(&self.counts)
            .map(|(l, c)| (*l, c.get()))
            .collect()
    }
}

/// A histogram of durations with fixed bucket bounds (seconds), Prometheus style.
#[derive(Debug)]
pub struct Histogram {
    bounds_s: &'static [f64],
    /// Observations per bucket (not cumulative); index `bounds_s.len()` is +Inf.
    buckets: [AtomicU64; HISTOGRAM_BOUNDS_MAX + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A histogram's values at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, cumulative count), ascending; +Inf is `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations, seconds.
    pub sum_s: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Empty, with `bounds_s` ascending (at most [`HISTOGRAM_BOUNDS_MAX`]).
    pub const fn new(bounds_s: &'static [f64]) -> Self {
        assert!(
            bounds_s.len() <= HISTOGRAM_BOUNDS_MAX,
            "too many bucket bounds"
        );
        Histogram {
            bounds_s,
            buckets: [const { AtomicU64::new(0) }; HISTOGRAM_BOUNDS_MAX + 1],
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Record one duration given in milliseconds.
    pub fn observe_ms(&self, ms: u64) {
        self.observe_us(ms.saturating_mul(1_000));
    }

    fn observe_us(&self, us: u64) {
        let s = us as f64 / 1e6;
        let i = self
            .bounds_s
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(self.bounds_s.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values (each field read atomically; a concurrent observation may show in
    /// one field and not yet in another, which Prometheus tolerates).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds_s
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cumulative += self.buckets[i].load(Ordering::Relaxed);
                (*b, cumulative)
            })
            .collect();
        let tail = self.buckets[self.bounds_s.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            sum_s: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: (cumulative + tail).max(self.count.load(Ordering::Relaxed)),
        }
    }
}

/// The replicated core's counters (gauges such as term and indexes come from
/// [`crate::NodeStatus`]).
#[derive(Debug)]
pub struct RaftMetrics {
    /// Proposals made through a [`crate::Proposer`] on this node that succeeded.
    pub proposals_ok: Counter,
    /// Proposals that failed (refused, timed out, outcome unknown, stopped).
    pub proposals_failed: Counter,
    /// Time from `propose` to its answer (commit on a quorum and apply), forwarding included.
    pub proposal_latency: Histogram,
    /// Snapshots this node took (log compacted behind them).
    pub snapshots_taken: Counter,
    /// Snapshots this node installed from a leader.
    pub snapshots_installed: Counter,
    /// Log syncs (fsyncs) made; each covers every Ready written before it began.
    pub fsyncs: Counter,
    /// Readies whose writes needed a sync; over `fsyncs`, the group-commit batching factor.
    pub readies_synced: Counter,
    /// Entries appended to this node's log.
    pub entries_appended: Counter,
    /// Time one log sync took.
    pub fsync_latency: Histogram,
    /// Time the driver spent writing one Ready into the log store (not syncing it): the driver
    /// steps nothing else meanwhile.
    pub log_write_latency: Histogram,
    /// Raft messages from peers refused before raft saw them, by reason (see the consensus
    /// crate's peer input rules): a malformed or forged message, never a panic.
    pub refused_messages: LabeledCounters<{ crate::inbound::Refusal::COUNT }>,
    /// Raft link connections closed for breaking a link rule (a frame too long, a frame half
    /// sent past its deadline, a refused header), by reason.
    pub link_refusals: LabeledCounters<{ crate::transport::LinkRefusal::COUNT }>,
    /// Connections to the peer port refused over mutual TLS: no handshake in time, a
    /// certificate of another CA or expired, or a raft link from a client certificate.
    pub tls_refusals: Counter,
}

/// This process's raft metrics.
pub static RAFT: RaftMetrics = RaftMetrics {
    proposals_ok: Counter::new(),
    proposals_failed: Counter::new(),
    proposal_latency: Histogram::new(LATENCY_BOUNDS_S),
    snapshots_taken: Counter::new(),
    snapshots_installed: Counter::new(),
    fsyncs: Counter::new(),
    readies_synced: Counter::new(),
    entries_appended: Counter::new(),
    fsync_latency: Histogram::new(FSYNC_BOUNDS_S),
    log_write_latency: Histogram::new(FSYNC_BOUNDS_S),
    refused_messages: LabeledCounters::new(crate::inbound::Refusal::LABELS),
    link_refusals: LabeledCounters::new(crate::transport::LinkRefusal::LABELS),
    tls_refusals: Counter::new(),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        static H: Histogram = Histogram::new(&[0.001, 0.01, 0.1]);
        H.observe(Duration::from_micros(500));
        H.observe_ms(5);
        H.observe_ms(5);
        H.observe_ms(2_000);
        let s = H.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 1), (0.01, 3), (0.1, 3)]);
        assert_eq!(s.count, 4);
        assert!((s.sum_s - 2.0105).abs() < 1e-9, "{}", s.sum_s);
    }

    #[test]
    fn counters_add() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
    }
}
