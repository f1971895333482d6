//! `nines amf status|history`, `nines admin model apply`, and the AMF admin operations
//! (`nines admin lock su NAME`, `nines admin si-swap SI`, ...).
//!
//! `nines amf status -o json` prints one object:
//! `{"has_model", "epoch", "sis": [{"name", "sg", "assignment_state", "assignments": [{"su",
//! "node", "ha_state", "epoch", "pending"}]}], "components": [{"name", "su", "node", "pid"
//! (null when not running), "presence", "readiness", "restarts", "watchdog", "watchdog_ms",
//! "last_kick_age_ms"}], "sus": [{"name", "sg", "node",
//! "admin_state", "oper_state", "readiness"}]}`.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use nines_core::limits;
use std::collections::BTreeMap;

use nines_proto::amf::v1::{
    amf_client::AmfClient, AdminRequest, AmfStatusReply, AmfStatusRequest, ApplyModelRequest,
    BeliefsRequest, ComponentBelief, ComponentStatus, WatchdogsRequest,
};
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::output::{table, Format};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) fn connect(addr: &str) -> anyhow::Result<AmfClient<Channel>> {
    let ep = crate::client::endpoint(addr)?
        .connect_timeout(Duration::from_millis(1_500))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true);
    Ok(AmfClient::new(ep.connect_lazy())
        .max_decoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX))
}

/// Try each endpoint until one answers; a business error from an agent is final.
async fn first_answer<T, F, Fut>(endpoints: &[String], mut call: F) -> anyhow::Result<T>
where
    F: FnMut(AmfClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last = anyhow!("no endpoints given (use --endpoints host:port,...)");
    for ep in endpoints {
        match call(connect(ep)?).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if crate::client::unreached(ep, &s) => last = crate::client::call_error(ep, &s),
            Err(s) => return Err(crate::client::call_error(ep, &s)),
        }
    }
    Err(last.context("no agent answered; is the cluster running?"))
}

/// The AMF status from any endpoint (linearizable unless `stale`).
pub async fn fetch_status(endpoints: &[String], stale: bool) -> anyhow::Result<AmfStatusReply> {
    first_answer(endpoints, |mut c| async move {
        c.status(AmfStatusRequest { stale }).await
    })
    .await
}

/// Node-local component watchdogs, by component: (period ms, last kick age ms, expired).
pub type Watchdogs = BTreeMap<String, (u64, u64, bool)>;

/// Node-local component beliefs, by component (what each component says it holds).
pub type Beliefs = BTreeMap<String, ComponentBelief>;

/// What only each component's own agent knows: its watchdog and its belief.
#[derive(Debug, Clone, Default)]
pub struct NodeLocal {
    /// Watchdogs, by component.
    pub watchdogs: Watchdogs,
    /// Beliefs, by component.
    pub beliefs: Beliefs,
}

/// Every reachable agent's component watchdogs and beliefs (each agent knows only its own
/// components; an agent that does not answer within a second is left out).
pub async fn fetch_node_local(endpoints: &[String]) -> NodeLocal {
    let mut handles = Vec::new();
    for ep in endpoints {
        let ep = ep.clone();
        handles.push(tokio::spawn(async move {
            let mut c = connect(&ep).ok()?;
            let wait = Duration::from_secs(1);
            let wd = tokio::time::timeout(wait, c.watchdogs(WatchdogsRequest {}))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|r| r.into_inner());
            let beliefs = tokio::time::timeout(wait, c.beliefs(BeliefsRequest {}))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|r| r.into_inner());
            Some((wd, beliefs))
        }));
    }
    let mut out = NodeLocal::default();
    for h in handles {
        let Ok(Some((wd, beliefs))) = h.await else {
            continue;
        };
        for c in wd.map(|r| r.components).unwrap_or_default() {
            out.watchdogs
                .insert(c.name, (c.watchdog_ms, c.last_kick_age_ms, c.expired));
        }
        for b in beliefs.map(|r| r.components).unwrap_or_default() {
            out.beliefs.insert(b.component.clone(), b);
        }
    }
    out
}

/// `nines amf status`.
pub async fn status(endpoints: &[String], stale: bool, format: Format) -> anyhow::Result<()> {
    let st = fetch_status(endpoints, stale).await?;
    let local = fetch_node_local(endpoints).await;
    match format {
        Format::Json => println!("{}", status_json(&st, &local)),
        Format::Table => println!("{}", status_table(&st, &local)),
    }
    Ok(())
}

/// A component's belief in a few words: `active@5`, `standby@4, quiesced@5`, `-` (none held),
/// with `lease out` when its lease ran out and `DIFFERS (N ms)` when it does not match the
/// agreed state.
fn belief_word(b: Option<&ComponentBelief>) -> String {
    let Some(b) = b else {
        return "?".into();
    };
    let mut w: Vec<String> = b
        .assignments
        .iter()
        .map(|a| format!("{}@{}", a.ha_state, a.epoch))
        .collect();
    if w.is_empty() {
        w.push("-".into());
    }
    let mut out = w.join(", ");
    if b.lease_expired {
        out.push_str(" (lease out)");
    }
    if !b.agrees {
        out.push_str(&format!(" DIFFERS ({} ms)", b.differs_for_ms));
    }
    out
}

fn watchdog_word(c: &ComponentStatus, wd: &Watchdogs) -> (&'static str, Option<u64>) {
    match wd.get(&c.name) {
        Some((_, age, true)) => ("expired", Some(*age)),
        Some((_, age, false)) => ("ok", Some(*age)),
        None if c.running => ("off", None),
        None => ("-", None),
    }
}

/// `nines amf history`.
pub async fn history(endpoints: &[String], format: Format) -> anyhow::Result<()> {
    let st = fetch_status(endpoints, false).await?;
    match format {
        Format::Json => {
            let v: Vec<Value> = st
                .history
                .iter()
                .map(|h| {
                    let mut v = json!({"index": h.index, "time_ms": h.time_ms, "kind": h.kind,
                                       "entity": h.entity, "text": h.text});
                    if h.confirmed_ms > 0 {
                        v["timeline"] = json!({
                            "detected_ms": h.detected_ms,
                            "decided_ms": h.decided_ms,
                            "confirmed_ms": h.confirmed_ms,
                            "decided_after_ms": h.decided_ms.saturating_sub(h.detected_ms),
                            "confirmed_after_ms": h.confirmed_ms.saturating_sub(h.detected_ms),
                        });
                    }
                    v
                })
                .collect();
            println!("{}", Value::Array(v));
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = st
                .history
                .iter()
                .map(|h| {
                    vec![
                        h.index.to_string(),
                        h.time_ms.to_string(),
                        h.kind.clone(),
                        h.entity.clone(),
                        h.text.clone(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["INDEX", "TIME MS", "KIND", "ENTITY", "WHAT"], &rows)
            );
        }
    }
    Ok(())
}

/// The JSON form, with each component's `watchdog` ("ok" | "expired" | "off" | "-" when not
/// running), `watchdog_ms` and `last_kick_age_ms` (null when unknown), and its `belief` (what
/// it says it holds, `lease_expired`, `agrees` with the agreed state, `differs_for_ms`; null
/// when its agent did not say); `belief_mismatches` lists the components that differ.
pub fn status_json(st: &AmfStatusReply, local: &NodeLocal) -> Value {
    let wd = &local.watchdogs;
    let mut v = status_json_core(st);
    if let Some(comps) = v["components"].as_array_mut() {
        for (j, c) in comps.iter_mut().zip(&st.components) {
            let (word, age) = watchdog_word(c, wd);
            j["watchdog"] = json!(word);
            j["last_kick_age_ms"] = json!(age);
            j["watchdog_ms"] = json!(wd.get(&c.name).map(|w| w.0));
            j["belief"] = match local.beliefs.get(&c.name) {
                None => Value::Null,
                Some(b) => json!({
                    "assignments": b.assignments.iter().map(|a| json!({
                        "si": a.si, "csi": a.csi, "ha_state": a.ha_state, "epoch": a.epoch,
                    })).collect::<Vec<_>>(),
                    "lease_expired": b.lease_expired,
                    "agrees": b.agrees,
                    "differs_for_ms": b.differs_for_ms,
                }),
            };
        }
    }
    v["belief_mismatches"] = json!(local
        .beliefs
        .values()
        .filter(|b| !b.agrees)
        .map(|b| b.component.clone())
        .collect::<Vec<_>>());
    v
}

fn status_json_core(st: &AmfStatusReply) -> Value {
    json!({
        "has_model": !st.empty,
        "epoch": st.epoch,
        "sis": st.sis.iter().map(|s| json!({
            "name": s.name,
            "sg": s.sg,
            "assignment_state": s.assignment_state,
            "assignments": s.assignments.iter().map(|a| json!({
                "su": a.su,
                "node": a.node,
                "ha_state": a.ha_state,
                "epoch": a.epoch,
                "pending": if a.pending.is_empty() { Value::Null } else { json!(a.pending) },
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "components": st.components.iter().map(|c| json!({
            "name": c.name,
            "su": c.su,
            "node": c.node,
            "pid": if c.running { json!(c.pid) } else { Value::Null },
            "presence": c.presence,
            "readiness": c.readiness,
            "restarts": c.restart_count,
        })).collect::<Vec<_>>(),
        "sus": st.sus.iter().map(|s| json!({
            "name": s.name,
            "sg": s.sg,
            "node": s.node,
            "admin_state": s.admin_state,
            "oper_state": s.oper_state,
            "readiness": s.readiness,
        })).collect::<Vec<_>>(),
    })
}

/// The table form, with each component's watchdog and last kick age, and its belief; a last
/// line names every component whose belief differs from the agreed state.
pub fn status_table(st: &AmfStatusReply, local: &NodeLocal) -> String {
    let wd = &local.watchdogs;
    if st.empty {
        return "no AMF model is applied; apply one with `nines admin model apply FILE`".into();
    }
    let sis: Vec<Vec<String>> = st
        .sis
        .iter()
        .map(|s| {
            let a: Vec<String> = s
                .assignments
                .iter()
                .map(|a| {
                    let pending = if a.pending.is_empty() {
                        String::new()
                    } else {
                        format!(" -> {}", a.pending)
                    };
                    format!(
                        "{}@{} {}{} (epoch {})",
                        a.su, a.node, a.ha_state, pending, a.epoch
                    )
                })
                .collect();
            vec![
                s.name.clone(),
                s.sg.clone(),
                s.assignment_state.clone(),
                a.join(", "),
            ]
        })
        .collect();
    let sus: Vec<Vec<String>> = st
        .sus
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.sg.clone(),
                s.node.clone(),
                s.admin_state.clone(),
                s.oper_state.clone(),
                s.readiness.clone(),
            ]
        })
        .collect();
    let comps: Vec<Vec<String>> = st
        .components
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.su.clone(),
                c.node.clone(),
                if c.running {
                    c.pid.to_string()
                } else {
                    "-".into()
                },
                c.presence.clone(),
                c.readiness.clone(),
                c.restart_count.to_string(),
                match watchdog_word(c, wd) {
                    (word, Some(age)) => format!("{word} ({age} ms ago)"),
                    (word, None) => word.to_string(),
                },
                if c.running {
                    belief_word(local.beliefs.get(&c.name))
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let differ: Vec<String> = local
        .beliefs
        .values()
        .filter(|b| !b.agrees)
        .map(|b| format!("{} ({})", b.component, belief_word(Some(b))))
        .collect();
    let beliefs = match differ.is_empty() {
        true => "beliefs: every component that reported agrees with the agreed state".to_string(),
        false => format!(
            "beliefs: ALARM: {} differ from the agreed state (their agents are correcting \
             them): {}",
            differ.len(),
            differ.join("; ")
        ),
    };
    format!(
        "{}\n\n{}\n\n{}\n{beliefs}",
        table(&["SI", "SG", "STATE", "ASSIGNMENTS"], &sis),
        table(&["SU", "SG", "NODE", "ADMIN", "OPER", "READINESS"], &sus),
        table(
            &[
                "COMPONENT",
                "SU",
                "NODE",
                "PID",
                "PRESENCE",
                "READINESS",
                "RESTARTS",
                "WATCHDOG (LAST KICK)",
                "BELIEF"
            ],
            &comps
        )
    )
}

/// `nines admin model apply FILE`.
pub async fn apply_model(
    endpoints: &[String],
    file: &std::path::Path,
    format: Format,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the model file {}", file.display()))?;
    let source = file.display().to_string();
    // Validate here first: every problem at once, before anything is sent.
    nines_agent::parse_model(&text, &source).map_err(|e| anyhow!("{}", e.message))?;
    let reply = first_answer(endpoints, |mut c| {
        let req = ApplyModelRequest {
            toml: text.clone(),
            source: source.clone(),
        };
        async move { c.apply_model(req).await }
    })
    .await?;
    match format {
        Format::Json => println!(
            "{}",
            json!({"changed": reply.changed, "changes": reply.changes, "index": reply.index})
        ),
        Format::Table if !reply.changed => println!("model unchanged (already in force)"),
        Format::Table => {
            for c in &reply.changes {
                println!("{c}");
            }
        }
    }
    Ok(())
}

/// An AMF admin operation.
pub async fn admin(
    endpoints: &[String],
    operation: &str,
    kind: &str,
    target: &str,
    format: Format,
) -> anyhow::Result<()> {
    let reply = first_answer(endpoints, |mut c| {
        let req = AdminRequest {
            operation: operation.to_string(),
            target_kind: kind.to_string(),
            target: target.to_string(),
        };
        async move { c.admin(req).await }
    })
    .await?;
    match format {
        Format::Json => println!(
            "{}",
            json!({"operation": operation, "target_kind": kind, "target": target,
                   "message": reply.message, "index": reply.index})
        ),
        Format::Table => println!("{operation} {kind} {target}: {}", reply.message),
    }
    Ok(())
}
