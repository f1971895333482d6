//! The drill's own probe checkpoint: while a drill runs, one writer writes a new section every
//! [`PROBE_INTERVAL_MS`] (one write in flight, each acknowledged only after quorum commit +
//! fsync); afterwards every acknowledged section is read back (linearizable) and compared. A
//! missing or different section is an acknowledged write lost (promise 2). The checkpoint is
//! unlinked at the end, and has a retention so that a drill that dies half-way leaves nothing
//! behind for long.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use nines_sdk::{Attributes, Checkpoint, CheckpointClient, ErrorCode, OpenOptions, SectionRead};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::observe::now_ms;

/// Pause between probe writes.
pub const PROBE_INTERVAL_MS: u64 = 20;
/// Most writes one drill makes (then the writer stops; the checkpoint holds one section each).
pub const PROBE_WRITES_MAX: u32 = 2_000;
/// How long one probe write may take before its outcome counts as unknown.
const PROBE_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Sections read back per call.
const VERIFY_BATCH_LEN: usize = 100;
/// How long an abandoned probe checkpoint survives once nobody has it open.
const PROBE_RETENTION_S: u64 = 600;

/// One acknowledged probe write.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// Its sequence number (section `p<seq>`, data `<seq>`).
    pub seq: u32,
    /// When it was sent, ms since the Unix epoch.
    pub sent_ms: u64,
    /// When it was acknowledged.
    pub acked_ms: u64,
}

/// What the writer saw so far.
#[derive(Debug, Default)]
struct Log {
    acked: Vec<Ack>,
    /// Writes whose outcome is unknown (error or timeout): neither counted nor checked.
    unknown: u32,
}

/// The outcome of a probe: how many writes were acknowledged, and which of them were lost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeResult {
    /// The probe checkpoint's name.
    pub checkpoint: String,
    /// Writes acknowledged during the drill.
    pub acked: usize,
    /// Writes that failed or timed out (outcome unknown; not promised).
    pub unknown: u32,
    /// Acknowledged writes read back intact.
    pub verified: usize,
    /// Acknowledged writes missing or different afterwards (sequence numbers).
    pub lost: Vec<u32>,
}

/// A running probe writer.
pub struct Probe {
    name: String,
    client: CheckpointClient,
    log: Arc<Mutex<Log>>,
    stop: tokio::sync::watch::Sender<bool>,
    writer: JoinHandle<()>,
}

fn section(seq: u32) -> String {
    format!("p{seq}")
}

impl Probe {
    /// Create the probe checkpoint and start writing.
    pub async fn start(endpoints: &[String]) -> anyhow::Result<Probe> {
        let name = format!("nines-drill-{}-{}", std::process::id(), now_ms());
        let client = CheckpointClient::connect_with(endpoints, crate::client::sdk_config())
            .await
            .context("cannot connect the drill's checkpoint client")?;
        let attrs = Attributes {
            sections_max: PROBE_WRITES_MAX,
            section_size_max: 64,
            checkpoint_size_max: 64 * u64::from(PROBE_WRITES_MAX),
            retention: Duration::from_secs(PROBE_RETENTION_S),
            ..Attributes::default()
        };
        let cp = client
            .open(&name, OpenOptions::create(attrs))
            .await
            .with_context(|| format!("cannot create the probe checkpoint {name}"))?
            .with_timeout(Duration::from_millis(PROBE_WRITE_TIMEOUT_MS));
        let log = Arc::new(Mutex::new(Log::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(write_loop(cp, log.clone(), stopped));
        Ok(Probe {
            name,
            client,
            log,
            stop,
            writer,
        })
    }

    /// When the first write sent at or after `t_ms` was acknowledged, if one was.
    pub fn first_ack_sent_after(&self, t_ms: u64) -> Option<u64> {
        let log = self.log.lock().expect("probe log lock");
        log.acked
            .iter()
            .find(|a| a.sent_ms >= t_ms)
            .map(|a| a.acked_ms)
    }

    /// Stop writing, read every acknowledged section back, unlink the checkpoint.
    pub async fn finish(self) -> anyhow::Result<ProbeResult> {
        let _ = self.stop.send(true);
        let _ = self.writer.await;
        let (acked, unknown) = {
            let log = self.log.lock().expect("probe log lock");
            (log.acked.clone(), log.unknown)
        };
        let cp = self
            .client
            .open(&self.name, OpenOptions::existing())
            .await
            .with_context(|| format!("cannot reopen the probe checkpoint {}", self.name))?;
        let mut lost = Vec::new();
        for chunk in acked.chunks(VERIFY_BATCH_LEN) {
            lost.extend(verify_chunk(&cp, chunk).await?);
        }
        if let Err(e) = self.client.unlink(&self.name).await {
            eprintln!(
                "nines drill: could not unlink the probe checkpoint {}: {e}",
                self.name
            );
        }
        Ok(ProbeResult {
            checkpoint: self.name,
            acked: acked.len(),
            unknown,
            verified: acked.len() - lost.len(),
            lost,
        })
    }
}

async fn write_loop(
    cp: Checkpoint,
    log: Arc<Mutex<Log>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    for seq in 0..PROBE_WRITES_MAX {
        if *stopped.borrow() {
            return;
        }
        let sent_ms = now_ms();
        let r = cp.write(&section(seq), seq.to_string()).await;
        {
            let mut log = log.lock().expect("probe log lock");
            match r {
                Ok(_) => log.acked.push(Ack {
                    seq,
                    sent_ms,
                    acked_ms: now_ms(),
                }),
                Err(_) => log.unknown += 1,
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(PROBE_INTERVAL_MS)) => {}
        }
    }
}

/// The sequence numbers in `chunk` whose sections are missing or hold something else.
async fn verify_chunk(cp: &Checkpoint, chunk: &[Ack]) -> anyhow::Result<Vec<u32>> {
    let reads: Vec<SectionRead> = chunk
        .iter()
        .map(|a| SectionRead::whole(section(a.seq)))
        .collect();
    if let Ok(data) = cp.read_many(&reads).await {
        return Ok(chunk
            .iter()
            .zip(&data)
            .filter(|(a, d)| d.data != a.seq.to_string().as_bytes())
            .map(|(a, _)| a.seq)
            .collect());
    }
    // One missing section fails the whole read: look at each.
    let mut lost = Vec::new();
    for a in chunk {
        match cp.read(&section(a.seq)).await {
            Ok(d) if d == a.seq.to_string().as_bytes() => {}
            Ok(_) => lost.push(a.seq),
            Err(e) if e.code() == Some(ErrorCode::NotExist) => lost.push(a.seq),
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot read probe section {} back: {e}",
                    section(a.seq)
                ))
            }
        }
    }
    Ok(lost)
}
