//! The server-wide request deadline, with the long-lived calls exempt.
//!
//! tonic's own `Server::timeout` bounds every call's handler, including a client-streaming
//! handler that lives as long as its stream: it cut the raft peer stream between every pair of
//! agents once a minute ("Timeout expired"), which dropped the messages in flight, marked the
//! peer unreachable and stalled commits while the sender reconnected. This layer applies the same
//! bound to every call but the ones named exempt; a client's own `grpc-timeout` still applies to
//! every call (tonic enforces it below this layer).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::codegen::http;
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bounds each call's handler by `limit`, except calls to the `exempt` paths
/// (`/package.Service/Method`).
#[derive(Debug, Clone)]
pub(crate) struct DeadlineLayer {
    limit: Duration,
    exempt: &'static [&'static str],
}

impl DeadlineLayer {
    pub(crate) fn new(limit: Duration, exempt: &'static [&'static str]) -> Self {
        Self { limit, exempt }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            limit: self.limit,
            exempt: self.exempt,
        }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
    limit: Duration,
    exempt: &'static [&'static str],
}

impl<S, B, R> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let exempt = self.exempt.contains(&req.uri().path());
        let limit = self.limit;
        let call = self.inner.call(req);
        Box::pin(async move {
            if exempt {
                return call.await.map_err(Into::into);
            }
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(tonic::Status::deadline_exceeded(format!(
                    "the request ran past the agent's {} ms limit",
                    limit.as_millis()
                ))) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A handler that answers after `delay`.
    fn slow(
        delay: Duration,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<()>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<()>, Infallible>> + Send + 'static,
    > + Clone {
        tower::service_fn(move |_req: http::Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(http::Response::new(()))
        })
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("http://agent{path}"))
            .body(())
            .expect("request builds")
    }

    const EXEMPT: &[&str] = &["/nines.raft.v1.RaftPeer/Stream"];

    #[tokio::test(start_paused = true)]
    async fn a_long_call_is_cut_at_the_limit() {
        let layer = DeadlineLayer::new(Duration::from_secs(61), EXEMPT);
        let mut svc = layer.layer(slow(Duration::from_secs(300)));
        let err = svc
            .call(request("/nines.ckpt.v1.Checkpoint/Write"))
            .await
            .expect_err("a call past the limit fails");
        let status = err.downcast::<tonic::Status>().expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exempt_stream_outlives_the_limit() {
        let layer = DeadlineLayer::new(Duration::from_secs(61), EXEMPT);
        let mut svc = layer.layer(slow(Duration::from_secs(300)));
        svc.call(request("/nines.raft.v1.RaftPeer/Stream"))
            .await
            .expect("the peer stream is not cut");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_call_passes() {
        let layer = DeadlineLayer::new(Duration::from_secs(61), EXEMPT);
        let mut svc = layer.layer(slow(Duration::from_millis(5)));
        svc.call(request("/nines.ckpt.v1.Checkpoint/Write"))
            .await
            .expect("a quick call passes");
    }
}
