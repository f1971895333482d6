//! `nines drill ...`: run a drill (or `--repeat N` of them) and print the timelines, the
//! summary and the verdict; the exit code names the first broken promise.

use std::io::{IsTerminal, Write};

use nines_cli::drill::{
    self, local::SupervisedCluster, report, DrillKind, DrillReport, DrillSpec, Flap,
};
use nines_cli::output::Format;

use crate::{DrillArgs, DrillCmd};

/// How long a `--local` cluster may take to elect a leader and deploy the counter.
const LOCAL_SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

fn spec(args: &DrillArgs) -> DrillSpec {
    let mut flap = None;
    let (kind, node, pause) = match &args.drill {
        DrillCmd::ComponentKill => (DrillKind::ComponentKill, None, None),
        DrillCmd::ComponentHang => (DrillKind::ComponentHang, None, None),
        DrillCmd::NodeKill { node } => (DrillKind::NodeKill, node.clone(), None),
        DrillCmd::LeaderKill => (DrillKind::LeaderKill, None, None),
        DrillCmd::Switchover => (DrillKind::Switchover, None, None),
        DrillCmd::AgentPause { node, duration } => {
            (DrillKind::AgentPause, node.clone(), Some(*duration))
        }
        DrillCmd::LinkFlap {
            node,
            down,
            up,
            span,
        } => {
            flap = Some(Flap {
                down: *down,
                up: *up,
                span: *span,
            });
            (DrillKind::LinkFlap, node.clone(), None)
        }
    };
    let mut s = DrillSpec::new(kind);
    s.si = args.si.clone();
    s.node = node;
    s.pause = pause.unwrap_or(s.pause);
    s.flap = flap.unwrap_or(s.flap);
    s.timeout = args.timeout;
    s.rejoin_timeout = args.rejoin_timeout;
    s.max_ms = args.max_ms;
    s
}

/// The live progress line on stderr: rewritten in place on a terminal, one line per new step
/// otherwise.
struct Progress {
    tty: bool,
    last_step: String,
}

impl Progress {
    fn show(&mut self, run: &str, msg: &str) {
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[K[{run}] {msg}");
            let _ = err.flush();
            return;
        }
        // "1234 ms: waiting for x" → "waiting for x": a new line only when the step changes.
        let step = msg.split_once(" ms: ").map_or(msg, |(_, s)| s).to_string();
        if step != self.last_step {
            let _ = writeln!(err, "[{run}] {msg}");
            self.last_step = step;
        }
    }

    fn clear(&mut self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
        self.last_step.clear();
    }
}

/// Run the drills; returns the exit code. With `-o json` a drill that could not run still prints
/// one JSON object (`{"ok": false, "exit_code": 4, "error": ...}`) for scripts.
pub async fn run(endpoints: &[String], args: DrillArgs, format: Format) -> anyhow::Result<u8> {
    match run_drills(endpoints, args, format).await {
        Err(e) if format == Format::Json => {
            let code = report::EXIT_NOT_RESTORED;
            let doc =
                serde_json::json!({"ok": false, "exit_code": code, "error": format!("{e:#}")});
            println!("{doc}");
            eprintln!("nines drill: error: {e:#}");
            Ok(code)
        }
        r => r,
    }
}

async fn run_drills(endpoints: &[String], args: DrillArgs, format: Format) -> anyhow::Result<u8> {
    let mut spec = spec(&args);
    if spec.kind == DrillKind::LinkFlap && !args.local {
        anyhow::bail!(
            "link-flap cuts a real network link, which it can only do to a cluster it put in \
             network namespaces of its own: run `nines drill link-flap --local` (as root, with \
             iproute2)"
        );
    }
    let local = match args.local {
        true => Some(start_local(spec.kind).await?),
        false => None,
    };
    spec.links = local.as_ref().and_then(SupervisedCluster::links);
    let eps = local
        .as_ref()
        .map_or_else(|| endpoints.to_vec(), SupervisedCluster::endpoints);
    let result = drill_runs(&eps, &spec, args.repeat.max(1), format).await;
    if let Some(l) = local {
        l.shutdown().await;
    }
    let runs = result?;
    let code = runs
        .iter()
        .map(DrillReport::exit_code)
        .find(|c| *c != 0)
        .unwrap_or(0);
    match format {
        Format::Json => println!("{}", report::json(&runs, code)),
        Format::Table if runs.len() > 1 => print!("\n{}", report::summary_text(&runs)),
        Format::Table => {}
    }
    if code != 0 {
        eprintln!("nines drill: {}", verdict(&runs, code));
    }
    Ok(code)
}

async fn drill_runs(
    eps: &[String],
    spec: &DrillSpec,
    repeat: usize,
    format: Format,
) -> anyhow::Result<Vec<DrillReport>> {
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        last_step: String::new(),
    };
    let mut runs = Vec::new();
    for i in 1..=repeat {
        let label = format!("{} {i}/{repeat}", spec.kind.name());
        let r = drill::run_once(eps, spec, &mut |m| progress.show(&label, m)).await;
        progress.clear();
        let r = r?;
        if format == Format::Table {
            println!("{}", report::text(&r));
        }
        let refused = r.injected_at_ms == 0;
        runs.push(r);
        if refused {
            break;
        }
    }
    Ok(runs)
}

/// Which promise broke, in one line.
fn verdict(runs: &[DrillReport], code: u8) -> String {
    let broken = runs
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.checks.iter().find(|c| !c.ok).map(|c| (i + 1, c)));
    match broken {
        Some((run, c)) => format!(
            "promise {} broken ({}) in run {run}: {}",
            c.promise, c.name, c.detail
        ),
        None if code == report::EXIT_NOT_RESTORED => {
            "the cluster was not left as found (see the notes above)".into()
        }
        None => String::new(),
    }
}

async fn start_local(kind: DrillKind) -> anyhow::Result<SupervisedCluster> {
    let bin = std::env::current_exe()?;
    let c = match kind {
        DrillKind::LinkFlap => SupervisedCluster::start_in_namespaces(&bin, vec![], true)?,
        _ => SupervisedCluster::start_with(&bin, vec![], true)?,
    };
    c.with(|c| {
        eprintln!("local drill cluster in {}", c.root().display());
        if let Some(certs) = c.certs_dir() {
            eprintln!(
                "it runs with mutual TLS on certificates it generated in {}",
                certs.display()
            );
        }
    });
    // Every call of the drill (status, faults, probes, samples) is the operator's.
    nines_cli::client::set_tls(c.client_tls());
    let eps = c.endpoints();
    drill::observe::wait_settled(&eps, nines_cli::bench_amf::COUNTER_SI, LOCAL_SETTLE).await?;
    Ok(c)
}
