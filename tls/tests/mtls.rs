//! Mutual TLS against real servers on loopback: a tonic server (the standard health service) with
//! `tonic_server_tls`, and a plain tokio-rustls listener with `tls_acceptor`. A good certificate
//! gets through and the server reads the caller's identity; an expired one, one from another CA,
//! and none at all are refused before any request reaches the service.

use std::{net::SocketAddr, path::Path, time::Duration, time::SystemTime};

use anyhow::{bail, ensure, Context as _};
use nines_tls::{
    init_ca, issue_client, issue_node, peer_identity, request_identity, tls_acceptor,
    tls_connector, tonic_client_tls, tonic_server_tls, Identity, PeerError, Role, TlsFiles,
    Validity,
};
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::{mpsc, oneshot},
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// Every step of a test is bounded: a refused handshake must fail, not hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn valid_days(days: u32) -> Validity {
    Validity::days_from(SystemTime::now(), days)
}

/// A CA with node 1 (the server, on 127.0.0.1), node 2, and client `alice` (operator).
fn cluster(dir: &Path, name: &str) -> anyhow::Result<()> {
    init_ca(dir, name, valid_days(3650), false)?;
    issue_node(dir, 1, "n1", &["127.0.0.1".into()], valid_days(365), false)?;
    issue_node(dir, 2, "n2", &["127.0.0.1".into()], valid_days(365), false)?;
    issue_client(dir, "alice", Role::Operator, valid_days(365), false)?;
    Ok(())
}

/// A tonic health server with mutual TLS whose interceptor reports each caller's identity.
struct HealthServer {
    addr: SocketAddr,
    callers: mpsc::UnboundedReceiver<Result<Identity, PeerError>>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl HealthServer {
    async fn start(files: &TlsFiles) -> anyhow::Result<HealthServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (tx, callers) = mpsc::unbounded_channel();
        let report = move |req: tonic::Request<()>| {
            let _ = tx.send(request_identity(&req));
            Ok(req)
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder()
            .tls_config(tonic_server_tls(files)?)?
            .layer(tonic::service::InterceptorLayer::new(report))
            .add_service(health);
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        Ok(HealthServer {
            addr,
            callers,
            stop,
            task,
        })
    }

    /// The identity of the one caller since the last call, if any came.
    fn caller(&mut self) -> Option<Result<Identity, PeerError>> {
        self.callers.try_recv().ok()
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(STEP_TIMEOUT, self.task).await???;
        Ok(())
    }
}

/// Connect with `tls` and ask the health service; any failure (handshake, request) is an error.
async fn check(addr: SocketAddr, tls: ClientTlsConfig) -> anyhow::Result<ServingStatus> {
    let step = async {
        let channel = Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect_timeout(STEP_TIMEOUT)
            .timeout(STEP_TIMEOUT)
            .connect()
            .await?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        anyhow::Ok(reply.into_inner().status())
    };
    tokio::time::timeout(STEP_TIMEOUT * 2, step)
        .await
        .context("the health check hung")?
}

#[tokio::test]
async fn tonic_server_admits_good_certificates_and_refuses_the_rest() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, other) = (tmp.path().join("prod"), tmp.path().join("other"));
    cluster(&dir, "prod")?;
    cluster(&other, "other")?;
    let past = SystemTime::now() - Duration::from_secs(10 * 86_400);
    let expired = Validity {
        not_before: past,
        not_after: past + Duration::from_secs(86_400),
    };
    issue_client(&dir, "old", Role::Reader, expired, false)?;

    eprintln!("phase 1: node 1 serves health over mutual TLS");
    let mut server = HealthServer::start(&TlsFiles::node(&dir, 1)).await?;

    eprintln!("phase 2: an operator client gets through, and the server knows who it is");
    let alice = tonic_client_tls(&TlsFiles::client(&dir, "alice"), "127.0.0.1")?;
    assert_eq!(check(server.addr, alice).await?, ServingStatus::Serving);
    let want = Identity::Client {
        cluster: "prod".into(),
        role: Role::Operator,
        name: "alice".into(),
    };
    assert_eq!(server.caller().context("no caller seen")??, want);

    eprintln!("phase 3: a peer node gets through as itself");
    let n2 = tonic_client_tls(&TlsFiles::node(&dir, 2), "127.0.0.1")?;
    assert_eq!(check(server.addr, n2).await?, ServingStatus::Serving);
    let seen = server.caller().context("no caller seen")??;
    ensure!(
        matches!(&seen, Identity::Node { id: 2, name, .. } if name == "n2"),
        "{seen}"
    );

    eprintln!("phase 4: an expired client certificate is refused");
    let old = tonic_client_tls(&TlsFiles::client(&dir, "old"), "127.0.0.1")?;
    refused(&mut server, old, "expired", "CertificateExpired").await?;

    eprintln!("phase 5: a certificate from another cluster's CA is refused");
    let stranger = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem"))?))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(other.join("client-alice.pem"))?,
            std::fs::read(other.join("client-alice.key"))?,
        ))
        .domain_name("127.0.0.1");
    refused(&mut server, stranger, "other CA", "UnknownCA").await?;

    eprintln!("phase 6: no client certificate at all is refused");
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem"))?))
        .domain_name("127.0.0.1");
    refused(
        &mut server,
        anonymous,
        "no certificate",
        "CertificateRequired",
    )
    .await?;

    eprintln!("phase 7: the client refuses a server of another CA, or under another name");
    let wrong_ca = tonic_client_tls(&TlsFiles::client(&other, "alice"), "127.0.0.1")?;
    refused(
        &mut server,
        wrong_ca,
        "server of another CA",
        "UnknownIssuer",
    )
    .await?;
    let wrong_name = tonic_client_tls(&TlsFiles::client(&dir, "alice"), "n9.example")?;
    refused(
        &mut server,
        wrong_name,
        "server name not in its certificate",
        "not valid for name",
    )
    .await?;

    eprintln!("phase 8: a good client still gets through after all that");
    let alice = tonic_client_tls(&TlsFiles::client(&dir, "alice"), "127.0.0.1")?;
    assert_eq!(check(server.addr, alice).await?, ServingStatus::Serving);
    assert_eq!(server.caller().context("no caller seen")??, want);
    server.stop().await
}

/// The health check fails for the reason `why` (as rustls words it) and no request reached the
/// service.
async fn refused(
    server: &mut HealthServer,
    tls: ClientTlsConfig,
    what: &str,
    why: &str,
) -> anyhow::Result<()> {
    match check(server.addr, tls).await {
        Ok(status) => bail!("{what}: admitted ({status:?})"),
        Err(e) => {
            let e = format!("{e:#}");
            eprintln!("  {what}: refused: {e}");
            ensure!(e.contains(why), "{what}: refused, but not for '{why}': {e}");
        }
    }
    if let Some(caller) = server.caller() {
        bail!("{what}: a request reached the service as {caller:?}");
    }
    Ok(())
}

#[tokio::test]
async fn rustls_configs_work_without_tonic() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    cluster(dir, "prod")?;
    let acceptor = tls_acceptor(&TlsFiles::node(dir, 1), &[b"nines/1"])?;
    let connector = tls_connector(&TlsFiles::client(dir, "alice"), &[b"nines/1"])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;

    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let (_, conn) = tls.get_ref();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let who = peer_identity(conn.peer_certificates().unwrap_or_default());
        tls.write_all(b"hello").await?;
        tls.shutdown().await?;
        anyhow::Ok((who, alpn))
    });
    let step = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1")?;
        let mut tls = connector.connect(name, tcp).await?;
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await?;
        anyhow::Ok(got)
    };
    let got = tokio::time::timeout(STEP_TIMEOUT, step).await??;
    assert_eq!(got, b"hello");
    let (who, alpn) = tokio::time::timeout(STEP_TIMEOUT, server).await???;
    assert_eq!(alpn.as_deref(), Some(&b"nines/1"[..]));
    let who = who?;
    ensure!(
        matches!(&who, Identity::Client { role: Role::Operator, name, .. } if name == "alice"),
        "{who}"
    );
    Ok(())
}
