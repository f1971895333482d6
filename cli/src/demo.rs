//! `nines demo`: a throw-away local 3-node cluster running the counter example (2N), two
//! failover drills (kill -9 the active component, then its whole node), nothing to set up.

use std::time::{Duration, Instant};

use anyhow::Context;
use nines_cli::{
    amf_cmd,
    bench_amf::{self, AmfTrial, Fault},
    local::LocalCluster,
};
use nines_sdk::{CheckpointClient, OpenOptions};

/// How long the demo waits for the cluster and the application to settle.
const SETTLE: Duration = Duration::from_secs(30);

/// Run the demo; Ctrl-C at any point stops it and cleans up (dropping the cluster kills every
/// agent, whose components exit with their sessions, and deletes the temporary directory).
pub async fn run() -> anyhow::Result<()> {
    let bin = std::env::current_exe().context("cannot find the nines binary")?;
    let started = Instant::now();
    tokio::select! {
        r = story(&bin) => {
            r?;
            println!(
                "\ndemo finished in {:.1} s; everything it started is stopped and removed",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted: stopping the demo cluster and removing its files");
            Ok(())
        }
    }
}

async fn story(bin: &std::path::Path) -> anyhow::Result<()> {
    println!("starting a local 3-node cluster on loopback with the counter example (2N) ...");
    let mut cluster = bench_amf::start_counter_cluster(bin)?;
    let leader = cluster.wait_leader(SETTLE).await?;
    println!("  raft leader elected: node {leader}");
    bench_amf::wait_settled(&cluster.endpoints(), SETTLE).await?;
    println!("  counter deployed: one active, one standby, one spare\n");
    print_status(&cluster).await;

    println!(
        "\nthe active counts every 100 ms and checkpoints each value (quorum commit + fsync) ..."
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = counter_value(&cluster).await?;
    println!("  checkpointed count: {before}");

    println!("\ndrill 1: kill -9 the active component");
    let t = drill(&mut cluster, Fault::ComponentKill).await?;
    println!("\ndrill 2: kill -9 the active's whole node (agent and components)");
    let n = drill(&mut cluster, Fault::NodeKill).await?;
    bench_amf::wait_settled(&cluster.endpoints(), SETTLE).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = counter_value(&cluster).await?;
    println!();
    print_status(&cluster).await;

    anyhow::ensure!(
        after >= before,
        "the count went back from {before} to {after}: an acknowledged write was lost"
    );
    println!("\nsummary");
    println!(
        "  component kill → standby active: {:.0} ms (detected {:.0} ms, decided {:.0} ms)",
        t.confirmed_ms, t.detected_ms, t.decided_ms
    );
    println!(
        "  node kill      → standby active: {:.0} ms (node declared down after its lease)",
        n.confirmed_ms
    );
    println!("  count {before} before the drills, {after} after: each new active resumed from the checkpoint");
    println!(
        "  try it by hand: see README (deploy/local), `nines amf status`, `nines amf history`"
    );
    Ok(())
}

/// One failover drill; the killed node (if any) is restarted afterwards.
async fn drill(cluster: &mut LocalCluster, fault: Fault) -> anyhow::Result<AmfTrial> {
    bench_amf::wait_settled(&cluster.endpoints(), SETTLE).await?;
    let mut trials = bench_amf::run(cluster, 1, fault, |t| {
        println!(
            "  {} broken → detected after {:.0} ms, decided {:.0} ms, {} confirmed active {:.0} ms",
            t.killed_su, t.detected_ms, t.decided_ms, t.new_active_su, t.confirmed_ms
        );
    })
    .await?;
    trials.pop().context("one trial")
}

/// The counter's last checkpointed value (linearizable read).
async fn counter_value(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let client = CheckpointClient::connect(&cluster.endpoints()).await?;
    let name = format!("counter-{}", bench_amf::COUNTER_SI);
    let cp = client.open(&name, OpenOptions::existing()).await?;
    let v = cp.read(nines_example_counter::SECTION).await?;
    Ok(String::from_utf8_lossy(&v).parse().unwrap_or(0))
}

async fn print_status(cluster: &LocalCluster) {
    let eps = cluster.endpoints();
    match amf_cmd::fetch_status(&eps, false).await {
        Ok(st) => {
            let wd = amf_cmd::fetch_watchdogs(&eps).await;
            for line in amf_cmd::status_table(&st, &wd).lines() {
                println!("  {line}");
            }
        }
        Err(e) => println!("  status unavailable: {e:#}"),
    }
}
