//! Issuing: the CA and its certificates as files, the identities read back from them, and the
//! checks that refuse what would be wrong.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, time::SystemTime};

use anyhow::{ensure, Context as _};
use nines_tls::{
    describe, init_ca, issue_client, issue_node, ConfigError, Identity, IdentityError, IssueError,
    Role, TlsFiles, Validity, CA_VALID_DAYS, LEAF_VALID_DAYS,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};

fn ca_validity() -> Validity {
    Validity::days_from(SystemTime::now(), CA_VALID_DAYS)
}

fn leaf_validity() -> Validity {
    Validity::days_from(SystemTime::now(), LEAF_VALID_DAYS)
}

fn cert_der(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::from_pem_file(path).with_context(|| format!("{}", path.display()))
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

#[test]
fn node_and_client_identities_round_trip() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let ca = init_ca(dir, "prod-1", ca_validity(), false)?;
    assert_eq!(ca.cluster, "prod-1");

    let addrs = vec!["127.0.0.1".to_string(), "::1".into(), "n2.example".into()];
    let node = issue_node(dir, 2, "n2", &addrs, leaf_validity(), false)?;
    let want = Identity::Node {
        cluster: "prod-1".into(),
        id: 2,
        name: "n2".into(),
    };
    assert_eq!(node.identity, want);
    assert_eq!(Identity::from_der(&cert_der(&node.cert)?)?, want);
    let summary = describe(&cert_der(&node.cert)?)?;
    assert_eq!(summary.subject, "n2");
    assert_eq!(summary.issuer, "prod-1");
    assert!(!summary.is_ca);
    assert_eq!(summary.addrs, addrs);

    let client = issue_client(dir, "alice", Role::Operator, leaf_validity(), false)?;
    let want = Identity::Client {
        cluster: "prod-1".into(),
        role: Role::Operator,
        name: "alice".into(),
    };
    assert_eq!(Identity::from_der(&cert_der(&client.cert)?)?, want);
    assert_eq!(
        want.to_string(),
        "client alice (operator) of cluster prod-1"
    );

    // The CA has no identity of its own: its common name is the cluster.
    let e = Identity::from_der(&cert_der(&ca.cert)?).unwrap_err();
    assert_eq!(e, IdentityError::NoNinesUri);
    let ca_summary = describe(&cert_der(&ca.cert)?)?;
    assert!(ca_summary.is_ca && ca_summary.identity.is_none());
    assert_eq!(ca_summary.subject, "prod-1");

    // Each certificate loads with the CA it came from.
    let loaded = TlsFiles::node(dir, 2).load()?;
    assert_eq!(loaded.identity.cluster(), "prod-1");
    let shown = format!("{loaded:?}");
    ensure!(
        !shown.contains("PRIVATE") && !shown.contains("key:"),
        "{shown}"
    );
    TlsFiles::client(dir, "alice").load()?;
    Ok(())
}

#[test]
fn keys_are_0600_and_nothing_is_overwritten_without_force() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let ca = init_ca(dir, "c", ca_validity(), false)?;
    let node = issue_node(dir, 1, "n1", &["127.0.0.1".into()], leaf_validity(), false)?;
    let client = issue_client(dir, "ops", Role::Reader, leaf_validity(), false)?;
    for path in [
        &ca.key,
        &ca.cert,
        &node.key,
        &node.cert,
        &client.key,
        &client.cert,
    ] {
        assert_eq!(mode(path)?, 0o600, "{}", path.display());
    }

    let ca_before = fs::read(&ca.key)?;
    let e = init_ca(dir, "c", ca_validity(), false).unwrap_err();
    ensure!(matches!(&e, IssueError::Exists { .. }), "{e}");
    let msg = e.to_string();
    ensure!(msg.contains("ca.key") && msg.contains("--force"), "{msg}");
    assert_eq!(
        fs::read(&ca.key)?,
        ca_before,
        "the CA key must be untouched"
    );

    let node_before = fs::read(&node.cert)?;
    let e = issue_node(dir, 1, "n1", &["127.0.0.1".into()], leaf_validity(), false).unwrap_err();
    ensure!(e.to_string().contains("node-1.key"), "{e}");
    assert_eq!(fs::read(&node.cert)?, node_before);
    let e = issue_client(dir, "ops", Role::Drill, leaf_validity(), false).unwrap_err();
    ensure!(e.to_string().contains("client-ops.key"), "{e}");

    // Forced: a new certificate with the new role, still 0600.
    let again = issue_client(dir, "ops", Role::Drill, leaf_validity(), true)?;
    assert_eq!(mode(&again.key)?, 0o600);
    let id = Identity::from_der(&cert_der(&again.cert)?)?;
    assert!(
        matches!(
            id,
            Identity::Client {
                role: Role::Drill,
                ..
            }
        ),
        "{id}"
    );
    Ok(())
}

#[test]
fn bad_requests_are_refused_with_the_reason() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let addr = vec!["127.0.0.1".to_string()];

    // No CA yet: the message says how to make one.
    let e = issue_node(dir, 1, "n1", &addr, leaf_validity(), false).unwrap_err();
    let msg = e.to_string();
    ensure!(
        msg.contains("not found in") && msg.contains("nines cert init --dir"),
        "{msg}"
    );

    let e = init_ca(dir, "bad/name", ca_validity(), false).unwrap_err();
    ensure!(e.to_string().contains("invalid cluster name"), "{e}");
    init_ca(dir, "c", ca_validity(), false)?;

    let cases: Vec<(IssueError, &str)> = vec![
        (
            issue_node(dir, 0, "n0", &addr, leaf_validity(), false).unwrap_err(),
            "node id 0",
        ),
        (
            issue_node(dir, 1, "n 1", &addr, leaf_validity(), false).unwrap_err(),
            "invalid node name",
        ),
        (
            issue_node(dir, 1, &"n".repeat(65), &addr, leaf_validity(), false).unwrap_err(),
            "at most 64",
        ),
        (
            issue_node(dir, 1, "n1", &[], leaf_validity(), false).unwrap_err(),
            "at least one address",
        ),
        (
            issue_node(
                dir,
                1,
                "n1",
                &["127.0.0.1:7101".into()],
                leaf_validity(),
                false,
            )
            .unwrap_err(),
            "invalid address '127.0.0.1:7101'",
        ),
        (
            issue_node(dir, 1, "n1", &["not a host".into()], leaf_validity(), false).unwrap_err(),
            "neither an IP address nor a DNS name",
        ),
        (
            issue_client(dir, "", Role::App, leaf_validity(), false).unwrap_err(),
            "invalid client name",
        ),
    ];
    for (e, want) in cases {
        ensure!(e.to_string().contains(want), "want '{want}' in: {e}");
    }
    // Nothing was written by the refusals.
    let names: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names.len(), 2, "{names:?}");
    Ok(())
}

#[test]
fn a_ca_key_that_is_not_the_ca_certificates_is_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init_ca(&a, "c", ca_validity(), false)?;
    init_ca(&b, "c", ca_validity(), false)?;
    fs::copy(b.join("ca.key"), a.join("ca.key"))?;
    let e = issue_client(&a, "x", Role::App, leaf_validity(), false).unwrap_err();
    ensure!(e.to_string().contains("is not the key of"), "{e}");
    Ok(())
}

#[test]
fn load_refuses_files_that_do_not_belong_together() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init_ca(&a, "c", ca_validity(), false)?;
    init_ca(&b, "c", ca_validity(), false)?;
    issue_node(&a, 1, "n1", &["127.0.0.1".into()], leaf_validity(), false)?;
    issue_node(&a, 2, "n2", &["127.0.0.1".into()], leaf_validity(), false)?;
    issue_client(&a, "app", Role::App, leaf_validity(), false)?;

    let mut files = TlsFiles::node(&a, 1);
    files.ca = b.join("ca.pem");
    let e = files.load().unwrap_err();
    ensure!(matches!(e, ConfigError::NotIssuedByCa { .. }), "{e}");

    let mut files = TlsFiles::node(&a, 1);
    files.key = a.join("node-2.key");
    let e = files.load().unwrap_err();
    ensure!(matches!(e, ConfigError::KeyMismatch { .. }), "{e}");

    let e = TlsFiles::node(&a, 9).load().unwrap_err();
    ensure!(
        matches!(e, ConfigError::Missing(_)) && e.to_string().contains("node-9.pem"),
        "{e}"
    );

    let e = nines_tls::server_config(&TlsFiles::client(&a, "app"), &[b"h2"]).unwrap_err();
    ensure!(matches!(e, ConfigError::NotANode { .. }), "{e}");
    Ok(())
}

/// A certificate signed by a fresh CA, with the given SAN URIs and common name.
fn cert_with_uris(uris: &[&str], common_name: &str) -> anyhow::Result<Vec<u8>> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    for uri in uris {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI((*uri).try_into()?));
    }
    let key = rcgen::KeyPair::generate()?;
    Ok(params.signed_by(&key, &issuer)?.der().to_vec())
}

#[test]
fn certificates_with_no_one_or_a_bad_identity_are_read_as_such() -> anyhow::Result<()> {
    let none = cert_with_uris(&["https://example.com/x"], "x")?;
    assert_eq!(Identity::from_der(&none), Err(IdentityError::NoNinesUri));

    let two = cert_with_uris(&["nines://c/node/1", "nines://c/client/drill/x"], "n1")?;
    let e = Identity::from_der(&two).unwrap_err();
    ensure!(
        matches!(&e, IdentityError::SeveralNinesUris(u) if u.len() == 2),
        "{e}"
    );
    ensure!(e.to_string().contains("exactly one"), "{e}");

    let bad_role = cert_with_uris(&["nines://c/client/root/x"], "x")?;
    let e = Identity::from_der(&bad_role).unwrap_err();
    ensure!(
        matches!(&e, IdentityError::BadRole { role, .. } if role == "root"),
        "{e}"
    );

    let bad_id = cert_with_uris(&["nines://c/node/0"], "n0")?;
    let e = Identity::from_der(&bad_id).unwrap_err();
    ensure!(e.to_string().contains("node id '0'"), "{e}");

    let bad_cn = cert_with_uris(&["nines://c/node/1"], "n 1")?;
    let e = Identity::from_der(&bad_cn).unwrap_err();
    ensure!(matches!(e, IdentityError::BadNodeName { .. }), "{e}");

    // Other URIs beside the one nines URI do not matter.
    let mixed = cert_with_uris(&["https://example.com/x", "nines://c/client/app/x"], "x")?;
    ensure!(
        matches!(
            Identity::from_der(&mixed)?,
            Identity::Client {
                role: Role::App,
                ..
            }
        ),
        "mixed"
    );
    Ok(())
}
