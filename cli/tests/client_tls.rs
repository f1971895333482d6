//! The CLI as a mutual-TLS client (`--ca`, `--cert`, `--key`), against tonic servers on loopback
//! made in this test (the agent side is not needed): a server with `tonic_server_tls` sees the
//! CLI's certificate; a client of another CA, a client without certificates, and a TLS client
//! against a plaintext server each get an error that says what went wrong and what to do.

use std::{net::SocketAddr, path::Path, process::Command, time::SystemTime};

use anyhow::{ensure, Context as _};
use nines_tls::{
    init_ca, issue_client, issue_node, request_identity, Identity, Role, TlsFiles, Validity,
};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_nines");

fn days(d: u32) -> Validity {
    Validity::days_from(SystemTime::now(), d)
}

/// A CA `name` in `dir` with node 1 on 127.0.0.1 and client `operator` (role drill).
fn cluster(dir: &Path, name: &str) -> anyhow::Result<TlsFiles> {
    init_ca(dir, name, days(30), false)?;
    issue_node(dir, 1, "n1", &["127.0.0.1".into()], days(30), false)?;
    issue_client(dir, "operator", Role::Drill, days(30), false)?;
    Ok(TlsFiles::client(dir, "operator"))
}

/// A tonic server with only the health service (TLS with node 1's files of `tls`, or
/// plaintext) on a free port; every request's caller identity goes to the receiver.
async fn server(
    tls: Option<&Path>,
) -> anyhow::Result<(SocketAddr, mpsc::UnboundedReceiver<Option<Identity>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, callers) = mpsc::unbounded_channel();
    let report = move |req: tonic::Request<()>| {
        let _ = tx.send(request_identity(&req).ok());
        Ok(req)
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(dir) = tls {
        builder = builder.tls_config(nines_tls::tonic_server_tls(&TlsFiles::node(dir, 1))?)?;
    }
    let (_reporter, health) = tonic_health::server::health_reporter();
    let router = builder
        .layer(tonic::service::InterceptorLayer::new(report))
        .add_service(health);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(router.serve_with_incoming(incoming));
    Ok((addr, callers))
}

/// `nines status --endpoints ADDR` with `tls`'s flags; returns (success, stderr).
async fn status(addr: SocketAddr, tls: Option<&TlsFiles>) -> anyhow::Result<(bool, String)> {
    let mut cmd = Command::new(BIN);
    cmd.args(["status", "--endpoints", &addr.to_string()])
        .env_remove("NINES_CA")
        .env_remove("NINES_CERT")
        .env_remove("NINES_KEY")
        .env_remove("NINES_ENDPOINTS");
    if let Some(t) = tls {
        cmd.arg("--ca").arg(&t.ca);
        cmd.arg("--cert").arg(&t.cert);
        cmd.arg("--key").arg(&t.key);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("run nines status")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn nines_status_speaks_mutual_tls_with_its_flags_and_explains_refusals() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let (prod, other) = (tmp.path().join("prod"), tmp.path().join("other"));
    let operator = cluster(&prod, "prod")?;
    let stranger = cluster(&other, "other")?;
    let (tls_addr, mut callers) = server(Some(&prod)).await?;
    let (plain_addr, _plain_callers) = server(None).await?;

    eprintln!("phase 1: with --ca/--cert/--key the request reaches the server as the operator");
    let (ok, err) = status(tls_addr, Some(&operator)).await?;
    eprintln!("  {}", err.trim());
    // The server has no cluster service: status fails, but after a TLS handshake.
    ensure!(!ok, "status against a health-only server succeeded");
    ensure!(!err.contains("mutual TLS"), "a TLS failure: {err}");
    ensure!(err.contains("not implemented"), "{err}");
    let seen = callers
        .try_recv()
        .context("no request reached the server")?;
    let want = Identity::Client {
        cluster: "prod".into(),
        role: Role::Drill,
        name: "operator".into(),
    };
    ensure!(seen.as_ref() == Some(&want), "the server saw {seen:?}");

    eprintln!("phase 2: another CA's client does not trust the agent and is told so");
    let (ok, err) = status(tls_addr, Some(&stranger)).await?;
    eprintln!("  {}", err.trim());
    ensure!(!ok, "a stranger got through");
    ensure!(err.contains("no agent accepted this client"), "{err}");
    ensure!(err.contains("does not trust"), "{err}");
    ensure!(
        callers.try_recv().is_err(),
        "a stranger's request reached the server"
    );

    eprintln!("phase 3: no certificate against a TLS-only agent: the hint names the flags");
    let (ok, err) = status(tls_addr, None).await?;
    eprintln!("  {}", err.trim());
    ensure!(!ok, "plaintext got through");
    ensure!(err.contains("pass --ca/--cert/--key"), "{err}");
    ensure!(err.contains("NINES_CA"), "{err}");

    eprintln!("phase 4: TLS against a plaintext agent: the handshake failed, and why");
    let (ok, err) = status(plain_addr, Some(&operator)).await?;
    eprintln!("  {}", err.trim());
    ensure!(!ok, "TLS against plaintext succeeded");
    ensure!(err.contains("TLS handshake"), "{err}");
    ensure!(err.contains(&plain_addr.to_string()), "{err}");

    eprintln!("phase 5: --ca alone is refused, naming what is missing");
    let out = Command::new(BIN)
        .args(["status", "--endpoints", &tls_addr.to_string(), "--ca"])
        .arg(&operator.ca)
        .env_remove("NINES_CERT")
        .env_remove("NINES_KEY")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "half a TLS config was accepted");
    ensure!(
        err.contains("--cert (NINES_CERT) and --key (NINES_KEY) missing"),
        "{err}"
    );
    Ok(())
}
