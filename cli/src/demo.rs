//! `nines demo`: a throw-away local cluster and a failover drill, nothing to set up.

use std::time::{Duration, Instant};

use anyhow::Context;
use nines_cli::{
    bench, client,
    local::{LocalCluster, LocalOptions},
};
use nines_proto::cluster::v1::{ProbeReadRequest, ProbeWriteRequest};

/// Run the demo; Ctrl-C at any point stops it and cleans up (dropping the cluster kills every
/// agent and deletes the temporary directory).
pub async fn run() -> anyhow::Result<()> {
    let bin = std::env::current_exe().context("cannot find the nines binary")?;
    let started = Instant::now();
    tokio::select! {
        r = story(&bin) => {
            r?;
            println!("\ndemo finished in {:.1} s; everything it started is stopped and removed", started.elapsed().as_secs_f64());
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted: stopping the demo cluster and removing its files");
            Ok(())
        }
    }
}

async fn story(bin: &std::path::Path) -> anyhow::Result<()> {
    println!("starting a local 3-node cluster on loopback ...");
    let mut cluster = LocalCluster::start(bin, 3, LocalOptions::default())?;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    println!("leader elected: node {leader}\n");
    print_status(&cluster).await;

    println!("\nwriting 100 probe entries (each acknowledged after quorum commit + fsync) ...");
    let mut c = client::connect(&cluster.nodes[0].addr)?;
    for i in 0..100 {
        let req = ProbeWriteRequest {
            key: format!("demo/{i}"),
            value: i.to_string().into_bytes(),
            timeout_ms: 5_000,
        };
        c.probe_write(req).await.context("probe write")?;
    }

    println!("drill: kill -9 the leader (node {leader}) and time the next acknowledged write ...");
    let mut trials = bench::failover(&mut cluster, 1, |t| {
        println!(
            "  leader {} killed → next write acknowledged after {:.0} ms",
            t.killed, t.ms
        );
    })
    .await?;
    let t = trials.pop().context("one trial")?;
    println!("  node {} restarted and caught up\n", t.killed);
    print_status(&cluster).await;

    println!("\nchecking that no acknowledged write was lost (linearizable reads) ...");
    let mut missing = 0;
    for i in 0..100 {
        let r = c
            .probe_read(ProbeReadRequest {
                key: format!("demo/{i}"),
                stale: false,
                timeout_ms: 5_000,
            })
            .await
            .context("probe read")?
            .into_inner();
        if !r.found || r.value != i.to_string().into_bytes() {
            missing += 1;
        }
    }
    anyhow::ensure!(
        missing == 0,
        "{missing} acknowledged writes were lost: promise 2 is broken"
    );
    println!("  all 100 acknowledged writes present");
    println!("\n(the AMF part of the demo — an example application failing over — arrives with the AMF service)");
    Ok(())
}

async fn print_status(cluster: &LocalCluster) {
    match client::cluster_view(&cluster.endpoints()).await {
        Ok(v) => {
            for m in v.members {
                println!(
                    "  node {} {:<6} {:<22} {:<12} commit {}",
                    m.id, m.name, m.addr, m.role, m.commit
                );
            }
        }
        Err(e) => println!("  status unavailable: {e:#}"),
    }
}
