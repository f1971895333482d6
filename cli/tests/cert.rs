//! `nines cert` end to end, as the README shows it: a CA, three node certificates and an
//! operator's, in a temporary directory; nothing is overwritten without --force; `show` reads
//! back what was written; the files load as TLS configs.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use anyhow::{ensure, Context as _};
use nines_tls::{Identity, Role, TlsFiles};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nines");

/// What one run of `nines` did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn nines(args: &[&str]) -> anyhow::Result<Run> {
    let out = Command::new(BIN).args(args).output().context("run nines")?;
    Ok(Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run, require success, parse stdout as one JSON document.
fn json(args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let run = nines(&all)?;
    ensure!(run.ok, "nines {args:?} failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).with_context(|| format!("not JSON: {}", run.stdout))
}

/// Run, require failure, return stderr.
fn refused(args: &[&str]) -> anyhow::Result<String> {
    let run = nines(args)?;
    ensure!(!run.ok, "nines {args:?} succeeded: {}", run.stdout);
    Ok(run.stderr)
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

#[test]
fn a_cluster_identity_from_the_command_line() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("tls");
    let d = dir.to_str().context("temp path is not UTF-8")?;

    eprintln!("phase 1: the CA (table output names the files and the cluster)");
    let run = nines(&["cert", "init", "--dir", d, "--cluster", "prod"])?;
    ensure!(run.ok, "{}", run.stderr);
    ensure!(
        run.stdout.contains("ca.pem") && run.stdout.contains("CA of cluster prod"),
        "{}",
        run.stdout
    );
    assert_eq!(mode(&dir)?, 0o700);
    assert_eq!(mode(&dir.join("ca.key"))?, 0o600);

    eprintln!("phase 2: nodes n1..n3 on 127.0.0.1 and an operator, as JSON");
    for id in ["1", "2", "3"] {
        let name = format!("n{id}");
        let doc = json(&[
            "cert",
            "node",
            "--dir",
            d,
            "--id",
            id,
            "--name",
            &name,
            "--addr",
            "127.0.0.1",
        ])?;
        assert_eq!(doc["kind"], "node");
        assert_eq!(doc["uri"], format!("nines://prod/node/{id}"));
        assert_eq!(doc["addrs"], serde_json::json!(["127.0.0.1"]));
        let key = doc["key"].as_str().context("no key path")?;
        assert_eq!(mode(Path::new(key))?, 0o600, "{key}");
    }
    let doc = json(&[
        "cert", "client", "--dir", d, "--name", "alice", "--role", "operator",
    ])?;
    assert_eq!(doc["uri"], "nines://prod/client/operator/alice");
    assert_eq!(doc["role"], "operator");
    ensure!(
        doc["not_after"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{doc}"
    );

    eprintln!("phase 3: nothing is overwritten without --force");
    let ca_key = fs::read(dir.join("ca.key"))?;
    let err = refused(&["cert", "init", "--dir", d, "--cluster", "prod"])?;
    ensure!(err.contains("ca.key") && err.contains("--force"), "{err}");
    assert_eq!(fs::read(dir.join("ca.key"))?, ca_key);
    let node_cert = fs::read(dir.join("node-2.pem"))?;
    let err = refused(&[
        "cert",
        "node",
        "--dir",
        d,
        "--id",
        "2",
        "--addr",
        "127.0.0.1",
    ])?;
    ensure!(
        err.contains("node-2.key") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(fs::read(dir.join("node-2.pem"))?, node_cert);
    let doc = json(&[
        "cert",
        "node",
        "--dir",
        d,
        "--id",
        "2",
        "--addr",
        "127.0.0.1,localhost",
        "--force",
    ])?;
    assert_eq!(doc["name"], "n2", "the name defaults to n<ID>");
    assert_ne!(fs::read(dir.join("node-2.pem"))?, node_cert);

    eprintln!("phase 4: show reads back what was written");
    let node2 = dir.join("node-2.pem");
    let doc = json(&["cert", "show", node2.to_str().context("path")?])?;
    assert_eq!(doc["kind"], "node");
    assert_eq!(doc["id"], 2);
    assert_eq!(doc["issuer"], "prod");
    assert_eq!(doc["expired"], false);
    assert_eq!(doc["addrs"], serde_json::json!(["127.0.0.1", "localhost"]));
    let run = nines(&["cert", "show", node2.to_str().context("path")?])?;
    ensure!(
        run.ok && run.stdout.contains("node 2 (n2) of cluster prod"),
        "{}",
        run.stdout
    );
    let ca = json(&["cert", "show", &format!("{d}/ca.pem")])?;
    assert_eq!(ca["kind"], "ca");
    assert_eq!(ca["cluster"], "prod");
    let err = refused(&["cert", "show", &format!("{d}/ca.key")])?;
    ensure!(err.contains("holds no PEM certificate"), "{err}");

    eprintln!("phase 5: the files are usable TLS identities");
    let loaded = TlsFiles::node(&dir, 3).load()?;
    assert_eq!(
        loaded.identity,
        Identity::Node {
            cluster: "prod".into(),
            id: 3,
            name: "n3".into()
        }
    );
    let loaded = TlsFiles::client(&dir, "alice").load()?;
    ensure!(
        matches!(
            loaded.identity,
            Identity::Client {
                role: Role::Operator,
                ..
            }
        ),
        "{}",
        loaded.identity
    );
    nines_tls::tonic_server_tls(&TlsFiles::node(&dir, 1))?;
    Ok(())
}

#[test]
fn bad_requests_fail_with_a_clear_error() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path().to_str().context("temp path is not UTF-8")?;

    let err = refused(&[
        "cert",
        "node",
        "--dir",
        d,
        "--id",
        "1",
        "--addr",
        "127.0.0.1",
    ])?;
    ensure!(
        err.contains("ca.pem not found in") && err.contains("nines cert init --dir"),
        "{err}"
    );
    let err = refused(&[
        "cert", "client", "--dir", d, "--name", "x", "--role", "operator",
    ])?;
    ensure!(err.contains("nines cert init"), "{err}");

    let run = nines(&["cert", "init", "--dir", d, "--cluster", "c"])?;
    ensure!(run.ok, "{}", run.stderr);
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "cert",
                "node",
                "--dir",
                d,
                "--id",
                "0",
                "--addr",
                "127.0.0.1",
            ],
            "node id 0",
        ),
        (
            &[
                "cert",
                "node",
                "--dir",
                d,
                "--id",
                "1",
                "--addr",
                "127.0.0.1:7101",
            ],
            "without a port",
        ),
        (
            &[
                "cert", "node", "--dir", d, "--id", "1", "--name", "a/b", "--addr", "h",
            ],
            "invalid node name",
        ),
        (
            &[
                "cert", "client", "--dir", d, "--name", "x", "--role", "admin",
            ],
            "unknown role 'admin'",
        ),
        (
            &[
                "cert", "client", "--dir", d, "--name", "x", "--role", "app", "--days", "0",
            ],
            "--days",
        ),
        (
            &["cert", "init", "--dir", d, "--cluster", "c d", "--force"],
            "invalid cluster name",
        ),
    ];
    for (args, want) in cases {
        let err = refused(args)?;
        ensure!(
            err.contains(want),
            "nines {args:?}: want '{want}' in: {err}"
        );
    }
    Ok(())
}
