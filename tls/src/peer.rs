//! Who is on the other end of an accepted connection.
//!
//! The TLS handshake already checked that the peer's certificate chains to the cluster's CA and
//! is in its validity; what is left is to read the identity it carries.

use rustls_pki_types::CertificateDer;

use crate::identity::{Identity, IdentityError};

/// Why a peer has no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The connection carries no client certificate (plain TCP, or TLS without client auth).
    #[error(
        "the peer presented no certificate: serve with nines-tls's server config, which requires \
         one"
    )]
    NoCertificate,
    /// The certificate carries no valid identity.
    #[error("the peer's certificate: {0}")]
    Identity(#[from] IdentityError),
}

/// The identity in a peer's leaf certificate (the first of `certs`, as rustls and tonic give
/// them).
///
/// # Errors
/// No certificate; the leaf carries no valid identity.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Result<Identity, PeerError> {
    let leaf = certs.first().ok_or(PeerError::NoCertificate)?;
    Ok(Identity::from_der(leaf)?)
}

/// The caller's identity on a tonic request served with [`crate::tonic_server_tls`].
///
/// # Errors
/// [`peer_identity`]'s.
pub fn request_identity<T>(request: &tonic::Request<T>) -> Result<Identity, PeerError> {
    let certs = request.peer_certs().ok_or(PeerError::NoCertificate)?;
    peer_identity(&certs)
}

/// What a server knows of an accepted connection: where it came from and, over mutual TLS, who
/// holds the certificate it presented. Servers that accept connections themselves attach it to
/// every request (as tonic's connect info), so authorization and the checks that a peer message
/// names its real sender can read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// The remote address, if known.
    pub remote: Option<std::net::SocketAddr>,
    /// The certificate's identity; `None` on a plaintext connection.
    pub identity: Option<Identity>,
}

impl ConnInfo {
    /// The connection info of a tonic request, if its server attached one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&ConnInfo> {
        request.extensions().get::<ConnInfo>()
    }

    /// Who is calling, for messages: `node 3`, `client 'ops' (operator)`, or `an unauthenticated
    /// caller`.
    pub fn who(&self) -> String {
        match &self.identity {
            Some(Identity::Node { id, .. }) => format!("node {id}"),
            Some(Identity::Client { name, role, .. }) => format!("client '{name}' ({role})"),
            None => "an unauthenticated caller".into(),
        }
    }
}
