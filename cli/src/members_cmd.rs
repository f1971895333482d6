//! `nines members [--watch]` and `nines admin node drain`: membership tracking (built on
//! nines-sdk's [`MembershipClient`]).
//!
//! Output for people is a table (`view N`, then `ID NAME ADDRESS STATE LAST HEARTBEAT`) and, when
//! watching, one line per change (`view 7: node 2 (n2) down`). With `-o json`: one object
//! `{"view", "fenced", "members": [{"id", "name", "addr", "state", "last_heartbeat_ms"}]}`, and
//! when watching one object per line per event, `{"view", "kind", "node", "fenced", "members"}`.

use std::io::{ErrorKind, Write as _};

use anyhow::Context as _;
use nines_sdk::{ChangeKind, Member, MembershipClient, MembershipEvent, View};
use serde_json::{json, Value};

use crate::output::{table, Format};

/// Show the cluster's members and their states (up, suspect, down, left), or watch the changes.
///
/// Example: nines members --watch -o json
#[derive(Debug, Clone, clap::Args)]
pub struct MembersArgs {
    /// Keep running: print the current view, then one line per change (view number, node,
    /// joined / left / down / up) until Ctrl-C.
    ///
    /// Example: nines members --watch
    #[arg(long)]
    pub watch: bool,
    /// With --watch: stop after N changes (snapshots do not count; 0 prints the current view
    /// and stops). For scripts and tests.
    ///
    /// Example: nines members --watch --count 1 -o json
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<usize>,
}

/// Run `nines members` against `endpoints`.
///
/// # Errors
/// One line saying what failed and what to do (no agent reachable, the watch refused).
pub async fn run(args: MembersArgs, endpoints: &[String], format: Format) -> anyhow::Result<()> {
    let client = MembershipClient::connect_with(endpoints, crate::client::sdk_config()).await?;
    if args.watch {
        return watch(&client, args.count, format).await;
    }
    let view = client.members().await?;
    let text = match format {
        Format::Json => view_json(&view).to_string(),
        Format::Table => view_table(&view),
    };
    println!("{text}");
    Ok(())
}

/// Run `nines admin node drain --id N`: mark node `node` as leaving (it is then reported `left`,
/// not as a failure) and print the resulting view.
///
/// # Errors
/// One line saying what failed and what to do (not a member, no leader, no agent reachable).
pub async fn drain(node: u64, endpoints: &[String], format: Format) -> anyhow::Result<()> {
    let client = MembershipClient::connect_with(endpoints, crate::client::sdk_config()).await?;
    let view = client.drain(node).await?;
    match format {
        Format::Json => println!("{}", view_json(&view)),
        Format::Table => {
            let who = node_label(node, &view, None);
            println!(
                "drained {who}: its assignments moved away gracefully; it is reported left, not \
                 as a failure"
            );
            println!("{}", view_table(&view));
        }
    }
    Ok(())
}

/// Print the current view, then every change, until Ctrl-C (or `count` changes).
async fn watch(
    client: &MembershipClient,
    count: Option<usize>,
    format: Format,
) -> anyhow::Result<()> {
    let mut w = client.watch().await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last: Option<View> = None;
    let mut changes = 0usize;
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = w.next() => next,
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(e)) if e.is_retryable() => {
                // The stream broke and no agent answered within the deadline: keep trying.
                eprintln!("nines: warning: {e}; still trying (Ctrl-C to stop)");
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!(
                "the membership watch ended; run `nines members --watch` again to resume"
            ),
        };
        let lines = match format {
            Format::Json => vec![event_json(&event).to_string()],
            Format::Table => event_lines(&event, last.as_ref(), w.endpoint()),
        };
        for line in lines {
            if !emit(&line)? {
                // The reader went away (`| head -n 1`): nothing left to do.
                return Ok(());
            }
        }
        if event.kind != ChangeKind::Snapshot {
            changes += 1;
        }
        last = Some(event.current);
        if count.is_some_and(|max| changes >= max) {
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

/// The lines people see for one watch event: the view table for a snapshot, one line for a
/// change (plus one when the answering agent's fencing flips).
fn event_lines(event: &MembershipEvent, last: Option<&View>, endpoint: &str) -> Vec<String> {
    let mut lines = Vec::new();
    match (event.kind, event.node) {
        (ChangeKind::Snapshot, _) | (_, None) => {
            if last.is_some() {
                lines.push(format!(
                    "view {}: resynchronized from {endpoint} (changes since the last line are \
                     summarized by this view)",
                    event.view
                ));
            }
            lines.push(view_table(&event.current));
            return lines;
        }
        (kind, Some(node)) => {
            let who = node_label(node, &event.current, last);
            lines.push(format!("view {}: {who} {kind}", event.view));
        }
    }
    let was_fenced = last.is_some_and(|v| v.fenced);
    if event.current.fenced != was_fenced {
        lines.push(if event.current.fenced {
            format!("view {}: {}", event.view, FENCED)
        } else {
            format!("view {}: this agent is no longer fenced", event.view)
        });
    }
    lines
}

const FENCED: &str = "this agent is FENCED (cut off from a quorum): its view may be out of \
                      date; ask another agent (--endpoints)";

/// `node 2 (n2)`, with the name from the view (or the previous one, for a node that is gone).
fn node_label(node: u64, view: &View, previous: Option<&View>) -> String {
    let name = view
        .member(node)
        .or_else(|| previous.and_then(|p| p.member(node)))
        .map(|m| m.name.as_str())
        .filter(|n| !n.is_empty());
    match name {
        Some(n) => format!("node {node} ({n})"),
        None => format!("node {node}"),
    }
}

/// `view N`, the fencing warning if any, and the members' table.
fn view_table(view: &View) -> String {
    let mut out = format!("view {}\n", view.view);
    if view.fenced {
        out.push_str(FENCED);
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = view
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.name.clone(),
                m.addr.clone(),
                m.state.to_string(),
                m.last_heartbeat_ms.map_or_else(|| "never".into(), age),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "NAME", "ADDRESS", "STATE", "LAST HEARTBEAT"],
        &rows,
    ));
    out
}

/// A heartbeat's age for people: `350 ms ago`, `4.2 s ago`, `3 min 5 s ago`, `2 h 10 min ago`.
fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms ago"),
        1_000..=59_999 => format!("{}.{} s ago", ms / 1_000, (ms % 1_000) / 100),
        60_000..=3_599_999 => format!("{} min {} s ago", ms / 60_000, (ms % 60_000) / 1_000),
        _ => format!("{} h {} min ago", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

fn member_json(m: &Member) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "addr": m.addr,
        "state": m.state.as_str(),
        "last_heartbeat_ms": m.last_heartbeat_ms,
    })
}

/// `{"view": N, "fenced": bool, "members": [...]}`.
fn view_json(view: &View) -> Value {
    json!({
        "view": view.view,
        "fenced": view.fenced,
        "members": view.members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

/// `{"view": N, "kind": "...", "node": id|null, "fenced": bool, "members": [...]}`.
fn event_json(event: &MembershipEvent) -> Value {
    json!({
        "view": event.view,
        "kind": event.kind.as_str(),
        "node": event.node,
        "fenced": event.current.fenced,
        "members": event.current.members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_sdk::MemberState;

    fn member(id: u64, state: MemberState, hb: Option<u64>) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            addr: format!("127.0.0.1:710{id}"),
            state,
            last_heartbeat_ms: hb,
        }
    }

    fn view(n: u64, fenced: bool) -> View {
        View {
            view: n,
            members: vec![
                member(1, MemberState::Up, Some(0)),
                member(2, MemberState::Down, Some(4_200)),
                member(3, MemberState::Left, None),
            ],
            fenced,
        }
    }

    #[test]
    fn the_view_json_has_the_documented_shape() {
        let v = view_json(&view(7, false));
        assert_eq!(v["view"], 7);
        assert_eq!(v["fenced"], false);
        assert_eq!(
            v["members"][1],
            json!({"id": 2, "name": "n2", "addr": "127.0.0.1:7102", "state": "down",
                   "last_heartbeat_ms": 4200})
        );
        assert!(v["members"][2]["last_heartbeat_ms"].is_null());
        assert_eq!(v["members"][2]["state"], "left");
    }

    #[test]
    fn event_json_names_kind_and_node() {
        let e = MembershipEvent {
            view: 8,
            kind: ChangeKind::Down,
            node: Some(2),
            current: view(8, false),
        };
        let j = event_json(&e);
        assert_eq!(j["view"], 8);
        assert_eq!(j["kind"], "down");
        assert_eq!(j["node"], 2);
        assert_eq!(j["members"].as_array().map(Vec::len), Some(3));
        let snap = MembershipEvent {
            kind: ChangeKind::Snapshot,
            node: None,
            ..e
        };
        let j = event_json(&snap);
        assert_eq!(j["kind"], "snapshot");
        assert!(j["node"].is_null());
    }

    #[test]
    fn the_table_shows_the_view_number_states_ages_and_fencing() {
        let t = view_table(&view(7, false));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "view 7");
        assert!(lines[1].starts_with("ID  NAME  ADDRESS"), "{t}");
        assert!(lines[1].ends_with("STATE  LAST HEARTBEAT"), "{t}");
        assert!(
            lines[2].contains("up") && lines[2].ends_with("0 ms ago"),
            "{t}"
        );
        assert!(
            lines[3].contains("down") && lines[3].ends_with("4.2 s ago"),
            "{t}"
        );
        assert!(
            lines[4].contains("left") && lines[4].ends_with("never"),
            "{t}"
        );
        let t = view_table(&view(7, true));
        assert!(
            t.lines().nth(1).is_some_and(|l| l.contains("FENCED")),
            "{t}"
        );
    }

    #[test]
    fn changes_are_one_line_each_and_resyncs_say_so() {
        let before = view(7, false);
        let down = MembershipEvent {
            view: 8,
            kind: ChangeKind::Down,
            node: Some(2),
            current: view(8, false),
        };
        assert_eq!(
            event_lines(&down, Some(&before), "127.0.0.1:7101"),
            ["view 8: node 2 (n2) down"]
        );
        // A node gone from the view is named from the previous one; unknown ones by id only.
        let mut gone = view(9, false);
        gone.members.retain(|m| m.id != 3);
        let left = MembershipEvent {
            view: 9,
            kind: ChangeKind::Left,
            node: Some(3),
            current: gone.clone(),
        };
        assert_eq!(
            event_lines(&left, Some(&before), "x:1"),
            ["view 9: node 3 (n3) left"]
        );
        let joined = MembershipEvent {
            view: 10,
            kind: ChangeKind::Joined,
            node: Some(4),
            current: gone,
        };
        assert_eq!(
            event_lines(&joined, None, "x:1"),
            ["view 10: node 4 joined"]
        );
        // Fencing flips get their own line.
        let fenced = MembershipEvent {
            view: 8,
            kind: ChangeKind::Up,
            node: Some(2),
            current: view(8, true),
        };
        let lines = event_lines(&fenced, Some(&before), "x:1");
        assert_eq!(lines[0], "view 8: node 2 (n2) up");
        assert!(lines[1].contains("FENCED"), "{lines:?}");
        // The first snapshot is a table; a later one (a reconnection) says it summarizes.
        let snap = MembershipEvent {
            view: 12,
            kind: ChangeKind::Snapshot,
            node: None,
            current: view(12, false),
        };
        let first = event_lines(&snap, None, "x:1");
        assert_eq!(first.len(), 1);
        assert!(first[0].starts_with("view 12\n"), "{first:?}");
        let again = event_lines(&snap, Some(&before), "127.0.0.1:7102");
        assert!(
            again[0].contains("resynchronized from 127.0.0.1:7102"),
            "{again:?}"
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        members: MembersArgs,
    }

    #[test]
    fn the_arguments_parse_and_count_needs_watch() {
        use clap::{CommandFactory as _, Parser as _};
        Cli::command().debug_assert();
        let a = Cli::try_parse_from(["members", "--watch", "--count", "2"]).expect("valid");
        assert!(a.members.watch);
        assert_eq!(a.members.count, Some(2));
        let a = Cli::try_parse_from(["members"]).expect("valid");
        assert!(!a.members.watch && a.members.count.is_none());
        assert!(Cli::try_parse_from(["members", "--count", "1"]).is_err());
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0), "0 ms ago");
        assert_eq!(age(999), "999 ms ago");
        assert_eq!(age(4_250), "4.2 s ago");
        assert_eq!(age(185_000), "3 min 5 s ago");
        assert_eq!(age(7_800_000), "2 h 10 min ago");
    }
}
