//! TLS configs from a process's files: its CA, its certificate and its key.
//!
//! Both ends prove who they are. A server requires a client certificate that chains to the CA
//! (rustls' `WebPkiClientVerifier`, no anonymous clients); a client presents its certificate and
//! trusts the CA alone, never the system's roots. Everything uses the ring provider.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    crypto::{ring, CryptoProvider},
    server::WebPkiClientVerifier,
    ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};

use crate::{
    identity::{self, Identity, IdentityError},
    names,
};

/// Longest a TLS handshake may take on a tonic listener or channel before it is dropped (a peer
/// that connects and says nothing must not hold a connection slot).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Largest certificate or key file read.
const PEM_BYTES_MAX: u64 = 1 << 20;

/// Where a process's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's CA certificate (`ca.pem`): the only root trusted.
    pub ca: PathBuf,
    /// This process's certificate (chain), leaf first.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

/// A [`TlsFiles`] read and checked: the certificate chains to the CA, carries an identity, and
/// matches the key. Its `Debug` shows no key material.
pub struct LoadedTls {
    /// The CA certificate.
    pub ca: CertificateDer<'static>,
    /// This process's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// This process's private key.
    pub key: PrivateKeyDer<'static>,
    /// The identity the leaf carries.
    pub identity: Identity,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file is missing.
    #[error(
        "{} not found: make the CA with `nines cert init` and certificates with `nines cert \
         node` or `nines cert client`", .0.display()
    )]
    Missing(PathBuf),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the kind expected.
    #[error("{} holds no PEM {what}: {why}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected (`certificate`, `private key`).
        what: &'static str,
        /// What went wrong.
        why: String,
    },
    /// The CA file is not a CA certificate.
    #[error("{} is not a CA certificate: point `ca` at the cluster's ca.pem", .0.display())]
    NotCa(PathBuf),
    /// The certificate carries no valid identity.
    #[error("{}: {source}", path.display())]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with its identity.
        #[source]
        source: IdentityError,
    },
    /// The certificate was not signed by the CA.
    #[error(
        "{} was not issued by the CA {}: reissue it from that CA's directory, or name the CA \
         that issued it", cert.display(), ca.display()
    )]
    NotIssuedByCa {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
    },
    /// The key is not the certificate's.
    #[error("{} is not the key of {}: use the .key written with it", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A server was given a client's certificate.
    #[error(
        "{} holds {identity}: a server needs a node certificate (`nines cert node`)",
        path.display()
    )]
    NotANode {
        /// The certificate file.
        path: PathBuf,
        /// What it holds instead.
        identity: Identity,
    },
    /// rustls refused the config.
    #[error("TLS config refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// rustls refused the client verifier.
    #[error("TLS client verifier refused: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl std::fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTls")
            .field("identity", &self.identity)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// A node's files in a certificate directory: `ca.pem`, `node-<ID>.pem`, `node-<ID>.key`.
    pub fn node(dir: &Path, id: u64) -> TlsFiles {
        TlsFiles {
            ca: dir.join(names::CA_CERT),
            cert: dir.join(names::node_cert(id)),
            key: dir.join(names::node_key(id)),
        }
    }

    /// A client's files in a certificate directory: `ca.pem`, `client-<NAME>.pem` / `.key`.
    pub fn client(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join(names::CA_CERT),
            cert: dir.join(names::client_cert(name)),
            key: dir.join(names::client_key(name)),
        }
    }

    /// Read the three files and check they belong together.
    ///
    /// # Errors
    /// A file is missing or unreadable; the CA is not one; the certificate carries no identity,
    /// was not issued by the CA, or is not the key's.
    pub fn load(&self) -> Result<LoadedTls, ConfigError> {
        let ca_pem = read(&self.ca)?;
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let ca =
            CertificateDer::from_pem_slice(&ca_pem).map_err(|e| pem(&self.ca, "certificate", e))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(&self.cert, "certificate", e))?;
        let leaf = chain.first().ok_or_else(|| ConfigError::Pem {
            path: self.cert.clone(),
            what: "certificate",
            why: "it is empty".into(),
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem(&self.key, "private key", e))?;
        let ca_x509 = identity::parse(&ca).map_err(|e| ConfigError::Identity {
            path: self.ca.clone(),
            source: e,
        })?;
        if !ca_x509.is_ca() {
            return Err(ConfigError::NotCa(self.ca.clone()));
        }
        let leaf_x509 = identity::parse(leaf).map_err(|e| ConfigError::Identity {
            path: self.cert.clone(),
            source: e,
        })?;
        let identity = Identity::from_der(leaf).map_err(|e| ConfigError::Identity {
            path: self.cert.clone(),
            source: e,
        })?;
        if leaf_x509
            .verify_signature(Some(&ca_x509.tbs_certificate.subject_pki))
            .is_err()
        {
            return Err(ConfigError::NotIssuedByCa {
                cert: self.cert.clone(),
                ca: self.ca.clone(),
            });
        }
        let signing_key = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| pem(&self.key, "private key", e))?;
        if signing_key
            .public_key()
            .is_some_and(|spki| spki.as_ref() != leaf_x509.tbs_certificate.subject_pki.raw)
        {
            return Err(ConfigError::KeyMismatch {
                key: self.key.clone(),
                cert: self.cert.clone(),
            });
        }
        Ok(LoadedTls {
            ca: ca.clone(),
            chain,
            key,
            identity,
            ca_pem,
            cert_pem,
            key_pem,
        })
    }
}

/// A rustls server config that requires a client certificate chaining to the CA and serves this
/// node's certificate, with `alpn` protocols (e.g. `b"h2"`) in order of preference.
///
/// # Errors
/// [`TlsFiles::load`]'s; the certificate is not a node's; rustls refuses the config.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, ConfigError> {
    let t = files.load()?;
    require_node(files, &t)?;
    let mut roots = RootCertStore::empty();
    roots.add(t.ca)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(t.chain, t.key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A rustls client config that presents this process's certificate and trusts the CA alone.
///
/// # Errors
/// [`TlsFiles::load`]'s; rustls refuses the config.
pub fn client_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ClientConfig, ConfigError> {
    let t = files.load()?;
    let mut roots = RootCertStore::empty();
    roots.add(t.ca)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(t.chain, t.key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// [`server_config`] as a tokio acceptor, for listeners that are not tonic's.
///
/// # Errors
/// [`server_config`]'s.
pub fn tls_acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsAcceptor, ConfigError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(files, alpn)?)))
}

/// [`client_config`] as a tokio connector.
///
/// # Errors
/// [`client_config`]'s.
pub fn tls_connector(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsConnector, ConfigError> {
    Ok(TlsConnector::from(Arc::new(client_config(files, alpn)?)))
}

/// A tonic server TLS config with the same rules as [`server_config`]: client certificates
/// required, chaining to the CA; a handshake timeout of [`HANDSHAKE_TIMEOUT_MS`].
///
/// The files are read and checked now, so a bad one is refused here rather than at the first
/// connection.
///
/// # Errors
/// [`TlsFiles::load`]'s; the certificate is not a node's.
pub fn tonic_server_tls(files: &TlsFiles) -> Result<ServerTlsConfig, ConfigError> {
    let t = files.load()?;
    require_node(files, &t)?;
    install_ring();
    Ok(ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(t.cert_pem, t.key_pem))
        .client_ca_root(Certificate::from_pem(t.ca_pem))
        .client_auth_optional(false)
        .timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)))
}

/// A tonic client TLS config: presents this process's certificate, trusts the CA alone (tonic is
/// built without system roots), and checks that the server's certificate is valid for `domain`
/// (the IP address or DNS name dialled).
///
/// # Errors
/// [`TlsFiles::load`]'s.
pub fn tonic_client_tls(files: &TlsFiles, domain: &str) -> Result<ClientTlsConfig, ConfigError> {
    let t = files.load()?;
    install_ring();
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(t.ca_pem))
        .identity(tonic::transport::Identity::from_pem(t.cert_pem, t.key_pem))
        .domain_name(domain)
        .timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)))
}

/// rustls' ring provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider())
}

/// rustls 0.23.48 deprecates ring's provider because it has no post-quantum key exchange; the
/// alternative is aws-lc, which this crate leaves out (a C build, and a second provider would make
/// rustls' process default ambiguous for tonic). Every peer is a nines process with the same
/// provider, so nothing negotiates down. Revisit when ring gains ML-KEM.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    ring::default_provider()
}

/// Make ring the process's default provider unless one is set: tonic's server builds its rustls
/// config from the default, which rustls can only guess when exactly one provider is compiled
/// in. Setting it means a dependency that compiles in aws-lc cannot make that guess fail.
fn install_ring() {
    // Err means a default is already installed, which is what was wanted.
    let _ = ring_provider().install_default();
}

fn require_node(files: &TlsFiles, t: &LoadedTls) -> Result<(), ConfigError> {
    match &t.identity {
        Identity::Node { .. } => Ok(()),
        other => Err(ConfigError::NotANode {
            path: files.cert.clone(),
            identity: other.clone(),
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::Missing(path.to_path_buf()),
        _ => ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let mut bytes = Vec::new();
    file.take(PEM_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
    Ok(bytes)
}

fn pem(path: &Path, what: &'static str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Pem {
        path: path.to_path_buf(),
        what,
        why: e.to_string(),
    }
}
