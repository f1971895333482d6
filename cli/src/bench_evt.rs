//! `nines bench evt`: publish → delivery latency and throughput of the event service. One or
//! more publishers publish 256-byte events at a target rate (or as fast as they can, with
//! `--rate 0`); subscribers, spread over the agents, time each delivery against the send time
//! the publisher wrote into the event (everything runs on this machine, one clock).
//!
//! A warm-up (1 s by default) publishes at the same rate first, unmeasured: a cluster that has
//! just started is still opening connections and touching memory for the first time, and over a
//! few seconds those transients, not the steady state, would make the p99.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nines_sdk::{Delivery, EventClient, Publish, Subscription};
use serde::Serialize;

use crate::bench::{percentiles, Percentiles};

/// The benchmark's knobs.
#[derive(Debug, Clone)]
pub struct EvtBenchConfig {
    /// Publishers (each its own client).
    pub publishers: usize,
    /// Subscribers (spread round-robin over the endpoints).
    pub subscribers: usize,
    /// Target events per second over all publishers (0 = as fast as they can).
    pub rate: u64,
    /// How long to publish and measure, after the warm-up.
    pub duration: Duration,
    /// How long to publish first without measuring.
    pub warmup: Duration,
    /// Event payload size in bytes (at least 16).
    pub value_size: usize,
    /// Publishes in flight per publisher.
    pub inflight: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvtBenchResult {
    /// Acknowledged publishes per second.
    pub ops_per_sec: f64,
    /// Publish acknowledgement latency.
    pub publish: Percentiles,
    /// Publish → delivery latency over every subscriber.
    pub delivery: Percentiles,
    /// Events delivered (all subscribers together).
    pub delivered: u64,
    /// Lost-event notices' total.
    pub lost: u64,
    /// p50 of publish → delivery (also in `delivery`).
    pub p50_ms: f64,
    /// p99 of publish → delivery.
    pub p99_ms: f64,
    /// The unmeasured warm-up before the measured window.
    pub warmup_ms: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Run the benchmark against `endpoints`.
pub async fn run(endpoints: &[String], cfg: &EvtBenchConfig) -> anyhow::Result<EvtBenchResult> {
    let channel = format!("bench-{}", now_us());
    let client = EventClient::connect_with(endpoints, crate::client::sdk_config()).await?;
    client
        .create(&channel)
        .await
        .context("create the channel")?;
    let lost = Arc::new(AtomicU64::new(0));
    // Events sent before this wall-clock time (µs) are the warm-up's: delivered, not measured.
    let measure_from = Arc::new(AtomicU64::new(u64::MAX));
    let mut subs = Vec::new();
    for i in 0..cfg.subscribers {
        let ep = endpoints[i % endpoints.len()].clone();
        let c = EventClient::connect_with(&[ep], crate::client::sdk_config()).await?;
        let stream = c.subscribe(&Subscription::new(channel.clone())).await?;
        let lost = lost.clone();
        let measure_from = measure_from.clone();
        subs.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut samples = Vec::new();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(Delivery::Event(e)) if e.data.len() >= 8 => {
                        let sent = u64::from_le_bytes(e.data[..8].try_into().unwrap_or([0; 8]));
                        if sent == 0 {
                            break; // the end marker
                        }
                        if sent >= measure_from.load(Ordering::Relaxed) {
                            samples.push(now_us().saturating_sub(sent) as f64 / 1000.0);
                        }
                    }
                    Ok(Delivery::Lost(n)) => {
                        lost.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            samples
        }));
    }
    // Publishers talk to the leader first: a publish on a follower is one more hop.
    let publish_eps = crate::client::leader_first(endpoints.to_vec()).await;
    measure_from.store(now_us() + cfg.warmup.as_micros() as u64, Ordering::Relaxed);
    let (acked, mut publish_ms, elapsed) = publish_all(&publish_eps, &channel, cfg).await?;
    // The end marker: send time 0.
    client
        .publish(&Publish::new(channel.clone(), vec![0u8; 16]))
        .await
        .context("publish the end marker")?;
    let mut delivery = Vec::new();
    for s in subs {
        let got = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .context("subscribers did not see the end marker within 30 s")??;
        delivery.extend(got);
    }
    let _ = client.unlink(&channel).await;
    let delivered = delivery.len() as u64;
    let d = percentiles(&mut delivery);
    Ok(EvtBenchResult {
        ops_per_sec: acked as f64 / elapsed.as_secs_f64(),
        publish: percentiles(&mut publish_ms),
        p50_ms: d.p50_ms,
        p99_ms: d.p99_ms,
        delivery: d,
        delivered,
        lost: lost.load(Ordering::Relaxed),
        warmup_ms: cfg.warmup.as_millis() as u64,
    })
}

/// Publish for `cfg.warmup` then `cfg.duration` at `cfg.rate`; returns what the measured window
/// saw: (acknowledged, latencies ms, its length).
async fn publish_all(
    endpoints: &[String],
    channel: &str,
    cfg: &EvtBenchConfig,
) -> anyhow::Result<(u64, Vec<f64>, Duration)> {
    let started = Instant::now();
    let (warmup, total) = (cfg.warmup, cfg.warmup + cfg.duration);
    let mut tasks = Vec::new();
    let per_task = cfg.publishers.max(1) * cfg.inflight.max(1);
    let interval =
        (cfg.rate > 0).then(|| Duration::from_secs_f64(per_task as f64 / cfg.rate as f64));
    let mut k = 0u32;
    for _ in 0..cfg.publishers.max(1) {
        let client = EventClient::connect_with(endpoints, crate::client::sdk_config()).await?;
        for _ in 0..cfg.inflight.max(1) {
            // Stagger the tasks over one interval so the rate is smooth, not bursts.
            let offset = interval
                .map(|iv| iv * k / per_task as u32)
                .unwrap_or_default();
            k += 1;
            let (client, channel) = (client.clone(), channel.to_string());
            let size = cfg.value_size.max(16);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut next = Instant::now() + offset;
                let mut acked = 0u64;
                while started.elapsed() < total {
                    if let Some(iv) = interval {
                        tokio::time::sleep_until(next.into()).await;
                        next += iv;
                    }
                    let mut data = vec![0u8; size];
                    data[..8].copy_from_slice(&now_us().to_le_bytes());
                    let t = Instant::now();
                    let measured = t.duration_since(started) >= warmup;
                    if client
                        .publish(&Publish::new(channel.clone(), data))
                        .await
                        .is_ok()
                        && measured
                    {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        acked += 1;
                    }
                }
                (acked, lat)
            }));
        }
    }
    let (mut acked, mut all) = (0, Vec::new());
    for t in tasks {
        let (n, lat) = t.await?;
        acked += n;
        all.extend(lat);
    }
    Ok((acked, all, started.elapsed().saturating_sub(warmup)))
}
