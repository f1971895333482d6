//! Hostile config text: `AgentConfig::parse` returns a config or a `ConfigError` naming the
//! problem, and never panics, for any text, for a valid config mutated line by line, and for a
//! valid config with any keys given arbitrary values (numbers at the extremes, empty and huge
//! strings, odd addresses, wrong types), so every validation path is reached, not only the TOML
//! parser.
//!
//! Cases per property: 256 by default; `PROPTEST_CASES=100000` for a long run.

use std::path::Path;

use nines_agent::{AgentConfig, ConfigError};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// A valid config, as (section, key, value) with "" for the top level. `[[peers]]` follow.
const BASE: &[(&str, &str, &str)] = &[
    ("", "cluster", "\"c\""),
    ("", "node_id", "1"),
    ("", "name", "\"n1\""),
    ("", "data_dir", "\"data/n1\""),
    ("", "listen", "\"127.0.0.1:7101\""),
    ("raft", "heartbeat_interval_ms", "100"),
    ("raft", "election_timeout_ms", "800"),
    ("heartbeat", "interval_ms", "100"),
    ("heartbeat", "timeout_ms", "500"),
    ("lease", "lease_ms", "300"),
    ("lease", "drift_margin_ms", "150"),
    ("lease", "fence_reaction_ms", "100"),
];

/// Every key the config knows (the optional ones are absent from [`BASE`] until substituted).
const KEYS: &[(&str, &str)] = &[
    ("", "cluster"),
    ("", "node_id"),
    ("", "name"),
    ("", "data_dir"),
    ("", "listen"),
    ("", "advertise"),
    ("", "join"),
    ("", "socket"),
    ("", "amf_model"),
    ("", "metrics_addr"),
    ("", "insecure"),
    ("", "health_listen"),
    ("raft", "heartbeat_interval_ms"),
    ("raft", "election_timeout_ms"),
    ("raft", "snapshot_threshold_entries"),
    ("heartbeat", "interval_ms"),
    ("heartbeat", "timeout_ms"),
    ("heartbeat", "suspect_after_ms"),
    ("heartbeat", "flap_window_ms"),
    ("heartbeat", "flap_threshold"),
    ("heartbeat", "hold_down_ms"),
    ("lease", "lease_ms"),
    ("lease", "drift_margin_ms"),
    ("lease", "fence_reaction_ms"),
    ("watchdog", "device"),
    ("watchdog", "timeout_s"),
    ("telemetry", "otlp_endpoint"),
    ("telemetry", "log_format"),
    ("drill", "enabled"),
    ("drill", "pause_ms_max"),
    ("limits", "request_bytes_max"),
    ("tls", "ca"),
    ("tls", "cert"),
    ("tls", "key"),
    ("tls", "component_cert"),
    ("tls", "component_key"),
    ("peers", "id"),
    ("peers", "name"),
    ("peers", "addr"),
    ("", "unknown_key"),
];

/// The base peers: (id, name, addr).
const PEERS: &[(&str, &str, &str)] = &[
    ("1", "\"n1\"", "\"127.0.0.1:7101\""),
    ("2", "\"n2\"", "\"127.0.0.1:7102\""),
];

/// One change to the base: key `KEYS[key % KEYS.len()]` takes `value` (`None`: removed); a peers
/// key changes peer `peer`.
#[derive(Debug, Clone)]
struct Change {
    key: usize,
    peer: usize,
    value: Option<String>,
}

/// The base config with `changes` applied, as TOML text.
fn render(changes: &[Change]) -> String {
    let mut entries: Vec<(String, String, Option<String>)> = BASE
        .iter()
        .map(|(s, k, v)| (s.to_string(), k.to_string(), Some(v.to_string())))
        .collect();
    let mut peers: Vec<Vec<(String, Option<String>)>> = PEERS
        .iter()
        .map(|(id, name, addr)| {
            vec![
                ("id".to_string(), Some(id.to_string())),
                ("name".to_string(), Some(name.to_string())),
                ("addr".to_string(), Some(addr.to_string())),
            ]
        })
        .collect();
    for c in changes {
        let (section, key) = KEYS[c.key % KEYS.len()];
        if section == "peers" {
            let peer = &mut peers[c.peer % PEERS.len()];
            if let Some(slot) = peer.iter_mut().find(|(k, _)| k == key) {
                slot.1 = c.value.clone();
            }
            continue;
        }
        match entries
            .iter_mut()
            .find(|(s, k, _)| s == section && k == key)
        {
            Some(slot) => slot.2 = c.value.clone(),
            None => entries.push((section.into(), key.into(), c.value.clone())),
        }
    }
    let mut text = String::new();
    let mut sections: Vec<&str> = vec![""];
    for (s, _, _) in &entries {
        if !sections.contains(&s.as_str()) {
            sections.push(s);
        }
    }
    for section in sections {
        if !section.is_empty() {
            text.push_str(&format!("\n[{section}]\n"));
        }
        for (_, k, v) in entries.iter().filter(|(s, _, _)| s == section) {
            if let Some(v) = v {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
    }
    for peer in peers {
        text.push_str("\n[[peers]]\n");
        for (k, v) in peer {
            if let Some(v) = v {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
    }
    text
}

/// Integers around every bound the validation checks, and anywhere.
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            -1,
            0,
            1,
            9,
            10,
            64,
            65,
            100,
            600,
            601,
            65_535,
            65_536,
            3_600_000,
            3_600_001,
            i64::from(u32::MAX),
            i64::from(u32::MAX) + 1,
            i64::MAX / 4,
            i64::MAX / 4 + 1,
            i64::MAX / 2 + 1,
            i64::MAX,
        ]),
        any::<i64>(),
        0i64..1_000_000,
    ]
}

/// Strings the config might be given: empty, huge, addresses good and odd, anything.
fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "\0",
            "127.0.0.1:0",
            "127.0.0.1:65535",
            "0.0.0.0:7101",
            "[::1]:7101",
            "[::]:1",
            "::1",
            "[::1]",
            ":7101",
            "host:",
            "host:99999",
            "host:-1",
            "host:port",
            "é:1",
            "http://",
            "https://[::1",
            "http://127.0.0.1:4317",
            "http://[::1]:99999999999",
            "/dev/null",
            "/",
            "json",
            "text",
        ])
        .prop_map(String::from),
        Just("x".repeat(100_000)),
        Just(format!("{}:1", "h".repeat(70_000))),
        any::<String>(),
        "[a-z0-9.:\\[\\]/]{0,40}",
    ]
}

/// A TOML value of any type (numbers and strings most often).
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => number().prop_map(|n| n.to_string()),
        4 => text_value().prop_map(|s| toml::Value::String(s).to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        1 => prop::sample::select(vec!["[]", "{}", "[1, \"a\"]", "{ a = 1 }", "1979-05-27"])
            .prop_map(String::from),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    (
        any::<usize>(),
        any::<usize>(),
        prop::option::weighted(0.9, toml_value()),
    )
        .prop_map(|(key, peer, value)| Change { key, peer, value })
}

/// Parse `text`; an error must say something. Returns whether it parsed.
fn parse(text: &str) -> bool {
    match AgentConfig::parse(text, Path::new("props.toml")) {
        Ok(cfg) => {
            // What the agent derives from a parsed config must not panic either.
            let _ = (cfg.advertise_addr(), cfg.socket_path(), cfg.raft_config());
            let _ = (cfg.bootstrap_members(), cfg.seed_members());
            true
        }
        Err(e) => {
            if let ConfigError::Invalid { key, problem, .. } = &e {
                assert!(!key.is_empty() && !problem.is_empty(), "{e}");
            }
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

/// Mutate `text` line by line: drop, duplicate, or replace a line's value or the line itself.
fn mutate(text: &str, ops: &[(u8, usize, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for (op, at, new) in ops {
        if lines.is_empty() {
            lines.push(new.clone());
            continue;
        }
        let i = at % lines.len();
        match op % 4 {
            0 => {
                lines.remove(i);
            }
            1 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            2 => {
                if let Some((key, _)) = lines[i].split_once(" = ") {
                    lines[i] = format!("{key} = {new}");
                }
            }
            _ => lines.insert(i, new.clone()),
        }
    }
    lines.join("\n")
}

/// `section.key` takes `value`.
fn set(section: &str, key: &str, value: &str) -> Change {
    let key = KEYS
        .iter()
        .position(|k| *k == (section, key))
        .expect("a key of KEYS");
    Change {
        key,
        peer: 0,
        value: Some(value.into()),
    }
}

#[test]
fn the_base_config_is_valid() {
    assert!(parse(&render(&[])), "{}", render(&[]));
}

/// Found while writing `extreme_values_never_panic` (the arithmetic its values reach):
/// `election_timeout_ms < 4 × heartbeat_interval_ms` overflowed u64 (a debug build panicked, a release build compared a wrapped product).
#[test]
fn a_huge_heartbeat_interval_is_refused_not_overflowed() {
    let text = render(&[
        set("raft", "heartbeat_interval_ms", "4611686018427387904"),
        set("raft", "election_timeout_ms", &i64::MAX.to_string()),
    ]);
    let e = AgentConfig::parse(&text, Path::new("x.toml")).expect_err("refused");
    assert!(e.to_string().contains("election_timeout_ms"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        parse(&text);
    }

    #[test]
    fn toml_like_text_never_panics(text in "[a-z_\\[\\]=\" .0-9:#{},\n-]{0,300}") {
        parse(&text);
    }

    #[test]
    fn extreme_values_never_panic(changes in prop::collection::vec(change(), 1..5)) {
        parse(&render(&changes));
    }

    #[test]
    fn mutated_lines_never_panic(
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), toml_value()), 1..6),
    ) {
        parse(&mutate(&render(&[]), &ops));
    }
}
