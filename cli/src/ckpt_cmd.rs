//! `nines ckpt ...`: create, write, read, inspect and unlink checkpoints (built on nines-sdk).

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use clap::{ArgGroup, Subcommand};
use nines_sdk::{Attributes, CheckpointClient, CheckpointStatus, OpenOptions, UpdateMode};
use serde_json::json;

use crate::output::{table, Format};

/// Checkpoint commands.
#[derive(Debug, Subcommand)]
pub enum CkptCmd {
    /// Create a checkpoint (succeeds if it exists with the same attributes).
    ///
    /// Unset attributes take the service defaults: 1024 sections of at most 1 MiB, 16 MiB in
    /// all, synchronous writes, kept until unlinked.
    ///
    /// Example: nines ckpt create orders --sections-max 64 --section-size-max 64KiB --retention 5m
    Create {
        /// The checkpoint's name.
        name: String,
        /// Most sections it may hold.
        #[arg(long, value_name = "N")]
        sections_max: Option<u32>,
        /// Largest section (bytes; K/KiB, M/MiB suffixes accepted).
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        section_size_max: Option<u64>,
        /// Most bytes it may hold in all (K/KiB, M/MiB suffixes accepted).
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        checkpoint_size_max: Option<u64>,
        /// How long it survives once nobody has it open: 250ms, 30s, 5m, 1h, 1d; 0 = until
        /// unlinked.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        retention: Option<Duration>,
        /// Acknowledge writes once the local agent has them (faster; an acknowledged write can
        /// be lost if that agent dies before replicating it).
        #[arg(long = "async")]
        async_mode: bool,
    },
    /// Write (create or replace) one section.
    ///
    /// Example: nines ckpt write orders cursor --data 42 --epoch 3
    #[command(group(ArgGroup::new("source").required(true).args(["data", "file"])))]
    Write {
        /// The checkpoint's name.
        name: String,
        /// The section's id.
        section: String,
        /// The data, as given.
        #[arg(long)]
        data: Option<String>,
        /// Read the data from this file (`-` = standard input).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Fencing epoch: refused if a write with a higher one was seen, or if the AMF never
        /// handed it out (a writer's epoch is the one of its AMF assignment: `nines amf status`).
        #[arg(long, value_name = "N")]
        epoch: Option<u64>,
    },
    /// Print one section's data, raw, to standard output (nothing else; -o is ignored).
    ///
    /// Example: nines ckpt read orders cursor > cursor.bin
    Read {
        /// The checkpoint's name.
        name: String,
        /// The section's id.
        section: String,
        /// Read from the answering agent's state without a ReadIndex round (may be behind).
        #[arg(long)]
        stale: bool,
    },
    /// List a checkpoint's sections: id, size, expiration.
    ///
    /// Example: nines ckpt sections orders -o json
    Sections {
        /// The checkpoint's name.
        name: String,
        /// Only sections expiring at or before this time (ms since the Unix epoch).
        #[arg(long, value_name = "T")]
        expiring_before_ms: Option<u64>,
    },
    /// Delete one section.
    ///
    /// Example: nines ckpt delete-section orders cursor --epoch 3
    DeleteSection {
        /// The checkpoint's name.
        name: String,
        /// The section's id.
        section: String,
        /// Fencing epoch: refused if a write with a higher one was seen, or if the AMF never
        /// handed it out (a writer's epoch is the one of its AMF assignment: `nines amf status`).
        #[arg(long, value_name = "N")]
        epoch: Option<u64>,
    },
    /// Show a checkpoint's attributes and usage.
    ///
    /// Example: nines ckpt status orders
    Status {
        /// The checkpoint's name.
        name: String,
    },
    /// List every checkpoint with its usage.
    ///
    /// Example: nines ckpt list -o json
    List,
    /// Delete a checkpoint and all its sections now.
    ///
    /// Example: nines ckpt unlink orders
    Unlink {
        /// The checkpoint's name.
        name: String,
    },
}

/// Run one checkpoint command against `endpoints`.
///
/// # Errors
/// One line saying what failed and why (the SDK's message, with the AIS code).
pub async fn run(cmd: CkptCmd, endpoints: &[String], format: Format) -> anyhow::Result<()> {
    let client = CheckpointClient::connect_with(endpoints, crate::client::sdk_config()).await?;
    match cmd {
        CkptCmd::Create {
            name,
            sections_max,
            section_size_max,
            checkpoint_size_max,
            retention,
            async_mode,
        } => {
            let d = Attributes::default();
            let attrs = Attributes {
                update_mode: if async_mode {
                    UpdateMode::Async
                } else {
                    UpdateMode::Sync
                },
                sections_max: sections_max.unwrap_or(d.sections_max),
                section_size_max: section_size_max.unwrap_or(d.section_size_max),
                checkpoint_size_max: checkpoint_size_max.unwrap_or(d.checkpoint_size_max),
                retention: retention.unwrap_or(d.retention),
            };
            create(&client, &name, attrs, format).await
        }
        CkptCmd::Write {
            name,
            section,
            data,
            file,
            epoch,
        } => {
            let bytes = match (data, file) {
                (Some(d), None) => d.into_bytes(),
                (None, Some(path)) => read_input(&path)?,
                _ => bail!("give exactly one of --data and --file"),
            };
            let len = bytes.len();
            let cp = client.checkpoint(&name).with_epoch(epoch.unwrap_or(0));
            let index = cp.write(&section, bytes).await?;
            if format == Format::Json {
                println!(
                    "{}",
                    json!({"checkpoint": name, "section": section, "bytes": len, "index": index})
                );
            } else {
                println!("wrote {len} bytes to section '{section}' of checkpoint '{name}'");
            }
            Ok(())
        }
        CkptCmd::Read {
            name,
            section,
            stale,
        } => {
            let data = client
                .checkpoint(&name)
                .with_stale_reads(stale)
                .read(&section)
                .await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)
                .and_then(|()| out.flush())
                .context("cannot write the section's data to standard output")?;
            Ok(())
        }
        CkptCmd::Sections {
            name,
            expiring_before_ms,
        } => sections(&client, &name, expiring_before_ms, format).await,
        CkptCmd::DeleteSection {
            name,
            section,
            epoch,
        } => {
            let cp = client.checkpoint(&name).with_epoch(epoch.unwrap_or(0));
            cp.delete_section(&section).await?;
            if format == Format::Json {
                println!(
                    "{}",
                    json!({"checkpoint": name, "section": section, "deleted": true})
                );
            } else {
                println!("deleted section '{section}' of checkpoint '{name}'");
            }
            Ok(())
        }
        CkptCmd::Status { name } => {
            let s = client.checkpoint(&name).status().await?;
            if format == Format::Json {
                println!("{}", status_json(&s));
            } else {
                println!("{}", status_table(&s, now_ms()));
            }
            Ok(())
        }
        CkptCmd::List => list(&client, format).await,
        CkptCmd::Unlink { name } => {
            client.unlink(&name).await?;
            if format == Format::Json {
                println!("{}", json!({"checkpoint": name, "unlinked": true}));
            } else {
                println!("unlinked checkpoint '{name}'");
            }
            Ok(())
        }
    }
}

async fn create(
    client: &CheckpointClient,
    name: &str,
    attrs: Attributes,
    format: Format,
) -> anyhow::Result<()> {
    let cp = client.open(name, OpenOptions::create(attrs)).await?;
    let created = cp.created();
    let attrs = cp.attributes().unwrap_or(attrs);
    cp.close().await?;
    if format == Format::Json {
        println!(
            "{}",
            json!({"checkpoint": name, "created": created, "attributes": attributes_json(&attrs)})
        );
    } else {
        let verb = if created {
            "created"
        } else {
            "exists already, with the same attributes:"
        };
        println!(
            "checkpoint '{name}' {verb} {} writes, {} sections of at most {}, {} in all, kept {}",
            attrs.update_mode.as_str(),
            attrs.sections_max,
            human_bytes(attrs.section_size_max),
            human_bytes(attrs.checkpoint_size_max),
            retention_text(attrs.retention),
        );
    }
    Ok(())
}

async fn sections(
    client: &CheckpointClient,
    name: &str,
    expiring_before_ms: Option<u64>,
    format: Format,
) -> anyhow::Result<()> {
    let cp = client.checkpoint(name);
    let secs = match expiring_before_ms {
        Some(t) => cp.sections_expiring_before(t).await?,
        None => cp.sections().await?,
    };
    if format == Format::Json {
        let list: Vec<serde_json::Value> = secs
            .iter()
            .map(|s| {
                json!({
                    "section": s.section,
                    "size": s.size,
                    "expires_at_ms": s.expires_at_ms,
                    "last_update_index": s.last_update_index,
                })
            })
            .collect();
        println!("{}", json!({"checkpoint": name, "sections": list}));
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = secs
        .iter()
        .map(|s| {
            vec![
                s.section.clone(),
                s.size.to_string(),
                s.expires_at_ms
                    .map_or("never".into(), |t| format!("{t} ({})", relative(t, now))),
                s.last_update_index.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["SECTION", "SIZE", "EXPIRES (MS)", "LAST UPDATE"], &rows)
    );
    Ok(())
}

async fn list(client: &CheckpointClient, format: Format) -> anyhow::Result<()> {
    let all = client.list().await?;
    if format == Format::Json {
        let list: Vec<serde_json::Value> = all.iter().map(status_json).collect();
        println!("{}", json!({ "checkpoints": list }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let a = &s.attributes;
            vec![
                s.name.clone(),
                a.update_mode.as_str().into(),
                format!("{}/{}", s.sections_used, a.sections_max),
                format!("{}/{}", s.bytes_used, human_bytes(a.checkpoint_size_max)),
                s.open_handles.to_string(),
                retention_text(a.retention),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["NAME", "MODE", "SECTIONS", "BYTES", "HANDLES", "RETENTION"],
            &rows
        )
    );
    Ok(())
}

/// A checkpoint's status as one JSON object.
pub fn status_json(s: &CheckpointStatus) -> serde_json::Value {
    let a = &s.attributes;
    json!({
        "name": s.name,
        "sections_used": s.sections_used,
        "bytes_used": s.bytes_used,
        "sections_max": a.sections_max,
        "section_size_max": a.section_size_max,
        "checkpoint_size_max": a.checkpoint_size_max,
        "retention_ms": duration_ms(a.retention),
        "update_mode": a.update_mode.as_str(),
        "open_handles": s.open_handles,
        "max_epoch": s.max_epoch,
        "retention_deadline_ms": s.retention_deadline_ms,
    })
}

fn attributes_json(a: &Attributes) -> serde_json::Value {
    json!({
        "update_mode": a.update_mode.as_str(),
        "sections_max": a.sections_max,
        "section_size_max": a.section_size_max,
        "checkpoint_size_max": a.checkpoint_size_max,
        "retention_ms": duration_ms(a.retention),
    })
}

fn status_table(s: &CheckpointStatus, now_ms: u64) -> String {
    let a = &s.attributes;
    let rows = [
        ("name", s.name.clone()),
        ("update mode", a.update_mode.as_str().into()),
        (
            "sections",
            format!("{} used of {}", s.sections_used, a.sections_max),
        ),
        (
            "bytes",
            format!(
                "{} used of {}",
                s.bytes_used,
                human_bytes(a.checkpoint_size_max)
            ),
        ),
        ("section size max", human_bytes(a.section_size_max)),
        ("retention", retention_text(a.retention)),
        ("open handles", s.open_handles.to_string()),
        ("max epoch", s.max_epoch.to_string()),
        (
            "deleted at",
            s.retention_deadline_ms.map_or("not scheduled".into(), |t| {
                format!("{t} ({})", relative(t, now_ms))
            }),
        ),
    ];
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, v)| vec![k.to_string(), v])
        .collect();
    table(&["ATTRIBUTE", "VALUE"], &rows)
}

/// Read `path` (`-` = standard input) whole, bounded by the largest section the service allows.
fn read_input(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    /// Larger input is refused here rather than sent: no section can hold it.
    const INPUT_BYTES_MAX: u64 = 4 * 1024 * 1024;
    let mut data = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(INPUT_BYTES_MAX + 1)
            .read_to_end(&mut data)
            .context("cannot read standard input")?
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(INPUT_BYTES_MAX + 1).read_to_end(&mut data))
            .with_context(|| format!("cannot read '{}'", path.display()))?
    };
    if read as u64 > INPUT_BYTES_MAX {
        bail!(
            "'{}' is larger than {}, the most any section can hold",
            path.display(),
            human_bytes(INPUT_BYTES_MAX)
        );
    }
    Ok(data)
}

/// Parse a duration: a whole number with a unit (`250ms`, `30s`, `5m`, `1h`, `1d`), or `0`.
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a duration; use e.g. 250ms, 30s, 5m, 1h, 1d, or 0");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms_per: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{s}' is too long a duration"))
}

/// Parse a byte count: a whole number, optionally with K/KiB, M/MiB or G/GiB (powers of 1024).
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a byte count; use e.g. 4096, 64KiB, 1MiB");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// `1 MiB`, `64 KiB`, or `1000 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    match n {
        0 => "0 B".into(),
        n if n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} B"),
    }
}

/// `until unlinked` for zero, else the duration in its largest whole unit, e.g. `5m`.
fn retention_text(d: Duration) -> String {
    let ms = duration_ms(d);
    if ms == 0 {
        return "until unlinked".into();
    }
    format!("{} after the last close", compact_ms(ms))
}

/// `ms` in its largest whole unit: `7d`, `5m`, `1500ms`.
pub(crate) fn compact_ms(ms: u64) -> String {
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        // Not `is_multiple_of`: the workspace's rust-version (1.85) predates it.
        let (whole, rest) = (ms / per, ms % per);
        if rest == 0 {
            return format!("{whole}{unit}");
        }
    }
    format!("{ms}ms")
}

/// `in 5m`, `12s ago`, `now`, at second precision.
fn relative(t_ms: u64, now_ms: u64) -> String {
    let round = |ms: u64| compact_ms(ms / 1_000 * 1_000);
    match t_ms.cmp(&now_ms) {
        _ if t_ms.abs_diff(now_ms) < 1_000 => "now".into(),
        std::cmp::Ordering::Greater => format!("in {}", round(t_ms - now_ms)),
        _ => format!("{} ago", round(now_ms - t_ms)),
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: CkptCmd,
    }

    #[test]
    fn durations_parse_with_a_unit_or_as_zero() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in [
            "",
            "5",
            "s",
            "1.5s",
            "-1s",
            "5 m",
            "10x",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("5").unwrap_err().contains("30s"));
    }

    #[test]
    fn byte_counts_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1m"), Ok(1 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        for bad in ["", "KiB", "1.5MiB", "1TiB", "-1"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_bytes(16 << 20), "16 MiB");
        assert_eq!(human_bytes(65_536), "64 KiB");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(retention_text(Duration::ZERO), "until unlinked");
        assert_eq!(
            retention_text(Duration::from_secs(300)),
            "5m after the last close"
        );
        assert_eq!(compact_ms(1_500), "1500ms");
        assert_eq!(relative(10_000, 4_000), "in 6s");
        assert_eq!(relative(4_000, 10_000), "6s ago");
        assert_eq!(relative(10_400, 10_000), "now");
    }

    #[test]
    fn write_needs_exactly_one_source() {
        Cli::command().debug_assert();
        let ok = Cli::try_parse_from(["t", "write", "orders", "cursor", "--data", "42"]);
        assert!(ok.is_ok());
        let none = Cli::try_parse_from(["t", "write", "orders", "cursor"]);
        assert!(none.is_err());
        let both =
            Cli::try_parse_from(["t", "write", "o", "c", "--data", "1", "--file", "/dev/null"]);
        assert!(both.is_err());
    }

    #[test]
    fn every_subcommand_teaches_an_example() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let long = sub
                .get_long_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(long.contains("Example: nines ckpt"), "{}", sub.get_name());
        }
    }

    #[test]
    fn status_json_has_the_documented_fields() {
        let s = CheckpointStatus {
            name: "orders".into(),
            attributes: Attributes::default(),
            sections_used: 2,
            bytes_used: 10,
            open_handles: 1,
            max_epoch: 7,
            retention_deadline_ms: None,
        };
        let v = status_json(&s);
        for k in [
            "name",
            "sections_used",
            "bytes_used",
            "sections_max",
            "section_size_max",
            "checkpoint_size_max",
            "retention_ms",
            "update_mode",
            "open_handles",
            "max_epoch",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["update_mode"], "sync");
        assert_eq!(v["retention_ms"], 0);
        assert!(status_table(&s, 0).contains("not scheduled"));
    }
}
