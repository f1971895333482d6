//! `nines evt limits [set ...]`: show and change the event service's limits.
//!
//! The limits are part of the replicated state: every agent checks commands against the same
//! ones, so they are changed through the log (never in an agent's config file). `set` changes
//! only the limits it is given: it reads them, changes those, and writes them back only if
//! nobody changed them in between (else it reads again), so a concurrent change is kept.
//!
//! Output for people is a table `LIMIT  VALUE` (sizes in B / KiB / MiB, the retention as a
//! duration); with `-o json`, one object `{"<limit>": <number>, ...}` with the raw numbers
//! (bytes; `retention_ms_max` in ms), the same for `set` (the limits in force afterwards).

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use nines_sdk::{EventClient, EventLimits};
use serde_json::Value;

use crate::{
    ckpt_cmd::{compact_ms, human_bytes, parse_bytes, parse_duration},
    output::{table, Format},
};

/// `nines evt limits` subcommands.
#[derive(Debug, Subcommand)]
pub enum LimitsCmd {
    /// Change some limits; the others stay as they are.
    ///
    /// Each flag is a limit's name with dashes (`retention_ms_max` is `--retention-max`, a
    /// duration); sizes take a unit (4096, 64KiB, 1MiB). The change goes through the replicated
    /// log: once it returns, every agent checks new commands against the new limits. Lowering a
    /// limit never drops a channel or a retained event: it is refused (NO_SPACE) while the
    /// cluster holds more than the new limit allows; rings of recent events shrink at once.
    /// Limits that make no sense, or that could outgrow the memory budget (a snapshot must fit
    /// one message), are refused (INVALID_PARAM) naming the limit. Prints the limits in force
    /// afterwards.
    ///
    /// Example: nines evt limits set --patterns-max 32 --data-bytes-max 128KiB
    Set(LimitsSetArgs),
}

/// `nines evt limits set`: the limits to change (at least one).
#[derive(Debug, Clone, Default, Args)]
#[group(required = true, multiple = true)]
pub struct LimitsSetArgs {
    /// Most patterns in one event (and filters in one subscription).
    #[arg(long, value_name = "N")]
    pub patterns_max: Option<usize>,
    /// Longest pattern name, pattern value, filter name or filter value.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub pattern_bytes_max: Option<usize>,
    /// Largest event payload.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub data_bytes_max: Option<usize>,
    /// Most channels in the cluster.
    #[arg(long, value_name = "N")]
    pub channels_max: Option<usize>,
    /// Longest channel name.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub channel_name_bytes_max: Option<usize>,
    /// Longest publisher name.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub publisher_bytes_max: Option<usize>,
    /// Most retained events per channel.
    #[arg(long, value_name = "N")]
    pub retained_per_channel_max: Option<usize>,
    /// Bytes of retained events over all channels.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub retained_bytes_max: Option<u64>,
    /// Longest retention an event may ask for: 500ms, 10s, 5m, 1h, 1d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retention_max: Option<Duration>,
    /// Most events in a channel's ring of recent events (what a resuming subscriber can get).
    #[arg(long, value_name = "N")]
    pub recent_events_max: Option<usize>,
    /// Most bytes in a channel's ring of recent events.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub recent_bytes_max: Option<u64>,
}

impl LimitsSetArgs {
    /// Set the limits given on the command line, leave the others.
    pub fn apply(&self, l: &mut EventLimits) {
        fn put<T: Copy>(to: &mut T, from: Option<T>) {
            if let Some(v) = from {
                *to = v;
            }
        }
        put(&mut l.patterns_max, self.patterns_max);
        put(&mut l.pattern_bytes_max, self.pattern_bytes_max);
        put(&mut l.data_bytes_max, self.data_bytes_max);
        put(&mut l.channels_max, self.channels_max);
        put(&mut l.channel_name_bytes_max, self.channel_name_bytes_max);
        put(&mut l.publisher_bytes_max, self.publisher_bytes_max);
        put(
            &mut l.retained_per_channel_max,
            self.retained_per_channel_max,
        );
        put(&mut l.retained_bytes_max, self.retained_bytes_max);
        let retention_ms = self
            .retention_max
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        put(&mut l.retention_ms_max, retention_ms);
        put(&mut l.recent_events_max, self.recent_events_max);
        put(&mut l.recent_bytes_max, self.recent_bytes_max);
    }
}

/// Show the limits (`set: None`) or change them, and print the limits in force.
///
/// # Errors
/// One line saying what failed and why (the service's message, with the AIS code).
pub async fn run(
    client: &EventClient,
    set: Option<LimitsCmd>,
    format: Format,
) -> anyhow::Result<()> {
    let limits = match set {
        None => client.limits().await?,
        Some(LimitsCmd::Set(args)) => client.update_limits(|l| args.apply(l)).await?,
    };
    let doc = serde_json::to_value(&limits).context("the limits as JSON")?;
    match format {
        Format::Json => println!("{doc}"),
        Format::Table => println!("{}", limits_table(&doc)),
    }
    Ok(())
}

/// A byte count that fits this platform's sizes.
fn parse_size(s: &str) -> Result<usize, String> {
    let n = parse_bytes(s)?;
    usize::try_from(n).map_err(|_| format!("'{s}' is too large"))
}

/// `LIMIT  VALUE`, one row per limit, in name order: sizes in B / KiB / MiB, the retention as a
/// duration, counts as they are.
fn limits_table(doc: &Value) -> String {
    let rows: Vec<Vec<String>> = doc
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, v)| {
            let n = v.as_u64().unwrap_or_default();
            let value = if name.ends_with("_ms_max") {
                if n == 0 {
                    "0".to_string()
                } else {
                    compact_ms(n)
                }
            } else if name.ends_with("bytes_max") {
                human_bytes(n)
            } else {
                n.to_string()
            };
            vec![name.clone(), value]
        })
        .collect();
    table(&["LIMIT", "VALUE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: LimitsCmd,
    }

    fn parse(args: &[&str]) -> Result<LimitsSetArgs, clap::Error> {
        use clap::Parser as _;
        let all = ["limits", "set"].into_iter().chain(args.iter().copied());
        Cli::try_parse_from(all).map(|c| match c.cmd {
            LimitsCmd::Set(a) => a,
        })
    }

    #[test]
    fn set_changes_only_the_given_limits() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let a = parse(&[
            "--patterns-max",
            "32",
            "--data-bytes-max",
            "128KiB",
            "--retention-max",
            "1d",
        ])
        .expect("valid");
        let mut l = EventLimits::default();
        a.apply(&mut l);
        let want = EventLimits {
            patterns_max: 32,
            data_bytes_max: 128 * 1024,
            retention_ms_max: 86_400_000,
            ..EventLimits::default()
        };
        assert_eq!(l, want);
        assert!(parse(&[]).is_err(), "set needs at least one limit");
        let e = parse(&["--data-bytes-max", "lots"]).expect_err("bad size");
        assert!(e.to_string().contains("--data-bytes-max"), "{e}");
    }

    #[test]
    fn the_table_shows_units_and_json_the_raw_numbers() {
        let doc = serde_json::to_value(EventLimits::default()).expect("json");
        assert_eq!(doc["patterns_max"], 20);
        assert_eq!(doc["data_bytes_max"], 65_536);
        let t = limits_table(&doc);
        assert!(t.starts_with("LIMIT"), "{t}");
        for row in [
            "patterns_max              20",
            "data_bytes_max            64 KiB",
            "retention_ms_max          7d",
        ] {
            assert!(t.contains(row), "'{row}' in\n{t}");
        }
    }
}
