//! `session-client`: count up a session of the session server, one increment per interval,
//! reconnecting across failovers, and print each count with the instance that served it.
//!
//! ```sh
//! session-client --addr 127.0.0.1:7300 --session demo --count 0   # forever; Ctrl-C to stop
//! ```

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nines_example_session_server::SessionClient;

/// Count up a session of the session server across failovers.
#[derive(Parser)]
#[command(name = "session-client")]
struct Args {
    /// The server's addresses, tried in order (host:port, comma-separated).
    #[arg(long, env = "NINES_SESSION_ADDRS", default_value = "127.0.0.1:7300")]
    addr: String,
    /// The session id (A-Z a-z 0-9 - _ .; one client per session at a time).
    #[arg(long, default_value = "demo")]
    session: String,
    /// How many increments; 0 = until Ctrl-C.
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// Pause between increments, in ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// How long one request keeps reconnecting before the client gives up, in seconds.
    #[arg(long, default_value_t = 60)]
    retry_for_s: u64,
    /// Only print the session's state (no increment).
    #[arg(long)]
    get: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addrs: Vec<String> = args
        .addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    let mut client =
        SessionClient::new(addrs, &args.session, Duration::from_secs(args.retry_for_s))?;
    if args.get {
        let a = client.get().await?;
        println!(
            "session {}: count {} (seq {}), served by {} at {}",
            args.session, a.state.count, a.state.seq, a.served_by, a.addr
        );
        return Ok(());
    }
    let mut done = 0;
    let mut first = true;
    while args.count == 0 || done < args.count {
        if !first {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        let started = tokio::time::Instant::now();
        let a = client.incr().await.context("increment")?;
        let note = if a.reconnected && !first {
            format!(" (reconnected; {} ms)", started.elapsed().as_millis())
        } else {
            String::new()
        };
        println!(
            "session {}: count {} via {} at {}{note}",
            args.session, a.state.count, a.served_by, a.addr
        );
        first = false;
        done += 1;
    }
    Ok(())
}
