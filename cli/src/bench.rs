//! Benchmarks of the replicated core: proposal throughput and latency, and leader failover.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use nines_proto::{ais_from_status, cluster::v1::ProbeWriteRequest};
use serde::Serialize;

use crate::{client, local::LocalCluster};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Fastest.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// Percentiles of a set of samples (nearest-rank).
pub fn percentiles(samples: &mut [f64]) -> Percentiles {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    Percentiles {
        min_ms: samples.first().copied().unwrap_or(0.0),
        p50_ms: at(50.0),
        p99_ms: at(99.0),
        max_ms: samples.last().copied().unwrap_or(0.0),
    }
}

/// One throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    /// Proposals in flight at once.
    pub inflight: usize,
    /// Proposals acknowledged.
    pub requests: usize,
    /// Bytes of each probe value.
    pub value_bytes: usize,
    /// Wall time of the run.
    pub elapsed_ms: f64,
    /// Acknowledged proposals per second.
    pub ops_per_sec: f64,
    /// Per-proposal latency (send → acknowledged after quorum commit + fsync + apply).
    pub latency: Percentiles,
}

/// Write `requests` probes through the leader with `inflight` outstanding at a time.
pub async fn throughput(
    endpoints: &[String],
    requests: usize,
    inflight: usize,
    value_bytes: usize,
) -> anyhow::Result<ThroughputResult> {
    let leader = client::find_leader(endpoints).await?;
    let cli = client::connect(&leader)?;
    let value = Arc::new(vec![b'x'; value_bytes]);
    let per_worker = requests.div_ceil(inflight.max(1));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..inflight.max(1) {
        let mut cli = cli.clone();
        let value = value.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let t = Instant::now();
                let req = ProbeWriteRequest {
                    key: format!("bench/{w}/{}", i % 64),
                    value: value.to_vec(),
                    timeout_ms: 10_000,
                };
                cli.probe_write(req)
                    .await
                    .map_err(|s| anyhow!("{}", ais_from_status(&s)))?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::with_capacity(requests);
    while let Some(r) = set.join_next().await {
        all.extend(r.context("bench worker panicked")??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(ThroughputResult {
        inflight,
        requests: all.len(),
        value_bytes,
        elapsed_ms: elapsed * 1000.0,
        ops_per_sec: all.len() as f64 / elapsed,
        latency: percentiles(&mut all),
    })
}

/// One leader-kill trial.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverTrial {
    /// 1-based trial number.
    pub trial: usize,
    /// The leader that was killed.
    pub killed: u64,
    /// Time from `kill -9` of the leader to the next acknowledged proposal.
    pub ms: f64,
}

/// Try one probe write through each of `endpoints` in turn until one is acknowledged.
async fn write_until_acknowledged(
    endpoints: &[String],
    key: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut clients = endpoints
        .iter()
        .map(|e| client::connect(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut i = 0;
    loop {
        let c = &mut clients[i % endpoints.len()];
        i += 1;
        let mut req = tonic::Request::new(ProbeWriteRequest {
            key: key.into(),
            value: b"failover".to_vec(),
            timeout_ms: 250,
        });
        req.set_timeout(Duration::from_millis(300));
        if c.probe_write(req).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("no proposal was acknowledged within {limit:?}"));
        }
    }
}

/// Kill the leader `trials` times; measure kill → next acknowledged proposal each time, then
/// restart the killed node and let it catch up before the next trial.
pub async fn failover(
    cluster: &mut LocalCluster,
    trials: usize,
    mut progress: impl FnMut(&FailoverTrial),
) -> anyhow::Result<Vec<FailoverTrial>> {
    let mut out = Vec::new();
    for trial in 1..=trials {
        let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
        write_until_acknowledged(
            &cluster.endpoints(),
            "failover/warmup",
            Duration::from_secs(20),
        )
        .await
        .context("the cluster does not accept proposals before the trial")?;
        let survivors: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.addr.clone())
            .collect();
        let t0 = Instant::now();
        cluster.kill(leader)?;
        write_until_acknowledged(
            &survivors,
            &format!("failover/{trial}"),
            Duration::from_secs(30),
        )
        .await?;
        let t = FailoverTrial {
            trial,
            killed: leader,
            ms: t0.elapsed().as_secs_f64() * 1000.0,
        };
        progress(&t);
        out.push(t);
        cluster.spawn(leader)?;
        wait_caught_up(cluster, leader, Duration::from_secs(30)).await?;
    }
    Ok(out)
}

/// Wait until node `id` has applied as far as the leader had committed when we asked.
pub async fn wait_caught_up(
    cluster: &LocalCluster,
    id: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let addr = cluster.nodes[(id - 1) as usize].addr.clone();
    loop {
        let view = client::cluster_view(&cluster.endpoints()).await.ok();
        let target = view
            .as_ref()
            .and_then(|v| v.members.iter().find(|m| m.role == "leader"))
            .map(|m| m.commit);
        if let (Some(target), Ok(s)) = (target, client::node_status(&addr).await) {
            if s.applied >= target {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("node {id} did not catch up within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&mut s);
        assert_eq!(
            (p.min_ms, p.p50_ms, p.p99_ms, p.max_ms),
            (1.0, 50.0, 99.0, 100.0)
        );
        assert_eq!(percentiles(&mut []).p99_ms, 0.0);
    }
}

/// How long `detect` lets a fresh cluster settle before its first trial.
const POST_ELECTION_SETTLE_MS: u64 = 1_500;

/// One paused-node detection trial.
#[derive(Debug, Clone, Serialize)]
pub struct DetectTrial {
    /// 1-based trial number.
    pub trial: usize,
    /// The node that was paused (SIGSTOP).
    pub paused: u64,
    /// Time from SIGSTOP until every other member reports the node down.
    pub ms: f64,
}

/// The state `addr` reports for `node` ("up", "suspect", "down", "left"), if it answers.
async fn member_state(addr: &str, node: u64) -> Option<String> {
    use nines_proto::membership::v1::{membership_client::MembershipClient, MembersRequest};
    let ep = crate::client::endpoint(addr).ok()?;
    let mut c = MembershipClient::new(ep.connect_lazy());
    let v = c.members(MembersRequest {}).await.ok()?.into_inner();
    let m = v.members.into_iter().find(|m| m.id == node)?;
    Some(
        m.state()
            .as_str_name()
            .trim_start_matches("MEMBER_STATE_")
            .to_lowercase(),
    )
}

async fn wait_all_report(
    observers: &[String],
    node: u64,
    want: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let mut all = true;
        for o in observers {
            all &= member_state(o, node).await.as_deref() == Some(want);
        }
        if all {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "node {node} was not reported {want} by every member within {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Pause (SIGSTOP) a follower `trials` times; measure until every other member reports it down,
/// then resume it and wait until it is up again.
pub async fn detect(
    cluster: &LocalCluster,
    trials: usize,
    mut progress: impl FnMut(&DetectTrial),
) -> anyhow::Result<Vec<DetectTrial>> {
    use nix::{
        sys::signal::{kill, Signal},
        unistd::Pid,
    };
    let mut out = Vec::new();
    cluster.wait_leader(Duration::from_secs(20)).await?;
    // A new leader declares no one down for 2 × (lease + margin) after its election (see
    // docs/design.md): measure the steady state, not that window.
    tokio::time::sleep(Duration::from_millis(POST_ELECTION_SETTLE_MS)).await;
    for trial in 1..=trials {
        let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
        let node = cluster
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|&id| id != leader)
            .context("a follower")?;
        let observers: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.id != node)
            .map(|n| n.addr.clone())
            .collect();
        wait_all_report(&observers, node, "up", Duration::from_secs(20)).await?;
        let pid = Pid::from_raw(cluster.pid(node).context("node runs")? as i32);
        let t0 = Instant::now();
        kill(pid, Signal::SIGSTOP)?;
        let seen = wait_all_report(&observers, node, "down", Duration::from_secs(20)).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        kill(pid, Signal::SIGCONT)?;
        seen?;
        let t = DetectTrial {
            trial,
            paused: node,
            ms,
        };
        progress(&t);
        out.push(t);
        wait_all_report(&observers, node, "up", Duration::from_secs(20)).await?;
    }
    Ok(out)
}
