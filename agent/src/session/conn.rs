//! Accepted connections on the component socket, each holding one of [`CONNECTIONS_MAX`] slots
//! for its life: past the cap the agent stops accepting, and new components wait in the listen
//! backlog (their connect times out) instead of exhausting the agent.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::{wrappers::UnixListenerStream, Stream, StreamExt};
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::SESSIONS_MAX;

/// Connections open at once: a session uses one; a few more let a replacing session in.
pub const CONNECTIONS_MAX: usize = SESSIONS_MAX + 64;

/// One accepted connection and its slot.
#[derive(Debug)]
pub(crate) struct Conn {
    io: UnixStream,
    _slot: OwnedSemaphorePermit,
}

/// The listener's connections, each admitted once a slot is free.
pub(crate) fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<Conn>> {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    UnixListenerStream::new(listener).then(move |accepted| {
        let slots = slots.clone();
        async move {
            let io = accepted?;
            let slot = slots
                .acquire_owned()
                .await
                .expect("the connection slots are never closed");
            Ok(Conn { io, _slot: slot })
        }
    })
}

impl Connected for Conn {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
