//! The assignment sampler: polls the agreed AMF status (linearizable reads) every 20 ms
//! (`SAMPLE_INTERVAL_MS`) for as long as a drill runs, publishes the latest one to the drill's
//! timeline, and remembers every sample that showed more than one active for the SI (promise 1).
//!
//! It sees what the AMF agreed, sampled: a process that still acts after the AMF moved its
//! assignment away is out of its sight (the AMF prevents that by killing a failed component
//! before its standby is made active, and by fencing a node whose lease expired).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nines_proto::amf::v1::AmfStatusReply;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::observe::{self, now_ms};

/// Pause between samples.
const SAMPLE_INTERVAL_MS: u64 = 20;
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
}

/// A running sampler.
pub struct Sampler {
    latest: watch::Receiver<Option<(u64, AmfStatusReply)>>,
    samples: Arc<Mutex<Samples>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Start sampling; `avoid` is an endpoint to ask last (a node the drill breaks).
    pub fn start(endpoints: &[String], si: &str, avoid: Option<String>) -> Sampler {
        let (tx, latest) = watch::channel(None);
        let (stop, mut stopped) = watch::channel(false);
        let samples = Arc::new(Mutex::new(Samples::default()));
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
