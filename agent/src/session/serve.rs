//! Serving the component sessions on the agent's Unix socket.

use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use nines_core::shutdown::ShutdownSignal;
use nines_proto::amf::v1::component_session_server::ComponentSessionServer;
use tokio::net::UnixListener;

use super::{conn, service::Service, SessionError, SessionHub};

/// Largest message on a component session, either way (a CSI set's attributes ride in one).
pub const SESSION_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long the server may take to drain once every session is closed at shutdown.
const SHUTDOWN_GRACE_MS: u64 = 2_000;
/// The socket's mode: the agent's user and group only.
const SOCKET_MODE: u32 = 0o660;

impl SessionHub {
    /// Serve `nines.amf.v1.ComponentSession` on a Unix socket at `path` until `shutdown` fires.
    ///
    /// Creates the parent directory, replaces a stale socket file (one nobody serves), and makes
    /// the socket `0660`. At shutdown, new registrations are refused, every session is closed (the
    /// components see their agent go), the server drains within a grace period, and the socket
    /// file is removed.
    ///
    /// # Errors
    ///
    /// [`SessionError::InUse`] if a live process serves `path`, [`SessionError::Socket`] /
    /// [`SessionError::Bind`] if it cannot be prepared or bound, [`SessionError::Server`] if the
    /// server fails.
    pub async fn serve(
        self,
        path: PathBuf,
        mut shutdown: ShutdownSignal,
    ) -> Result<(), SessionError> {
        let listener = bind(&path).await?;
        self.inner.set_closing(false);
        tracing::info!(socket = %path.display(), "serving component sessions");
        let service = ComponentSessionServer::new(Service {
            hub: self.inner.clone(),
        })
        .max_decoding_message_size(SESSION_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(SESSION_MESSAGE_BYTES_MAX);
        let mut drain = shutdown.clone();
        let hub = self.inner.clone();
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(conn::incoming(listener), async move {
                drain.wait().await;
                // Long-lived streams would hold the drain open: end them first.
                hub.set_closing(true);
                hub.close_all();
            });
        let mut server = std::pin::pin!(server);
        let result = tokio::select! {
            biased;
            _ = shutdown.wait() => {
                self.inner.set_closing(true);
                self.inner.close_all();
                let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(r) => r.map_err(|e| SessionError::Server(e.to_string())),
                    Err(_) => {
                        tracing::warn!("component sessions did not drain within the grace period");
                        Ok(())
                    }
                }
            }
            r = &mut server => r.map_err(|e| SessionError::Server(e.to_string())),
        };
        self.inner.set_closing(true);
        self.inner.close_all();
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!(socket = %path.display(), error = %e, "socket file not removed");
        }
        result
    }
}

/// Prepare `path` (parent directory, stale socket) and bind it with [`SOCKET_MODE`].
async fn bind(path: &Path) -> Result<UnixListener, SessionError> {
    let socket_err = |reason: String| SessionError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            socket_err(format!(
                "cannot create its directory {}: {e}; create it or fix its permissions",
                dir.display()
            ))
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(socket_err(
                "the path exists and is not a socket; remove it or give the agent another socket \
                 path"
                    .into(),
            ));
        }
        Ok(_) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(SessionError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path)
                .map_err(|e| socket_err(format!("cannot remove the stale socket file: {e}")))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_err(format!("cannot inspect the path: {e}"))),
    }
    let listener = UnixListener::bind(path).map_err(|source| SessionError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| socket_err(format!("cannot set its mode to {SOCKET_MODE:o}: {e}")))?;
    Ok(listener)
}
