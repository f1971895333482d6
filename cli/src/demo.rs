//! `nines demo`: a throw-away local 3-node cluster running the counter example (2N), two
//! failover drills (kill -9 the active component, then its whole node) run by the same engine as
//! `nines drill`, nothing to set up.

use std::time::{Duration, Instant};

use anyhow::Context;
use nines_cli::{
    amf_cmd, bench_amf,
    drill::{local::SupervisedCluster, report, run_once, DrillKind, DrillReport, DrillSpec},
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
    let cluster = SupervisedCluster::start_with(bin, vec![], true)?;
    if let Some(certs) = cluster.with(|c| c.certs_dir().map(std::path::Path::to_path_buf)) {
        println!(
            "  it runs with mutual TLS on certificates it generated in {} (agents, this client \
             and the components each prove who they are)",
            certs.display()
        );
    }
    // Every call the demo makes (status, drills, the counter's checkpoint) is the operator's.
    nines_cli::client::set_tls(cluster.client_tls());
    let eps = cluster.endpoints();
    let r = drills(&eps).await;
    cluster.shutdown().await;
    r
}

async fn drills(eps: &[String]) -> anyhow::Result<()> {
    bench_amf::wait_settled(eps, SETTLE).await?;
    println!("  counter deployed: one active, one standby, one spare\n");
    print_status(eps).await;

    println!(
        "\nthe active counts every 100 ms and checkpoints each value (quorum commit + fsync) ..."
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = counter_value(eps).await?;
    println!("  checkpointed count: {before}");

    println!("\ndrill 1: kill -9 the active component (nines drill component-kill)");
    let t = drill(eps, DrillKind::ComponentKill).await?;
    println!(
        "\ndrill 2: kill -9 the active's whole node, agent and components (nines drill node-kill)"
    );
    let n = drill(eps, DrillKind::NodeKill).await?;
    bench_amf::wait_settled(eps, SETTLE).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = counter_value(eps).await?;
    println!();
    print_status(eps).await;

    anyhow::ensure!(
        after >= before,
        "the count went back from {before} to {after}: an acknowledged write was lost"
    );
    let ms = |r: &DrillReport, p: &str| r.phase_ms(p).unwrap_or(f64::NAN);
    println!("\nsummary");
    println!(
        "  component kill → standby confirmed active: {:.0} ms (detected {:.0} ms, decided {:.0} ms)",
        ms(&t, "confirmed"),
        ms(&t, "detected"),
        ms(&t, "decided")
    );
    println!(
        "  node kill      → standby confirmed active: {:.0} ms (node declared down after its lease)",
        ms(&n, "confirmed")
    );
    println!("  count {before} before the drills, {after} after: each new active resumed from the checkpoint");
    println!("  never two actives, no acknowledged write lost: checked by each drill");
    println!(
        "  try it by hand: see README (deploy/local), `nines drill --help`, `nines amf history`"
    );
    Ok(())
}

/// One drill with its timeline; a broken promise stops the demo. The supervisor restarts a
/// killed agent, as systemd would.
async fn drill(eps: &[String], kind: DrillKind) -> anyhow::Result<DrillReport> {
    let r = run_once(eps, &DrillSpec::new(kind), &mut |_| {}).await?;
    for line in report::text(&r).lines() {
        println!("  {line}");
    }
    anyhow::ensure!(r.ok, "the {} drill failed (see above)", kind.name());
    Ok(r)
}

/// The counter's last checkpointed value (linearizable read).
async fn counter_value(eps: &[String]) -> anyhow::Result<u64> {
    let client = CheckpointClient::connect_with(eps, nines_cli::client::sdk_config()).await?;
    let name = format!("counter-{}", bench_amf::COUNTER_SI);
    let cp = client.open(&name, OpenOptions::existing()).await?;
    let v = cp.read(nines_example_counter::SECTION).await?;
    Ok(String::from_utf8_lossy(&v).parse().unwrap_or(0))
}

async fn print_status(eps: &[String]) {
    match amf_cmd::fetch_status(eps, false).await {
        Ok(st) => {
            let local = amf_cmd::fetch_node_local(eps).await;
            for line in amf_cmd::status_table(&st, &local).lines() {
                println!("  {line}");
            }
        }
        Err(e) => println!("  status unavailable: {e:#}"),
    }
}
