//! The endpoint-failover machinery shared by [`CheckpointClient`](crate::CheckpointClient) and
//! [`MembershipClient`](crate::MembershipClient): the endpoints and their gRPC clients, the
//! connection probe, and one call under a deadline with failover and retry.

use std::{
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use nines_core::{AisError, ErrorCode};
use nines_proto::AIS_CODE_HEADER;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::{
    client::ClientConfig,
    endpoints::{normalize_endpoints, ENDPOINTS_ENV},
    error::{Result, SdkError},
    retry::{backoff_ms, outcome_unknown, transport_why, Idempotency, Verdict},
    tls::{explain_tls_failure, grpc_endpoint, TLS_MARK},
};

/// A service's generated gRPC client, as the shared machinery needs it.
pub(crate) trait Service: Clone {
    /// The service, as the error of a failed connect names it ("checkpoint service").
    const NAME: &'static str;

    /// The tonic endpoint for `host:port` (built on [`base_endpoint`]).
    fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint>;

    /// The client over `channel`, with the service's message limits.
    fn over(channel: Channel) -> Self;

    /// What a failed attempt's status means for the call.
    fn verdict(status: &tonic::Status, idempotency: Idempotency) -> Verdict;
}

/// What a client's clones share: the endpoints, which one answered last, and the tunables.
///
/// (Named `Inner`/`Target`, as each client's own types were, so the clients' `Debug` output is
/// unchanged.)
#[derive(Debug)]
pub(crate) struct Inner<G> {
    pub(crate) targets: Vec<Target<G>>,
    /// Index of the endpoint that answered last: calls start there.
    pub(crate) current: AtomicUsize,
    pub(crate) config: ClientConfig,
}

/// One endpoint and its (lazily connecting) gRPC client.
#[derive(Debug)]
pub(crate) struct Target<G> {
    pub(crate) addr: String,
    pub(crate) grpc: G,
}

impl<G: Service> Inner<G> {
    /// Lazy clients for `endpoints`: checks only that they are well formed.
    pub(crate) fn lazy<S: AsRef<str>>(endpoints: &[S], config: ClientConfig) -> Result<Self> {
        let addrs = normalize_endpoints(endpoints)?;
        let mut targets = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let grpc = G::over(G::endpoint(&addr, &config)?.connect_lazy());
            targets.push(Target { addr, grpc });
        }
        Ok(Self {
            targets,
            current: AtomicUsize::new(0),
            config,
        })
    }

    /// Probe the endpoints in order: the first that accepts a TCP connection becomes the one
    /// calls start at.
    pub(crate) async fn probe(&self) -> Result<()> {
        let config = &self.config;
        let mut why = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let ep = G::endpoint(&t.addr, config)?;
            match tokio::time::timeout(config.connect_timeout, ep.connect()).await {
                Ok(Ok(_probe)) => {
                    // The probe connection is dropped: the lazy channel connects on first use
                    // (now known to succeed) and keeps reconnecting on its own.
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(Err(e)) => {
                    let chain = error_chain(&e);
                    let tls = config.tls.is_some();
                    why.push(match explain_tls_failure(&t.addr, &chain, tls) {
                        Some(explained) => explained,
                        None => format!("{}: {chain}", t.addr),
                    });
                }
                Err(_) => why.push(format!(
                    "{}: no connection within {} ms",
                    t.addr,
                    config.connect_timeout.as_millis()
                )),
            }
        }
        Err(unavailable(&format!("connect to the {}", G::NAME), &why))
    }

    /// What a failed attempt's status means, TLS considered: a handshake the agent refused
    /// (with TLS) reached no service, so the next endpoint is asked (each will say the same;
    /// the error lists why); a plaintext attempt dropped the way a TLS-only agent drops it keeps
    /// its verdict but says so.
    fn verdict(&self, addr: &str, status: &tonic::Status, idempotency: Idempotency) -> Verdict {
        let from_service = status.metadata().get(AIS_CODE_HEADER).is_some();
        let tls = self.config.tls.is_some();
        let hint = match from_service {
            true => None,
            false => explain_tls_failure(addr, &transport_why(status), tls),
        };
        match (hint, G::verdict(status, idempotency)) {
            (Some(hint), _) if tls => Verdict::NextEndpoint(hint),
            (Some(hint), Verdict::Fail(e)) => Verdict::Fail(AisError::new(e.code, hint)),
            (_, v) => v,
        }
    }

    /// Why an attempt on `addr` reached no service, for the error: prefixed with the address,
    /// unless [`Self::verdict`] already explained it (a TLS explanation names the agent).
    fn reason(addr: &str, why: &str) -> String {
        match why.contains(TLS_MARK) {
            true => why.to_string(),
            false => format!("{addr}: {why}"),
        }
    }

    /// The endpoints, in failover order.
    pub(crate) fn addrs(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.addr.clone()).collect()
    }

    /// One unary call under the deadline `timeout` with failover: start at the endpoint that
    /// answered last, move on past unreachable ones, retry `TRY_AGAIN` after a backoff per round,
    /// never re-send a mutation whose outcome is unknown. `what` names the operation in error
    /// messages; `make` builds each attempt's request from what is left of the deadline.
    pub(crate) async fn call<Req, Resp, M, F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        idempotency: Idempotency,
        make: M,
        f: F,
    ) -> Result<Resp>
    where
        M: Fn(Duration) -> Req,
        F: Fn(G, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let deadline = Instant::now() + timeout;
        // Time spent waiting on nines is not the application's: its watchdog counts it as
        // progress (session::watchdog).
        let _waiting = crate::session::WaitingOnNines::start();
        let n = self.targets.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut busy: Option<AisError> = None;
        let mut unreachable: Vec<String> = Vec::new();
        let mut round: u32 = 0;
        loop {
            unreachable.clear();
            for k in 0..n {
                let i = (first + k) % n;
                let target = &self.targets[i];
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(out_of_time(timeout, what, busy, &unreachable));
                }
                let mut request = tonic::Request::new(make(left));
                request.set_timeout(left);
                let answer = tokio::time::timeout(left, f(target.grpc.clone(), request)).await;
                let status = match answer {
                    Ok(Ok(resp)) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(resp.into_inner());
                    }
                    Ok(Err(status)) => status,
                    Err(_elapsed) => {
                        return Err(deadline_passed(timeout, what, idempotency, &target.addr))
                    }
                };
                match self.verdict(&target.addr, &status, idempotency) {
                    Verdict::NextEndpoint(_) if Instant::now() >= deadline => {
                        // tonic's own deadline fired first (as `Cancelled`): same as ours.
                        return Err(deadline_passed(timeout, what, idempotency, &target.addr));
                    }
                    Verdict::NextEndpoint(why) => {
                        tracing::debug!(endpoint = %target.addr, %why, "{what}: trying the next endpoint");
                        unreachable.push(Self::reason(&target.addr, &why));
                    }
                    Verdict::Busy(e) if self.config.retry_try_again => {
                        tracing::debug!(endpoint = %target.addr, error = %e, "{what}: busy");
                        busy = Some(e);
                    }
                    Verdict::Busy(e) | Verdict::Fail(e) => return Err(prefixed(what, e)),
                }
            }
            if busy.is_none() {
                // Every endpoint is unreachable: waiting would not help within one deadline.
                return Err(unavailable(what, &unreachable));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(Duration::from_millis(backoff_ms(round)).min(left)).await;
            round = round.saturating_add(1);
        }
    }
}

/// What is left of a deadline, in the milliseconds a request carries (at least 1).
pub(crate) fn timeout_ms(left: Duration) -> u64 {
    u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The error of a call (deadline `timeout`) whose deadline passed while an attempt was in
/// flight.
pub(crate) fn deadline_passed(
    timeout: Duration,
    what: &str,
    idempotency: Idempotency,
    addr: &str,
) -> SdkError {
    let why = format!(
        "no answer from {addr} within the {} ms deadline",
        timeout.as_millis()
    );
    prefixed(
        what,
        match idempotency {
            Idempotency::Mutating => outcome_unknown(&why),
            Idempotency::Idempotent => AisError::new(
                ErrorCode::Timeout,
                format!("{why}; retry, or raise the deadline"),
            ),
        },
    )
}

/// The error of a call (deadline `timeout`) whose deadline passed between attempts (nothing was
/// in flight).
pub(crate) fn out_of_time(
    timeout: Duration,
    what: &str,
    busy: Option<AisError>,
    unreachable: &[String],
) -> SdkError {
    match busy {
        Some(e) => prefixed(
            what,
            AisError::new(
                e.code,
                format!(
                    "{} (still so after retrying for {} ms; retry later)",
                    e.message,
                    timeout.as_millis()
                ),
            ),
        ),
        None if !unreachable.is_empty() => unavailable(what, unreachable),
        None => prefixed(
            what,
            AisError::new(
                ErrorCode::Timeout,
                format!(
                    "the {} ms deadline passed before any attempt",
                    timeout.as_millis()
                ),
            ),
        ),
    }
}

/// The tonic endpoint for `host:port` with the client's connect timeout: `https://` with the
/// client's certificate when [`ClientConfig::tls`] is set, `http://` otherwise (see
/// [`grpc_endpoint`]).
pub(crate) fn base_endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint> {
    Ok(grpc_endpoint(addr, config.tls.as_ref())?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true))
}

/// The service's error `e`, its message prefixed with the operation.
pub(crate) fn prefixed(what: &str, e: AisError) -> SdkError {
    SdkError::Ais(AisError::new(e.code, format!("{what}: {}", e.message)))
}

/// `what` failed: no endpoint was reachable, for the reasons `why`.
pub(crate) fn unavailable(what: &str, why: &[String]) -> SdkError {
    if !why.is_empty() && why.iter().all(|w| w.contains(TLS_MARK)) {
        // Every agent answered, but the TLS handshake failed: each reason says what to do.
        return SdkError::Unavailable(format!(
            "{what}: no agent accepted this client ({})",
            why.join("; ")
        ));
    }
    SdkError::Unavailable(format!(
        "{what}: no agent is reachable ({}); check that the cluster runs and that the endpoints \
         ({ENDPOINTS_ENV}) name its agents",
        why.join("; ")
    ))
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The constructors and accessors every client has, over its `inner: Arc<Inner<G>>` and
/// `timeout: Duration` fields (one piece, so the three clients cannot drift apart).
macro_rules! client_basics {
    ($client:ident) => {
        impl $client {
            /// Connect through `endpoints` (agents' `host:port`, tried in this order) with the
            /// default tunables and TLS from the environment
            /// ([`ClientConfig::from_env`](crate::ClientConfig::from_env): `NINES_CA`,
            /// `NINES_CERT`, `NINES_KEY`).
            ///
            /// # Errors
            /// [`SdkError::InvalidArgument`](crate::SdkError::InvalidArgument) for a malformed
            /// endpoint, or when only some of the TLS variables are set, or a TLS file is missing
            /// or does not belong with the others; [`SdkError::Unavailable`](crate::SdkError::Unavailable) when none of
            /// them accepts a connection.
            pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> crate::Result<Self> {
                Self::connect_with(endpoints, crate::ClientConfig::from_env()?).await
            }

            /// Connect through the endpoints in `NINES_ENDPOINTS` (comma-separated
            /// `host:port`).
            ///
            /// # Errors
            #[doc = concat!("As [`", stringify!($client), "::connect`]; ")]
            /// [`SdkError::InvalidArgument`](crate::SdkError::InvalidArgument) when the variable
            /// is unset.
            pub async fn from_env() -> crate::Result<Self> {
                Self::connect(&crate::endpoints::env_endpoints()?).await
            }

            /// Connect with explicit tunables: the first endpoint (in order) that accepts a TCP
            /// connection becomes the one calls start at.
            ///
            /// # Errors
            #[doc = concat!("As [`", stringify!($client), "::connect`].")]
            pub async fn connect_with<S: AsRef<str>>(
                endpoints: &[S],
                config: crate::ClientConfig,
            ) -> crate::Result<Self> {
                let client = Self::connect_lazy(endpoints, config)?;
                client.inner.probe().await?;
                Ok(client)
            }

            /// A client that connects on first use (for an application that may start before
            /// the cluster). Checks only that the endpoints are well formed.
            ///
            /// # Errors
            /// [`SdkError::InvalidArgument`](crate::SdkError::InvalidArgument) for a malformed
            /// or empty endpoint list.
            pub fn connect_lazy<S: AsRef<str>>(
                endpoints: &[S],
                config: crate::ClientConfig,
            ) -> crate::Result<Self> {
                let timeout = config.timeout;
                Ok(Self {
                    inner: std::sync::Arc::new(crate::call::Inner::lazy(endpoints, config)?),
                    timeout,
                })
            }

            /// The same client with another deadline per call (shares connections). For a
            /// stream (a watch, a subscription) the deadline bounds opening it and each
            /// reconnection, not the stream itself.
            #[must_use]
            pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.timeout = timeout;
                self
            }

            /// The deadline of each call.
            pub fn timeout(&self) -> std::time::Duration {
                self.timeout
            }

            /// The endpoints, in failover order.
            pub fn endpoints(&self) -> Vec<String> {
                self.inner.addrs()
            }
        }
    };
}
pub(crate) use client_basics;

impl<G: Service> Inner<G> {
    /// Open a server stream, starting at endpoint `start` and failing over like a call:
    /// `attempt` opens it on one endpoint's client (no grpc-timeout on the request: that would
    /// end the stream itself; `timeout` bounds the opening). With `persist` (a reconnection), a
    /// round that finds every endpoint unreachable is retried after a backoff until the deadline
    /// (an agent restarting); otherwise it fails at once. Returns the endpoint's index with the
    /// stream.
    pub(crate) async fn open_stream<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        start: usize,
        persist: bool,
        mut attempt: F,
    ) -> Result<(usize, T)>
    where
        F: FnMut(G) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + timeout;
        let n = self.targets.len();
        let mut busy: Option<AisError> = None;
        let mut unreachable: Vec<String> = Vec::new();
        let mut round: u32 = 0;
        loop {
            unreachable.clear();
            for k in 0..n {
                let i = (start + k) % n;
                let target = &self.targets[i];
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(out_of_time(timeout, what, busy, &unreachable));
                }
                let status = match tokio::time::timeout(left, attempt(target.grpc.clone())).await {
                    Ok(Ok(opened)) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok((i, opened));
                    }
                    Ok(Err(status)) => status,
                    Err(_elapsed) => {
                        return Err(deadline_passed(
                            timeout,
                            what,
                            Idempotency::Idempotent,
                            &target.addr,
                        ))
                    }
                };
                match self.verdict(&target.addr, &status, Idempotency::Idempotent) {
                    Verdict::NextEndpoint(why) => {
                        tracing::debug!(endpoint = %target.addr, %why, "{what}: trying the next endpoint");
                        unreachable.push(Self::reason(&target.addr, &why));
                    }
                    Verdict::Busy(e) if self.config.retry_try_again => {
                        tracing::debug!(endpoint = %target.addr, error = %e, "{what}: busy");
                        busy = Some(e);
                    }
                    Verdict::Busy(e) | Verdict::Fail(e) => return Err(prefixed(what, e)),
                }
            }
            if busy.is_none() && !persist {
                return Err(unavailable(what, &unreachable));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(out_of_time(timeout, what, busy, &unreachable));
            }
            tokio::time::sleep(Duration::from_millis(backoff_ms(round)).min(left)).await;
            round = round.saturating_add(1);
        }
    }
}
