//! The command line: `publish` (raise or clear an alarm) and `subscribe` (print alarms).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use nines_sdk::{Delivery, ErrorCode, EventClient, EventStream, Subscription};

use crate::alarm::{self, Alarm, Severity};

/// The local cluster of deploy/local, when neither `--endpoints` nor `NINES_ENDPOINTS` is given.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";
/// After this many stream errors in a row (no agent reachable within the client's deadline
/// each time), the subscriber gives up.
pub const STREAM_ERRORS_MAX: u32 = 12;

/// An alarm publisher and subscriber on the nines event service.
#[derive(Debug, Parser)]
#[command(name = "nines-events")]
pub struct Cli {
    /// The agents (host:port, comma-separated).
    #[arg(long, global = true, env = "NINES_ENDPOINTS", default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: String,
    /// The channel (created if missing).
    #[arg(long, global = true, default_value = "alarms")]
    pub channel: String,
    /// One JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Raise an alarm, or clear one.
    ///
    /// Example: nines-events publish --severity major --source eth0 --text "link down"
    ///
    /// Example: nines-events publish --clear 12 --source eth0 --text "link up"
    Publish(PublishArgs),
    /// Print alarms as they come: the active (retained) ones first, then new ones.
    ///
    /// Example: nines-events subscribe --severity 'maj*' --state-file /tmp/console.last
    Subscribe(SubscribeArgs),
}

/// `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Raise an alarm of this severity: critical, major, minor or warning.
    #[arg(long, required_unless_present = "clear", conflicts_with = "clear")]
    pub severity: Option<String>,
    /// End alarm ID: stop retaining it and publish a `cleared` event for it.
    #[arg(long, value_name = "ID")]
    pub clear: Option<u64>,
    /// What the alarm is about (e.g. eth0, disk-3).
    #[arg(long)]
    pub source: String,
    /// The alarm's text.
    #[arg(long, default_value = "")]
    pub text: String,
    /// How long a raised alarm is retained if nobody clears it (500ms, 30s, 5m, 1h).
    #[arg(long, default_value = "1h", value_parser = alarm::parse_duration)]
    pub retention: std::time::Duration,
    /// The publisher's name.
    #[arg(long, default_value = "nines-events")]
    pub publisher: String,
}

/// `subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Only this severity: `major` exactly, `maj*` as a prefix.
    #[arg(long)]
    pub severity: Option<String>,
    /// Only this source: `eth0` exactly, `eth*` as a prefix.
    #[arg(long)]
    pub source: Option<String>,
    /// Start after event ID (0: the retained alarms, then new ones).
    #[arg(long, value_name = "ID")]
    pub from: Option<u64>,
    /// Remember where this subscriber is in FILE, and resume from there when started again.
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Stop after this many alarms (0: never).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// Run `cli`, writing its output to `out`.
///
/// # Errors
/// Bad arguments, an unreachable cluster, a refused publish, a subscription that ended.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let endpoints = nines_sdk::parse_endpoints(&cli.endpoints).context("--endpoints")?;
    let events = EventClient::connect(&endpoints)
        .await
        .with_context(|| format!("cannot reach the event service at {}", cli.endpoints))?;
    match cli.command {
        Command::Publish(a) => publish(&events, &cli.channel, cli.json, a, out).await,
        Command::Subscribe(a) => subscribe(&events, &cli.channel, cli.json, a, out).await,
    }
}

async fn publish(
    events: &EventClient,
    channel: &str,
    json: bool,
    a: PublishArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if let Some(id) = a.clear {
        // Stop retaining the alarm first: a console starting now must not see it as active.
        let was_retained = match events.clear_retention(channel, id).await {
            Ok(()) => true,
            Err(e) if e.code() == Some(ErrorCode::NotExist) => false,
            Err(e) => return Err(e).context(format!("clear alarm #{id}")),
        };
        let event = alarm::clear(channel, id, &a.source, &a.text)
            .map_err(anyhow::Error::msg)?
            .publisher(a.publisher);
        let eid = events.publish(&event).await.context("publish the clear")?;
        if json {
            let v = serde_json::json!({"cleared": id, "id": eid, "was_retained": was_retained});
            writeln!(out, "{v}")?;
        } else {
            let note = if was_retained {
                ""
            } else {
                " (it was no longer retained)"
            };
            writeln!(
                out,
                "cleared alarm #{id} on {} with event #{eid}{note}",
                a.source
            )?;
        }
        return Ok(());
    }
    let severity =
        Severity::parse(a.severity.as_deref().unwrap_or_default()).map_err(anyhow::Error::msg)?;
    let event = alarm::raise(channel, severity, &a.source, &a.text, a.retention)
        .map_err(anyhow::Error::msg)?
        .publisher(a.publisher);
    let id = events.publish(&event).await.context("raise the alarm")?;
    if json {
        let v = serde_json::json!({
            "id": id, "severity": severity.as_str(), "priority": severity.priority(),
            "source": a.source, "retention_ms": a.retention.as_millis() as u64,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "raised alarm #{id}: {severity} on {} (priority {}, retained {} s unless cleared)",
            a.source,
            severity.priority(),
            a.retention.as_secs()
        )?;
    }
    Ok(())
}

async fn subscribe(
    events: &EventClient,
    channel: &str,
    json: bool,
    a: SubscribeArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let mut from = a.from.unwrap_or(0);
    if let Some(path) = &a.state_file {
        from = from.max(load_position(path)?);
    }
    let mut sub = Subscription::new(channel).create(true).from_id(from);
    for f in alarm::filters(a.severity.as_deref(), a.source.as_deref()) {
        sub = sub.filter(f);
    }
    let mut stream = events
        .subscribe(&sub)
        .await
        .with_context(|| format!("subscribe to '{channel}'"))?;
    let mut delivered = 0;
    let mut errors = 0;
    let mut reconnects = 0;
    while a.count == 0 || delivered < a.count {
        let Some(item) = stream.next().await else {
            bail!("the subscription to '{channel}' ended (was the channel unlinked?)");
        };
        if stream.reconnects() != reconnects {
            reconnects = stream.reconnects();
            note_reconnect(&stream, json, out)?;
        }
        match item {
            Ok(Delivery::Event(e)) => {
                errors = 0;
                match Alarm::from_event(&e) {
                    Ok(alarm) if json => writeln!(out, "{}", alarm.json())?,
                    Ok(alarm) => writeln!(out, "{}", alarm.line())?,
                    Err(why) => writeln!(out, "-- skipped: {why}")?,
                }
                delivered += 1;
            }
            Ok(Delivery::Lost(n)) if json => writeln!(out, "{}", serde_json::json!({"lost": n}))?,
            Ok(Delivery::Lost(n)) => writeln!(
                out,
                "!! {n} alarm(s) lost: this subscriber fell behind, or they are no longer kept"
            )?,
            Err(e) if e.is_retryable() && errors < STREAM_ERRORS_MAX => {
                errors += 1;
                writeln!(out, "-- no agent reachable ({e}); still trying")?;
            }
            Err(e) => return Err(e).context(format!("subscription to '{channel}'")),
        }
        out.flush()?;
        if let Some(path) = &a.state_file {
            save_position(path, stream.resume_from())?;
        }
    }
    Ok(())
}

/// Say that the stream reconnected, and where it resumed.
fn note_reconnect(
    stream: &EventStream,
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "reconnected": stream.endpoint(), "resume_from": stream.resume_from(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "-- reconnected to {}, resuming after #{}",
            stream.endpoint(),
            stream.resume_from()
        )?;
    }
    Ok(())
}

/// The position saved in `path` (0 if there is none yet).
fn load_position(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(t) => t.trim().parse().with_context(|| {
            format!(
                "{} does not hold an event id; delete it to start over",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Save `id` to `path` (write a temporary file, then rename: never half a number).
fn save_position(path: &Path, id: u64) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n")).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}
