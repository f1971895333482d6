//! The agent's run loop and its gRPC services.

use std::time::Duration;

use nines_ckpt::CkptService;
use nines_consensus::{
    start, Fatal, GrpcTransport, NodeConfig, PeerInfo, PeerPort, PeerService, Proposer, ReadMode,
    SledLogStore,
};
use nines_core::{
    limits,
    shutdown::{Shutdown, ShutdownSignal},
    AisError, ErrorCode, PROTOCOL_VERSION,
};
use nines_proto::{
    amf::v1::amf_server::AmfServer, ckpt::v1::checkpoint_server::CheckpointServer,
    membership::v1::membership_server::MembershipServer,
};
use nines_proto::{
    cluster::v1::{
        cluster_server::{Cluster, ClusterServer},
        AddNodeRequest, Member, MembershipResponse, NodeStatus, ProbeReadRequest,
        ProbeReadResponse, ProbeWriteRequest, ProbeWriteResponse, RemoveNodeRequest, StatusRequest,
    },
    raft::v1::raft_peer_server::RaftPeerServer,
    status_from_ais,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::{
    datadir, deadline::DeadlineLayer, janitor, AgentConfig, AgentState, ClusterCommand,
    ClusterResponse, Command, Response as SmResponse,
};

/// How long the agent drains in-flight requests, and then waits for its node, at shutdown.
const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// The longest deadline a client may ask for.
const CLIENT_TIMEOUT_MAX_MS: u64 = 60_000;
/// Calls whose handler lives as long as a stream, exempt from the request deadline: the raft
/// peer stream (server-streaming calls return their handler at once and need no exemption).
const LONG_LIVED_CALLS: &[&str] = &["/nines.raft.v1.RaftPeer/Stream"];
/// Applied events buffered for this agent's subscribers before a slow one catches up from the
/// state instead.
const EVT_BROADCAST_LEN: usize = 4_096;
/// Concurrent requests on one client or peer connection.
const STREAMS_PER_CONNECTION_MAX: usize = 256;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data dir cannot be used.
    #[error("{0}")]
    DataDir(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}; is another agent running there?")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The node hit a fatal error and stopped (storage, corruption, bad identity).
    #[error("node stopped: {0}")]
    Fatal(#[from] Fatal),
    /// The node watchdog device cannot be used.
    #[error("node watchdog: {0}")]
    Watchdog(String),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Server(String),
    /// The `[tls]` files cannot be used.
    #[error("[tls]: {0}")]
    Tls(String),
}

/// Bind `addr`, saying which address could not be bound.
async fn bind(addr: &str) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// What components get in their environment besides the director's own variables: with
/// `[tls] component_cert`, the files of the client certificate they use for checkpoints and
/// events (`NINES_CA`, `NINES_CERT`, `NINES_KEY`, which the SDK reads).
fn component_env(cfg: &AgentConfig) -> std::collections::BTreeMap<String, String> {
    let mut env = std::collections::BTreeMap::new();
    if let Some(files) = cfg.tls.as_ref().and_then(|t| t.component_files()) {
        env.insert("NINES_CA".into(), files.ca.display().to_string());
        env.insert("NINES_CERT".into(), files.cert.display().to_string());
        env.insert("NINES_KEY".into(), files.key.display().to_string());
    }
    env
}

/// This node's TLS for its listener and its connections to peers, or `None` (plaintext, said
/// once: the config allows it on loopback only, or with `insecure = true`).
fn peer_tls(
    cfg: &AgentConfig,
) -> Result<Option<std::sync::Arc<nines_consensus::PeerTls>>, AgentError> {
    let Some(t) = &cfg.tls else {
        tracing::warn!(
            listen = %cfg.listen,
            "INSECURE: no [tls] section, so peers and clients are not authenticated and traffic \
             is not encrypted; anyone who can reach {} may act as a peer or an operator. Fine \
             on loopback for a local cluster; elsewhere add [tls] (see `nines cert --help`)",
            cfg.listen
        );
        return Ok(None);
    };
    t.check(cfg.node_id, &cfg.cluster)
        .map_err(AgentError::Tls)?;
    let tls = nines_consensus::PeerTls::new(&t.node_files())
        .map_err(|e| AgentError::Tls(e.to_string()))?;
    tracing::info!(
        cert = %t.cert.display(),
        "mutual TLS on {}: peers need a node certificate of this cluster, clients a client \
         certificate whose role allows each call",
        cfg.listen
    );
    Ok(Some(tls))
}

/// Run an agent until `requested` fires (then switch its assignments over, drain and return
/// `Ok`), the node is removed from the cluster (`Ok`), or a fatal error stops it (`Err`).
pub async fn run(cfg: AgentConfig, requested: ShutdownSignal) -> Result<(), AgentError> {
    // Everything below stops on `shutdown`, which fires only once a requested stop has switched
    // this node's assignments over (or given up trying).
    let (stop_all, mut shutdown) = Shutdown::new();
    let raft_dir = datadir::prepare(&cfg.data_dir).map_err(AgentError::DataDir)?;
    let store = SledLogStore::open(&raft_dir).map_err(|e| {
        AgentError::DataDir(format!(
            "cannot open the raft store in {}: {e}",
            raft_dir.display()
        ))
    })?;
    let listener = bind(&cfg.listen).await?;
    let metrics_listener = match &cfg.metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let health_listener = match &cfg.health_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let tls = peer_tls(&cfg)?;
    let transport = GrpcTransport::with_tls(cfg.node_id, cfg.cluster.clone(), tls.clone());
    let node_cfg = NodeConfig {
        id: cfg.node_id,
        cluster: cfg.cluster.clone(),
        raft: cfg.raft_config(),
        bootstrap: cfg.bootstrap_members(),
        seed_peers: cfg.seed_members(),
    };
    let (stop_node, node_signal) = Shutdown::new();
    let (events, _) = tokio::sync::broadcast::channel(crate::membership::WATCH_BUFFER_LEN);
    let mut state = AgentState::default();
    state.membership.set_events(events.clone());
    let (evt_events, _) = tokio::sync::broadcast::channel(EVT_BROADCAST_LEN);
    state.evt.set_events(evt_events.clone());
    let (amf_changed_tx, amf_changed_rx) = tokio::sync::watch::channel(0u64);
    state.amf.set_notifier(amf_changed_tx);
    let links_stop = node_signal.clone();
    let started = start(node_cfg, store, state, transport, node_signal)?;
    let proposer = started.proposer;
    let proposer_for_services = proposer.clone();
    tokio::spawn(crate::switchover::planned_stop(
        requested,
        proposer.clone(),
        cfg.node_id,
        cfg.data_dir.clone(),
        stop_all,
    ));
    tokio::spawn(crate::switchover::unlock_after_planned_stop(
        proposer.clone(),
        cfg.node_id,
        cfg.data_dir.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        node = cfg.node_id,
        name = %cfg.name,
        cluster = %cfg.cluster,
        listen = %cfg.listen,
        "agent started"
    );

    let peer_service = PeerService::new(proposer.clone(), cfg.cluster.clone());
    let incoming = PeerPort::incoming_tls(listener, peer_service.clone(), links_stop, tls.clone());
    let peer = RaftPeerServer::new(peer_service)
        .max_decoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX);
    let cluster = ClusterServer::new(ClusterService {
        proposer,
        name: cfg.name.clone(),
        addr: cfg.advertise_addr(),
        cluster: cfg.cluster.clone(),
    });
    let ckpt_handle = crate::state::ckpt_handle(proposer_for_services.clone());
    // Clients may send at most `[limits] request_bytes_max`; answers (reads) may be bigger.
    let request_max = cfg.limits.request_bytes_max;
    let ckpt = CheckpointServer::new(CkptService::new(ckpt_handle.clone()))
        .max_decoding_message_size(request_max)
        .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX);
    let evt_handle = crate::state::evt_handle(proposer_for_services.clone());
    tokio::spawn(janitor::run(
        ckpt_handle,
        evt_handle.clone(),
        shutdown.clone(),
    ));
    let evt = nines_proto::evt::v1::events_server::EventsServer::new(nines_evt::EvtService::new(
        evt_handle, evt_events,
    ))
    .max_decoding_message_size(request_max)
    .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX);
    let (beats_tx, beats_rx) = tokio::sync::mpsc::channel(crate::heartbeat::BEAT_QUEUE_LEN);
    let (fenced_tx, fenced_rx) = tokio::sync::watch::channel(false);
    let (lease_tx, lease_rx) = tokio::sync::watch::channel(None);
    let shared = std::sync::Arc::new(std::sync::Mutex::new(
        crate::heartbeat::LocalHealth::default(),
    ));
    let shared_health = shared.clone();
    let shared_health_for_metrics = shared.clone();
    let hb_driver = crate::heartbeat::Driver {
        id: cfg.node_id,
        cluster: cfg.cluster.clone(),
        detector_cfg: cfg.heartbeat.clone(),
        lease_cfg: cfg.lease,
        proposer: proposer_for_services.clone(),
        shared: shared.clone(),
        beats: beats_rx,
        beater: std::sync::Arc::new(crate::heartbeat::GrpcBeater::new(tls.clone())),
        fenced_tx: Some(fenced_tx),
        lease_tx: Some(lease_tx),
    };
    tokio::spawn(hb_driver.run(shutdown.clone()));
    let membership = MembershipServer::new(crate::membership_service::MembershipService {
        id: cfg.node_id,
        cluster: cfg.cluster.clone(),
        proposer: proposer_for_services.clone(),
        heartbeat: crate::heartbeat::HeartbeatHandle {
            shared,
            beats: beats_tx,
        },
        events,
    });
    let amf_handle = crate::state::amf_handle(proposer_for_services.clone());
    let lease_for_status = lease_rx.clone();
    let (director, (watchdogs, beliefs), fence_done) = start_director(
        &cfg,
        amf_handle.clone(),
        amf_changed_rx,
        fenced_rx,
        lease_rx,
        &shutdown,
    );
    let watchdogs_for_metrics = watchdogs.clone();
    let beliefs_for_metrics = beliefs.clone();
    let amf = AmfServer::new(crate::amf_service::AmfService {
        amf: amf_handle.clone(),
        node: cfg.name.clone(),
        watchdogs,
        beliefs,
        lease: lease_for_status,
    })
    .max_decoding_message_size(request_max)
    .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX);
    let drill = nines_proto::drill::v1::drill_server::DrillServer::new(
        crate::drill_service::DrillService {
            enabled: cfg.drill.enabled,
            pause_ms_max: cfg.drill.pause_ms_max,
            node: cfg.name.clone(),
            amf: amf_handle.clone(),
        },
    );
    let health = crate::node_watchdog::Health {
        local: shared_health,
        fence_done,
        interval: Duration::from_millis(cfg.heartbeat.interval_ms),
    };
    let health_reporter = crate::health::reporter().await;
    let live = health.clone();
    tokio::spawn(crate::health::run(
        health_reporter.clone(),
        proposer_for_services.watch_status(),
        move || live.ok(),
        Duration::from_millis(cfg.heartbeat.interval_ms),
        shutdown.clone(),
    ));
    if let Some(l) = health_listener {
        // Plaintext, the health check alone: probes that cannot present a certificate.
        let health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health_reporter.clone()),
        );
        let mut stop = shutdown.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .concurrency_limit_per_connection(4)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
                .await;
            if let Err(e) = served {
                tracing::error!("the health listener failed: {e}");
            }
        });
    }
    let (stop_watchdog, watchdog_signal) = Shutdown::new();
    let watchdog_task = crate::node_watchdog::start(
        &cfg,
        health,
        proposer_for_services.clone(),
        &shutdown,
        watchdog_signal,
    )
    .map_err(AgentError::Watchdog)?;
    if let Some(l) = metrics_listener {
        let sources = crate::metrics::Sources {
            proposer: proposer_for_services.clone(),
            heartbeat: shared_health_for_metrics,
            watchdogs: watchdogs_for_metrics,
            beliefs: beliefs_for_metrics,
        };
        tokio::spawn(crate::metrics::serve(l, sources, shutdown.clone()));
    }
    if let Some(path) = cfg.amf_model.clone() {
        tokio::spawn(crate::model_loader::run(amf_handle, path, shutdown.clone()));
    }
    let mut drain = shutdown.clone();
    let serve = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(STREAMS_PER_CONNECTION_MAX)
        .layer(DeadlineLayer::new(
            Duration::from_millis(CLIENT_TIMEOUT_MAX_MS + 1_000),
            LONG_LIVED_CALLS,
        ))
        .layer(crate::authz::AuthzLayer {
            cluster: cfg.cluster.as_str().into(),
            enforce: tls.is_some(),
        })
        .tcp_nodelay(true)
        .add_service(peer)
        .add_service(cluster)
        .add_service(ckpt)
        .add_service(membership)
        .add_service(amf)
        .add_service(evt)
        .add_service(drill)
        .add_service(tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health_reporter),
        ))
        .serve_with_incoming_shutdown(incoming, async move { drain.wait().await });
    let mut server = tokio::spawn(serve);
    let mut driver = started.driver;
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);

    tokio::select! {
        biased;
        _ = shutdown.wait() => {
            tracing::info!("shutdown requested: draining requests, stopping components");
            let stopping = tokio::time::Instant::now();
            let _ = tokio::time::timeout(grace, &mut server).await;
            let _ = tokio::time::timeout(grace, director).await;
            // Components are stopped: a planned stop must not reset the node.
            stop_watchdog.trigger();
            if let Some(t) = watchdog_task {
                let _ = tokio::time::timeout(grace, t).await;
            }
            stop_node.trigger();
            match tokio::time::timeout(grace, &mut driver).await {
                Ok(Ok(r)) => r?,
                Ok(Err(e)) => return Err(AgentError::Server(format!("raft driver panicked: {e}"))),
                Err(_) => tracing::warn!("raft driver did not stop within the grace period"),
            }
            // A span, so that trace export shows the stop too (flushed after `run` returns).
            let stop_ms = stopping.elapsed().as_millis() as u64;
            tracing::info_span!("agent.stop", node = cfg.node_id, stop_ms)
                .in_scope(|| tracing::info!("agent stopped"));
            Ok(())
        }
        r = &mut driver => {
            server.abort();
            match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(fatal)) => Err(AgentError::Fatal(fatal)),
                Err(e) => Err(AgentError::Server(format!("raft driver panicked: {e}"))),
            }
        }
        r = &mut server => {
            stop_node.trigger();
            let _ = tokio::time::timeout(grace, &mut driver).await;
            match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(AgentError::Server(e.to_string())),
                Err(e) => Err(AgentError::Server(format!("server task failed: {e}"))),
            }
        }
    }
}

/// Start the SDK session socket and the AMF node director; the handle finishes once the
/// director has stopped the local components after `shutdown`.
fn start_director(
    cfg: &AgentConfig,
    amf: crate::state::AmfHandle,
    changed: tokio::sync::watch::Receiver<u64>,
    fenced: tokio::sync::watch::Receiver<bool>,
    mut lease: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    shutdown: &ShutdownSignal,
) -> (
    tokio::task::JoinHandle<()>,
    (
        nines_amf::director::WatchdogViews,
        nines_amf::director::BeliefViews,
    ),
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use nines_amf::director::{Director, DirectorConfig, DirectorInputs};
    let hub = crate::session::SessionHub::new(
        cfg.name.clone(),
        cfg.lease.lease_ms,
        cfg.lease.fence_reaction_ms,
    );
    let granting = hub.clone();
    tokio::spawn(async move {
        // The node lease's renewals become the component sessions' lease.
        while lease.changed().await.is_ok() {
            let deadline = *lease.borrow_and_update();
            if let Some(deadline) = deadline {
                granting.grant_lease(deadline);
            }
        }
    });
    let socket = cfg.socket_path();
    let serve = hub.clone().serve(socket.clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::error!("the SDK session socket failed: {e}");
        }
    });
    let link_events = crate::amf_link::forward_events(&hub);
    let (sup, exits) = nines_amf::process::Supervisor::new(1_024);
    let director = Director::new(
        DirectorConfig {
            node: cfg.name.clone(),
            socket,
            log_dir: Some(cfg.data_dir.join("components")),
            endpoints: cfg.advertise_addr(),
            bin: std::env::current_exe().ok(),
            env: component_env(cfg),
        },
        amf,
        crate::amf_link::HubLink(hub),
        sup,
    );
    let inputs = DirectorInputs {
        changed,
        exits,
        link_events,
        fenced,
    };
    let views = (director.watchdog_views(), director.belief_views());
    let fence_done = director.fence_done();
    (
        tokio::spawn(director.run(inputs, shutdown.clone())),
        views,
        fence_done,
    )
}

/// `nines.cluster.v1.Cluster`.
struct ClusterService {
    proposer: Proposer<AgentState>,
    name: String,
    addr: String,
    cluster: String,
}

fn deadline(timeout_ms: u64) -> Duration {
    let ms = if timeout_ms == 0 {
        limits::CLIENT_TIMEOUT_MS
    } else {
        timeout_ms.min(CLIENT_TIMEOUT_MAX_MS)
    };
    Duration::from_millis(ms)
}

fn invalid(msg: impl Into<String>) -> Status {
    status_from_ais(&AisError::new(ErrorCode::InvalidParam, msg))
}

fn members_proto(members: &nines_consensus::Members) -> Vec<Member> {
    members
        .iter()
        .map(|(id, m)| Member {
            id: *id,
            name: m.name.clone(),
            addr: m.addr.clone(),
            kind: if m.voter { "voter" } else { "learner" }.into(),
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<NodeStatus>, Status> {
        let s = self.proposer.status();
        Ok(Response::new(NodeStatus {
            id: s.id,
            name: self.name.clone(),
            addr: self.addr.clone(),
            role: s.role.as_str().into(),
            leader_id: s.leader_id.unwrap_or(0),
            term: s.term,
            commit: s.commit,
            applied: s.applied,
            protocol_version: PROTOCOL_VERSION,
            cluster: self.cluster.clone(),
            members: members_proto(&s.members),
            first_index: s.first_index,
            last_index: s.last_index,
            snapshot_index: s.snapshot_index,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn add_node(
        &self,
        req: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let r = req.into_inner();
        if r.id == 0 {
            return Err(invalid("node id must be a positive integer"));
        }
        if r.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid(format!("'{}' is not a host:port address", r.addr)));
        }
        let name = if r.name.is_empty() {
            format!("n{}", r.id)
        } else {
            r.name
        };
        let info = PeerInfo {
            name,
            addr: r.addr,
            voter: true,
        };
        let members = self
            .proposer
            .add_voter(r.id, info, deadline(r.timeout_ms))
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        Ok(Response::new(MembershipResponse {
            members: members_proto(&members),
        }))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let r = req.into_inner();
        let members = self
            .proposer
            .remove_member(r.id, deadline(r.timeout_ms))
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        Ok(Response::new(MembershipResponse {
            members: members_proto(&members),
        }))
    }

    async fn probe_write(
        &self,
        req: Request<ProbeWriteRequest>,
    ) -> Result<Response<ProbeWriteResponse>, Status> {
        let r = req.into_inner();
        let cmd = Command::Cluster(ClusterCommand::ProbeWrite {
            key: r.key,
            value: r.value,
        });
        let resp = self
            .proposer
            .propose(&cmd, deadline(r.timeout_ms))
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        match resp {
            SmResponse::Cluster(ClusterResponse::ProbeWritten { index }) => {
                Ok(Response::new(ProbeWriteResponse { index }))
            }
            SmResponse::Cluster(ClusterResponse::Refused(e)) => Err(status_from_ais(&e)),
            _ => Err(status_from_ais(&AisError::new(
                ErrorCode::Library,
                "a probe write got another service's response",
            ))),
        }
    }

    async fn probe_read(
        &self,
        req: Request<ProbeReadRequest>,
    ) -> Result<Response<ProbeReadResponse>, Status> {
        let r = req.into_inner();
        let mode = if r.stale {
            ReadMode::Stale
        } else {
            ReadMode::Linearizable
        };
        let key = r.key;
        let probe = self
            .proposer
            .read(mode, deadline(r.timeout_ms), move |sm: &AgentState| {
                sm.probes.get(&key).cloned()
            })
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        Ok(Response::new(match probe {
            Some(p) => ProbeReadResponse {
                found: true,
                value: p.value,
                index: p.index,
            },
            None => ProbeReadResponse::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exemption names the peer stream by the path tonic routes it on.
    #[test]
    fn the_peer_stream_is_exempt_from_the_deadline() {
        let path = format!(
            "/{}/Stream",
            nines_proto::raft::v1::raft_peer_server::SERVICE_NAME
        );
        assert!(LONG_LIVED_CALLS.contains(&path.as_str()), "{path}");
    }
}
