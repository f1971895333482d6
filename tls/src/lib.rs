//! nines-tls: the cluster's identity — a CA, the certificates it issues, the identities they
//! carry, and the TLS configs that make both ends of a connection prove theirs.
//!
//! How to drive it:
//!
//! 1. Once per cluster, [`init_ca`] makes the cluster's CA in a directory (`ca.pem`, `ca.key`);
//!    the CA's common name is the cluster's name.
//! 2. Per node, [`issue_node`] writes `node-<ID>.pem` / `.key`; per person or program,
//!    [`issue_client`] writes `client-<NAME>.pem` / `.key`. Both read the CA from the directory.
//!    Every certificate carries exactly one identity as a SAN URI
//!    (`nines://CLUSTER/node/ID`, `nines://CLUSTER/client/ROLE/NAME`), read back by
//!    [`Identity::from_der`].
//! 3. A process names its files in a [`TlsFiles`] and builds a config from them:
//!    [`server_config`] / [`client_config`] for rustls, [`tonic_server_tls`] /
//!    [`tonic_client_tls`] for tonic. Servers require a client certificate chaining to the CA;
//!    clients trust the CA only (never the system's roots).
//! 4. On an accepted connection, [`peer_identity`] (or [`request_identity`] for a tonic
//!    request) says who is calling, and [`Role::allows`] whether that is enough.
//!
//! Keys are written mode 0600 and no file is ever overwritten unless the caller asks (`force`).
//! Everything uses rustls' ring provider: no openssl, no aws-lc.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod files;
mod identity;
mod issue;
mod peer;
mod role;

pub use config::{
    client_config, server_config, tls_acceptor, tls_connector, tonic_client_tls, tonic_server_tls,
    ConfigError, LoadedTls, TlsFiles, HANDSHAKE_TIMEOUT_MS,
};
pub use identity::{describe, CertSummary, Identity, IdentityError};
pub use issue::{
    init_ca, issue_client, issue_node, CaFiles, IssueError, LeafFiles, Validity, CA_VALID_DAYS,
    LEAF_VALID_DAYS,
};
pub use peer::{peer_identity, request_identity, ConnInfo, PeerError};
pub use role::{Role, RoleParseError};

/// A time as RFC 3339 in UTC to the second (`2026-05-01T12:00:00Z`), for people and scripts.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{} s after the epoch", t.unix_timestamp()))
}

/// The crates these configs are built from, so callers name the same versions.
pub use rustls;
pub use tokio_rustls;

/// File names inside a certificate directory.
pub mod names {
    /// The CA's certificate.
    pub const CA_CERT: &str = "ca.pem";
    /// The CA's private key: whoever holds it can issue any identity in the cluster.
    pub const CA_KEY: &str = "ca.key";

    /// A node's certificate file name.
    pub fn node_cert(id: u64) -> String {
        format!("node-{id}.pem")
    }
    /// A node's key file name.
    pub fn node_key(id: u64) -> String {
        format!("node-{id}.key")
    }
    /// A client's certificate file name.
    pub fn client_cert(name: &str) -> String {
        format!("client-{name}.pem")
    }
    /// A client's key file name.
    pub fn client_key(name: &str) -> String {
        format!("client-{name}.key")
    }
}
