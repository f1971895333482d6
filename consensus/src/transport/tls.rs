//! Mutual TLS on the peer port: one listener, one handshake, then ALPN tells a raft link
//! (`nines-rl1`) from HTTP/2 (`h2`, gRPC: peers' calls and clients'). The certificate each side
//! presents is its identity ([`ConnInfo`]): the gRPC server attaches it to every request (for
//! authorization, and to check that a peer message names its real sender), and a link takes its
//! sender from it.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use nines_tls::{
    rustls::pki_types::ServerName,
    tokio_rustls::{server::TlsStream, TlsAcceptor, TlsConnector},
    ConfigError, ConnInfo, Identity, TlsFiles,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::{server::Connected, Endpoint};

/// ALPN of a raft link.
pub const ALPN_LINK: &[u8] = b"nines-rl1";
/// ALPN of HTTP/2 (gRPC).
pub const ALPN_H2: &[u8] = b"h2";
/// How long an accepted connection has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = nines_tls::HANDSHAKE_TIMEOUT_MS;

/// A node's TLS material for its peer port and the connections it makes to peers.
pub struct PeerTls {
    files: TlsFiles,
    acceptor: TlsAcceptor,
    link: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("cert", &self.files.cert)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Load this node's certificate, key and the cluster CA.
    ///
    /// # Errors
    /// The files do not load or do not belong together (see [`TlsFiles::load`]).
    pub fn new(files: &TlsFiles) -> Result<Arc<PeerTls>, ConfigError> {
        Ok(Arc::new(PeerTls {
            files: files.clone(),
            acceptor: nines_tls::tls_acceptor(files, &[ALPN_H2, ALPN_LINK])?,
            link: nines_tls::tls_connector(files, &[ALPN_LINK])?,
        }))
    }

    /// Accept a TLS connection (bounded by [`HANDSHAKE_TIMEOUT_MS`]); its peer's identity and
    /// whether it asked for a raft link.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<(TlsStream<TcpStream>, Identity, bool)> {
        let wait = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
        let tls = tokio::time::timeout(wait, self.acceptor.accept(tcp))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {HANDSHAKE_TIMEOUT_MS} ms"),
                )
            })??;
        let (_, session) = tls.get_ref();
        let identity = nines_tls::peer_identity(session.peer_certificates().unwrap_or(&[]))
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
        let link = session.alpn_protocol() == Some(ALPN_LINK);
        Ok((tls, identity, link))
    }

    /// Connect a raft link's TLS over `tcp` to the peer at `addr`.
    pub(crate) async fn connect_link(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> io::Result<nines_tls::tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(addr)?;
        let wait = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
        tokio::time::timeout(wait, self.link.connect(name, tcp))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake with {addr} within {HANDSHAKE_TIMEOUT_MS} ms"),
                )
            })?
    }

    /// A gRPC endpoint to the peer at `addr` over mutual TLS.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let host = host_of(addr);
        let tls = nines_tls::tonic_client_tls(&self.files, host)
            .map_err(|e| format!("TLS for peer {addr}: {e}"))?;
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("bad peer address '{addr}': {e}"))?
            .tls_config(tls)
            .map_err(|e| format!("TLS for peer {addr}: {e}"))
    }
}

/// The host part of `host:port` (IPv6 brackets removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The name a peer's certificate must carry to be the one dialled at `addr`.
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host_of(addr).to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))
}

/// An accepted connection handed to the gRPC server: plain TCP (no identity) or mutual TLS
/// (with the identity its certificate carries), as [`ConnInfo`] on every request.
pub enum PeerConn {
    /// Plain TCP.
    Plain(TcpStream, ConnInfo),
    /// Mutual TLS.
    Tls(Box<TlsStream<TcpStream>>, ConnInfo),
}

impl Connected for PeerConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            PeerConn::Plain(_, i) | PeerConn::Tls(_, i) => i.clone(),
        }
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerConn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            PeerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerConn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            PeerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerConn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            PeerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerConn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            PeerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerConn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            PeerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerConn::Plain(s, _) => s.is_write_vectored(),
            PeerConn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// The node a request's certificate names, if it came over mutual TLS with a node certificate.
pub(crate) fn node_of<T>(req: &tonic::Request<T>) -> Option<u64> {
    match ConnInfo::of(req)?.identity.as_ref()? {
        Identity::Node { id, .. } => Some(*id),
        Identity::Client { .. } => None,
    }
}
