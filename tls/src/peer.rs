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
