//! [`CheckpointClient`]: endpoints, deadlines, failover; the entry point of the SDK.

use std::{future::Future, sync::Arc, time::Duration};

use nines_core::limits;
use nines_proto::ckpt::v1::{self as pb, checkpoint_client::CheckpointClient as Grpc};
use tonic::transport::{Channel, Endpoint};

use crate::{
    call::{base_endpoint, timeout_ms, Inner, Service},
    checkpoint::Checkpoint,
    error::{Result, SdkError},
    retry::{classify, Idempotency, Verdict},
    types::{CheckpointStatus, OpenOptions},
};

/// Tunables of every client ([`CheckpointClient`], [`EventClient`](crate::EventClient),
/// [`MembershipClient`](crate::MembershipClient)); the defaults suit most applications.
///
/// [`ClientConfig::default`] takes its [`tls`](Self::tls) from the environment
/// (`NINES_CA`, `NINES_CERT`, `NINES_KEY`: see [`tls_from_env`](crate::tls_from_env)), so a
/// component started by an agent with `component_cert` / `component_key` speaks mutual TLS with
/// no code of its own. [`ClientConfig::from_env`] is the same but fails when only some of the
/// three variables are set; `connect` and `from_env` on the clients use it, so a half-configured
/// environment fails the first connect with an error naming the missing variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Deadline of each call, failovers and retries included (default 5 s). The service gets
    /// what is left of it, so it gives up when the caller does.
    pub timeout: Duration,
    /// Longest wait for a TCP connection to one endpoint before moving to the next (default
    /// 1 s).
    pub connect_timeout: Duration,
    /// Whether a call answered `TRY_AGAIN` (no leader yet, leadership moving) is asked again,
    /// elsewhere and then after a short backoff, until its deadline (default true). The service
    /// did nothing in that case, so this is safe for every call.
    pub retry_try_again: bool,
    /// The files this client proves itself with over mutual TLS: the cluster's CA, a client
    /// certificate (`nines cert client`) and its key. `Some`: every endpoint is dialled as
    /// `https://host:port`, the agent's certificate checked against the CA for that host;
    /// `None` (the default when `NINES_CA`, `NINES_CERT` and `NINES_KEY` are unset): plaintext,
    /// which only agents without a `[tls]` section accept. The files are read when the client
    /// is made (`connect*`), so a missing or mismatched file fails there.
    pub tls: Option<nines_tls::TlsFiles>,
}

impl Default for ClientConfig {
    /// 5 s per call, 1 s per connection, `TRY_AGAIN` retried, TLS from the environment.
    ///
    /// When only some of `NINES_CA`, `NINES_CERT`, `NINES_KEY` are set the default logs the
    /// error (`tracing` warning) and uses plaintext; [`ClientConfig::from_env`] returns it.
    fn default() -> Self {
        Self::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; connecting without TLS");
            Self::plaintext()
        })
    }
}

impl ClientConfig {
    /// The default tunables with TLS from the environment (see
    /// [`tls_from_env`](crate::tls_from_env)).
    ///
    /// # Errors
    /// [`SdkError::InvalidArgument`] naming the missing variables when only some of
    /// `NINES_CA`, `NINES_CERT`, `NINES_KEY` are set.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            tls: crate::tls::tls_from_env()?,
            ..Self::plaintext()
        })
    }

    /// The default tunables without TLS, whatever the environment says.
    pub fn plaintext() -> Self {
        Self {
            timeout: Duration::from_millis(limits::CLIENT_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(1_000),
            retry_try_again: true,
            tls: None,
        }
    }
}

/// A connection to the checkpoint service of a nines cluster, through any of its agents.
///
/// Cheap to clone (clones share connections); use one per process. Every call has a deadline
/// ([`ClientConfig::timeout`]); calls go to the endpoint that answered last and fail over, in the
/// order given, to the others when it is unreachable.
#[derive(Debug, Clone)]
pub struct CheckpointClient {
    inner: Arc<Inner<Grpc<Channel>>>,
    timeout: Duration,
}

impl Service for Grpc<Channel> {
    const NAME: &'static str = "checkpoint service";

    fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint> {
        base_endpoint(addr, config)
    }

    fn over(channel: Channel) -> Self {
        Grpc::new(channel)
            .max_decoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(limits::GRPC_MESSAGE_BYTES_MAX)
    }

    fn verdict(status: &tonic::Status, idempotency: Idempotency) -> Verdict {
        classify(status, idempotency)
    }
}

/// Requests that carry the common [`pb::Options`].
pub(crate) trait WithOptions {
    fn set_options(&mut self, options: pb::Options);
}

macro_rules! with_options {
    ($($t:ident),* $(,)?) => {
        $(impl WithOptions for pb::$t {
            fn set_options(&mut self, options: pb::Options) {
                self.options = Some(options);
            }
        })*
    };
}

with_options!(
    OpenRequest,
    CloseRequest,
    UnlinkRequest,
    CreateSectionRequest,
    DeleteSectionRequest,
    WriteRequest,
    ReadRequest,
    SetExpirationRequest,
    SectionsRequest,
    StatusRequest,
    ListRequest,
);

crate::call::client_basics!(CheckpointClient);

impl CheckpointClient {
    /// Open checkpoint `name` (creating it, with [`OpenOptions::create`]); the handle is held
    /// until [`Checkpoint::close`] (or, best effort, until the [`Checkpoint`] is dropped).
    ///
    /// # Errors
    /// `NOT_EXIST` opening a missing checkpoint with [`OpenOptions::existing`]; `EXIST` creating
    /// one that exists with other attributes; `INVALID_PARAM` for attributes beyond the
    /// service's limits; `NO_SPACE` when the cluster holds too many checkpoints or handles.
    pub async fn open(&self, name: &str, options: OpenOptions) -> Result<Checkpoint> {
        if name.is_empty() {
            return Err(SdkError::InvalidArgument(
                "open a checkpoint: the name is empty; give a name".into(),
            ));
        }
        let req = pb::OpenRequest {
            name: name.to_string(),
            create: options.create.is_some(),
            attributes: options.create.map(|a| a.to_wire()),
            options: None,
        };
        let what = format!("open checkpoint '{name}'");
        let r = self
            .call(&what, Idempotency::Mutating, req, |mut c, r| async move {
                c.open(r).await
            })
            .await?;
        Ok(Checkpoint::opened(self.clone(), name, r))
    }

    /// Checkpoint `name` without opening it: reads, writes and status work the same, but no
    /// handle is held, so the checkpoint's retention is not affected (what tools want).
    pub fn checkpoint(&self, name: &str) -> Checkpoint {
        Checkpoint::unopened(self.clone(), name)
    }

    /// Delete checkpoint `name` and all its sections now (open handles become `BAD_HANDLE`).
    ///
    /// # Errors
    /// `NOT_EXIST` if there is no such checkpoint.
    pub async fn unlink(&self, name: &str) -> Result<()> {
        let req = pb::UnlinkRequest {
            name: name.to_string(),
            options: None,
        };
        let what = format!("unlink checkpoint '{name}'");
        self.call(&what, Idempotency::Mutating, req, |mut c, r| async move {
            c.unlink(r).await
        })
        .await?;
        Ok(())
    }

    /// Every checkpoint's attributes and usage (linearizable).
    ///
    /// # Errors
    /// `TRY_AGAIN` (after retries) when the cluster has no leader.
    pub async fn list(&self) -> Result<Vec<CheckpointStatus>> {
        let req = pb::ListRequest {
            stale: false,
            options: None,
        };
        let r = self
            .call(
                "list checkpoints",
                Idempotency::Idempotent,
                req,
                |mut c, r| async move { c.list(r).await },
            )
            .await?;
        Ok(r.checkpoints
            .into_iter()
            .map(CheckpointStatus::from)
            .collect())
    }

    /// Close `handle` (used by [`Checkpoint::close`] and its drop).
    pub(crate) async fn close_handle(&self, name: &str, handle: u64) -> Result<()> {
        let req = pb::CloseRequest {
            handle,
            options: None,
        };
        let what = format!("close checkpoint '{name}'");
        self.call(&what, Idempotency::Mutating, req, |mut c, r| async move {
            c.close(r).await
        })
        .await?;
        Ok(())
    }

    /// One call under the deadline with failover (see [`Inner::call`]): each attempt sends a
    /// copy of `req` carrying what is left of the deadline. `what` names the operation in error
    /// messages.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        what: &str,
        idempotency: Idempotency,
        req: Req,
        f: F,
    ) -> Result<Resp>
    where
        Req: WithOptions + Clone,
        F: Fn(Grpc<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let make = |left: Duration| {
            let mut r = req.clone();
            r.set_options(pb::Options {
                timeout_ms: timeout_ms(left),
            });
            r
        };
        self.inner
            .call(self.timeout, what, idempotency, make, f)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_core::ErrorCode;

    /// A port on loopback nobody listens on (bound, then released).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn connect_fails_with_unavailable_naming_every_endpoint() {
        let a = format!("127.0.0.1:{}", closed_port());
        let b = format!("127.0.0.1:{}", closed_port());
        match CheckpointClient::connect(&[a.as_str(), b.as_str()]).await {
            Err(SdkError::Unavailable(m)) => {
                assert!(m.contains(&a) && m.contains(&b), "{m}");
                assert!(m.contains("NINES_ENDPOINTS"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_call_with_no_reachable_endpoint_is_unavailable_and_names_the_operation() {
        let a = format!("127.0.0.1:{}", closed_port());
        let c = CheckpointClient::connect_lazy(&[a.as_str()], ClientConfig::default())
            .expect("well-formed");
        let e = c.unlink("orders").await.expect_err("nothing listens");
        assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");
        assert!(
            e.to_string().starts_with("unlink checkpoint 'orders': "),
            "{e}"
        );
        assert_eq!(e.code(), None);
        let e = c
            .checkpoint("orders")
            .read("cursor")
            .await
            .expect_err("nothing listens");
        assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_silent_endpoint_costs_one_deadline_and_a_mutation_reports_an_unknown_outcome() {
        // The kernel completes the TCP handshake; nobody ever speaks HTTP/2 on it.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        let config = ClientConfig {
            timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        };
        let c = CheckpointClient::connect_lazy(&[addr.as_str()], config).expect("well-formed");
        let started = std::time::Instant::now();
        let e = c.unlink("orders").await.expect_err("nobody answers");
        assert_eq!(e.code(), Some(ErrorCode::Timeout), "{e}");
        assert!(
            e.to_string().contains("may or may not have taken effect"),
            "{e}"
        );
        let e = c.list().await.expect_err("nobody answers");
        assert_eq!(e.code(), Some(ErrorCode::Timeout), "{e}");
        assert!(!e.to_string().contains("may or may not"), "{e}");
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(3),
            "two deadlines took {waited:?}"
        );
        drop(silent);
    }

    #[tokio::test]
    async fn an_empty_name_is_rejected_before_sending() {
        let c = CheckpointClient::connect_lazy(&["127.0.0.1:1"], ClientConfig::default())
            .expect("well-formed");
        let e = c
            .open("", OpenOptions::existing())
            .await
            .expect_err("empty name");
        assert!(matches!(e, SdkError::InvalidArgument(_)));
        assert!(matches!(
            CheckpointClient::connect_lazy(&["nope"], ClientConfig::default()),
            Err(SdkError::InvalidArgument(_))
        ));
    }
}
