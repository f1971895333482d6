//! `nines cert init|node|client|show`: the cluster's CA and the certificates it issues, made by
//! this binary (no openssl), built on nines-tls.
//!
//! Every command that writes prints what it wrote: a table `FILE  CONTENTS  IDENTITY  EXPIRES`
//! for people, or with `-o json` one object with the paths, the identity and `not_after`
//! (RFC 3339, UTC). Files are written mode 0600; an existing file is refused, naming it, unless
//! `--force`.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use nines_tls::rustls::pki_types::{pem::PemObject as _, CertificateDer};
use nines_tls::{
    rfc3339, CaFiles, CertSummary, Identity, LeafFiles, Role, Validity, CA_VALID_DAYS,
    LEAF_VALID_DAYS,
};
use serde_json::{json, Value};

use crate::output::{table, Format};

/// `nines cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Make the cluster's CA: DIR/ca.pem (give it to every node and client) and DIR/ca.key
    /// (keep it secret and offline: whoever holds it can issue any identity). The CA's common
    /// name is the cluster's name, and every certificate it issues carries it.
    ///
    /// Example: nines cert init --dir /etc/nines/tls --cluster prod
    Init(InitArgs),
    /// Issue a node's certificate, signed by the CA in DIR: DIR/node-<ID>.pem and .key. It binds
    /// the cluster, the node id and name, and the addresses clients dial (IP addresses or DNS
    /// names, without ports); it serves the node's listeners and identifies it to its peers.
    ///
    /// Example: nines cert node --dir /etc/nines/tls --id 1 --name n1 --addr 10.0.0.1,n1.prod
    Node(NodeArgs),
    /// Issue a client's certificate bound to one role, signed by the CA in DIR:
    /// DIR/client-<NAME>.pem and .key. Roles, each including the ones before:
    /// reader < app < operator < drill.
    ///
    /// Example: nines cert client --dir /etc/nines/tls --name alice --role operator
    Client(ClientArgs),
    /// Print what a certificate says: its identity (or that it is a CA), issuer, addresses and
    /// validity.
    ///
    /// Example: nines cert show /etc/nines/tls/node-1.pem
    Show {
        /// The certificate (PEM).
        file: PathBuf,
    },
}

/// What every issuing command takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The certificate directory (created mode 0700 if missing; holds ca.pem and ca.key).
    #[arg(long)]
    pub dir: PathBuf,
    /// Replace existing files instead of refusing.
    #[arg(long)]
    pub force: bool,
}

/// `nines cert init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The cluster's name: letters, digits, '.', '_', '-' (at most 64).
    #[arg(long)]
    cluster: String,
    /// Days the CA is valid.
    #[arg(long, default_value_t = CA_VALID_DAYS, value_parser = days)]
    days: u32,
}

/// `nines cert node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The node's id (positive; as in the agent's config).
    #[arg(long)]
    id: u64,
    /// The node's name (default: n and its id, e.g. n1).
    #[arg(long)]
    name: Option<String>,
    /// The addresses clients and peers dial, comma-separated: IP addresses or DNS names.
    #[arg(
        long = "addr",
        value_name = "HOST[,HOST...]",
        value_delimiter = ',',
        required = true
    )]
    addrs: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = LEAF_VALID_DAYS, value_parser = days)]
    days: u32,
}

/// `nines cert client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Who the certificate is for (a person or a program): letters, digits, '.', '_', '-'.
    #[arg(long)]
    name: String,
    /// What it may do: reader, app, operator or drill.
    #[arg(long)]
    role: Role,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = LEAF_VALID_DAYS, value_parser = days)]
    days: u32,
}

/// Run a `nines cert` command and print its result.
///
/// # Errors
/// One line saying what was refused or failed and what to do (an existing file, no CA in the
/// directory, a bad name or address, an unreadable certificate).
pub fn run(cmd: CertCmd, format: Format) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let (doc, text) = match cmd {
        CertCmd::Init(a) => {
            let v = Validity::days_from(now, a.days);
            let ca = nines_tls::init_ca(&a.common.dir, &a.cluster, v, a.common.force)?;
            ca_output(&ca, &a.common.dir)
        }
        CertCmd::Node(a) => {
            let name = a.name.unwrap_or_else(|| format!("n{}", a.id));
            let v = Validity::days_from(now, a.days);
            let f = a.common.force;
            let leaf = nines_tls::issue_node(&a.common.dir, a.id, &name, &a.addrs, v, f)?;
            leaf_output(&leaf)
        }
        CertCmd::Client(a) => {
            let v = Validity::days_from(now, a.days);
            let f = a.common.force;
            let leaf = nines_tls::issue_client(&a.common.dir, &a.name, a.role, v, f)?;
            leaf_output(&leaf)
        }
        CertCmd::Show { file } => show(&file, now)?,
    };
    match format {
        Format::Json => println!("{doc}"),
        Format::Table => println!("{text}"),
    }
    Ok(())
}

/// The CA just written, as JSON and as a table with what to do next.
fn ca_output(ca: &CaFiles, dir: &Path) -> (Value, String) {
    let expires = rfc3339(ca.not_after);
    let who = format!("CA of cluster {}", ca.cluster);
    let doc = json!({
        "kind": "ca",
        "cluster": ca.cluster,
        "cert": ca.cert,
        "key": ca.key,
        "not_after": expires,
    });
    let rows = vec![
        vec![
            ca.cert.display().to_string(),
            "CA certificate".into(),
            who.clone(),
            expires.clone(),
        ],
        vec![
            ca.key.display().to_string(),
            "CA key (keep secret)".into(),
            who,
            expires,
        ],
    ];
    let text = format!(
        "{}\nnext: nines cert node --dir {} --id 1 --name n1 --addr HOST",
        files_table(rows),
        dir.display()
    );
    (doc, text)
}

/// A node or client certificate just written.
fn leaf_output(leaf: &LeafFiles) -> (Value, String) {
    let expires = rfc3339(leaf.not_after);
    let mut doc = identity_json(&leaf.identity);
    doc["cert"] = json!(leaf.cert);
    doc["key"] = json!(leaf.key);
    doc["not_after"] = json!(expires);
    if matches!(leaf.identity, Identity::Node { .. }) {
        doc["addrs"] = json!(leaf.addrs);
    }
    let who = leaf.identity.to_string();
    let rows = vec![
        vec![
            leaf.cert.display().to_string(),
            "certificate".into(),
            who.clone(),
            expires.clone(),
        ],
        vec![leaf.key.display().to_string(), "key".into(), who, expires],
    ];
    let mut text = files_table(rows);
    if !leaf.addrs.is_empty() {
        text.push_str(&format!("\naddresses: {}", leaf.addrs.join(", ")));
    }
    (doc, text)
}

fn files_table(rows: Vec<Vec<String>>) -> String {
    table(&["FILE", "CONTENTS", "IDENTITY", "EXPIRES"], &rows)
}

/// `kind`, `cluster`, the identity's fields and its `uri`.
fn identity_json(id: &Identity) -> Value {
    match id {
        Identity::Node {
            cluster,
            id: n,
            name,
        } => json!({
            "kind": "node", "cluster": cluster, "id": n, "name": name, "uri": id.uri(),
        }),
        Identity::Client {
            cluster,
            role,
            name,
        } => json!({
            "kind": "client", "cluster": cluster, "role": role.as_str(), "name": name,
            "uri": id.uri(),
        }),
    }
}

/// A number of days, at least 1 (a certificate valid for 0 days would be born expired).
fn days(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("a certificate must be valid for at least 1 day".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("'{s}' is not a number of days: {e}")),
    }
}

/// `nines cert show FILE`.
fn show(file: &Path, now: SystemTime) -> anyhow::Result<(Value, String)> {
    let der = CertificateDer::from_pem_file(file).with_context(|| {
        format!(
            "{} holds no PEM certificate (a .key file is not one; certificates end in .pem)",
            file.display()
        )
    })?;
    let s: CertSummary = nines_tls::describe(&der).with_context(|| file.display().to_string())?;
    let (who, mut doc) = match &s.identity {
        Some(id) => (id.to_string(), identity_json(id)),
        None => (
            format!("CA of cluster {}", s.subject),
            json!({"kind": "ca", "cluster": s.subject}),
        ),
    };
    let expired = s.not_after < now;
    doc["file"] = json!(file);
    doc["subject"] = json!(s.subject);
    doc["issuer"] = json!(s.issuer);
    doc["serial"] = json!(s.serial);
    doc["not_before"] = json!(rfc3339(s.not_before));
    doc["not_after"] = json!(rfc3339(s.not_after));
    doc["expired"] = json!(expired);
    doc["addrs"] = json!(s.addrs);
    let mut rows = vec![vec!["identity".to_string(), who]];
    if let Some(id) = &s.identity {
        rows.push(vec!["uri".into(), id.uri()]);
    }
    rows.push(vec!["subject".into(), s.subject.clone()]);
    rows.push(vec!["issuer".into(), s.issuer.clone()]);
    if !s.addrs.is_empty() {
        rows.push(vec!["addresses".into(), s.addrs.join(", ")]);
    }
    rows.push(vec!["not before".into(), rfc3339(s.not_before)]);
    rows.push(vec![
        "not after".into(),
        format!("{} ({})", rfc3339(s.not_after), remaining(now, s.not_after)),
    ]);
    rows.push(vec!["serial".into(), s.serial.clone()]);
    Ok((doc, table(&["FIELD", "VALUE"], &rows)))
}

/// `expires in 364 days` or `EXPIRED 3 days ago`.
fn remaining(now: SystemTime, not_after: SystemTime) -> String {
    const DAY_SECS: u64 = 86_400;
    match not_after.duration_since(now) {
        Ok(left) => format!("expires in {} days", left.as_secs() / DAY_SECS),
        Err(past) => format!("EXPIRED {} days ago", past.duration().as_secs() / DAY_SECS),
    }
}
