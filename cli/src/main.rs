//! `nines`: the one binary — agent, status, admin, bench, demo.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use nines_cli::{
    amf_cmd, bench, bench_amf, bench_ckpt, cert_cmd, ckpt_cmd, client, evt_cmd,
    local::{LocalCluster, LocalOptions},
    members_cmd,
    output::{table, Format},
};
use nines_core::shutdown::Shutdown;
use nines_proto::cluster::v1::{AddNodeRequest, MembershipResponse, RemoveNodeRequest};

mod demo;
mod drill_cmd;

/// nines: carrier-grade high availability for Linux clusters.
///
/// Run one agent per node (`nines agent`), then drive the cluster from anywhere with the client
/// commands. Client commands reach the cluster through --endpoints (any agents' host:port); an
/// agent with a [tls] section also needs --ca, --cert and --key (mutual TLS).
#[derive(Parser)]
#[command(name = "nines", version, propagate_version = true)]
struct Cli {
    /// Agents to talk to, comma-separated host:port (any subset of the cluster will do).
    /// Default: the local cluster of deploy/local (127.0.0.1:7101,7102,7103).
    #[arg(long, global = true, env = "NINES_ENDPOINTS")]
    endpoints: Option<String>,
    /// The cluster's CA certificate (ca.pem), for agents that require mutual TLS; with --cert
    /// and --key the client dials https:// and checks each agent's certificate against it.
    #[arg(long, global = true, env = "NINES_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// This client's certificate (`nines cert client`: its role decides what it may do).
    #[arg(long, global = true, env = "NINES_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// This client's private key (the .key written with --cert).
    #[arg(long, global = true, env = "NINES_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an agent (one per node) until SIGTERM or Ctrl-C.
    ///
    /// Example: nines agent --config deploy/local/n1.toml
    Agent(AgentArgs),
    /// Show the cluster: leader, term, and each member's role and raft indexes.
    ///
    /// Unreachable members are shown as such; the command fails only if no endpoint answers.
    ///
    /// Example: nines status -o json
    Status,
    /// Show the members and their states (up, suspect, down, left) with the view number, or
    /// watch every change (joined, left, down, up) until Ctrl-C.
    ///
    /// Example: nines members --watch -o json
    Members(members_cmd::MembersArgs),
    /// Checkpoints: create, write, read, list, inspect, unlink.
    ///
    /// Example: nines ckpt write orders cursor --data 42
    #[command(subcommand)]
    Ckpt(ckpt_cmd::CkptCmd),
    /// Events: channels, publish, subscribe (with filters, priorities, retention), limits.
    ///
    /// Example: nines evt subscribe alarms --filter prefix:kind=link- -o json
    #[command(subcommand)]
    Evt(evt_cmd::EvtCmd),
    /// Availability management: service instances, their assignments, components, SUs.
    ///
    /// Example: nines amf status -o json
    #[command(subcommand)]
    Amf(AmfCmd),
    /// Administrative operations: AMF model and admin operations, cluster membership.
    ///
    /// Example: nines admin si-swap counter-si
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Benchmarks (use a release build: cargo run --release -- bench ...).
    ///
    /// Example: cargo run --release -- bench amf --trials 50
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Run a bundled example application as a component (the agent starts it; see
    /// deploy/local/model.toml).
    ///
    /// Example: nines example counter
    #[command(subcommand)]
    Example(ExampleCmd),
    /// Start a throw-away local 3-node cluster running the counter example (2N), kill -9 its
    /// active component and then its active node, print each failover's timeline, clean up.
    ///
    /// Needs nothing but this binary: temporary data dirs, free loopback ports.
    ///
    /// Example: nines demo
    Demo,
    /// Rehearse a failure against a running cluster and measure it: each drill injects one
    /// fault, prints a live progress line (stderr), then the timeline (fault injected, detected,
    /// decided, standby confirmed active, service restored, in ms) and checks the three promises:
    /// never two actives, no acknowledged write lost, failover fast and measured. It leaves the
    /// cluster as it found it. Exit code: 0 all held; 1 two actives; 2 an acknowledged write
    /// lost; 3 no failover (or too slow, or not measured); 4 the drill could not run or could
    /// not leave the cluster as found.
    ///
    /// Faults on a node go through its agent's drill endpoint, off unless its config has
    /// `[drill] enabled = true`. A killed agent is brought back by its supervisor (systemd
    /// Restart=, a container restart policy); see docs/design.md, "Drills".
    ///
    /// Example: nines drill component-kill --si counter-si --repeat 10
    Drill(DrillArgs),
    /// The cluster's identity: its CA, node certificates (cluster, node id, addresses) and
    /// client certificates (one role each), made by this binary; no openssl needed.
    ///
    /// Example: nines cert init --dir /etc/nines/tls --cluster prod
    #[command(subcommand)]
    Cert(cert_cmd::CertCmd),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// Example: nines completions bash > /etc/bash_completion.d/nines
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct DrillArgs {
    #[command(subcommand)]
    drill: DrillCmd,
    /// The SI to drill (default: the model's only SI).
    #[arg(long, global = true)]
    si: Option<String>,
    /// Run the drill N times (waiting for the SI to settle in between) and print min / p50 /
    /// p99 / max of each phase.
    #[arg(long, default_value_t = 1, global = true)]
    repeat: usize,
    /// How long from the fault until the SI must be protected again (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = ckpt_cmd::parse_duration, global = true)]
    timeout: Duration,
    /// How long a killed or paused agent may take to come back, and the SI to settle, after.
    #[arg(long, default_value = "60s", value_parser = ckpt_cmd::parse_duration, global = true)]
    rejoin_timeout: Duration,
    /// Break promise 3 if the standby is confirmed active later than this many ms after the
    /// fault.
    #[arg(long, global = true)]
    max_ms: Option<u64>,
    /// Start a throw-away local 3-node cluster (the counter example, drills enabled, killed
    /// agents restarted) instead of using --endpoints.
    #[arg(long, global = true)]
    local: bool,
}

#[derive(Subcommand)]
enum DrillCmd {
    /// kill -9 the SI's active component; its standby must take over.
    ///
    /// Example: nines drill component-kill --si counter-si
    ComponentKill,
    /// SIGSTOP the SI's active component: its watchdog or healthcheck must catch it (the
    /// process is killed and its standby takes over).
    ///
    /// Example: nines drill component-hang --si counter-si
    ComponentHang,
    /// kill -9 a node's agent and its components (default: the node of the SI's active); its
    /// supervisor must restart the agent.
    ///
    /// Example: nines drill node-kill --node n1
    NodeKill {
        /// The node's name (as in `nines status`).
        #[arg(long)]
        node: Option<String>,
    },
    /// kill -9 the raft leader's agent and its components; its supervisor must restart it.
    ///
    /// Example: nines drill leader-kill -o json
    LeaderKill,
    /// Swap the SI's active and standby (admin si-swap) and time the switchover.
    ///
    /// Example: nines drill switchover --si counter-si --repeat 5
    Switchover,
    /// SIGSTOP a node's agent, not its components (default: the node of the SI's active), for
    /// a while, then SIGCONT. Its components keep running: each must stop acting as active at
    /// its own lease deadline, before the cluster makes its standby active. (`pause` is an
    /// alias.)
    ///
    /// Example: nines drill agent-pause --node n2 --for 3s --repeat 20
    #[command(alias = "pause")]
    AgentPause {
        /// The node's name (as in `nines status`).
        #[arg(long)]
        node: Option<String>,
        /// How long the agent stays stopped.
        #[arg(long = "for", default_value = "3s", value_parser = ckpt_cmd::parse_duration)]
        duration: Duration,
    },
    /// Cut a node's network link and restore it, again and again (default: the node of the
    /// SI's active; down 300 ms, up 300 ms, for 6 s). Nodes cut off long enough are declared
    /// down and their SIs fail over; no two components may act as active at any moment, and
    /// the SI must be protected again once the link stays up.
    ///
    /// A link can only be cut where the drill made it: this drill needs --local, and root with
    /// iproute2 (`ip`), to put the throw-away cluster in network namespaces of its own.
    ///
    /// Example: sudo nines drill link-flap --local --repeat 5
    LinkFlap {
        /// The node's name (as in `nines status`).
        #[arg(long)]
        node: Option<String>,
        /// How long the link stays down each time.
        #[arg(long, default_value = "300ms", value_parser = ckpt_cmd::parse_duration)]
        down: Duration,
        /// How long it stays up between cuts.
        #[arg(long, default_value = "300ms", value_parser = ckpt_cmd::parse_duration)]
        up: Duration,
        /// How long the flapping lasts (the link is left up after).
        #[arg(long = "for", default_value = "6s", value_parser = ckpt_cmd::parse_duration)]
        span: Duration,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// The agent's TOML config (see deploy/local/n1.toml).
    #[arg(long)]
    config: PathBuf,
    /// Override the config's data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum ExampleCmd {
    /// The 2N counter (examples/counter): the active counts and checkpoints, the standby takes
    /// over from the checkpoint. Needs NINES_COMPONENT, NINES_SOCKET and NINES_ENDPOINTS, which
    /// the agent sets.
    ///
    /// Example (a model's component): instantiate = '"$NINES_BIN" example counter'
    Counter,
    /// The session server (examples/session-server): a TCP service whose client sessions
    /// survive failover through checkpoints. Needs the same environment as the counter.
    ///
    /// Example (a model's component): instantiate = '"$NINES_BIN" example session-server'
    SessionServer,
}

#[derive(Subcommand)]
enum AmfCmd {
    /// Each SI's assignments (HA state and epoch per SU), the SUs' states, the components'
    /// processes.
    ///
    /// Example: nines amf status -o json
    Status {
        /// Read the contacted agent's local copy instead of a linearizable read (works without
        /// a quorum; may lag).
        #[arg(long)]
        stale: bool,
    },
    /// Recent AMF events: detections, decisions, assignments, confirmations, admin operations.
    ///
    /// Example: nines amf history -o json
    History,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Cluster membership.
    ///
    /// Example: nines admin node add --id 4 --addr 127.0.0.1:7104 --name n4
    #[command(subcommand)]
    Node(NodeCmd),
    /// The AMF model (service groups, SUs, components, SIs, CSIs).
    ///
    /// Example: nines admin model apply deploy/local/model.toml
    #[command(subcommand)]
    Model(ModelCmd),
    /// Take an SU, a node's SUs, or an SI out of service (their SIs move gracefully).
    ///
    /// Example: nines admin lock su counter-1
    Lock(AdminTarget),
    /// Put an SU, a node's SUs, or an SI back in service.
    ///
    /// Example: nines admin unlock su counter-1
    Unlock(AdminTarget),
    /// Terminate a locked SU's components (it stays uninstantiated).
    ///
    /// Example: nines admin lock-instantiation su counter-1
    LockInstantiation(AdminTarget),
    /// Allow a locked SU's components to be instantiated again.
    ///
    /// Example: nines admin unlock-instantiation su counter-1
    UnlockInstantiation(AdminTarget),
    /// Like lock, but the active components finish their work first (QUIESCING).
    ///
    /// Example: nines admin shutdown su counter-1
    Shutdown(AdminTarget),
    /// Switch over an SI: its standby becomes active, its active becomes standby.
    ///
    /// Example: nines admin si-swap counter-si
    SiSwap {
        /// The SI.
        si: String,
    },
    /// Restart a component or every component of an SU in place.
    ///
    /// Example: nines admin restart component counter-1-app
    Restart(AdminTarget),
    /// Clear an SU's fault and restart counters (or a node's failover counter).
    ///
    /// Example: nines admin repaired su counter-1
    Repaired(AdminTarget),
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Validate a model file and put it in force. The same model twice changes nothing; a
    /// changed model adds, removes and changes entities, restarting only what changed.
    ///
    /// Example: nines admin model apply deploy/local/model.toml
    Apply {
        /// The model file (TOML).
        file: PathBuf,
    },
}

#[derive(Args)]
struct AdminTarget {
    /// What kind of entity: su, node, si or component.
    #[arg(value_parser = ["su", "node", "si", "component"])]
    kind: String,
    /// Its name in the model.
    name: String,
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Add a voter. Start its agent first with `join = true` in its config.
    ///
    /// Example: nines admin node add --id 4 --addr 127.0.0.1:7104 --name n4
    Add {
        /// The new node's id (positive, never used before).
        #[arg(long)]
        id: u64,
        /// Its host:port.
        #[arg(long)]
        addr: String,
        /// Its name (default: n and its id, e.g. n4).
        #[arg(long)]
        name: Option<String>,
    },
    /// Take a member out by plan, as a switchover: its SUs are locked out of service gracefully
    /// (each active quiesced before its standby takes over), then it leaves (reported `left`,
    /// never as a failure) and its agent stops its components. Fails, leaving the node locked
    /// and nothing moved abruptly, if its assignments have not moved within the client timeout.
    ///
    /// Example: nines admin node drain --id 3
    Drain {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
    /// Remove a member. Removing the leader first moves leadership elsewhere.
    ///
    /// Example: nines admin node remove --id 3
    Remove {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Proposal throughput and latency (acknowledged after quorum commit + fsync).
    ///
    /// Example: nines bench raft --local --inflight 1,64
    Raft {
        /// Start a throw-away local 3-node cluster for the run instead of using --endpoints.
        #[arg(long)]
        local: bool,
        /// Proposals per run.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Proposals in flight; a comma-separated list runs once per value.
        #[arg(long, default_value = "1,64", value_delimiter = ',')]
        inflight: Vec<usize>,
        /// Bytes per proposal value.
        #[arg(long, default_value_t = 128)]
        value_bytes: usize,
    },
    /// Checkpoint write and read throughput and latency (N clients, leader first), against
    /// --endpoints, or a throw-away local 3-node cluster when no endpoints are given (with
    /// mutual TLS under --tls; --compare-tls measures plaintext and mutual TLS and prints the
    /// cost).
    ///
    /// Example: nines bench ckpt --clients 64 --value-size 256 --duration 10s --compare-tls
    Ckpt(bench_ckpt::CkptBenchArgs),
    /// Pause (SIGSTOP) a follower of a throw-away local cluster N times; measure until every
    /// other member reports it down.
    ///
    /// Example: nines bench detect --trials 20
    Detect {
        /// Number of pauses.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Cluster size.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
    /// Kill -9 the leader of a throw-away local 3-node cluster, N times; measure the time to the
    /// next acknowledged proposal.
    ///
    /// Example: nines bench failover --trials 10
    Failover {
        /// Number of leader kills.
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
    /// Event service: publish → delivery latency (p50/p99/max) and throughput, with subscribers
    /// spread over the agents. Against --endpoints, or a throw-away local 3-node cluster.
    ///
    /// Example: cargo run --release -- bench evt --rate 5000 --subscribers 3
    Evt {
        /// Publishers.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Subscribers (one per agent, round robin).
        #[arg(long, default_value_t = 3)]
        subscribers: usize,
        /// Target events per second over all publishers (0 = as fast as possible).
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
        /// Publishes in flight per publisher.
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// How long to publish and measure, e.g. 30s (after the warm-up). A p99 needs a window
        /// that holds several of the agents' periodic snapshots.
        #[arg(long, default_value = "10s", value_parser = ckpt_cmd::parse_duration)]
        duration: Duration,
        /// How long to publish first at the same rate without measuring (connections open, the
        /// agents' memory is touched once), e.g. 1s; 0s measures from the first event.
        #[arg(long, default_value = "1s", value_parser = ckpt_cmd::parse_duration)]
        warmup: Duration,
        /// Payload bytes per event.
        #[arg(long, default_value_t = 256)]
        value_size: usize,
    },
    /// AMF failover of the counter example's 2N SI on a throw-away local 3-node cluster: kill -9
    /// the active component (or, with --node-kill, its whole agent) and time detected, decided
    /// and standby-confirmed-active from the kill.
    ///
    /// Example: cargo run --release -- bench amf --trials 50
    Amf {
        /// Number of kills.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Kill the active's whole agent (node loss) instead of its component.
        #[arg(long, conflicts_with = "hang")]
        node_kill: bool,
        /// SIGSTOP the active component instead of killing it: its watchdog must catch it
        /// (the counter's period is 1500 ms).
        #[arg(long)]
        hang: bool,
    },
}

/// mimalloc instead of glibc malloc: the agent's write path allocates per request and per raft
/// message, and glibc's malloc/free were about a tenth of its CPU (docs/design.md, "Write path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The agent reads its own TLS from its config, an example (a component) reads NINES_CA...
    // through the SDK, and cert/completions talk to nobody; every other command is a client.
    let client_cmd = !matches!(
        cli.command,
        Cmd::Agent(_) | Cmd::Example(_) | Cmd::Cert(_) | Cmd::Completions { .. }
    );
    if client_cmd {
        match client::tls_from_flags(cli.ca.clone(), cli.cert.clone(), cli.key.clone()) {
            Ok(tls) => client::set_tls(tls),
            Err(e) => {
                eprintln!("nines: error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Cmd::Drill(args) = cli.command {
        let endpoints = client::parse_endpoints(
            cli.endpoints
                .as_deref()
                .unwrap_or(client::DEFAULT_ENDPOINTS),
        );
        return match rt.block_on(drill_cmd::run(&endpoints, args, cli.output)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("nines drill: error: {e:#}");
                ExitCode::from(nines_cli::drill::report::EXIT_NOT_RESTORED)
            }
        };
    }
    let result = rt.block_on(dispatch(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nines: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let given = cli.endpoints.is_some();
    let endpoints = client::parse_endpoints(
        cli.endpoints
            .as_deref()
            .unwrap_or(client::DEFAULT_ENDPOINTS),
    );
    match cli.command {
        Cmd::Ckpt(c) => ckpt_cmd::run(c, &endpoints, cli.output).await,
        Cmd::Evt(c) => evt_cmd::run(c, &endpoints, cli.output).await,
        Cmd::Agent(a) => run_agent(a).await,
        Cmd::Status => status(&endpoints, cli.output).await,
        Cmd::Members(a) => members_cmd::run(a, &endpoints, cli.output).await,
        Cmd::Admin(AdminCmd::Node(n)) => admin_node(&endpoints, n, cli.output).await,
        Cmd::Admin(a) => admin_amf(&endpoints, a, cli.output).await,
        Cmd::Amf(AmfCmd::Status { stale }) => amf_cmd::status(&endpoints, stale, cli.output).await,
        Cmd::Amf(AmfCmd::History) => amf_cmd::history(&endpoints, cli.output).await,
        Cmd::Bench(b) => run_bench(given.then_some(&endpoints[..]), b, cli.output).await,
        Cmd::Demo => demo::run().await,
        Cmd::Cert(c) => cert_cmd::run(c, cli.output),
        Cmd::Drill(_) => unreachable!("drills run from main"),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nines", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow!("cannot write the completion script: {e}"))
                }
                _ => Ok(()),
            }
        }
        Cmd::Example(ExampleCmd::Counter) => nines_example_counter::run()
            .await
            .map_err(|e| anyhow!("{e}")),
        Cmd::Example(ExampleCmd::SessionServer) => nines_example_session_server::run()
            .await
            .map_err(|e| anyhow!("{e}")),
    }
}

async fn run_agent(a: AgentArgs) -> anyhow::Result<()> {
    let mut cfg = nines_agent::AgentConfig::load(&a.config)?;
    // Logs (text or JSON) and OTLP trace export; dropped (flushed) when the agent returns.
    let _telemetry = nines_agent::telemetry::init(&cfg, a.log_json);
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    let (shutdown, signal) = Shutdown::new();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        shutdown.trigger();
        // Keep the trigger alive: dropping it is not a second signal.
        std::future::pending::<()>().await;
    });
    nines_agent::run(cfg, signal).await.map_err(|e| {
        tracing::error!("agent stopped: {e}");
        anyhow!(e)
    })
}

async fn status(endpoints: &[String], format: Format) -> anyhow::Result<()> {
    let view = client::cluster_view(endpoints).await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string(&view)?);
        return Ok(());
    }
    let leader = match view.leader {
        Some(l) => {
            let name = view
                .members
                .iter()
                .find(|m| m.id == l)
                .map(|m| m.name.as_str());
            format!("{l} ({})", name.unwrap_or("?"))
        }
        None => "none".into(),
    };
    println!("term {} · leader {leader}", view.term);
    let rows: Vec<Vec<String>> = view
        .members
        .iter()
        .map(|m| {
            let unreachable = m.role == "unreachable";
            let idx = |v: u64| {
                if unreachable {
                    "-".into()
                } else {
                    v.to_string()
                }
            };
            vec![
                m.id.to_string(),
                m.name.clone(),
                m.addr.clone(),
                m.role.clone(),
                idx(m.commit),
                idx(m.applied),
                m.protocol_version.map_or("-".into(), |v| format!("v{v}")),
                m.health.clone().unwrap_or_else(|| "-".into()),
                m.last_heartbeat_ms
                    .map_or("-".into(), |a| format!("{a} ms")),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "ID",
                "NAME",
                "ADDRESS",
                "ROLE",
                "COMMIT",
                "APPLIED",
                "PROTOCOL",
                "HEALTH",
                "LAST HEARTBEAT"
            ],
            &rows
        )
    );
    Ok(())
}

async fn admin_amf(endpoints: &[String], cmd: AdminCmd, format: Format) -> anyhow::Result<()> {
    let (op, t) = match cmd {
        AdminCmd::Node(_) => unreachable!("handled by admin_node"),
        AdminCmd::Model(ModelCmd::Apply { file }) => {
            return amf_cmd::apply_model(endpoints, &file, format).await
        }
        AdminCmd::SiSwap { si } => {
            return amf_cmd::admin(endpoints, "si-swap", "si", &si, format).await
        }
        AdminCmd::Lock(t) => ("lock", t),
        AdminCmd::Unlock(t) => ("unlock", t),
        AdminCmd::LockInstantiation(t) => ("lock-instantiation", t),
        AdminCmd::UnlockInstantiation(t) => ("unlock-instantiation", t),
        AdminCmd::Shutdown(t) => ("shutdown", t),
        AdminCmd::Restart(t) => ("restart", t),
        AdminCmd::Repaired(t) => ("repaired", t),
    };
    amf_cmd::admin(endpoints, op, &t.kind, &t.name, format).await
}

/// A membership change for the cluster service.
enum Change {
    Add(AddNodeRequest),
    Remove(RemoveNodeRequest),
}

async fn admin_node(endpoints: &[String], cmd: NodeCmd, format: Format) -> anyhow::Result<()> {
    let change = match cmd {
        NodeCmd::Drain { id } => return members_cmd::drain(id, endpoints, format).await,
        NodeCmd::Add { id, addr, name } => Change::Add(AddNodeRequest {
            id,
            name: name.unwrap_or_default(),
            addr,
            timeout_ms: 10_000,
        }),
        NodeCmd::Remove { id } => Change::Remove(RemoveNodeRequest {
            id,
            timeout_ms: 10_000,
        }),
    };
    let mut last = anyhow!("no endpoints given");
    for ep in endpoints {
        let mut c = client::connect(ep)?;
        let r = match &change {
            Change::Add(req) => c.add_node(req.clone()).await,
            Change::Remove(req) => c.remove_node(*req).await,
        };
        match r {
            Ok(resp) => return print_members(resp.into_inner(), format),
            Err(s) if client::unreached(ep, &s) => last = client::call_error(ep, &s),
            Err(s) => return Err(client::call_error(ep, &s)),
        }
    }
    Err(last.context("no agent answered"))
}

fn print_members(m: MembershipResponse, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        let members: Vec<serde_json::Value> = m
            .members
            .iter()
            .map(
                |m| serde_json::json!({"id": m.id, "name": m.name, "addr": m.addr, "kind": m.kind}),
            )
            .collect();
        println!("{}", serde_json::json!({ "members": members }));
    } else {
        let rows: Vec<Vec<String>> = m
            .members
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.name.clone(),
                    m.addr.clone(),
                    m.kind.clone(),
                ]
            })
            .collect();
        println!("{}", table(&["ID", "NAME", "ADDRESS", "KIND"], &rows));
    }
    Ok(())
}

/// `given`: the endpoints the user named (None: the default, or a local cluster where a
/// benchmark can start one).
async fn run_bench(given: Option<&[String]>, cmd: BenchCmd, format: Format) -> anyhow::Result<()> {
    let default_endpoints = client::parse_endpoints(client::DEFAULT_ENDPOINTS);
    let endpoints = given.unwrap_or(&default_endpoints);
    let bin = std::env::current_exe().context("cannot find the nines binary")?;
    match cmd {
        BenchCmd::Ckpt(a) => bench_ckpt::run(a, given, &bin, format).await,
        BenchCmd::Raft {
            local,
            requests,
            inflight,
            value_bytes,
        } => {
            let cluster = if local {
                let c = LocalCluster::start(&bin, 3, LocalOptions::default())?;
                client::set_tls(c.client_tls());
                c.wait_leader(Duration::from_secs(30)).await?;
                Some(c)
            } else {
                None
            };
            let eps = cluster
                .as_ref()
                .map_or(endpoints.to_vec(), |c| c.endpoints());
            let mut results = Vec::new();
            for k in inflight {
                if format == Format::Table {
                    eprintln!("running {requests} proposals with {k} in flight ...");
                }
                let r = bench::throughput(&eps, requests, k, value_bytes).await?;
                if format == Format::Table {
                    println!(
                        "inflight {:>3}: {:>8.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
                        r.inflight, r.ops_per_sec, r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms
                    );
                }
                results.push(r);
            }
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::json!({ "bench": "raft", "runs": results })
                );
            }
            Ok(())
        }
        BenchCmd::Detect { trials, nodes } => {
            let cluster = LocalCluster::start(&bin, nodes, LocalOptions::default())?;
            client::set_tls(cluster.client_tls());
            let table_out = format == Format::Table;
            let out = bench::detect(&cluster, trials, |t| {
                if table_out {
                    println!(
                        "trial {:>2}: paused node {} → down everywhere after {:>5.0} ms",
                        t.trial, t.paused, t.ms
                    );
                }
            })
            .await?;
            let ms = out.iter().map(|t| t.ms).collect();
            print_trials(format, "detect", "pause → agreed down", &out, ms)?;
            Ok(())
        }
        BenchCmd::Evt {
            publishers,
            subscribers,
            rate,
            inflight,
            duration,
            warmup,
            value_size,
        } => {
            let cfg = nines_cli::bench_evt::EvtBenchConfig {
                publishers,
                subscribers,
                rate,
                duration,
                warmup,
                value_size,
                inflight,
            };
            let local;
            let eps = match given {
                Some(e) => e.to_vec(),
                None => {
                    local = LocalCluster::start(&bin, 3, LocalOptions::default())?;
                    client::set_tls(local.client_tls());
                    local.wait_leader(Duration::from_secs(30)).await?;
                    local.endpoints()
                }
            };
            let r = nines_cli::bench_evt::run(&eps, &cfg).await?;
            if format == Format::Json {
                println!("{}", serde_json::json!({ "bench": "evt", "result": r }));
            } else {
                println!(
                    "after a {} ms warm-up: published {:.0} events/s (publish p50 {:.2} ms, p99 \
                     {:.2} ms); delivered {} (lost {}): publish → delivery p50 {:.2} ms · p99 \
                     {:.2} ms · max {:.2} ms",
                    r.warmup_ms,
                    r.ops_per_sec,
                    r.publish.p50_ms,
                    r.publish.p99_ms,
                    r.delivered,
                    r.lost,
                    r.delivery.p50_ms,
                    r.delivery.p99_ms,
                    r.delivery.max_ms
                );
            }
            Ok(())
        }
        BenchCmd::Amf {
            trials,
            node_kill,
            hang,
        } => {
            let mut cluster = bench_amf::start_counter_cluster(&bin)?;
            client::set_tls(cluster.client_tls());
            let (fault, what) = match (node_kill, hang) {
                (true, _) => (bench_amf::Fault::NodeKill, "kill -9 of the active node"),
                (_, true) => (
                    bench_amf::Fault::ComponentHang,
                    "SIGSTOP of the active component",
                ),
                _ => (
                    bench_amf::Fault::ComponentKill,
                    "kill -9 of the active component",
                ),
            };
            if format == Format::Table {
                eprintln!(
                    "local cluster in {}; {trials} trials: {what}",
                    cluster.root().display()
                );
            }
            let table_out = format == Format::Table;
            let out = bench_amf::run(&mut cluster, trials, fault, |t| {
                if table_out {
                    println!(
                        "trial {:>2}: broke {} → detected {:>5.0} ms, decided {:>5.0} ms, {} \
                         active {:>5.0} ms",
                        t.trial,
                        t.killed_su,
                        t.detected_ms,
                        t.decided_ms,
                        t.new_active_su,
                        t.confirmed_ms
                    );
                }
            })
            .await?;
            let ms = out.iter().map(|t| t.confirmed_ms).collect();
            let label = format!("{what} → standby confirmed active");
            print_trials(format, "amf", &label, &out, ms)?;
            Ok(())
        }
        BenchCmd::Failover { trials } => {
            let mut cluster = LocalCluster::start(&bin, 3, LocalOptions::default())?;
            client::set_tls(cluster.client_tls());
            if format == Format::Table {
                eprintln!(
                    "local cluster in {}; {trials} leader kills",
                    cluster.root().display()
                );
            }
            let table_out = format == Format::Table;
            let out = bench::failover(&mut cluster, trials, |t| {
                if table_out {
                    println!(
                        "trial {:>2}: killed leader {} → next commit after {:>6.0} ms",
                        t.trial, t.killed, t.ms
                    );
                }
            })
            .await?;
            let ms = out.iter().map(|t| t.ms).collect();
            print_trials(format, "failover", "leader kill → next commit", &out, ms)?;
            Ok(())
        }
    }
}

/// Print a trial benchmark's summary: min / p50 / p99 / max for people, or one JSON object with
/// every trial for scripts.
fn print_trials<T: serde::Serialize>(
    format: Format,
    bench: &str,
    label: &str,
    trials: &[T],
    mut ms: Vec<f64>,
) -> anyhow::Result<()> {
    let p = bench::percentiles(&mut ms);
    if format == Format::Json {
        let doc = serde_json::json!({ "bench": bench, "trials": trials, "summary": p });
        println!("{doc}");
    } else {
        println!(
            "{label}: min {:.0} ms · p50 {:.0} ms · p99 {:.0} ms · max {:.0} ms",
            p.min_ms, p.p50_ms, p.p99_ms, p.max_ms
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every visible command, at every level, teaches by an example in its `--help`.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_long_about()
                    .or(sub.get_about())
                    .map(|s| s.to_string());
                if !help.is_some_and(|h| h.contains("Example")) {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "nines", &mut missing);
        missing.retain(|p| !p.ends_with(" help"));
        assert!(missing.is_empty(), "no Example in --help of: {missing:?}");
    }
}
