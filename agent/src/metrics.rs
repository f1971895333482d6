//! Prometheus metrics: `GET /metrics` on `metrics_addr`, in the text exposition format 0.0.4.
//!
//! Gauges are derived at scrape time from what the agent already knows (the raft status, the
//! replicated membership view and AMF state read from local state, the heartbeat detector, the
//! director's watchdog table); counters and histograms are the services' lock-free statics
//! (`nines_consensus::metrics::RAFT`, `nines_amf::telemetry::METRICS`,
//! `nines_ckpt::service::METRICS`, `nines_evt::METRICS`). The listener is a minimal HTTP/1.1
//! responder: one request per connection, request head capped at [`REQUEST_BYTES_MAX`], a
//! deadline on every connection and a cap on concurrent ones.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nines_consensus::metrics::{HistogramSnapshot, RAFT};
use nines_consensus::{Proposer, ReadMode};
use nines_core::shutdown::ShutdownSignal;
use nines_heartbeat::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::heartbeat::LocalHealth;
use crate::membership::AgreedState;
use crate::AgentState;

/// Largest request head accepted (request line and headers); a scrape needs a few hundred.
pub(crate) const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Scrapes served at once; further connections wait for a slot.
pub(crate) const CONNECTIONS_MAX: usize = 8;
/// Deadline for one connection: read the request, build and write the answer.
pub(crate) const CONNECTION_TIMEOUT_MS: u64 = 10_000;
/// Deadline for reading the replicated state at scrape time.
const STATE_READ_TIMEOUT_MS: u64 = 2_000;

/// What a scrape reads.
pub(crate) struct Sources {
    /// The raft status and the replicated state (read locally, never through the leader).
    pub proposer: Proposer<AgentState>,
    /// This agent's failure detector view and lease.
    pub heartbeat: Arc<Mutex<LocalHealth>>,
    /// The local component watchdogs.
    pub watchdogs: nines_amf::director::WatchdogViews,
    /// The local components' beliefs.
    pub beliefs: nines_amf::director::BeliefViews,
}

/// Serve scrapes on `listener` until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, sources: Sources, mut shutdown: ShutdownSignal) {
    let sources = Arc::new(sources);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, "serving metrics at http://{a}/metrics");
    }
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let conn = tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            c = listener.accept() => c,
        };
        let (stream, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let limit = Duration::from_millis(CONNECTION_TIMEOUT_MS);
            let _ = tokio::time::timeout(limit, handle(stream, &sources)).await;
            drop(permit);
        });
    }
}

/// Answer one request.
async fn handle(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= REQUEST_BYTES_MAX {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(()); // closed before a whole request
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = render(sources).await;
            respond(&mut stream, "200 OK", &body).await
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "GET only\n").await,
        _ => respond(&mut stream, "404 Not Found", "metrics are at /metrics\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// What a scrape reads from the replicated state (local copy).
struct StateView {
    membership_view: u64,
    /// (id, name, agreed state) of each member.
    members: Vec<(u64, String, Option<AgreedState>)>,
    amf: nines_amf::state::AmfStatus,
    failovers_in_progress: usize,
    checkpoints: usize,
}

/// The whole exposition.
pub(crate) async fn render(sources: &Sources) -> String {
    let mut t = Text::default();
    render_raft(&mut t, sources);
    let timeout = Duration::from_millis(STATE_READ_TIMEOUT_MS);
    let view = sources
        .proposer
        .read(ReadMode::Stale, timeout, |s: &AgentState| {
            let mut amf = s.amf.status();
            amf.history.clear();
            StateView {
                membership_view: s.membership.view,
                members: s
                    .members
                    .iter()
                    .map(|(id, m)| (*id, m.name.clone(), s.membership.states.get(id).copied()))
                    .collect(),
                amf,
                failovers_in_progress: s.amf.failovers.len(),
                checkpoints: s.ckpt.list().len(),
            }
        })
        .await;
    match view {
        Ok(v) => {
            render_membership(&mut t, sources, &v);
            render_amf(&mut t, &v);
            t.gauge(
                "nines_ckpt_checkpoints",
                "Checkpoints in the replicated state.",
                v.checkpoints,
            );
        }
        Err(e) => tracing::warn!("metrics: cannot read the local state: {e}"),
    }
    render_counters(&mut t);
    render_watchdogs(&mut t, sources);
    render_beliefs(&mut t, sources);
    t.0
}

fn render_raft(t: &mut Text, sources: &Sources) {
    let s = sources.proposer.status();
    t.gauge("nines_raft_term", "Current raft term.", s.term);
    t.gauge(
        "nines_raft_leader_id",
        "The leader this node knows of (0: none).",
        s.leader_id.unwrap_or(0),
    );
    t.gauge(
        "nines_raft_is_leader",
        "1 if this node is the leader.",
        u8::from(s.role == nines_consensus::Role::Leader),
    );
    t.header(
        "nines_raft_role",
        "This node's raft role (1 for the current one).",
        "gauge",
    );
    t.sample("nines_raft_role", &[("role", s.role.as_str())], 1);
    t.gauge(
        "nines_raft_commit_index",
        "Highest index known committed.",
        s.commit,
    );
    t.gauge(
        "nines_raft_applied_index",
        "Highest index applied.",
        s.applied,
    );
    t.gauge(
        "nines_raft_first_index",
        "First index still in the log.",
        s.first_index,
    );
    t.gauge(
        "nines_raft_last_index",
        "Last index in the log.",
        s.last_index,
    );
    t.gauge(
        "nines_raft_snapshot_index",
        "Index of the latest snapshot.",
        s.snapshot_index,
    );
    t.gauge(
        "nines_raft_members",
        "Members in the member book.",
        s.members.len(),
    );
    t.counter_by(
        "nines_raft_proposals_total",
        "Proposals made on this node, by outcome.",
        "outcome",
        &[
            ("ok", RAFT.proposals_ok.get()),
            ("failed", RAFT.proposals_failed.get()),
        ],
    );
    t.histogram(
        "nines_raft_proposal_duration_seconds",
        "Time from propose to its answer (quorum commit and apply).",
        &[("", &RAFT.proposal_latency.snapshot())],
    );
    t.counter_by(
        "nines_raft_snapshots_total",
        "Snapshots taken by this node or installed from a leader.",
        "kind",
        &[
            ("taken", RAFT.snapshots_taken.get()),
            ("installed", RAFT.snapshots_installed.get()),
        ],
    );
    t.counter(
        "nines_raft_fsyncs_total",
        "Log syncs (fsync); each covers every Ready written before it began.",
        RAFT.fsyncs.get(),
    );
    t.counter(
        "nines_raft_readies_synced_total",
        "Readies that needed a sync (over fsyncs: the group-commit batching factor).",
        RAFT.readies_synced.get(),
    );
    t.counter(
        "nines_raft_entries_appended_total",
        "Entries appended to this node's log.",
        RAFT.entries_appended.get(),
    );
    t.histogram(
        "nines_raft_fsync_duration_seconds",
        "Time one log sync took.",
        &[("", &RAFT.fsync_latency.snapshot())],
    );
    t.histogram(
        "nines_raft_log_write_duration_seconds",
        "Time the driver spent writing one Ready into the log store, before its sync.",
        &[("", &RAFT.log_write_latency.snapshot())],
    );
    t.counter_by(
        "nines_raft_refused_messages_total",
        "Raft messages from peers refused before raft saw them, by reason.",
        "reason",
        &RAFT.refused_messages.by_label(),
    );
    t.counter_by(
        "nines_raft_link_refusals_total",
        "Raft links closed for breaking a link rule (or replaced by a newer link), by reason.",
        "reason",
        &RAFT.link_refusals.by_label(),
    );
    t.counter(
        "nines_tls_refused_connections_total",
        "Connections refused in the mutual TLS handshake (no certificate, another CA, expired, \
         too slow) or raft links opened with a client certificate.",
        RAFT.tls_refusals.get(),
    );
    let a = &crate::authz::METRICS;
    t.counter_by(
        "nines_authz_refused_total",
        "Calls refused by authorization, by why: role (below the call's), kind (client \
         certificate for peer traffic, node certificate for a client call), other.",
        "reason",
        &[
            ("role", a.role.get()),
            ("kind", a.kind.get()),
            ("other", a.other.get()),
        ],
    );
}

fn render_membership(t: &mut Text, sources: &Sources, v: &StateView) {
    let (local, fenced, now_ms) = {
        let h = sources.heartbeat.lock().expect("health lock poisoned");
        (h.views.clone(), h.fenced, h.now_ms)
    };
    let me = sources.proposer.id();
    t.gauge(
        "nines_membership_view",
        "The agreed membership view number.",
        v.membership_view,
    );
    t.gauge(
        "nines_node_fenced",
        "1 if this node's lease ran out.",
        u8::from(fenced),
    );
    t.header(
        "nines_member_state",
        "Each member's state as this node sees it (1 for the current one).",
        "gauge",
    );
    for (id, name, agreed) in &v.members {
        let detected = local.get(id).map(|x| x.health);
        let state = match (agreed, detected) {
            (Some(AgreedState::Left), _) => "left",
            (Some(AgreedState::Down), _) => "down",
            (_, Some(Health::Suspect | Health::Down)) => "suspect",
            _ => "up",
        };
        let id = id.to_string();
        for s in ["up", "suspect", "down", "left"] {
            let labels = [("node", id.as_str()), ("name", name.as_str()), ("state", s)];
            t.sample("nines_member_state", &labels, u8::from(s == state));
        }
    }
    t.header(
        "nines_member_heartbeat_age_seconds",
        "Time since this node last heard each peer's heartbeat.",
        "gauge",
    );
    for (id, name, _) in &v.members {
        let age_ms = match local.get(id) {
            _ if *id == me => 0,
            Some(x) => now_ms.saturating_sub(x.last_heartbeat_ms),
            None => continue,
        };
        let id = id.to_string();
        let labels = [("node", id.as_str()), ("name", name.as_str())];
        t.sample(
            "nines_member_heartbeat_age_seconds",
            &labels,
            age_ms as f64 / 1e3,
        );
    }
}

fn render_amf(t: &mut Text, v: &StateView) {
    t.header(
        "nines_amf_assignments",
        "Assignments by SI and HA state (pending changes included).",
        "gauge",
    );
    for si in &v.amf.sis {
        for ha in ["active", "standby", "quiescing", "quiesced"] {
            let n = si.assignments.iter().filter(|a| a.ha_state == ha).count();
            let labels = [("si", si.name.as_str()), ("ha_state", ha)];
            t.sample("nines_amf_assignments", &labels, n);
        }
    }
    t.header(
        "nines_amf_si_assigned",
        "1 if the SI has an active assignment.",
        "gauge",
    );
    for si in &v.amf.sis {
        let active = si.assignments.iter().any(|a| a.ha_state == "active");
        t.sample(
            "nines_amf_si_assigned",
            &[("si", si.name.as_str())],
            u8::from(active),
        );
    }
    t.gauge(
        "nines_amf_epoch",
        "The highest AMF epoch handed out.",
        v.amf.epoch,
    );
    t.gauge(
        "nines_amf_failovers_in_progress",
        "Failovers waiting for their new active to confirm.",
        v.failovers_in_progress,
    );
    t.header(
        "nines_amf_component_restarts",
        "Restarts of each component (replicated).",
        "gauge",
    );
    for c in &v.amf.components {
        t.sample(
            "nines_amf_component_restarts",
            &[("component", c.name.as_str())],
            c.restarts,
        );
    }
}

fn render_counters(t: &mut Text) {
    let a = &nines_amf::telemetry::METRICS;
    t.counter(
        "nines_amf_failovers_total",
        "Failovers completed (the new active confirmed), as applied here.",
        a.failovers.get(),
    );
    t.histogram(
        "nines_amf_failover_phase_seconds",
        "Failover phases: fault seen to recovery decided, decided to new active confirmed, and \
         the whole.",
        &[
            ("detect_to_decide", &a.phase_detect_to_decide.snapshot()),
            ("decide_to_confirm", &a.phase_decide_to_confirm.snapshot()),
            ("detect_to_confirm", &a.phase_detect_to_confirm.snapshot()),
        ],
    );
    t.counter_by(
        "nines_amf_restarts_total",
        "Restarts decided, by level.",
        "level",
        &[
            ("component", a.component_restarts.get()),
            ("su", a.su_restarts.get()),
        ],
    );
    t.counter_by(
        "nines_amf_escalations_total",
        "Recoveries escalated past their level's budget, by the level escalated to.",
        "to",
        &[
            ("su_restart", a.escalations_su_restart.get()),
            ("failover", a.escalations_failover.get()),
            ("node_failover", a.escalations_node_failover.get()),
        ],
    );
    t.counter_by(
        "nines_amf_callbacks_total",
        "Callbacks this node's director delivered, by outcome.",
        "outcome",
        &[
            ("ok", a.callbacks_ok.get()),
            ("failed", a.callbacks_failed.get()),
        ],
    );
    let c = &nines_ckpt::service::METRICS;
    let ops: Vec<(&str, u64)> = nines_ckpt::service::OPS
        .iter()
        .zip(&c.ops)
        .map(|(op, n)| (*op, n.get()))
        .collect();
    t.counter_by(
        "nines_ckpt_operations_total",
        "Checkpoint operations served by this agent, by operation.",
        "op",
        &ops,
    );
    t.counter(
        "nines_ckpt_errors_total",
        "Checkpoint operations that failed.",
        c.errors.get(),
    );
    t.counter_by(
        "nines_ckpt_bytes_total",
        "Section bytes written and read.",
        "direction",
        &[
            ("written", c.bytes_written.get()),
            ("read", c.bytes_read.get()),
        ],
    );
    t.counter(
        "nines_ckpt_async_refused_total",
        "Asynchronous checkpoint writes refused because this agent's queue was full (writes or \
         bytes).",
        c.async_refused.get(),
    );
    t.histogram(
        "nines_ckpt_operation_duration_seconds",
        "Time to serve a checkpoint operation.",
        &[("", &c.latency.snapshot())],
    );
    let e = &nines_evt::METRICS;
    t.counter(
        "nines_evt_published_total",
        "Events published through this agent.",
        e.published.get(),
    );
    t.counter(
        "nines_evt_delivered_total",
        "Events delivered to this agent's subscribers.",
        e.delivered.get(),
    );
    t.counter(
        "nines_evt_lost_total",
        "Events this agent's subscribers lost (announced in lost notices).",
        e.lost.get(),
    );
    t.gauge(
        "nines_evt_subscribers",
        "Event subscribers this agent serves now (at most SUBSCRIBERS_MAX).",
        nines_evt::subscribers(),
    );
    t.counter(
        "nines_evt_subscribers_refused_total",
        "Subscriptions refused because this agent served SUBSCRIBERS_MAX already.",
        e.subscribers_refused.get(),
    );
    t.counter(
        "nines_watchdog_kicks_total",
        "Component watchdog kicks received by this node's director.",
        a.watchdog_kicks.get(),
    );
    t.counter(
        "nines_watchdog_expiries_total",
        "Component watchdogs that expired on this node.",
        a.watchdog_expiries.get(),
    );
}

fn render_beliefs(t: &mut Text, sources: &Sources) {
    let views = sources.beliefs.lock().expect("belief views lock").clone();
    t.gauge(
        "nines_amf_belief_mismatches",
        "Local components whose belief (what they hold, as they report it) differs from the \
         agreed state.",
        views.values().filter(|v| !v.agrees).count(),
    );
    t.gauge(
        "nines_amf_belief_alarms",
        "Local components whose belief has differed from the agreed state for over a second.",
        views
            .values()
            .filter(|v| v.differs_for_ms >= nines_amf::director::BELIEF_ALARM_MS)
            .count(),
    );
    t.gauge(
        "nines_amf_lease_expired_components",
        "Local components whose lease from this agent has run out.",
        views.values().filter(|v| v.lease_expired).count(),
    );
    t.counter(
        "nines_amf_belief_corrections_total",
        "Corrections of local components whose belief differed from the agreed state.",
        nines_amf::telemetry::METRICS.belief_corrections.get(),
    );
}

fn render_watchdogs(t: &mut Text, sources: &Sources) {
    let views = sources
        .watchdogs
        .lock()
        .expect("watchdog views lock")
        .clone();
    t.gauge(
        "nines_watchdog_armed",
        "Component watchdogs armed on this node.",
        views.len(),
    );
    t.header(
        "nines_watchdog_last_kick_age_seconds",
        "Time since each local component's last watchdog kick.",
        "gauge",
    );
    for (name, v) in &views {
        t.sample(
            "nines_watchdog_last_kick_age_seconds",
            &[("component", name.as_str())],
            v.last_kick_age_ms as f64 / 1e3,
        );
    }
}

/// A text exposition being written.
#[derive(Default)]
struct Text(String);

impl Text {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, help, "gauge");
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value);
    }

    /// One counter family with one sample per value of the label `key`.
    fn counter_by(&mut self, name: &str, help: &str, key: &str, values: &[(&str, u64)]) {
        self.header(name, help, "counter");
        for (label, value) in values {
            self.sample(name, &[(key, label)], value);
        }
    }

    /// One histogram family; each part is (`phase` label value or "" for none, values).
    fn histogram(&mut self, name: &str, help: &str, parts: &[(&str, &HistogramSnapshot)]) {
        self.header(name, help, "histogram");
        for (phase, h) in parts {
            let mut labels: Vec<(&str, &str)> = Vec::new();
            if !phase.is_empty() {
                labels.push(("phase", phase));
            }
            let bucket = format!("{name}_bucket");
            for (le, n) in &h.buckets {
                let le = le.to_string();
                let mut l = labels.clone();
                l.push(("le", &le));
                self.sample(&bucket, &l, n);
            }
            let mut l = labels.clone();
            l.push(("le", "+Inf"));
            self.sample(&bucket, &l, h.count);
            self.sample(&format!("{name}_sum"), &labels, h.sum_s);
            self.sample(&format!("{name}_count"), &labels, h.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_escapes_labels_and_accumulates_buckets() {
        let mut t = Text::default();
        t.sample("x", &[("a", "q\"\\\n")], 1);
        assert_eq!(t.0, "x{a=\"q\\\"\\\\\\n\"} 1\n");
        let h = HistogramSnapshot {
            buckets: vec![(0.5, 1), (1.0, 2)],
            sum_s: 1.25,
            count: 3,
        };
        let mut t = Text::default();
        t.histogram("h", "help", &[("p", &h)]);
        let want = "# HELP h help\n# TYPE h histogram\nh_bucket{phase=\"p\",le=\"0.5\"} 1\n\
                    h_bucket{phase=\"p\",le=\"1\"} 2\nh_bucket{phase=\"p\",le=\"+Inf\"} 3\n\
                    h_sum{phase=\"p\"} 1.25\nh_count{phase=\"p\"} 3\n";
        assert_eq!(t.0, want);
    }
}
