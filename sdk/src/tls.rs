//! Client TLS: the files a client proves itself with, where they come from (`NINES_CA`,
//! `NINES_CERT`, `NINES_KEY`), the gRPC endpoints built with them, and what a failed handshake
//! means for the person reading the error.
//!
//! An agent with a `[tls]` section accepts only mutual TLS: the client dials `https://HOST:PORT`,
//! presents a certificate issued by the cluster's CA (`nines cert client`), and checks the
//! agent's certificate against that CA for the host it dialled (node certificates carry their
//! addresses). Without TLS files a client speaks plaintext HTTP/2, which only an agent without
//! `[tls]` accepts.

use std::{ffi::OsString, path::PathBuf};

use nines_tls::TlsFiles;
use tonic::transport::Endpoint;

use crate::error::{Result, SdkError};

/// The cluster's CA certificate (`ca.pem`) a client trusts. The agent sets it for its
/// components when its config has `component_cert` / `component_key`.
pub const CA_ENV: &str = "NINES_CA";
/// The client's certificate (`client-NAME.pem`, made with `nines cert client`).
pub const CERT_ENV: &str = "NINES_CERT";
/// The client certificate's private key (`client-NAME.key`).
pub const KEY_ENV: &str = "NINES_KEY";

/// The client TLS files named by `NINES_CA`, `NINES_CERT` and `NINES_KEY`: all three set (and
/// not empty) → `Some`; none → `None` (plaintext). The files are not read here.
///
/// # Errors
/// [`SdkError::InvalidArgument`] naming the missing variables when only some are set: a client
/// half-configured for TLS would otherwise fall back to plaintext and fail obscurely later.
pub fn tls_from_env() -> Result<Option<TlsFiles>> {
    tls_from_vars(|name| std::env::var_os(name))
}

/// [`tls_from_env`] over any variable lookup (tests pass a map; the process environment is
/// shared by every test thread).
pub(crate) fn tls_from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<Option<TlsFiles>> {
    let vars = [CA_ENV, CERT_ENV, KEY_ENV];
    let values: Vec<Option<PathBuf>> = vars
        .iter()
        .map(|name| get(name).filter(|v| !v.is_empty()).map(PathBuf::from))
        .collect();
    match values.as_slice() {
        [Some(ca), Some(cert), Some(key)] => Ok(Some(TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        })),
        [None, None, None] => Ok(None),
        _ => {
            let missing: Vec<&str> = vars
                .iter()
                .zip(&values)
                .filter(|(_, v)| v.is_none())
                .map(|(name, _)| *name)
                .collect();
            Err(SdkError::InvalidArgument(format!(
                "client TLS is half configured: {} not set; set all of {CA_ENV}, {CERT_ENV} and \
                 {KEY_ENV} (the cluster's ca.pem and a client certificate and key from `nines \
                 cert client`), or none of them for plaintext",
                missing.join(" and ")
            )))
        }
    }
}

/// The host part of a `host:port` endpoint, IPv6 brackets removed (`[::1]:7101` → `::1`): the
/// name the agent's certificate must carry.
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The tonic endpoint for an agent at `addr` (`host:port`): `http://addr` without TLS files;
/// with them `https://addr`, presenting the client's certificate and trusting the cluster's CA
/// alone, the agent's certificate checked for `addr`'s host. Callers add their timeouts.
///
/// # Errors
/// [`SdkError::InvalidArgument`] when `addr` is not a valid authority, or a TLS file is missing,
/// unreadable or does not belong with the others (the message names the file and what to do).
pub fn grpc_endpoint(addr: &str, tls: Option<&TlsFiles>) -> Result<Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| SdkError::InvalidArgument(format!("endpoint '{addr}': {e}")))?;
    let Some(files) = tls else {
        return Ok(ep);
    };
    let config = nines_tls::tonic_client_tls(files, host_of(addr))
        .map_err(|e| SdkError::InvalidArgument(format!("client TLS: {e}")))?;
    ep.tls_config(config)
        .map_err(|e| SdkError::InvalidArgument(format!("endpoint '{addr}': client TLS: {e}")))
}

/// Words every [`explain_tls_failure`] explanation contains, so a list of failures can tell a
/// TLS refusal from an unreachable agent.
pub(crate) const TLS_MARK: &str = "mutual TLS";

/// What a failed connection to the agent at `addr` means when TLS is involved, for people:
/// `detail` is the transport error with its sources (rustls' words, e.g. `received fatal alert:
/// UnknownCA`), `tls` whether this client dialled with TLS files. `None` when the failure does
/// not look like a TLS problem (connection refused, no route: the agent is down).
///
/// - With TLS: the agent refused the client's certificate (another CA, expired, none); the
///   agent's certificate is not trusted or not valid for the host dialled; or the other end does
///   not speak TLS at all (an agent without `[tls]`).
/// - Without TLS: the connection was dropped or garbled, which is what an agent that requires
///   mutual TLS does to a plaintext client (the explanation says "if").
pub fn explain_tls_failure(addr: &str, detail: &str, tls: bool) -> Option<String> {
    let d = detail.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| d.contains(n));
    if tls {
        if has(&[
            "invalid peer certificate",
            "notvalidforname",
            "not valid for name",
        ]) {
            return Some(format!(
                "the agent at {addr} presented a certificate this client does not trust for that \
                 address ({detail}): check that the CA given (--ca / {CA_ENV}) is the cluster's \
                 ca.pem and that the node's certificate names the address dialled (mutual TLS)"
            ));
        }
        if has(&[
            "fatal alert",
            "certificaterequired",
            "unknownca",
            "badcertificate",
        ]) {
            return Some(format!(
                "the agent at {addr} refused this client's certificate ({detail}): use a client \
                 certificate issued by the cluster's CA (`nines cert client`), still valid, with \
                 a role allowed to do this (mutual TLS)"
            ));
        }
        if has(&[
            "corrupt message",
            "invalidcontenttype",
            "tls handshake eof",
            "handshake",
            "wrong version",
        ]) {
            return Some(format!(
                "the TLS handshake with {addr} failed ({detail}): is that agent serving mutual \
                 TLS? An agent without a [tls] section speaks plaintext; drop --ca/--cert/--key \
                 (and {CA_ENV}, {CERT_ENV}, {KEY_ENV}) to reach it"
            ));
        }
        return None;
    }
    if has(&[
        "connection reset",
        "broken pipe",
        "connection closed",
        "unexpected eof",
        "h2 protocol error",
        "frame with invalid size",
        "invalid http version",
    ]) {
        return Some(format!(
            "{addr} dropped the connection ({detail}); if the cluster runs with mutual TLS this \
             client needs a certificate: pass --ca/--cert/--key or set {CA_ENV}, {CERT_ENV} and \
             {KEY_ENV}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(set: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = set
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn all_three_variables_name_the_files_none_is_plaintext() {
        let all = vars(&[
            (CA_ENV, "/t/ca.pem"),
            (CERT_ENV, "/t/client-app.pem"),
            (KEY_ENV, "/t/client-app.key"),
        ]);
        assert_eq!(
            tls_from_vars(all).expect("all set"),
            Some(TlsFiles {
                ca: "/t/ca.pem".into(),
                cert: "/t/client-app.pem".into(),
                key: "/t/client-app.key".into(),
            })
        );
        assert_eq!(tls_from_vars(vars(&[])).expect("none set"), None);
        // Set but empty counts as unset (`NINES_CA= cmd`).
        let empty = vars(&[(CA_ENV, ""), (CERT_ENV, ""), (KEY_ENV, "")]);
        assert_eq!(tls_from_vars(empty).expect("all empty"), None);
    }

    #[test]
    fn some_but_not_all_variables_is_an_error_naming_the_missing_ones() {
        let partial = vars(&[(CA_ENV, "/t/ca.pem")]);
        match tls_from_vars(partial) {
            Err(SdkError::InvalidArgument(m)) => {
                assert!(m.contains("NINES_CERT and NINES_KEY not set"), "{m}");
                assert!(!m.contains("NINES_CA not set"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let partial = vars(&[(CERT_ENV, "/t/c.pem"), (KEY_ENV, "/t/c.key")]);
        match tls_from_vars(partial) {
            Err(SdkError::InvalidArgument(m)) => assert!(m.contains("NINES_CA not set"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_host_dialled_is_the_address_without_port_or_brackets() {
        assert_eq!(host_of("127.0.0.1:7101"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7101"), "::1");
        assert_eq!(host_of("n1.example:7101"), "n1.example");
    }

    #[test]
    fn tls_failures_are_explained_and_other_failures_are_not() {
        let refused = "transport error: received fatal alert: UnknownCA";
        let e = explain_tls_failure("10.0.0.1:7101", refused, true).expect("explained");
        assert!(
            e.contains("10.0.0.1:7101 refused this client's certificate"),
            "{e}"
        );
        let e = explain_tls_failure("a:1", "invalid peer certificate: UnknownIssuer", true)
            .expect("explained");
        assert!(e.contains("does not trust"), "{e}");
        let e = explain_tls_failure("a:1", "received corrupt message", true).expect("explained");
        assert!(e.contains("handshake"), "{e}");
        let e = explain_tls_failure("a:1", "connection reset by peer", false).expect("explained");
        assert!(e.contains("--ca/--cert/--key") && e.contains(CA_ENV), "{e}");
        for tls in [true, false] {
            assert_eq!(
                explain_tls_failure("a:1", "tcp connect error: Connection refused", tls),
                None
            );
        }
    }

    /// A CA `cluster` in `dir` with node 1 on 127.0.0.1 and client `app`.
    fn cluster(dir: &std::path::Path, cluster: &str) -> TlsFiles {
        use nines_tls::{init_ca, issue_client, issue_node, Role, Validity};
        let days = |d| Validity::days_from(std::time::SystemTime::now(), d);
        init_ca(dir, cluster, days(30), false).expect("ca");
        issue_node(dir, 1, "n1", &["127.0.0.1".into()], days(30), false).expect("node");
        issue_client(dir, "app", Role::App, days(30), false).expect("client");
        TlsFiles::client(dir, "app")
    }

    /// A tonic health server with mutual TLS (node 1's files) on a free loopback port.
    async fn tls_server(dir: &std::path::Path) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let router = tonic::transport::Server::builder()
            .tls_config(nines_tls::tonic_server_tls(&TlsFiles::node(dir, 1)).expect("server tls"))
            .expect("tls config")
            .add_service(health);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        });
        (addr, task)
    }

    #[tokio::test]
    async fn endpoints_are_https_with_the_clients_certificate_when_tls_is_set() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = cluster(tmp.path(), "prod");
        let plain = grpc_endpoint("127.0.0.1:7101", None).expect("plaintext");
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let tls = grpc_endpoint("127.0.0.1:7101", Some(&files)).expect("tls");
        assert_eq!(tls.uri().scheme_str(), Some("https"));
        let config = crate::ClientConfig {
            tls: Some(files.clone()),
            ..crate::ClientConfig::plaintext()
        };
        let ep = crate::call::base_endpoint("[::1]:7101", &config).expect("ipv6");
        assert_eq!(ep.uri().scheme_str(), Some("https"));
        assert_eq!(ep.uri().host(), Some("[::1]"));

        let gone = TlsFiles {
            key: tmp.path().join("nope.key"),
            ..files
        };
        match grpc_endpoint("127.0.0.1:7101", Some(&gone)) {
            Err(SdkError::InvalidArgument(m)) => assert!(m.contains("nope.key"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_tls_client_gets_through_and_a_stranger_is_told_why_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (prod, other) = (tmp.path().join("prod"), tmp.path().join("other"));
        let app = cluster(&prod, "prod");
        let stranger = cluster(&other, "other");
        let (addr, server) = tls_server(&prod).await;
        let with = |tls: Option<TlsFiles>| crate::ClientConfig {
            tls,
            timeout: std::time::Duration::from_secs(5),
            connect_timeout: std::time::Duration::from_secs(5),
            ..crate::ClientConfig::plaintext()
        };

        // The probe completes the TCP, TLS and HTTP/2 handshakes: only a client of the CA does.
        crate::CheckpointClient::connect_with(&[addr.as_str()], with(Some(app)))
            .await
            .expect("a client of the cluster's CA connects");

        // Another CA's client: it does not trust the agent (and the agent would refuse it).
        let e = crate::CheckpointClient::connect_with(&[addr.as_str()], with(Some(stranger)))
            .await
            .expect_err("another CA");
        let m = e.to_string();
        assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");
        assert!(m.contains("no agent accepted this client"), "{m}");
        assert!(m.contains(&addr) && m.contains("does not trust"), "{m}");

        // An expired certificate of the right CA: the agent refuses it after the handshake, so
        // the first call says so.
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400);
        let expired = nines_tls::Validity {
            not_before: past,
            not_after: past + std::time::Duration::from_secs(86_400),
        };
        nines_tls::issue_client(&prod, "old", nines_tls::Role::App, expired, false)
            .expect("expired client");
        let old = Some(TlsFiles::client(&prod, "old"));
        let c = crate::CheckpointClient::connect_lazy(&[addr.as_str()], with(old)).expect("lazy");
        let m = c.list().await.expect_err("expired").to_string();
        eprintln!("expired: {m}");
        assert!(m.contains("refused this client's certificate"), "{m}");
        assert!(m.contains("no agent accepted this client"), "{m}");

        // Plaintext against a TLS-only agent: the hint says a certificate is needed.
        let c = crate::CheckpointClient::connect_lazy(&[addr.as_str()], with(None)).expect("lazy");
        let m = c.list().await.expect_err("plaintext").to_string();
        eprintln!("plaintext: {m}");
        assert!(m.contains("--ca/--cert/--key") && m.contains(CA_ENV), "{m}");
        server.abort();
    }
}
