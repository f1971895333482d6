//! Who a certificate says its holder is: one `nines://` SAN URI per certificate.
//!
//! - A node: `nines://CLUSTER/node/ID`, its name as the subject's common name, its addresses as
//!   IP / DNS SANs (so a client can check the server it dialled).
//! - A client: `nines://CLUSTER/client/ROLE/NAME`.
//! - The CA carries no URI: its common name is the cluster's name.
//!
//! Reading is strict: a certificate with no nines URI, or two, or one that does not parse, has
//! no identity; the error says which.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use x509_parser::{extensions::GeneralName, prelude::X509Certificate};

use crate::role::Role;

/// The URI scheme of identities, with its separator.
pub(crate) const SCHEME: &str = "nines://";
/// Longest cluster, node or client name.
pub(crate) const NAME_BYTES_MAX: usize = 64;

/// Who holds a certificate, as the certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A node of the cluster (an agent).
    Node {
        /// The cluster's name (the CA's common name).
        cluster: String,
        /// The node's id (never 0).
        id: u64,
        /// The node's name (the certificate's common name).
        name: String,
    },
    /// A client: a person or a program, with one role.
    Client {
        /// The cluster's name.
        cluster: String,
        /// What the client may do.
        role: Role,
        /// Who the client is (the name given when the certificate was issued).
        name: String,
    },
}

impl Identity {
    /// The cluster this identity belongs to.
    pub fn cluster(&self) -> &str {
        match self {
            Identity::Node { cluster, .. } | Identity::Client { cluster, .. } => cluster,
        }
    }

    /// The SAN URI that encodes this identity.
    pub fn uri(&self) -> String {
        match self {
            Identity::Node { cluster, id, .. } => format!("{SCHEME}{cluster}/node/{id}"),
            Identity::Client {
                cluster,
                role,
                name,
            } => format!("{SCHEME}{cluster}/client/{role}/{name}"),
        }
    }

    /// Read the identity from a DER certificate (the leaf of a peer's chain).
    ///
    /// # Errors
    /// The certificate does not parse, or carries no identity, or more than one, or one that
    /// does not parse (bad role, node id, name).
    pub fn from_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let cert = parse(der)?;
        identity_of(&cert)
    }
}

impl fmt::Display for Identity {
    /// `node 1 (n1) of cluster prod`, `client alice (operator) of cluster prod`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { cluster, id, name } => {
                write!(f, "node {id} ({name}) of cluster {cluster}")
            }
            Identity::Client {
                cluster,
                role,
                name,
            } => write!(f, "client {name} ({role}) of cluster {cluster}"),
        }
    }
}

/// Why a certificate has no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    NotX509(String),
    /// No SAN URI starts with `nines://`.
    #[error(
        "the certificate carries no nines identity (no SAN URI starting with {SCHEME}): was it \
         made by `nines cert node` or `nines cert client`?"
    )]
    NoNinesUri,
    /// More than one nines URI: which one would be meant is unknowable, so none is taken.
    #[error(
        "the certificate carries {} nines identities ({}): it must carry exactly one",
        .0.len(),
        .0.join(", ")
    )]
    SeveralNinesUris(Vec<String>),
    /// The URI is not `nines://CLUSTER/node/ID` nor `nines://CLUSTER/client/ROLE/NAME`.
    #[error(
        "bad nines identity '{uri}': {why} (expected {SCHEME}CLUSTER/node/ID or \
         {SCHEME}CLUSTER/client/ROLE/NAME)"
    )]
    BadUri {
        /// The URI as found.
        uri: String,
        /// What is wrong with it.
        why: String,
    },
    /// The client URI names a role that does not exist.
    #[error(
        "bad nines identity '{uri}': unknown role '{role}' (roles: reader, app, operator, drill)"
    )]
    BadRole {
        /// The URI as found.
        uri: String,
        /// The role as found.
        role: String,
    },
    /// A node certificate without a common name (the node's name).
    #[error("node certificate '{uri}' has no valid common name (the node's name): {why}")]
    BadNodeName {
        /// The URI as found.
        uri: String,
        /// What is wrong with the common name.
        why: String,
    },
}

/// What a certificate says, for people (`nines cert show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's common name (the cluster's name for a CA, the node's or client's name).
    pub subject: String,
    /// The issuer's common name (the cluster's name, for certificates issued here).
    pub issuer: String,
    /// The serial number in hex.
    pub serial: String,
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
    /// Whether it is a CA certificate (may issue others).
    pub is_ca: bool,
    /// The holder's identity; `None` for a CA.
    pub identity: Option<Identity>,
    /// The DNS names and IP addresses it is valid for (nodes).
    pub addrs: Vec<String>,
}

/// Summarize a DER certificate: subject, issuer, validity, and (unless it is a CA) identity.
///
/// # Errors
/// The certificate does not parse, or is not a CA and carries no valid identity.
pub fn describe(der: &[u8]) -> Result<CertSummary, IdentityError> {
    let cert = parse(der)?;
    let is_ca = cert.is_ca();
    let identity = if is_ca {
        None
    } else {
        Some(identity_of(&cert)?)
    };
    let addrs = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_string()),
                GeneralName::IPAddress(ip) => ip_string(ip),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertSummary {
        subject: common_name(cert.subject()).unwrap_or_default(),
        issuer: common_name(cert.issuer()).unwrap_or_default(),
        serial: cert.raw_serial_as_string(),
        not_before: system_time(cert.validity().not_before.timestamp()),
        not_after: system_time(cert.validity().not_after.timestamp()),
        is_ca,
        identity,
        addrs,
    })
}

/// Parse DER, all of it.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(IdentityError::NotX509(format!(
            "{} bytes left over after the certificate",
            rest.len()
        ))),
        Err(e) => Err(IdentityError::NotX509(e.to_string())),
    }
}

/// The first common name of a distinguished name, if it is a string.
pub(crate) fn common_name(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// Seconds since the epoch (possibly before it) as a `SystemTime`.
fn system_time(unix_secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_secs.unsigned_abs());
    let t = if unix_secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(std::net::Ipv4Addr::from(v4).to_string());
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| std::net::Ipv6Addr::from(v6).to_string())
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::NotX509(format!("bad subject alternative names: {e}")))?;
    let uris: Vec<String> = san
        .into_iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(SCHEME) => Some((*u).to_string()),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(IdentityError::NoNinesUri),
        [one] => one.clone(),
        _ => return Err(IdentityError::SeveralNinesUris(uris)),
    };
    let cn = common_name(cert.subject());
    parse_uri(&uri, cn.as_deref())
}

/// Parse `nines://CLUSTER/node/ID` (with `cn` as the node's name) or
/// `nines://CLUSTER/client/ROLE/NAME`.
pub(crate) fn parse_uri(uri: &str, cn: Option<&str>) -> Result<Identity, IdentityError> {
    let bad = |why: &str| IdentityError::BadUri {
        uri: uri.to_string(),
        why: why.to_string(),
    };
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad("not a nines URI"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let cluster = parts[0];
    check_name(cluster).map_err(|why| bad(&format!("cluster name: {why}")))?;
    match parts[1..] {
        ["node", id] => {
            let id: u64 = id
                .parse()
                .ok()
                .filter(|&id| id != 0)
                .ok_or_else(|| bad(&format!("node id '{id}' is not a positive integer")))?;
            let name = cn.ok_or_else(|| IdentityError::BadNodeName {
                uri: uri.to_string(),
                why: "there is none".into(),
            })?;
            check_name(name).map_err(|why| IdentityError::BadNodeName {
                uri: uri.to_string(),
                why,
            })?;
            Ok(Identity::Node {
                cluster: cluster.to_string(),
                id,
                name: name.to_string(),
            })
        }
        ["client", role, name] => {
            let role: Role = role.parse().map_err(|_| IdentityError::BadRole {
                uri: uri.to_string(),
                role: role.to_string(),
            })?;
            check_name(name).map_err(|why| bad(&format!("client name: {why}")))?;
            Ok(Identity::Client {
                cluster: cluster.to_string(),
                role,
                name: name.to_string(),
            })
        }
        ["node", ..] => Err(bad("a node URI has exactly one part after /node/: its id")),
        ["client", ..] => Err(bad("a client URI has two parts after /client/: ROLE/NAME")),
        _ => Err(bad("the kind after the cluster must be 'node' or 'client'")),
    }
}

/// Names (cluster, node, client) are `[A-Za-z0-9._-]{1,64}`: safe in a URI, a file name and a
/// common name alike.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "'{name}' is {} bytes, at most {NAME_BYTES_MAX} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "'{name}' contains '{c}': use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let node = Identity::Node {
            cluster: "prod-1".into(),
            id: 3,
            name: "n3".into(),
        };
        assert_eq!(node.uri(), "nines://prod-1/node/3");
        assert_eq!(parse_uri(&node.uri(), Some("n3")), Ok(node));
        let client = Identity::Client {
            cluster: "prod-1".into(),
            role: Role::Operator,
            name: "alice".into(),
        };
        assert_eq!(client.uri(), "nines://prod-1/client/operator/alice");
        assert_eq!(parse_uri(&client.uri(), None), Ok(client));
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        let cases = [
            ("nines://c/node/0", "node id '0'"),
            ("nines://c/node/x", "node id 'x'"),
            ("nines://c/node/1/2", "exactly one part"),
            ("nines://c/client/boss/alice", "unknown role 'boss'"),
            ("nines://c/client/app", "two parts"),
            ("nines://c/client/app/a b", "contains ' '"),
            ("nines:///client/app/a", "it is empty"),
            ("nines://c/thing/1", "'node' or 'client'"),
        ];
        for (uri, want) in cases {
            let e = parse_uri(uri, Some("n1")).unwrap_err().to_string();
            assert!(e.contains(want), "{uri}: {e}");
        }
        let e = parse_uri("nines://c/node/1", None).unwrap_err();
        assert!(matches!(e, IdentityError::BadNodeName { .. }), "{e}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("n1").is_ok());
        assert!(check_name("a.b_c-D9").is_ok());
        assert!(check_name(&"x".repeat(64)).is_ok());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("é").is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let e = Identity::from_der(b"not DER").unwrap_err();
        assert!(matches!(e, IdentityError::NotX509(_)), "{e}");
    }
}
