//! Making the CA and the certificates it issues, as files in one directory.
//!
//! Keys are ECDSA P-256 (rcgen's default; every rustls peer verifies it). Serial numbers are
//! derived from each certificate's own fresh public key, so no two certificates share one.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};

use crate::{
    files::{self, write_new},
    identity::{self, check_name, Identity},
    names,
    role::Role,
};

/// How long a CA is valid by default: ten years (replacing it means reissuing everything).
pub const CA_VALID_DAYS: u32 = 3650;
/// How long a node or client certificate is valid by default: one year.
pub const LEAF_VALID_DAYS: u32 = 365;
/// Certificates start this long before they are made, so a peer whose clock is a little behind
/// does not refuse a certificate made a moment ago as "not yet valid".
const BACKDATE_SECS: u64 = 300;
/// Most addresses in one node certificate.
const ADDRS_MAX: usize = 32;

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after (must be later than `not_before`; may be in the past, for tests).
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from a few minutes before `now` (clock skew between peers) for `days` days.
    pub fn days_from(now: SystemTime, days: u32) -> Validity {
        Validity {
            not_before: now
                .checked_sub(Duration::from_secs(BACKDATE_SECS))
                .unwrap_or(now),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// The CA written by [`init_ca`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `DIR/ca.pem`.
    pub cert: PathBuf,
    /// `DIR/ca.key`.
    pub key: PathBuf,
    /// The cluster's name (the CA's common name).
    pub cluster: String,
    /// When the CA expires.
    pub not_after: SystemTime,
}

/// A node or client certificate written by [`issue_node`] or [`issue_client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFiles {
    /// The certificate (`node-<ID>.pem`, `client-<NAME>.pem`).
    pub cert: PathBuf,
    /// Its private key (`.key`).
    pub key: PathBuf,
    /// The identity it carries.
    pub identity: Identity,
    /// The addresses it is valid for (nodes; empty for clients).
    pub addrs: Vec<String>,
    /// When it expires.
    pub not_after: SystemTime,
}

/// Why a CA or certificate was not made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A file to write exists and `force` was not given.
    #[error(
        "{} already exists: refusing to overwrite it (use --force to replace it)",
        path.display()
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The CA is not in the directory.
    #[error(
        "{file} not found in {dir}: run `nines cert init --dir {dir} --cluster NAME` first",
        dir = dir.display()
    )]
    CaMissing {
        /// The directory searched.
        dir: PathBuf,
        /// The missing file (`ca.pem` or `ca.key`).
        file: &'static str,
    },
    /// The CA's files are there but unusable.
    #[error("cannot use the CA in {}: {why}", path.display())]
    BadCa {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A cluster, node or client name that is not `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid {what} name: {why}")]
    BadName {
        /// Which name (`cluster`, `node`, `client`).
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// Node id 0 (raft reserves it for "none").
    #[error("invalid node id 0: node ids start at 1")]
    NodeIdZero,
    /// A node certificate needs at least one address (clients check the server's address).
    #[error("a node certificate needs at least one address (--addr HOST[,HOST...])")]
    NoAddrs,
    /// Too many addresses.
    #[error("{0} addresses given: at most {ADDRS_MAX} fit in one node certificate")]
    TooManyAddrs(usize),
    /// An address that is neither an IP address nor a DNS name.
    #[error("invalid address '{addr}': {why}")]
    BadAddr {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        why: String,
    },
    /// `not_after` is not later than `not_before`.
    #[error("invalid validity: a certificate must end after it starts")]
    BadValidity,
    /// The certificate library refused (should not happen for valid input).
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Reading or writing a file failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Make the cluster's CA: `DIR/ca.pem` and `DIR/ca.key`, its common name the cluster's name.
///
/// # Errors
/// A bad cluster name or validity; a file exists and `force` is false; I/O.
pub fn init_ca(
    dir: &Path,
    cluster: &str,
    validity: Validity,
    force: bool,
) -> Result<CaFiles, IssueError> {
    check_name(cluster).map_err(|why| IssueError::BadName {
        what: "cluster",
        why,
    })?;
    let mut params = base_params(cluster, validity)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let paths = write_new(
        dir,
        &[
            (names::CA_KEY, &key.serialize_pem()),
            (names::CA_CERT, &cert.pem()),
        ],
        force,
    )?;
    Ok(CaFiles {
        key: paths[0].clone(),
        cert: paths[1].clone(),
        cluster: cluster.to_string(),
        not_after: validity.not_after,
    })
}

/// Issue node `id`'s certificate, signed by the CA in `dir`: `DIR/node-<ID>.pem` / `.key`, valid
/// as a server (for `addrs`, IP addresses or DNS names) and as a client (to its peers).
///
/// # Errors
/// Id 0, a bad name or address, no address; no usable CA in `dir`; a file exists and `force` is
/// false; I/O.
pub fn issue_node(
    dir: &Path,
    id: u64,
    name: &str,
    addrs: &[String],
    validity: Validity,
    force: bool,
) -> Result<LeafFiles, IssueError> {
    if id == 0 {
        return Err(IssueError::NodeIdZero);
    }
    check_name(name).map_err(|why| IssueError::BadName { what: "node", why })?;
    if addrs.is_empty() {
        return Err(IssueError::NoAddrs);
    }
    if addrs.len() > ADDRS_MAX {
        return Err(IssueError::TooManyAddrs(addrs.len()));
    }
    let addr_sans = addrs
        .iter()
        .map(|a| addr_san(a))
        .collect::<Result<Vec<_>, _>>()?;
    let ca = Ca::read(dir)?;
    let identity = Identity::Node {
        cluster: ca.cluster.clone(),
        id,
        name: name.to_string(),
    };
    let mut params = leaf_params(name, &identity, validity)?;
    params.subject_alt_names.extend(addr_sans);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let files = [names::node_key(id), names::node_cert(id)];
    let (key, cert) = ca.sign(dir, &params, &files, force)?;
    Ok(LeafFiles {
        cert,
        key,
        identity,
        addrs: addrs.to_vec(),
        not_after: validity.not_after,
    })
}

/// Issue client `name`'s certificate with `role`, signed by the CA in `dir`:
/// `DIR/client-<NAME>.pem` / `.key`, valid as a client only.
///
/// # Errors
/// A bad name; no usable CA in `dir`; a file exists and `force` is false; I/O.
pub fn issue_client(
    dir: &Path,
    name: &str,
    role: Role,
    validity: Validity,
    force: bool,
) -> Result<LeafFiles, IssueError> {
    check_name(name).map_err(|why| IssueError::BadName {
        what: "client",
        why,
    })?;
    let ca = Ca::read(dir)?;
    let identity = Identity::Client {
        cluster: ca.cluster.clone(),
        role,
        name: name.to_string(),
    };
    let mut params = leaf_params(name, &identity, validity)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let files = [names::client_key(name), names::client_cert(name)];
    let (key, cert) = ca.sign(dir, &params, &files, force)?;
    Ok(LeafFiles {
        cert,
        key,
        identity,
        addrs: Vec::new(),
        not_after: validity.not_after,
    })
}

/// The CA as read back from its directory.
struct Ca {
    cluster: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Read `ca.pem` and `ca.key` from `dir` and check they belong together.
    fn read(dir: &Path) -> Result<Ca, IssueError> {
        let cert_path = dir.join(names::CA_CERT);
        let key_path = dir.join(names::CA_KEY);
        for (path, file) in [(&cert_path, names::CA_CERT), (&key_path, names::CA_KEY)] {
            if !path.exists() {
                return Err(IssueError::CaMissing {
                    dir: dir.to_path_buf(),
                    file,
                });
            }
        }
        let bad_cert = |why: String| IssueError::BadCa {
            path: cert_path.clone(),
            why,
        };
        let key_pem =
            std::fs::read_to_string(&key_path).map_err(|e| files::io("read", &key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IssueError::BadCa {
            path: key_path.clone(),
            why: format!("not a private key in PEM: {e}"),
        })?;
        let der = CertificateDer::from_pem_file(&cert_path)
            .map_err(|e| bad_cert(format!("not a certificate in PEM: {e}")))?;
        let cert = identity::parse(&der).map_err(|e| bad_cert(e.to_string()))?;
        if !cert.is_ca() {
            return Err(bad_cert("it is not a CA certificate".into()));
        }
        if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(IssueError::BadCa {
                path: key_path.clone(),
                why: format!("it is not the key of {}", cert_path.display()),
            });
        }
        let cluster = identity::common_name(cert.subject())
            .ok_or_else(|| bad_cert("it has no common name (the cluster's name)".into()))?;
        check_name(&cluster).map_err(|why| bad_cert(format!("cluster name: {why}")))?;
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| bad_cert(format!("cannot issue with it: {e}")))?;
        Ok(Ca { cluster, issuer })
    }

    /// Sign `params` with a fresh key; write `files` = [key name, certificate name] in `dir`.
    fn sign(
        &self,
        dir: &Path,
        params: &CertificateParams,
        files: &[String; 2],
        force: bool,
    ) -> Result<(PathBuf, PathBuf), IssueError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let paths = write_new(
            dir,
            &[(&files[0], &key.serialize_pem()), (&files[1], &cert.pem())],
            force,
        )?;
        Ok((paths[0].clone(), paths[1].clone()))
    }
}

/// Parameters every certificate shares: common name and validity.
fn base_params(common_name: &str, validity: Validity) -> Result<CertificateParams, IssueError> {
    if validity.not_after <= validity.not_before {
        return Err(IssueError::BadValidity);
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    Ok(params)
}

/// Parameters of a node or client certificate: its identity URI, signing use only.
fn leaf_params(
    common_name: &str,
    identity: &Identity,
    validity: Validity,
) -> Result<CertificateParams, IssueError> {
    let mut params = base_params(common_name, validity)?;
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// An IP address or a DNS name, as a SAN.
fn addr_san(addr: &str) -> Result<SanType, IssueError> {
    let bad = |why: &str| IssueError::BadAddr {
        addr: addr.to_string(),
        why: why.to_string(),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if addr.contains(':') {
        return Err(bad(
            "neither an IP address nor a DNS name (give the host alone, without a port)",
        ));
    }
    if rustls_pki_types::DnsName::try_from(addr).is_err()
        || addr.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(bad("neither an IP address nor a DNS name"));
    }
    Ok(SanType::DnsName(
        addr.try_into().map_err(|_| bad("not ASCII"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ips_or_dns_names() {
        assert!(matches!(addr_san("127.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(addr_san("::1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(addr_san("n1.example"), Ok(SanType::DnsName(_))));
        assert!(matches!(addr_san("localhost"), Ok(SanType::DnsName(_))));
        for bad in ["127.0.0.1:7101", "a b", "", "1.2.3", "-x-.", "ho$t"] {
            let e = addr_san(bad).map(|_| ()).unwrap_err();
            assert!(e.to_string().contains("invalid address"), "{bad}: {e}");
        }
        let e = addr_san("127.0.0.1:7101").map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("without a port"), "{e}");
    }

    #[test]
    fn validity_must_not_be_empty() {
        let now = SystemTime::now();
        let v = Validity {
            not_before: now,
            not_after: now,
        };
        assert!(matches!(base_params("c", v), Err(IssueError::BadValidity)));
        let v = Validity::days_from(now, 1);
        assert!(v.not_before < now && v.not_after > now);
    }
}
