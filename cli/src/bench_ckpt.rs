//! `nines bench ckpt`: checkpoint write and read throughput and latency through the SDK.
//!
//! N clients share one SDK client (one HTTP/2 connection per agent, the leader's first). Each
//! owns a few sections of one throw-away checkpoint: first every client overwrites its sections
//! in a loop (acknowledged after quorum commit + fsync), then reads them back (linearizable),
//! each phase for half the duration. The checkpoint is unlinked at the end, whatever happened.
//!
//! `--tls` runs the throw-away cluster with mutual TLS; `--compare-tls` measures a plaintext
//! cluster, then a mutual-TLS one, with the same arguments in one invocation and prints both and
//! what TLS costs (relative throughput and p50). Each run has a fresh cluster; the plaintext one
//! goes first, so run it a few times before reading much into a difference of a few percent.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context};
use nines_sdk::{
    Attributes, Checkpoint, CheckpointClient, ClientConfig, OpenOptions, SectionWrite,
};
use serde::Serialize;

use crate::{
    ckpt_cmd::{parse_bytes, parse_duration},
    client,
    local::{LocalCluster, LocalOptions},
    output::{table, Format},
};

/// Sections each client owns (and cycles through).
const SECTIONS_PER_CLIENT: usize = 4;
/// Most clients a run may have.
const CLIENTS_MAX: usize = 4_096;
/// Latency samples kept per client; operations beyond are counted but not sampled.
const SAMPLES_PER_CLIENT_MAX: usize = 1 << 20;
/// Deadline of each benchmark operation.
const OP_TIMEOUT_MS: u64 = 10_000;
/// How often progress is printed.
const PROGRESS_INTERVAL_MS: u64 = 1_000;

/// Arguments of `nines bench ckpt`.
#[derive(Debug, Clone, clap::Args)]
pub struct CkptBenchArgs {
    /// Concurrent clients, each writing (then reading) its own sections.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Bytes per section value (K/KiB, M/MiB suffixes accepted).
    #[arg(long, value_name = "BYTES", default_value = "256", value_parser = parse_bytes)]
    pub value_size: u64,
    /// Total run time, split evenly between the write and the read phase (e.g. 10s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Start a throw-away local 3-node cluster for the run instead of using --endpoints.
    #[arg(long)]
    pub local: bool,
    /// Run the throw-away local cluster with mutual TLS (implies --local).
    #[arg(long)]
    pub tls: bool,
    /// Measure twice on fresh throw-away local clusters, plaintext then mutual TLS, and print
    /// both and the relative cost of TLS (implies --local).
    #[arg(long, conflicts_with = "tls")]
    pub compare_tls: bool,
}

/// One phase's results.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// `write` or `read`.
    pub phase: &'static str,
    /// Operations acknowledged.
    pub ops: u64,
    /// Acknowledged operations per second of the phase's wall time.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Slowest operation.
    pub max_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Write,
    Read,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Write => "write",
            Phase::Read => "read",
        }
    }
}

/// Run the benchmark against `endpoints`, or against a throw-away local cluster (started with
/// the `nines` binary at `bin`) when there are none or `--local` is given.
///
/// # Errors
/// When no cluster is reachable, the bench checkpoint cannot be created, or an operation fails.
pub async fn run(
    args: CkptBenchArgs,
    endpoints: Option<&[String]>,
    bin: &Path,
    format: Format,
) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        bail!("--clients must be 1..={CLIENTS_MAX}, not {}", args.clients);
    }
    if args.duration < Duration::from_millis(200) {
        bail!("--duration must be at least 200ms");
    }
    let value_size = usize::try_from(args.value_size).context("--value-size is too large")?;
    if args.compare_tls {
        let plaintext = local_run(&args, bin, false, value_size).await?;
        let mtls = local_run(&args, bin, true, value_size).await?;
        return print_comparison(&args, &plaintext, &mtls, format);
    }
    let results = match endpoints {
        Some(eps) if !args.local && !args.tls => measure(&args, eps.to_vec(), value_size).await?,
        _ => local_run(&args, bin, args.tls, value_size).await?,
    };
    print_results(&args, &results, format)
}

/// Start a throw-away local 3-node cluster (with mutual TLS when `tls`: this process's client
/// TLS becomes its operator's), measure, stop it.
async fn local_run(
    args: &CkptBenchArgs,
    bin: &Path,
    tls: bool,
    value_size: usize,
) -> anyhow::Result<Vec<PhaseResult>> {
    let how = if tls { " with mutual TLS" } else { "" };
    eprintln!("starting a throw-away local 3-node cluster{how} ...");
    let opts = LocalOptions {
        tls,
        ..LocalOptions::default()
    };
    let c = LocalCluster::start(bin, 3, opts)?;
    client::set_tls(c.client_tls());
    c.wait_leader(Duration::from_secs(30)).await?;
    let results = measure(args, c.endpoints(), value_size).await;
    drop(c);
    results
}

/// Create the bench checkpoint through `eps`, run the phases, unlink it.
async fn measure(
    args: &CkptBenchArgs,
    eps: Vec<String>,
    value_size: usize,
) -> anyhow::Result<Vec<PhaseResult>> {
    let eps = client::leader_first(eps).await;
    let config = ClientConfig {
        timeout: Duration::from_millis(OP_TIMEOUT_MS),
        ..client::sdk_config()
    };
    let sdk = CheckpointClient::connect_with(&eps, config).await?;
    let name = format!("bench-ckpt-{}-{}", std::process::id(), now_ms());
    let sections_max =
        u32::try_from(args.clients * SECTIONS_PER_CLIENT).context("--clients is too large")?;
    let attrs = Attributes {
        sections_max,
        section_size_max: args.value_size.max(1),
        checkpoint_size_max: u64::from(sections_max)
            .saturating_mul(args.value_size.max(1))
            .max(Attributes::default().checkpoint_size_max),
        ..Attributes::default()
    };
    let cp = sdk
        .open(&name, OpenOptions::create(attrs))
        .await
        .with_context(|| {
            format!(
                "cannot create the bench checkpoint ({} sections of {} bytes)",
                attrs.sections_max, args.value_size
            )
        })?;
    let cp = Arc::new(cp);
    let how = if client::tls().is_some() {
        "mutual TLS"
    } else {
        "plaintext"
    };
    eprintln!(
        "bench ckpt: {} clients × {SECTIONS_PER_CLIENT} sections of {} bytes, checkpoint '{name}', \
         via {} (leader first, {how})",
        args.clients,
        args.value_size,
        eps.join(",")
    );
    let outcome = phases(&cp, args, value_size).await;
    cleanup(&sdk, cp, &name).await;
    outcome
}

/// Prefill, then the write phase, then the read phase.
async fn phases(
    cp: &Arc<Checkpoint>,
    args: &CkptBenchArgs,
    value_size: usize,
) -> anyhow::Result<Vec<PhaseResult>> {
    let value = Arc::new(vec![b'x'; value_size]);
    prefill(cp, args.clients, &value).await?;
    let write_for = args.duration / 2;
    let read_for = args.duration.saturating_sub(write_for);
    let w = phase(cp, Phase::Write, args.clients, &value, write_for).await?;
    let r = phase(cp, Phase::Read, args.clients, &value, read_for).await?;
    Ok(vec![w, r])
}

/// Write every section once, so the read phase finds them all.
async fn prefill(cp: &Arc<Checkpoint>, clients: usize, value: &Arc<Vec<u8>>) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let cp = cp.clone();
        let value = value.clone();
        set.spawn(async move {
            let writes: Vec<SectionWrite> = (0..SECTIONS_PER_CLIENT)
                .map(|s| SectionWrite::upsert(section_id(c, s), value.as_slice()))
                .collect();
            cp.write_many(&writes).await
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("a bench client panicked")?
            .context("cannot prefill the bench sections")?;
    }
    Ok(())
}

/// `clients` concurrent loops of one operation each until `duration` has passed.
async fn phase(
    cp: &Arc<Checkpoint>,
    kind: Phase,
    clients: usize,
    value: &Arc<Vec<u8>>,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let progress = tokio::spawn(progress(kind, ops.clone(), start));
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let cp = cp.clone();
        let value = value.clone();
        let ops = ops.clone();
        set.spawn(async move {
            let mut samples = Vec::with_capacity(1024);
            let mut i = 0usize;
            while Instant::now() < deadline {
                let section = section_id(c, i % SECTIONS_PER_CLIENT);
                i += 1;
                let t = Instant::now();
                match kind {
                    Phase::Write => cp.write(&section, value.as_slice()).await.map(|_| ())?,
                    Phase::Read => {
                        let got = cp.read(&section).await?;
                        if got.len() != value.len() {
                            return Err(anyhow!(
                                "read {} bytes from section '{section}', wrote {}",
                                got.len(),
                                value.len()
                            ));
                        }
                    }
                }
                if samples.len() < SAMPLES_PER_CLIENT_MAX {
                    samples.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(samples)
        });
    }
    let mut all = Vec::new();
    let mut failure = None;
    while let Some(r) = set.join_next().await {
        match r.context("a bench client panicked").and_then(|r| r) {
            Ok(s) => all.extend(s),
            Err(e) => {
                // Stop the others: one failure fails the phase.
                failure.get_or_insert(e);
                set.abort_all();
            }
        }
    }
    progress.abort();
    if let Some(e) = failure {
        return Err(e.context(format!("{} phase failed", kind.name())));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = ops.load(Ordering::Relaxed);
    let [p50, p90, p99, max] = percentiles(&mut all, [50.0, 90.0, 99.0, 100.0]);
    Ok(PhaseResult {
        phase: kind.name(),
        ops: n,
        ops_per_sec: round_to(n as f64 / elapsed.max(f64::EPSILON), 1),
        p50_ms: round_to(p50, 3),
        p90_ms: round_to(p90, 3),
        p99_ms: round_to(p99, 3),
        max_ms: round_to(max, 3),
    })
}

/// Print `phase: 3 s, 12345 ops` to stderr every second until aborted.
async fn progress(kind: Phase, ops: Arc<AtomicU64>, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
    tick.tick().await;
    loop {
        tick.tick().await;
        let n = ops.load(Ordering::Relaxed);
        let s = start.elapsed().as_secs_f64();
        eprintln!(
            "  {:<5} {s:>5.1} s  {n:>9} ops  {:>9.0} ops/s",
            kind.name(),
            n as f64 / s
        );
    }
}

/// Close the handle and unlink the bench checkpoint; failures are reported, not returned (the
/// run's own result matters more).
async fn cleanup(sdk: &CheckpointClient, cp: Arc<Checkpoint>, name: &str) {
    if let Ok(cp) = Arc::try_unwrap(cp) {
        if let Err(e) = cp.close().await {
            eprintln!("warning: {e}");
        }
    }
    if let Err(e) = sdk.unlink(name).await {
        eprintln!("warning: {e}; remove it with: nines ckpt unlink {name}");
    }
}

fn section_id(client: usize, section: usize) -> String {
    format!("c{client}-s{section}")
}

/// Nearest-rank percentiles (p in 0..=100) of `samples`; zeros when there are none.
fn percentiles<const N: usize>(samples: &mut [f64], ps: [f64; N]) -> [f64; N] {
    samples.sort_by(|a, b| a.total_cmp(b));
    ps.map(|p| {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    })
}

fn print_results(
    args: &CkptBenchArgs,
    results: &[PhaseResult],
    format: Format,
) -> anyhow::Result<()> {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "ckpt",
                "clients": args.clients,
                "value_size": args.value_size,
                "phases": results,
            })
        );
        return Ok(());
    }
    let ms = |v: f64| format!("{v:.2} ms");
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.phase.to_string(),
                r.ops.to_string(),
                format!("{:.0}", r.ops_per_sec),
                ms(r.p50_ms),
                ms(r.p90_ms),
                ms(r.p99_ms),
                ms(r.max_ms),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["PHASE", "OPS", "OPS/S", "P50", "P90", "P99", "MAX"],
            &rows
        )
    );
    Ok(())
}

/// What mutual TLS changes in one phase, relative to plaintext.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TlsCost {
    /// `write` or `read`.
    pub phase: &'static str,
    /// Change of operations per second with TLS, in percent (negative: TLS is slower).
    pub ops_per_sec_change_pct: f64,
    /// Change of the median latency with TLS, in milliseconds.
    pub p50_change_ms: f64,
    /// Change of the median latency with TLS, in percent.
    pub p50_change_pct: f64,
}

/// Each phase's [`TlsCost`], pairing the phases by name.
pub fn tls_cost(plaintext: &[PhaseResult], mtls: &[PhaseResult]) -> Vec<TlsCost> {
    let pct = |new: f64, old: f64| match old > 0.0 {
        true => round_to((new - old) / old * 100.0, 1),
        false => 0.0,
    };
    plaintext
        .iter()
        .filter_map(|p| {
            let t = mtls.iter().find(|t| t.phase == p.phase)?;
            Some(TlsCost {
                phase: p.phase,
                ops_per_sec_change_pct: pct(t.ops_per_sec, p.ops_per_sec),
                p50_change_ms: round_to(t.p50_ms - p.p50_ms, 3),
                p50_change_pct: pct(t.p50_ms, p.p50_ms),
            })
        })
        .collect()
}

fn print_comparison(
    args: &CkptBenchArgs,
    plaintext: &[PhaseResult],
    mtls: &[PhaseResult],
    format: Format,
) -> anyhow::Result<()> {
    let cost = tls_cost(plaintext, mtls);
    if format == Format::Json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "ckpt",
                "clients": args.clients,
                "value_size": args.value_size,
                "plaintext": { "phases": plaintext },
                "mtls": { "phases": mtls },
                "tls_cost": cost,
            })
        );
        return Ok(());
    }
    let ms = |v: f64| format!("{v:.2} ms");
    let rows: Vec<Vec<String>> = [("plaintext", plaintext), ("mTLS", mtls)]
        .iter()
        .flat_map(|(mode, results)| {
            results.iter().map(move |r| {
                vec![
                    mode.to_string(),
                    r.phase.to_string(),
                    r.ops.to_string(),
                    format!("{:.0}", r.ops_per_sec),
                    ms(r.p50_ms),
                    ms(r.p99_ms),
                ]
            })
        })
        .collect();
    println!(
        "{}",
        table(&["MODE", "PHASE", "OPS", "OPS/S", "P50", "P99"], &rows)
    );
    for c in &cost {
        println!(
            "mutual TLS, {}: throughput {:+.1}%, p50 {:+.3} ms ({:+.1}%)",
            c.phase, c.ops_per_sec_change_pct, c.p50_change_ms, c.p50_change_pct
        );
    }
    Ok(())
}

/// `v` rounded to `decimals` places (JSON output need not carry float noise).
fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CkptBenchArgs,
    }

    #[test]
    fn defaults_are_64_clients_256_bytes_10_seconds() {
        let a = Cli::try_parse_from(["t"]).expect("defaults parse").args;
        assert_eq!((a.clients, a.value_size, a.local), (64, 256, false));
        assert_eq!(a.duration, Duration::from_secs(10));
        let a = Cli::try_parse_from([
            "t",
            "--clients",
            "8",
            "--value-size",
            "4KiB",
            "--duration",
            "500ms",
            "--local",
        ])
        .expect("parses")
        .args;
        assert_eq!((a.clients, a.value_size, a.local), (8, 4096, true));
        assert_eq!(a.duration, Duration::from_millis(500));
        assert!(!a.tls && !a.compare_tls);
        let a = Cli::try_parse_from(["t", "--compare-tls"])
            .expect("parses")
            .args;
        assert!(a.compare_tls && !a.tls);
        assert!(Cli::try_parse_from(["t", "--tls", "--compare-tls"]).is_err());
    }

    fn phase(name: &'static str, ops_per_sec: f64, p50_ms: f64) -> PhaseResult {
        PhaseResult {
            phase: name,
            ops: 0,
            ops_per_sec,
            p50_ms,
            p90_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        }
    }

    #[test]
    fn tls_cost_is_relative_to_plaintext_phase_by_phase() {
        let plain = [phase("write", 1000.0, 2.0), phase("read", 4000.0, 0.5)];
        let mtls = [phase("read", 3000.0, 0.6), phase("write", 900.0, 2.5)];
        let cost = tls_cost(&plain, &mtls);
        assert_eq!(cost.len(), 2);
        assert_eq!(cost[0].phase, "write");
        assert_eq!(cost[0].ops_per_sec_change_pct, -10.0);
        assert_eq!(cost[0].p50_change_ms, 0.5);
        assert_eq!(cost[0].p50_change_pct, 25.0);
        assert_eq!(cost[1].phase, "read");
        assert_eq!(cost[1].ops_per_sec_change_pct, -25.0);
        // Nothing measured in plaintext: no percentage to speak of.
        let cost = tls_cost(&[phase("write", 0.0, 0.0)], &[phase("write", 5.0, 1.0)]);
        assert_eq!(cost[0].ops_per_sec_change_pct, 0.0);
    }

    #[test]
    fn percentiles_use_nearest_rank_including_p90() {
        let mut s: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(
            percentiles(&mut s, [50.0, 90.0, 99.0, 100.0]),
            [50.0, 90.0, 99.0, 100.0]
        );
        assert_eq!(percentiles(&mut [], [50.0, 90.0]), [0.0, 0.0]);
        assert_eq!(percentiles(&mut [3.0], [50.0, 100.0]), [3.0, 3.0]);
        assert_eq!(round_to(85.791_901_000_01, 3), 85.792);
    }
}
