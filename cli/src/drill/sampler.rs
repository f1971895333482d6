//! The assignment sampler: polls the agreed AMF status (linearizable reads) every 20 ms
//! (`SAMPLE_INTERVAL_MS`) for as long as a drill runs, publishes the latest one to the drill's
//! timeline, and remembers every sample that showed more than one active for the SI (promise 1).
//!
//! Beside it, it polls every agent's components' beliefs (`Amf/Beliefs`: what each component
//! says it holds) at the same pace, and counts a round in which two components believe they are
//! active for the SI (with a valid lease) as a broken promise too: promise 1 is judged where
//! the components stand, not only in the agreed state. An agent that does not answer in time
//! (paused, killed, cut off) says nothing of its components that round: their stop at their own
//! lease deadline is checked by the test suite from the components' own logs
//! (`cli/tests/promise1.rs`), not here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nines_proto::amf::v1::AmfStatusReply;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::observe::{self, now_ms};

/// Pause between samples.
const SAMPLE_INTERVAL_MS: u64 = 20;
/// How long one agent may take to answer a belief poll before it counts as silent this round.
const BELIEF_CALL_MS: u64 = 150;
/// Overlapping samples kept for the report.
const OVERLAPS_KEPT_MAX: usize = 16;

/// One sample with two or more actives.
#[derive(Debug, Clone, Serialize)]
pub struct Overlap {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The SUs active at once.
    pub actives: Vec<String>,
}

/// What the sampler saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    /// Statuses read.
    pub count: u64,
    /// Samples with two or more actives (the first few).
    pub overlaps: Vec<Overlap>,
    /// How many samples had two or more actives.
    pub overlapping: u64,
    /// Rounds of belief polls in which at least one agent answered.
    pub belief_rounds: u64,
    /// Rounds in which two or more components believed themselves active (the first few).
    pub belief_overlaps: Vec<Overlap>,
    /// How many rounds had two or more components believing themselves active.
    pub belief_overlapping: u64,
}

/// A running sampler.
pub struct Sampler {
    latest: watch::Receiver<Option<(u64, AmfStatusReply)>>,
    samples: Arc<Mutex<Samples>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    beliefs: JoinHandle<()>,
}

impl Sampler {
    /// Start sampling; `avoid` is an endpoint to ask last (a node the drill breaks).
    pub fn start(endpoints: &[String], si: &str, avoid: Option<String>) -> Sampler {
        let (tx, latest) = watch::channel(None);
        let (stop, mut stopped) = watch::channel(false);
        let samples = Arc::new(Mutex::new(Samples::default()));
        let beliefs = tokio::spawn(poll_beliefs(
            endpoints.to_vec(),
            si.to_string(),
            samples.clone(),
            stop.subscribe(),
        ));
        let (eps, si, seen) = (endpoints.to_vec(), si.to_string(), samples.clone());
        let task = tokio::spawn(async move {
            loop {
                let read = observe::status(&eps, avoid.as_deref());
                let st = tokio::select! {
                    _ = stopped.changed() => return,
                    st = read => st,
                };
                if let Some(st) = st {
                    let at_ms = now_ms();
                    record(&seen, &st, &si, at_ms);
                    let _ = tx.send(Some((at_ms, st)));
                }
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(SAMPLE_INTERVAL_MS)) => {}
                }
            }
        });
        Sampler {
            latest,
            samples,
            stop,
            task,
            beliefs,
        }
    }

    /// A receiver of the latest sample (time read, status).
    pub fn latest(&self) -> watch::Receiver<Option<(u64, AmfStatusReply)>> {
        self.latest.clone()
    }

    /// Stop and return what was seen.
    pub async fn stop(self) -> Samples {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = self.beliefs.await;
        let s = self.samples.lock().expect("samples lock");
        s.clone()
    }
}

fn record(samples: &Mutex<Samples>, st: &AmfStatusReply, si: &str, at_ms: u64) {
    let actives = observe::actives(st, si);
    let mut s = samples.lock().expect("samples lock");
    s.count += 1;
    if actives.len() > 1 {
        s.overlapping += 1;
        if s.overlaps.len() < OVERLAPS_KEPT_MAX {
            s.overlaps.push(Overlap { at_ms, actives });
        }
    }
}

/// Poll every agent's components' beliefs until `stopped`, recording each round's believed
/// actives for `si`.
async fn poll_beliefs(
    endpoints: Vec<String>,
    si: String,
    samples: Arc<Mutex<Samples>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let round = believed_actives(&endpoints, &si);
        let round = tokio::select! {
            _ = stopped.changed() => return,
            r = round => r,
        };
        if let Some(actives) = round {
            let mut s = samples.lock().expect("samples lock");
            s.belief_rounds += 1;
            if actives.len() > 1 {
                s.belief_overlapping += 1;
                if s.belief_overlaps.len() < OVERLAPS_KEPT_MAX {
                    let at_ms = now_ms();
                    s.belief_overlaps.push(Overlap { at_ms, actives });
                }
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(SAMPLE_INTERVAL_MS)) => {}
        }
    }
}

/// The components that believe they are active for `si` with a valid lease, by the agents that
/// answered within [`BELIEF_CALL_MS`]; `None` when none answered.
async fn believed_actives(endpoints: &[String], si: &str) -> Option<Vec<String>> {
    let mut polls = tokio::task::JoinSet::new();
    for ep in endpoints {
        let ep = ep.clone();
        polls.spawn(async move {
            let mut c = crate::amf_cmd::connect(&ep).ok()?;
            let req = nines_proto::amf::v1::BeliefsRequest {};
            let wait = Duration::from_millis(BELIEF_CALL_MS);
            tokio::time::timeout(wait, c.beliefs(req))
                .await
                .ok()?
                .ok()
                .map(|r| r.into_inner())
        });
    }
    let mut replies = Vec::new();
    while let Some(r) = polls.join_next().await {
        if let Ok(Some(r)) = r {
            replies.push(r);
        }
    }
    if replies.is_empty() {
        return None;
    }
    let actives = replies
        .iter()
        .flat_map(|r| &r.components)
        .filter(|c| !c.lease_expired)
        .filter(|c| {
            c.assignments
                .iter()
                .any(|a| a.si == si && a.ha_state == "active")
        })
        .map(|c| c.component.clone())
        .collect();
    Some(actives)
}
