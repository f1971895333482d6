//! Talking to agents: per-node status, the cluster view from any endpoints, admin calls.
//!
//! Every channel the CLI opens is built by [`endpoint`] (or [`endpoint_with`]), and every SDK
//! client it makes is configured by [`sdk_config`]: both carry the process-wide client TLS set
//! once from `--ca`, `--cert`, `--key` ([`set_tls`]). With it the CLI dials `https://` and
//! presents its certificate; without it, plaintext. A call that fails at the transport is
//! explained by [`call_error`] (a refused certificate, an agent not speaking TLS, a missing
//! certificate) rather than shown as a bare "transport error".

use std::{collections::BTreeMap, path::PathBuf, sync::RwLock, time::Duration};

use anyhow::{anyhow, Context};
use nines_core::limits;
use nines_proto::{
    ais_from_status,
    cluster::v1::{cluster_client::ClusterClient, NodeStatus, StatusRequest},
};
use nines_sdk::{explain_tls_failure, grpc_endpoint, ClientConfig, TlsFiles};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// The endpoints the CLI uses when given none: the three-node local cluster in `deploy/local`.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

/// How long one status call may take before the node counts as unreachable.
const STATUS_TIMEOUT_MS: u64 = 1_500;

/// Split a comma-separated endpoint list.
pub fn parse_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(|e| e.trim().trim_start_matches("http://").to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// The client TLS files every connection of this process uses ([`set_tls`]); `None`: plaintext.
static TLS: RwLock<Option<TlsFiles>> = RwLock::new(None);

/// Set the client TLS of every connection this process opens from now on (`None`: plaintext).
/// `main` sets it from `--ca`, `--cert`, `--key`; `nines demo`, `nines drill --local` and the
/// local benchmarks set it to their throw-away cluster's operator files.
pub fn set_tls(tls: Option<TlsFiles>) {
    match TLS.write() {
        Ok(mut t) => *t = tls,
        // A panic while holding the lock cannot leave a half-written Option: take it over.
        Err(poisoned) => *poisoned.into_inner() = tls,
    }
}

/// The process-wide client TLS files ([`set_tls`]).
pub fn tls() -> Option<TlsFiles> {
    match TLS.read() {
        Ok(t) => t.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// The client TLS named by `--ca`, `--cert`, `--key` (each also read from `NINES_CA`,
/// `NINES_CERT`, `NINES_KEY`): all three → `Some`, none → `None`.
///
/// # Errors
/// Only some are given: the message names the missing ones.
pub fn tls_from_flags(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<TlsFiles>> {
    match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
        (None, None, None) => Ok(None),
        (ca, cert, key) => {
            let missing: Vec<&str> = [
                (ca.is_none(), "--ca (NINES_CA)"),
                (cert.is_none(), "--cert (NINES_CERT)"),
                (key.is_none(), "--key (NINES_KEY)"),
            ]
            .into_iter()
            .filter(|(m, _)| *m)
            .map(|(_, name)| name)
            .collect();
            Err(anyhow!(
                "client TLS needs all of --ca, --cert and --key: {} missing (give the cluster's \
                 ca.pem and a client certificate and key from `nines cert client`, or none of \
                 them for plaintext)",
                missing.join(" and ")
            ))
        }
    }
}

/// The tonic endpoint for the agent at `addr` (`host:port`) with the process-wide client TLS
/// ([`tls`]): `https://` presenting the client's certificate when set, `http://` otherwise.
/// Callers add their timeouts.
///
/// # Errors
/// `addr` is not a `host:port`; a TLS file is missing or does not belong with the others.
pub fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    endpoint_with(addr, tls().as_ref())
}

/// [`endpoint`] with explicit TLS files (a local cluster's own, whatever the process uses).
///
/// # Errors
/// As [`endpoint`].
pub fn endpoint_with(addr: &str, tls: Option<&TlsFiles>) -> anyhow::Result<Endpoint> {
    grpc_endpoint(addr, tls)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot dial '{addr}'"))
}

/// The SDK's default tunables with the process-wide client TLS ([`tls`]): what every SDK client
/// the CLI makes is configured with (the CLI's flags already read `NINES_CA`... through clap).
pub fn sdk_config() -> ClientConfig {
    ClientConfig {
        tls: tls(),
        ..ClientConfig::plaintext()
    }
}

/// A status's message with its sources (where rustls and the OS say what happened).
fn status_chain(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    let mut source = std::error::Error::source(s);
    let mut depth = 0;
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
        depth += 1;
        if depth == 8 {
            break;
        }
    }
    out
}

/// Whether a failed call to an agent reached no service, so another endpoint may be asked: the
/// connection was refused or lost before the request (`Unavailable` with no AIS code), or, with
/// client TLS, the TLS handshake failed (no request is read before it succeeds).
pub fn unreached(addr: &str, s: &tonic::Status) -> bool {
    unreached_with(addr, s, tls().is_some())
}

fn unreached_with(addr: &str, s: &tonic::Status, tls: bool) -> bool {
    if s.metadata().get(nines_proto::AIS_CODE_HEADER).is_some() {
        return false;
    }
    s.code() == tonic::Code::Unavailable
        || (tls && explain_tls_failure(addr, &status_chain(s), true).is_some())
}

/// The error of a failed call to the agent at `addr`, for people: the service's own AIS error
/// when it answered; otherwise the transport's failure with its cause, explained when TLS is
/// involved ("the agent at X refused this client's certificate: …", "… this client needs a
/// certificate: pass --ca/--cert/--key …").
pub fn call_error(addr: &str, s: &tonic::Status) -> anyhow::Error {
    call_error_with(addr, s, tls().is_some())
}

fn call_error_with(addr: &str, s: &tonic::Status, tls: bool) -> anyhow::Error {
    if s.metadata().get(nines_proto::AIS_CODE_HEADER).is_some() {
        return anyhow!("{}", ais_from_status(s));
    }
    let chain = status_chain(s);
    if let Some(explained) = explain_tls_failure(addr, &chain, tls) {
        return anyhow!("{explained}");
    }
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => anyhow!("{addr}: {chain}"),
        // tonic's own refusals (e.g. a service this server does not have) carry no message.
        code if s.message().is_empty() => anyhow!("{addr}: {}", code.description()),
        _ => anyhow!("{addr}: {}", ais_from_status(s)),
    }
}

/// A client for one agent (connects lazily; each call has its own deadline).
pub fn connect(addr: &str) -> anyhow::Result<ClusterClient<Channel>> {
    connect_with(addr, tls().as_ref())
}

fn connect_with(addr: &str, tls: Option<&TlsFiles>) -> anyhow::Result<ClusterClient<Channel>> {
    let ep = endpoint_with(addr, tls)?
        .connect_timeout(Duration::from_millis(STATUS_TIMEOUT_MS))
        .tcp_nodelay(true);
    Ok(ClusterClient::new(ep.connect_lazy())
        .max_decoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX))
}

/// One node's status, or why it could not be had.
pub async fn node_status(addr: &str) -> anyhow::Result<NodeStatus> {
    node_status_with(addr, tls().as_ref()).await
}

async fn node_status_with(addr: &str, tls: Option<&TlsFiles>) -> anyhow::Result<NodeStatus> {
    let mut c = connect_with(addr, tls)?;
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(Duration::from_millis(STATUS_TIMEOUT_MS));
    let fut = c.status(req);
    match tokio::time::timeout(Duration::from_millis(STATUS_TIMEOUT_MS), fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) if s.metadata().get(nines_proto::AIS_CODE_HEADER).is_some() => {
            Err(anyhow!("{addr}: {}", ais_from_status(&s)))
        }
        Ok(Err(s)) => Err(call_error_with(addr, &s, tls.is_some())),
        Err(_) => Err(anyhow!("{addr}: no answer within {STATUS_TIMEOUT_MS} ms")),
    }
}

/// One member as `nines status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// host:port.
    pub addr: String,
    /// "leader", "follower", "candidate", "pre-candidate", "learner" or "unreachable".
    pub role: String,
    /// Its commit index (0 when unreachable).
    pub commit: u64,
    /// Its applied index (0 when unreachable).
    pub applied: u64,
    /// The wire protocol version it speaks (null when unreachable).
    pub protocol_version: Option<u32>,
    /// Its health in the membership view: "up", "suspect", "down" or "left" (null if unknown).
    pub health: Option<String>,
    /// Age of the last heartbeat the answering agent received from it (null if none).
    pub last_heartbeat_ms: Option<u64>,
}

/// The cluster as seen from every endpoint that answered.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The leader, if one is known.
    pub leader: Option<u64>,
    /// The highest term any node reported.
    pub term: u64,
    /// Every member of the book, plus answering nodes not (yet) in it.
    pub members: Vec<MemberView>,
}

/// Ask every endpoint (and every member they name that was not asked) for its status, over the
/// process-wide client TLS ([`tls`]).
///
/// # Errors
/// Only when no node answers at all; the message lists why each endpoint failed.
pub async fn cluster_view(endpoints: &[String]) -> anyhow::Result<ClusterView> {
    cluster_view_with(endpoints, tls().as_ref()).await
}

/// [`cluster_view`] with explicit TLS files (a local cluster's own).
///
/// # Errors
/// As [`cluster_view`].
pub async fn cluster_view_with(
    endpoints: &[String],
    tls: Option<&TlsFiles>,
) -> anyhow::Result<ClusterView> {
    let mut answered: BTreeMap<String, NodeStatus> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut asked: Vec<String> = Vec::new();
    let mut to_ask: Vec<String> = endpoints.to_vec();
    for _round in 0..2 {
        let mut set = tokio::task::JoinSet::new();
        for addr in to_ask.drain(..) {
            if asked.contains(&addr) {
                continue;
            }
            asked.push(addr.clone());
            let tls = tls.cloned();
            set.spawn(async move {
                let r = node_status_with(&addr, tls.as_ref()).await;
                (addr, r)
            });
        }
        while let Some(Ok((addr, r))) = set.join_next().await {
            match r {
                Ok(s) => {
                    answered.insert(addr, s);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        for s in answered.values() {
            to_ask.extend(s.members.iter().map(|m| m.addr.clone()));
        }
    }
    // explain_tls_failure's explanations all say "mutual TLS" and what to do.
    if answered.is_empty() && failures.iter().all(|f| f.contains("mutual TLS")) {
        return Err(anyhow!(
            "no agent accepted this client ({})",
            failures.join("; ")
        ));
    }
    if answered.is_empty() {
        return Err(anyhow!(
            "no agent answered ({}); is the cluster running? (start one with the configs in \
             deploy/local, or pass --endpoints)",
            failures.join("; ")
        ));
    }
    let mut view = view_from(&answered);
    let addrs: Vec<String> = answered.keys().cloned().collect();
    add_health(&mut view, &addrs, tls).await;
    Ok(view)
}

fn view_from(answered: &BTreeMap<String, NodeStatus>) -> ClusterView {
    let by_id: BTreeMap<u64, &NodeStatus> = answered.values().map(|s| (s.id, s)).collect();
    let term = answered.values().map(|s| s.term).max().unwrap_or(0);
    // Only the newest term counts: a node still naming an older term's leader is stale.
    let leader = answered
        .values()
        .filter(|s| s.term == term)
        .find(|s| s.role == "leader")
        .map(|s| s.id)
        .or_else(|| {
            answered
                .values()
                .filter(|s| s.term == term && s.leader_id != 0)
                .map(|s| s.leader_id)
                .next()
        });
    let book = answered
        .values()
        .max_by_key(|s| (s.term, s.commit))
        .map(|s| s.members.clone())
        .unwrap_or_default();
    let mut members: BTreeMap<u64, MemberView> = BTreeMap::new();
    for m in &book {
        let view = match by_id.get(&m.id) {
            Some(s) => from_status(s),
            None => MemberView {
                id: m.id,
                name: m.name.clone(),
                addr: m.addr.clone(),
                role: "unreachable".into(),
                commit: 0,
                applied: 0,
                protocol_version: None,
                health: None,
                last_heartbeat_ms: None,
            },
        };
        members.insert(m.id, view);
    }
    for s in by_id.values() {
        members.entry(s.id).or_insert_with(|| from_status(s));
    }
    ClusterView {
        leader,
        term,
        members: members.into_values().collect(),
    }
}

fn from_status(s: &NodeStatus) -> MemberView {
    MemberView {
        id: s.id,
        name: s.name.clone(),
        addr: s.addr.clone(),
        role: s.role.clone(),
        commit: s.commit,
        applied: s.applied,
        protocol_version: Some(s.protocol_version),
        health: None,
        last_heartbeat_ms: None,
    }
}

/// Lay the membership view of the first agent that gives one over `view`.
async fn add_health(view: &mut ClusterView, answered: &[String], tls: Option<&TlsFiles>) {
    use nines_proto::membership::v1::{membership_client::MembershipClient, MembersRequest};
    for addr in answered {
        let Ok(ep) = endpoint_with(addr, tls) else {
            continue;
        };
        let mut c = MembershipClient::new(ep.connect_lazy());
        let mut req = tonic::Request::new(MembersRequest {});
        req.set_timeout(Duration::from_millis(STATUS_TIMEOUT_MS));
        let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_millis(STATUS_TIMEOUT_MS), c.members(req)).await
        else {
            continue;
        };
        for m in r.into_inner().members {
            if let Some(v) = view.members.iter_mut().find(|v| v.id == m.id) {
                let state = m
                    .state()
                    .as_str_name()
                    .trim_start_matches("MEMBER_STATE_")
                    .to_lowercase();
                v.health = Some(state);
                v.last_heartbeat_ms = u64::try_from(m.last_heartbeat_ms).ok();
            }
        }
        return;
    }
}

/// `endpoints` with the current leader's first (fewer forwarding hops), as given if no leader
/// can be found.
pub async fn leader_first(mut endpoints: Vec<String>) -> Vec<String> {
    if let Ok(leader) = find_leader(&endpoints).await {
        endpoints.retain(|e| *e != leader);
        endpoints.insert(0, leader);
    }
    endpoints
}

/// The endpoint of the current leader, found through any endpoint.
pub async fn find_leader(endpoints: &[String]) -> anyhow::Result<String> {
    let view = cluster_view(endpoints).await?;
    let leader = view
        .leader
        .ok_or_else(|| anyhow!("the cluster has no leader right now"))?;
    view.members
        .iter()
        .find(|m| m.id == leader)
        .map(|m| m.addr.clone())
        .ok_or_else(|| anyhow!("leader {leader} is not in the member book"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, role: &str, term: u64, leader_id: u64) -> NodeStatus {
        NodeStatus {
            id,
            role: role.into(),
            term,
            leader_id,
            ..Default::default()
        }
    }

    #[test]
    fn tls_flags_are_all_or_nothing() {
        let p = |s: &str| Some(PathBuf::from(s));
        let all = tls_from_flags(p("ca.pem"), p("c.pem"), p("c.key")).expect("all three");
        assert_eq!(all.map(|t| t.key), p("c.key"));
        assert_eq!(tls_from_flags(None, None, None).expect("none"), None);
        let e = tls_from_flags(None, p("c.pem"), None).expect_err("partial");
        let m = e.to_string();
        assert!(
            m.contains("--ca (NINES_CA) and --key (NINES_KEY) missing"),
            "{m}"
        );
    }

    #[test]
    fn channels_dial_https_with_tls_files_and_http_without() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let v = nines_tls::Validity::days_from(std::time::SystemTime::now(), 1);
        nines_tls::init_ca(tmp.path(), "t", v, false)?;
        nines_tls::issue_client(tmp.path(), "op", nines_tls::Role::Drill, v, false)?;
        let files = TlsFiles::client(tmp.path(), "op");
        let ep = endpoint_with("127.0.0.1:7101", Some(&files))?;
        assert_eq!(ep.uri().scheme_str(), Some("https"));
        let ep = endpoint_with("127.0.0.1:7101", None)?;
        assert_eq!(ep.uri().scheme_str(), Some("http"));
        let missing = TlsFiles::client(tmp.path(), "nobody");
        let e = endpoint_with("127.0.0.1:7101", Some(&missing)).expect_err("no such files");
        assert!(format!("{e:#}").contains("client-nobody.pem"), "{e:#}");
        Ok(())
    }

    #[test]
    fn a_leader_named_in_an_older_term_is_not_shown_as_leader() {
        let answered: BTreeMap<String, NodeStatus> = [
            ("a".to_string(), node(1, "follower", 3, 0)),
            ("b".to_string(), node(2, "follower", 2, 3)),
        ]
        .into();
        assert_eq!(view_from(&answered).leader, None);
        let answered: BTreeMap<String, NodeStatus> = [
            ("a".to_string(), node(1, "leader", 3, 1)),
            ("b".to_string(), node(2, "follower", 2, 3)),
        ]
        .into();
        assert_eq!(view_from(&answered).leader, Some(1));
    }
}
