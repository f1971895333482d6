//! `nines evt ...`: event channels — create, unlink, list, publish, subscribe, and the service's
//! limits (`limits`, in [`crate::evt_limits_cmd`]) — built on nines-sdk's [`EventClient`].
//!
//! Output of `subscribe` for people is one line per event, `#<id> [p<priority>] <publisher>
//! {<name>=<value>,...} <data>`, and `lost <n> events` for a lost-event notice. With `-o json`,
//! one object per line: `{"id", "channel", "priority", "patterns": [{"name", "value"}],
//! "publisher", "published_at", "retention_ms", "data"}` (`published_at` in ms since the Unix
//! epoch; `data` when the data is UTF-8, else `data_b64`; likewise `name_b64` / `value_b64` in
//! patterns), and `{"lost": N}` for a notice.
//!
//! A `--filter KIND:NAME=VALUE` compares the VALUE of the event's pattern at the filter's
//! position; its NAME is a guard (the pattern there must carry that name), and an empty NAME
//! checks the value only.

use std::{
    io::{ErrorKind, Write as _},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use nines_sdk::{
    ChannelInfo, Delivery, Event, EventClient, Filter, FilterKind, Publish, Subscription,
};
use serde_json::{json, Map, Value};

use crate::{
    ckpt_cmd::parse_duration,
    evt_limits_cmd::{self, LimitsCmd},
    output::{table, Format},
};

/// Event channel commands.
#[derive(Debug, Subcommand)]
pub enum EvtCmd {
    /// Create a channel (succeeds if it exists).
    ///
    /// Example: nines evt create alarms
    Create {
        /// The channel's name.
        channel: String,
    },
    /// Delete a channel and its retained events; its subscriptions end.
    ///
    /// Example: nines evt unlink alarms
    Unlink {
        /// The channel's name.
        channel: String,
    },
    /// List the channels: name, last event id, retained events.
    ///
    /// Example: nines evt channels -o json
    Channels,
    /// Publish one event (creating the channel if it is missing) and print its id.
    ///
    /// Example: nines evt publish alarms --pattern kind=link-down --pattern if=eth0 --priority 0
    /// --retention 60s --publisher nic-monitor --data "eth0 lost carrier"
    Publish(PublishArgs),
    /// Print a channel's events as they are published (creating the channel if it is missing),
    /// until Ctrl-C or --count items.
    ///
    /// Example: nines evt subscribe alarms --filter prefix:kind=link- --filter all --from 0
    /// --count 10 -o json
    Subscribe(SubscribeArgs),
    /// Stop retaining one event now: later subscribers will not receive it.
    ///
    /// Example: nines evt clear-retention alarms 42
    ClearRetention {
        /// The channel's name.
        channel: String,
        /// The event's id.
        id: u64,
    },
    /// Show the limits every event command is checked against; `set` changes them.
    ///
    /// Patterns per event, sizes, channels, retained events, retention, rings of recent events.
    /// They are the same on every agent: part of the replicated state, changed only through the
    /// log (`nines evt limits set`), never in an agent's config.
    ///
    /// Example: nines evt limits -o json
    Limits {
        /// Change them (without: show them).
        #[command(subcommand)]
        set: Option<LimitsCmd>,
    },
}

/// `nines evt publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The channel (created if missing).
    pub channel: String,
    /// A pattern, NAME=VALUE; repeat for the pattern array, in order (subscribers' filters
    /// match it by position).
    ///
    /// Example: --pattern kind=link-down --pattern if=eth0
    #[arg(long = "pattern", value_name = "NAME=VALUE", value_parser = parse_pattern)]
    pub patterns: Vec<(String, String)>,
    /// Priority: 0 (highest) to 3 (lowest). Among events waiting for a subscriber, higher
    /// priority goes first.
    #[arg(long, value_name = "N", default_value_t = nines_sdk::PRIORITY_LOWEST,
          value_parser = clap::value_parser!(u8).range(0..=3))]
    pub priority: u8,
    /// How long subscribers that join later still receive it: 500ms, 10s, 5m, 1h, 1d; 0 = not
    /// retained.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0")]
    pub retention: Duration,
    /// Who publishes it, for the subscribers.
    #[arg(long, value_name = "NAME", default_value = "nines-cli")]
    pub publisher: String,
    /// The event's data, as given.
    #[arg(long, value_name = "STR")]
    pub data: String,
}

/// `nines evt subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// The channel (created if missing).
    pub channel: String,
    /// A filter, KIND:NAME=VALUE with KIND one of prefix, suffix, exact; or `all` (matches
    /// anything, even a missing pattern). Filters are positional: the i-th --filter is matched
    /// against the i-th pattern of each event, and an event is printed only if every filter
    /// matches. KIND compares the pattern's VALUE; NAME is a guard, not a lookup: the pattern at
    /// that position must also be named NAME (so a filter never matches some other pattern that
    /// happens to sit there). An empty NAME (`prefix:=link-`) checks the value only.
    ///
    /// Example: --filter prefix:kind=link- --filter all --filter exact:if=eth0
    #[arg(long = "filter", value_name = "KIND:NAME=VALUE", value_parser = parse_filter)]
    pub filters: Vec<Filter>,
    /// Start after event ID: every later event the service still keeps (a lost notice counts
    /// those it no longer keeps). 0 (the default): the retained events, then new ones.
    #[arg(long = "from", value_name = "ID", default_value_t = 0)]
    pub from: u64,
    /// Stop after N items (events or lost notices) and exit 0. Without it: until Ctrl-C.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// Run one event command against `endpoints`.
///
/// # Errors
/// One line saying what failed and why (the SDK's message, with the AIS code).
pub async fn run(cmd: EvtCmd, endpoints: &[String], format: Format) -> anyhow::Result<()> {
    let client = EventClient::connect_with(endpoints, crate::client::sdk_config()).await?;
    match cmd {
        EvtCmd::Create { channel } => {
            let existed = client.create(&channel).await?;
            match format {
                Format::Json => println!("{}", json!({"channel": channel, "created": !existed})),
                Format::Table if existed => println!("channel '{channel}' exists already"),
                Format::Table => println!("created channel '{channel}'"),
            }
        }
        EvtCmd::Unlink { channel } => {
            client.unlink(&channel).await?;
            match format {
                Format::Json => println!("{}", json!({"channel": channel, "unlinked": true})),
                Format::Table => println!("unlinked channel '{channel}'"),
            }
        }
        EvtCmd::Channels => {
            let channels = client.channels().await?;
            match format {
                Format::Json => println!("{}", channels_json(&channels)),
                Format::Table => println!("{}", channels_table(&channels)),
            }
        }
        EvtCmd::Publish(a) => {
            let mut p = Publish::new(a.channel.as_str(), a.data.into_bytes())
                .create(true)
                .priority(a.priority)
                .retention(a.retention)
                .publisher(a.publisher);
            for (name, value) in a.patterns {
                p = p.pattern(name, value);
            }
            let id = client.publish(&p).await?;
            match format {
                Format::Json => println!("{}", json!({"channel": a.channel, "id": id})),
                Format::Table => println!("{id}"),
            }
        }
        EvtCmd::Subscribe(a) => subscribe(&client, a, format).await?,
        EvtCmd::Limits { set } => evt_limits_cmd::run(&client, set, format).await?,
        EvtCmd::ClearRetention { channel, id } => {
            client.clear_retention(&channel, id).await?;
            match format {
                Format::Json => {
                    println!("{}", json!({"channel": channel, "id": id, "cleared": true}));
                }
                Format::Table => {
                    println!("event {id} of channel '{channel}' is no longer retained")
                }
            }
        }
    }
    Ok(())
}

/// Print the subscription's items until Ctrl-C, `count` items, or an error that retrying
/// cannot fix.
async fn subscribe(client: &EventClient, a: SubscribeArgs, format: Format) -> anyhow::Result<()> {
    let mut sub = Subscription::new(a.channel.as_str())
        .from_id(a.from)
        .create(true);
    for f in a.filters {
        sub = sub.filter(f);
    }
    if a.count == Some(0) {
        return Ok(());
    }
    let mut stream = client.subscribe(&sub).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut items = 0u64;
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = stream.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) if e.is_retryable() => {
                // The stream broke and no agent answered within the deadline: keep trying.
                eprintln!("nines: warning: {e}; still trying (Ctrl-C to stop)");
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!(
                "the subscription to channel '{}' ended; run `nines evt subscribe` again with \
                 --from <last id> to resume",
                a.channel
            ),
        };
        let line = match format {
            Format::Json => delivery_json(&delivery).to_string(),
            Format::Table => delivery_line(&delivery),
        };
        if !emit(&line)? {
            // The reader went away (`| head -n 1`): nothing left to do.
            return Ok(());
        }
        items += 1;
        if a.count.is_some_and(|max| items >= max) {
            return Ok(());
        }
    }
}

/// Write one line to stdout and flush it; `false` when the reader has gone (broken pipe).
fn emit(line: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// Parse `--pattern NAME=VALUE` (split at the first `=`; NAME must not be empty, VALUE may be).
///
/// # Errors
/// A message saying what is expected.
pub fn parse_pattern(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        Some(_) => Err(format!(
            "'{s}' has an empty NAME; give NAME=VALUE, e.g. kind=link-down"
        )),
        None => Err(format!(
            "'{s}' has no '='; give NAME=VALUE, e.g. kind=link-down"
        )),
    }
}

/// Parse `--filter KIND:NAME=VALUE` (KIND: prefix, suffix, exact) or `--filter all`. KIND
/// compares the VALUE; a non-empty NAME also requires the pattern at that position to carry
/// that name (see [`Filter::named`]).
///
/// # Errors
/// A message saying what is expected.
pub fn parse_filter(s: &str) -> Result<Filter, String> {
    const USE: &str = "give KIND:NAME=VALUE with KIND one of prefix, suffix, exact (e.g. \
                       prefix:kind=link-), or `all`";
    if s == "all" {
        return Ok(Filter::pass_all());
    }
    let Some((kind, rest)) = s.split_once(':') else {
        return Err(format!("'{s}' has no KIND:; {USE}"));
    };
    let kind = match kind {
        "prefix" => FilterKind::Prefix,
        "suffix" => FilterKind::Suffix,
        "exact" => FilterKind::Exact,
        "all" => return Err(format!("'{s}': `all` takes no NAME=VALUE; give just `all`")),
        other => return Err(format!("'{s}' has an unknown KIND '{other}'; {USE}")),
    };
    match rest.split_once('=') {
        Some((name, value)) => Ok(Filter::new(kind, value.as_bytes()).named(name.as_bytes())),
        None => Err(format!("'{s}' has no '=' after the KIND; {USE}")),
    }
}

/// `NAME  LAST ID  RETAINED`, one row per channel.
fn channels_table(channels: &[ChannelInfo]) -> String {
    let rows: Vec<Vec<String>> = channels
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.last_id.to_string(),
                c.retained.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "LAST ID", "RETAINED"], &rows)
}

/// `{"channels": [{"name", "last_id", "retained"}]}`.
fn channels_json(channels: &[ChannelInfo]) -> Value {
    let list: Vec<Value> = channels
        .iter()
        .map(|c| json!({"name": c.name, "last_id": c.last_id, "retained": c.retained}))
        .collect();
    json!({ "channels": list })
}

/// One line for people: `#<id> [p<priority>] <publisher> {<name>=<value>,...} <data>`, or
/// `lost <n> events`.
fn delivery_line(d: &Delivery) -> String {
    match d {
        Delivery::Lost(n) => format!("lost {n} events"),
        Delivery::Event(e) => {
            let patterns: Vec<String> = e
                .patterns
                .iter()
                .map(|(n, v)| format!("{}={}", bytes_text(n), bytes_text(v)))
                .collect();
            let publisher = if e.publisher.is_empty() {
                "-".to_string()
            } else {
                printable(&e.publisher)
            };
            format!(
                "#{} [p{}] {publisher} {{{}}} {}",
                e.id,
                e.priority,
                patterns.join(","),
                bytes_text(&e.data)
            )
        }
    }
}

/// Bytes for people on one line: the text (control characters escaped) when UTF-8, else
/// `base64:<...>`.
fn bytes_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => printable(s),
        Err(_) => format!("base64:{}", base64(b)),
    }
}

/// `s` with control characters (newlines, tabs, escapes) escaped, so an item stays one line.
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One JSON object per item: the event's fields, or `{"lost": N}`.
fn delivery_json(d: &Delivery) -> Value {
    match d {
        Delivery::Lost(n) => json!({ "lost": n }),
        Delivery::Event(e) => event_json(e),
    }
}

fn event_json(e: &Event) -> Value {
    let patterns: Vec<Value> = e
        .patterns
        .iter()
        .map(|(n, v)| {
            let mut o = Map::new();
            put_bytes(&mut o, "name", n);
            put_bytes(&mut o, "value", v);
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    o.insert("id".into(), json!(e.id));
    o.insert("channel".into(), json!(e.channel));
    o.insert("priority".into(), json!(e.priority));
    o.insert("patterns".into(), Value::Array(patterns));
    o.insert("publisher".into(), json!(e.publisher));
    o.insert("published_at".into(), json!(e.published_at_ms));
    o.insert("retention_ms".into(), json!(e.retention_ms));
    put_bytes(&mut o, "data", &e.data);
    Value::Object(o)
}

/// `key` as a string when `b` is UTF-8, else `<key>_b64` as base64.
fn put_bytes(o: &mut Map<String, Value>, key: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => o.insert(key.to_string(), json!(s)),
        Err(_) => o.insert(format!("{key}_b64"), json!(base64(b))),
    };
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &byte)| n | u32::from(byte) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        evt: EvtCmd,
    }

    fn parse(args: &[&str]) -> Result<EvtCmd, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("evt").chain(args.iter().copied())).map(|c| c.evt)
    }

    fn event(data: &[u8]) -> Event {
        Event {
            channel: "alarms".into(),
            id: 7,
            priority: 0,
            patterns: vec![
                (b"kind".to_vec(), b"link-down".to_vec()),
                (b"raw".to_vec(), vec![0xff, 0x00]),
            ],
            publisher: "mon".into(),
            published_at_ms: 1_700_000_000_123,
            retention_ms: 60_000,
            data: data.to_vec(),
        }
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn patterns_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_pattern("kind=link=down"),
            Ok(("kind".into(), "link=down".into()))
        );
        assert_eq!(parse_pattern("k="), Ok(("k".into(), String::new())));
        assert!(parse_pattern("novalue").is_err_and(|e| e.contains("no '='")));
        assert!(parse_pattern("=v").is_err_and(|e| e.contains("empty NAME")));
    }

    #[test]
    fn filters_parse_into_kind_value_and_name_guard() {
        assert_eq!(
            parse_filter("prefix:kind=link-"),
            Ok(Filter::prefix("link-").named("kind"))
        );
        assert_eq!(
            parse_filter("suffix:if=0"),
            Ok(Filter::suffix("0").named("if"))
        );
        assert_eq!(
            parse_filter("exact:=a=b"),
            Ok(Filter::exact("a=b")),
            "no name: the value only, split at the first '='"
        );
        assert_eq!(parse_filter("all"), Ok(Filter::pass_all()));
        for (bad, why) in [
            ("bogus", "no KIND"),
            ("regex:a=b", "unknown KIND 'regex'"),
            ("prefix:novalue", "no '='"),
            ("all:a=b", "takes no NAME=VALUE"),
        ] {
            match parse_filter(bad) {
                Err(e) => assert!(e.contains(why), "{bad}: {e}"),
                Ok(f) => panic!("{bad}: {f:?}"),
            }
        }
    }

    #[test]
    fn the_arguments_parse_with_defaults_and_name_the_bad_one() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let EvtCmd::Publish(p) = parse(&[
            "publish",
            "alarms",
            "--pattern",
            "kind=link",
            "--pattern",
            "if=eth0",
            "--retention",
            "60s",
            "--data",
            "x",
        ])
        .expect("valid") else {
            panic!("publish")
        };
        assert_eq!(p.patterns.len(), 2);
        assert_eq!(p.retention, Duration::from_secs(60));
        assert_eq!((p.priority, p.publisher.as_str()), (3, "nines-cli"));
        let EvtCmd::Subscribe(s) = parse(&[
            "subscribe",
            "alarms",
            "--filter",
            "all",
            "--filter",
            "prefix:kind=link",
            "--from",
            "4",
            "--count",
            "2",
        ])
        .expect("valid") else {
            panic!("subscribe")
        };
        assert_eq!(
            s.filters,
            [Filter::pass_all(), Filter::prefix("link").named("kind")]
        );
        assert_eq!((s.from, s.count), (4, Some(2)));
        let e = parse(&["subscribe", "c", "--filter", "bogus"]).expect_err("bad filter");
        assert!(e.to_string().contains("--filter"), "{e}");
        let e = parse(&["publish", "c", "--pattern", "novalue", "--data", "x"])
            .expect_err("bad pattern");
        assert!(e.to_string().contains("--pattern"), "{e}");
        assert!(parse(&["publish", "c", "--priority", "4", "--data", "x"]).is_err());
        assert!(parse(&["publish", "c"]).is_err(), "--data is required");
    }

    #[test]
    fn event_json_has_the_documented_fields() {
        let j = delivery_json(&Delivery::Event(event(b"eth0 down")));
        assert_eq!(j["id"], 7);
        assert_eq!(j["channel"], "alarms");
        assert_eq!(j["priority"], 0);
        assert_eq!(j["publisher"], "mon");
        assert_eq!(j["published_at"], 1_700_000_000_123u64);
        assert_eq!(j["data"], "eth0 down");
        assert!(j.get("data_b64").is_none());
        assert_eq!(
            j["patterns"][0],
            json!({"name": "kind", "value": "link-down"})
        );
        assert_eq!(
            j["patterns"][1],
            json!({"name": "raw", "value_b64": "/wA="})
        );
        let j = delivery_json(&Delivery::Event(event(&[0xff, 0xfe, 0x00])));
        assert_eq!(j["data_b64"], "//4A");
        assert!(j.get("data").is_none());
        assert_eq!(delivery_json(&Delivery::Lost(5)), json!({"lost": 5}));
    }

    #[test]
    fn lines_for_people_are_one_line_each() {
        assert_eq!(
            delivery_line(&Delivery::Event(event(b"eth0\ndown"))),
            "#7 [p0] mon {kind=link-down,raw=base64:/wA=} eth0\\ndown"
        );
        assert_eq!(delivery_line(&Delivery::Lost(3)), "lost 3 events");
        let t = channels_table(&[ChannelInfo {
            name: "alarms".into(),
            last_id: 12,
            retained: 2,
        }]);
        assert_eq!(t, "NAME    LAST ID  RETAINED\nalarms  12       2");
        let j = channels_json(&[]);
        assert_eq!(j, json!({"channels": []}));
    }
}
