//! Who may call what. Over mutual TLS, every call on the agent's listener is authorized from the
//! certificate it arrived with, before any service sees it:
//!
//! - peer traffic (raft messages, forwarding, heartbeats, lease revocations) only from node
//!   certificates of this cluster;
//! - client calls by the client certificate's role: `reader` (status, members, reads,
//!   subscriptions), `app` (reader + checkpoint and event writes), `operator` (app + admin
//!   operations, model apply, membership changes, EVT limits), `drill` (operator + drills); a
//!   node certificate is for peer traffic only, never a client's;
//! - the standard health check from anyone (probes cannot present certificates).
//!
//! A refusal is PERMISSION_DENIED naming the call, the role it needs and what the caller
//! presented, and counts in `nines_authz_refused_total`. Without TLS the listener is on loopback
//! only (see the config) and nothing is checked here.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use nines_consensus::metrics::Counter;
use nines_tls::{ConnInfo, Identity, Role};
use tonic::Status;

/// Calls refused by [`Authz`], by why.
pub(crate) struct AuthzMetrics {
    /// The caller's role is below the call's.
    pub role: Counter,
    /// A client certificate sent peer traffic, or a node certificate a client call above reader.
    pub kind: Counter,
    /// No identity, another cluster's, or a call that is never served over TCP.
    pub other: Counter,
}

/// This process's authorization refusals.
pub(crate) static METRICS: AuthzMetrics = AuthzMetrics {
    role: Counter::new(),
    kind: Counter::new(),
    other: Counter::new(),
};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone (the health check).
    Open,
    /// A node of this cluster.
    Peer,
    /// A client with at least this role.
    Client(Role),
    /// Not served over TCP (the component session lives on the agent's Unix socket), or unknown.
    Never,
}

/// The access each gRPC method needs, by its path (`/package.Service/Method`).
pub(crate) fn access(path: &str) -> Access {
    use Access::{Client, Never, Open, Peer};
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Never;
    };
    match (service, method) {
        ("grpc.health.v1.Health", _) => Open,
        ("nines.raft.v1.RaftPeer", _) => Peer,
        ("nines.membership.v1.Membership", "Beat" | "RevokeLease") => Peer,
        ("nines.membership.v1.Membership", "Members" | "Watch") => Client(Role::Reader),
        ("nines.membership.v1.Membership", "Drain") => Client(Role::Operator),
        ("nines.cluster.v1.Cluster", "Status" | "ProbeRead") => Client(Role::Reader),
        ("nines.cluster.v1.Cluster", "ProbeWrite") => Client(Role::App),
        ("nines.cluster.v1.Cluster", "AddNode" | "RemoveNode") => Client(Role::Operator),
        ("nines.ckpt.v1.Checkpoint", "Read" | "Sections" | "Status" | "List") => {
            Client(Role::Reader)
        }
        (
            "nines.ckpt.v1.Checkpoint",
            "Open" | "Close" | "Unlink" | "CreateSection" | "DeleteSection" | "Write"
            | "SetExpiration",
        ) => Client(Role::App),
        ("nines.evt.v1.Events", "Channels" | "Subscribe" | "GetLimits") => Client(Role::Reader),
        ("nines.evt.v1.Events", "Create" | "Unlink" | "Publish" | "ClearRetention") => {
            Client(Role::App)
        }
        ("nines.evt.v1.Events", "SetLimits") => Client(Role::Operator),
        ("nines.amf.v1.Amf", "Status" | "Watchdogs" | "Beliefs") => Client(Role::Reader),
        ("nines.amf.v1.Amf", "ApplyModel" | "Admin") => Client(Role::Operator),
        ("nines.drill.v1.Drill", "Info") => Client(Role::Reader),
        ("nines.drill.v1.Drill", "SignalComponent" | "KillNode" | "PauseNode") => {
            Client(Role::Drill)
        }
        _ => Never,
    }
}

/// The call's name for messages: `Checkpoint/Write`.
fn call_name(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    p.rsplit_once('.').map_or(p, |(_, tail)| tail)
}

/// Whether the caller described by `info` may make the call at `path` in `cluster`.
pub(crate) fn authorize(path: &str, info: Option<&ConnInfo>, cluster: &str) -> Result<(), Status> {
    let need = access(path);
    if need == Access::Open {
        return Ok(());
    }
    let call = call_name(path);
    let Some(identity) = info.and_then(|i| i.identity.as_ref()) else {
        METRICS.other.inc();
        return Err(Status::unauthenticated(format!(
            "{call}: no client certificate came with the call; connect with --ca/--cert/--key \
             (or NINES_CA, NINES_CERT, NINES_KEY)"
        )));
    };
    if identity.cluster() != cluster {
        METRICS.other.inc();
        return Err(Status::permission_denied(format!(
            "{call}: the certificate belongs to cluster '{}', this agent to '{cluster}'",
            identity.cluster()
        )));
    }
    let who = info.map(ConnInfo::who).unwrap_or_default();
    match (need, identity) {
        (Access::Open, _) => Ok(()),
        (Access::Peer, Identity::Node { .. }) => Ok(()),
        (Access::Peer, Identity::Client { .. }) => {
            METRICS.kind.inc();
            Err(Status::permission_denied(format!(
                "{call} is peer traffic, accepted from node certificates only; {who} presented a \
                 client certificate"
            )))
        }
        (Access::Client(role), Identity::Node { .. }) => {
            METRICS.kind.inc();
            Err(Status::permission_denied(format!(
                "{call} needs a client certificate with role {role}; {who} presented a node \
                 certificate (node certificates are for peer traffic)"
            )))
        }
        (Access::Client(needed), Identity::Client { role, .. }) if role.allows(needed) => Ok(()),
        (Access::Client(needed), Identity::Client { role, .. }) => {
            METRICS.role.inc();
            Err(Status::permission_denied(format!(
                "{call} needs role {needed}; {who} presented role {role}; ask for a certificate \
                 with `nines cert client --role {needed}`"
            )))
        }
        (Access::Never, _) => {
            METRICS.other.inc();
            Err(Status::permission_denied(format!(
                "{call} is not served on this listener"
            )))
        }
    }
}

/// The tower layer that runs [`authorize`] on every request of the agent's gRPC server.
#[derive(Clone)]
pub(crate) struct AuthzLayer {
    /// This cluster's name.
    pub cluster: Arc<str>,
    /// Whether the listener speaks TLS (without it nothing is checked).
    pub enforce: bool,
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Authz<S> {
        Authz {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`AuthzLayer`]'s service.
#[derive(Clone)]
pub(crate) struct Authz<S> {
    inner: S,
    layer: AuthzLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.layer.enforce {
            let info = req.extensions().get::<ConnInfo>();
            if let Err(status) = authorize(req.uri().path(), info, &self.layer.cluster) {
                tracing::warn!(call = req.uri().path(), "refused: {}", status.message());
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        // The clone is ready only if polled; take the polled one and leave the clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(role: Role) -> ConnInfo {
        ConnInfo {
            remote: None,
            identity: Some(Identity::Client {
                cluster: "c".into(),
                role,
                name: "who".into(),
            }),
        }
    }

    fn node(id: u64) -> ConnInfo {
        ConnInfo {
            remote: None,
            identity: Some(Identity::Node {
                cluster: "c".into(),
                id,
                name: format!("n{id}"),
            }),
        }
    }

    #[test]
    fn each_role_gets_its_calls_and_no_more() {
        let cases = [
            ("/nines.amf.v1.Amf/Status", Role::Reader),
            ("/nines.ckpt.v1.Checkpoint/Read", Role::Reader),
            ("/nines.ckpt.v1.Checkpoint/Write", Role::App),
            ("/nines.evt.v1.Events/Publish", Role::App),
            ("/nines.evt.v1.Events/SetLimits", Role::Operator),
            ("/nines.amf.v1.Amf/ApplyModel", Role::Operator),
            ("/nines.membership.v1.Membership/Drain", Role::Operator),
            ("/nines.cluster.v1.Cluster/RemoveNode", Role::Operator),
            ("/nines.drill.v1.Drill/KillNode", Role::Drill),
        ];
        for (path, needed) in cases {
            for role in Role::ALL {
                let r = authorize(path, Some(&client(role)), "c");
                assert_eq!(r.is_ok(), role >= needed, "{path} as {role}: {r:?}");
                if let Err(s) = r {
                    assert!(s.message().contains(needed.as_str()), "{}", s.message());
                    assert!(s.message().contains(role.as_str()), "{}", s.message());
                }
            }
        }
    }

    #[test]
    fn peer_traffic_needs_a_node_certificate() {
        for path in [
            "/nines.raft.v1.RaftPeer/Send",
            "/nines.raft.v1.RaftPeer/Forward",
            "/nines.membership.v1.Membership/Beat",
            "/nines.membership.v1.Membership/RevokeLease",
        ] {
            assert!(authorize(path, Some(&node(2)), "c").is_ok(), "{path}");
            let e = authorize(path, Some(&client(Role::Drill)), "c").expect_err(path);
            assert!(e.message().contains("peer traffic"), "{}", e.message());
        }
        // A node certificate is no client's.
        for path in ["/nines.amf.v1.Amf/Status", "/nines.amf.v1.Amf/Admin"] {
            let e = authorize(path, Some(&node(1)), "c").expect_err(path);
            assert!(e.message().contains("node certificate"), "{}", e.message());
        }
    }

    #[test]
    fn no_identity_another_cluster_and_unknown_calls_are_refused() {
        let e = authorize("/nines.amf.v1.Amf/Status", None, "c").expect_err("anonymous");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = authorize(
            "/nines.amf.v1.Amf/Status",
            Some(&client(Role::Drill)),
            "other",
        )
        .expect_err("other cluster");
        assert!(e.message().contains("cluster"), "{}", e.message());
        let e = authorize(
            "/nines.amf.v1.ComponentSession/Session",
            Some(&client(Role::Drill)),
            "c",
        )
        .expect_err("session over TCP");
        assert!(e.message().contains("not served"), "{}", e.message());
        assert!(authorize("/grpc.health.v1.Health/Check", None, "c").is_ok());
    }
}
