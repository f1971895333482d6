//! The raft link: a peer's raft message batches over a plain TCP connection to the peer port,
//! each batch a length-prefixed `nines.raft.v1.MessageBatch`, with no HTTP/2 in between.
//!
//! Why: on the write path a batch crossed four tasks per hop over a gRPC stream (the peer
//! sender, hyper's body pipe and connection task on one side, the connection and stream tasks on
//! the other); every hand-off is a thread wake-up. Over the link it crosses two: the peer sender
//! writes the socket, and the receiving link task reads it and hands the batch to the driver.
//!
//! Wire, one connection per direction and peer:
//! - the connecting node writes [`MAGIC`], then frames: a 4-byte big-endian length and that many
//!   bytes of one encoded `MessageBatch` (header and `to` in every batch, checked like the gRPC
//!   calls' before any raft bytes are decoded);
//! - its first frame is a hello: a batch with the header, `to` and no messages, so that it fits
//!   in [`HELLO_FRAME_BYTES_MAX`]. Until a first frame has authenticated, a connection may not
//!   make the receiver buffer more than that: a longer first frame is refused by its length
//!   alone. (A node of an earlier version sends no hello; its first batch is taken as the hello
//!   when it fits, and otherwise refused, and that node reconnects with a smaller one.) After
//!   it, frames may be up to [`FRAME_BYTES_MAX`], every later batch must name the same sender,
//!   and each frame must arrive whole within [`FRAME_READ_TIMEOUT_MS`] of its first byte (an
//!   idle link waits as long as it likes between frames);
//! - the accepting node writes nothing while it accepts; when it refuses a batch (another cluster,
//!   a non-member, a bad frame) it writes one frame holding the reason in UTF-8 and closes, so
//!   the sender can log why.
//!
//! The peer port serves both: [`PeerPort`] looks at a new connection's first byte, serves links
//! itself and hands everything else (HTTP/2 starts with `P`) to the gRPC server.

use std::{
    collections::HashMap,
    io,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use nines_core::{limits, shutdown::ShutdownSignal, NodeId};
use nines_proto::raft::v1::MessageBatch;
use prost::Message as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Notify},
    task::AbortHandle,
};

use super::tls::{PeerConn, PeerTls};
use super::PeerService;
use crate::StateMachine;
use nines_tls::{ConnInfo, Identity};

/// What a raft link's connection starts with. Its first byte tells it from HTTP/2's preface.
const MAGIC: &[u8; 8] = b"NINESRL1";

/// Largest frame either side accepts, once the link's first frame authenticated its sender.
const FRAME_BYTES_MAX: usize = limits::GRPC_MESSAGE_BYTES_MAX;

/// Largest first frame (the hello) the accepting side takes: the most an unauthenticated
/// connection can make it buffer.
const HELLO_FRAME_BYTES_MAX: usize = 64 * 1024;

/// How long the accepting side waits for the magic and the first frame of a new link.
const HELLO_READ_TIMEOUT_MS: u64 = 5_000;

/// How long a frame may take to arrive whole, from its first byte: a half-sent frame does not
/// hold a buffer (or a task) for longer.
const FRAME_READ_TIMEOUT_MS: u64 = 5_000;

/// How long an accepted connection may stay silent before it is handed to the gRPC server as is.
const CLASSIFY_TIMEOUT_MS: u64 = limits::PEER_RPC_TIMEOUT_MS;

/// Read buffer of one link's receiving side.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How long written data may stay unacknowledged, and an idle link unanswered, before the
/// kernel gives up on the connection: a peer whose host died or is cut off sends no FIN, and
/// without this a link would write into the void until its buffer filled.
const DEAD_PEER: Duration = Duration::from_secs(5);

/// How long a link must have been open before a write on it counts as the peer taking it.
const PROVEN_AFTER: Duration = Duration::from_millis(200);

/// Longest refusal reason sent (and read).
const REASON_BYTES_MAX: usize = 1024;

/// How long a failed write waits for the peer's reason before it reports the write error.
const REASON_WAIT_MS: u64 = 100;

/// A link's byte stream: plain TCP, or TLS over it.
trait LinkStream: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> LinkStream for T {}
type LinkIo = Box<dyn LinkStream>;

/// The sending side of one open link, owned by the peer's sender task.
pub(crate) struct Link {
    writer: WriteHalf<LinkIo>,
    /// Why the link is unusable (the peer's refusal, its close, or a read error), once it is.
    closed: Arc<Closed>,
    reader: AbortHandle,
    opened: std::time::Instant,
}

#[derive(Default)]
struct Closed {
    reason: OnceLock<String>,
    notify: Notify,
}

/// Why the accepting side closed a raft link; `LABELS` name them in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkRefusal {
    /// The connection did not start with [`MAGIC`].
    BadMagic,
    /// The magic and first frame did not arrive within [`HELLO_READ_TIMEOUT_MS`].
    HelloDeadline,
    /// A first frame longer than [`HELLO_FRAME_BYTES_MAX`].
    HelloTooLarge,
    /// A later frame longer than [`FRAME_BYTES_MAX`].
    FrameTooLarge,
    /// A frame that did not arrive whole within [`FRAME_READ_TIMEOUT_MS`].
    FrameDeadline,
    /// A frame that is no `MessageBatch`.
    UndecodableBatch,
    /// A batch whose header did not authenticate, or addressed to another node.
    HeaderRefused,
    /// A batch naming another sender than the link's first.
    SenderChanged,
    /// A newer link from the same sender replaced this one (normal after a reconnect).
    Replaced,
}

impl LinkRefusal {
    /// How many reasons there are.
    pub(crate) const COUNT: usize = 9;

    /// Every reason's metric label, indexed by `reason as usize`.
    pub(crate) const LABELS: [&'static str; Self::COUNT] = [
        "bad_magic",
        "hello_deadline",
        "hello_too_large",
        "frame_too_large",
        "frame_deadline",
        "undecodable_batch",
        "header_refused",
        "sender_changed",
        "replaced",
    ];
}

/// Warnings about closed links, rate-limited per reason.
static LINK_WARN_GATE: crate::inbound::WarnGate<{ LinkRefusal::COUNT }> =
    crate::inbound::WarnGate::new();

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// Connect to the peer port at `addr` and announce a link: the magic, then `hello` (the
    /// frame of a batch with the header, `to` and no messages, from [`encode_frame`]).
    /// With `tls`, the link runs over mutual TLS (ALPN `nines-rl1`) and the peer takes its
    /// sender from this node's certificate.
    pub(crate) async fn connect(
        addr: &str,
        hello: &[u8],
        tls: Option<&PeerTls>,
    ) -> io::Result<Self> {
        let conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        watch_for_death(&conn)?;
        let io: LinkIo = match tls {
            Some(tls) => Box::new(tls.connect_link(addr, conn).await?),
            None => Box::new(conn),
        };
        let (reader, mut writer) = tokio::io::split(io);
        let mut start = Vec::with_capacity(MAGIC.len() + hello.len());
        start.extend_from_slice(MAGIC);
        start.extend_from_slice(hello);
        writer.write_all(&start).await?;
        let closed = Arc::new(Closed::default());
        let reader = tokio::spawn(read_refusal(reader, closed.clone())).abort_handle();
        Ok(Self {
            writer,
            closed,
            reader,
            opened: std::time::Instant::now(),
        })
    }

    /// Whether the link has stayed open long enough to show the peer takes it: a refusal
    /// (or an older agent's HTTP/2 answer) comes within a round trip, not this long.
    pub(crate) fn is_proven(&self) -> bool {
        !self.is_closed() && self.opened.elapsed() >= PROVEN_AFTER
    }

    /// Whether the peer refused or closed the link.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.reason.get().is_some()
    }

    /// Why the link closed, if it did.
    pub(crate) fn reason(&self) -> Option<String> {
        self.closed.reason.get().cloned()
    }

    /// Write all of `buf`; on error the link is unusable and the error says why.
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> Result<(), String> {
        match self.writer.write_all(buf).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failure(e).await),
        }
    }

    /// Why a write failed: a refusal arrives just before the connection closes, so it is
    /// preferred to the write error when it comes soon.
    async fn failure(&self, e: io::Error) -> String {
        let wait = Duration::from_millis(REASON_WAIT_MS);
        let _ = tokio::time::timeout(wait, async {
            while !self.is_closed() {
                self.closed.notify.notified().await;
            }
        })
        .await;
        self.reason()
            .unwrap_or_else(|| format!("link write failed: {e}"))
    }
}

/// Have the kernel notice a dead peer within about [`DEAD_PEER`]. Links only: on a gRPC
/// connection the user timeout would also cut a client that stops reading a stream for a while.
fn watch_for_death(conn: &TcpStream) -> io::Result<()> {
    let sock = socket2::SockRef::from(conn);
    sock.set_tcp_user_timeout(Some(DEAD_PEER))?;
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(DEAD_PEER / 2)
            .with_interval(Duration::from_secs(1))
            .with_retries(3),
    )
}

/// Append one frame holding `batch` to `buf`.
pub(crate) fn encode_frame(batch: &MessageBatch, buf: &mut Vec<u8>) -> Result<(), String> {
    let len = batch.encoded_len();
    if len > FRAME_BYTES_MAX {
        return Err(format!(
            "a batch of {len} bytes exceeds the link's {FRAME_BYTES_MAX}"
        ));
    }
    buf.reserve(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    batch
        .encode(buf)
        .expect("the buffer has room for the batch");
    Ok(())
}

/// The sending side's reader: the peer only ever writes a refusal.
async fn read_refusal(mut reader: ReadHalf<LinkIo>, closed: Arc<Closed>) {
    let reason = match read_frame(&mut reader, REASON_BYTES_MAX).await {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => "the peer closed the link".into(),
        // A refusal is a short frame; anything else is another protocol (an agent of an earlier
        // version answers HTTP/2).
        Err(e) if e.kind() == io::ErrorKind::InvalidData => format!(
            "the peer does not speak the raft link (an agent of an earlier nines version, or no \
             agent at all?): {e}"
        ),
        Err(e) => format!("link read failed: {e}"),
    };
    let _ = closed.reason.set(reason);
    closed.notify.notify_one();
}

/// One frame, or `None` at a clean end of stream before it.
async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    // Grows with what arrives: a length alone does not make the receiver allocate it.
    let mut bytes = Vec::with_capacity(len.min(READ_BUFFER_BYTES));
    r.take(len as u64).read_to_end(&mut bytes).await?;
    if bytes.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(bytes))
}

/// What every link of one peer port shares.
struct Port<M: StateMachine> {
    service: PeerService<M>,
    /// Per sending node, the newest link that delivered from it (links are numbered as
    /// accepted). An older link of the same sender (one it gave up on, whose bytes the kernel
    /// still delivers) is closed, so its stale batches cannot land between newer ones.
    newest: Mutex<HashMap<NodeId, u64>>,
}

impl<M: StateMachine> Port<M> {
    /// Deliver `batch` if `link` is its sender's newest. `sender` is the node the link's first
    /// batch authenticated (set by that batch); every later batch must name the same one.
    /// Over TLS, `certified` is the node the link's certificate names: every batch must name
    /// it as its sender.
    fn deliver(
        &self,
        link: u64,
        sender: &mut Option<NodeId>,
        certified: Option<NodeId>,
        batch: MessageBatch,
    ) -> Result<(), (LinkRefusal, String)> {
        let from = self
            .service
            .check(batch.header.as_ref())
            .map_err(|status| (LinkRefusal::HeaderRefused, status.message().to_owned()))?;
        if let Some(c) = certified.filter(|&c| c != from) {
            return Err((
                LinkRefusal::SenderChanged,
                format!("a batch claiming node {from} on a link whose certificate is node {c}'s"),
            ));
        }
        match *sender {
            Some(s) if s != from => {
                return Err((
                    LinkRefusal::SenderChanged,
                    format!("a batch from node {from} on node {s}'s link"),
                ))
            }
            _ => *sender = Some(from),
        }
        let mut newest = self.newest.lock().expect("link registry poisoned");
        if newest.get(&from).is_some_and(|&n| n > link) {
            return Err((
                LinkRefusal::Replaced,
                format!("a newer link from node {from} replaced this one"),
            ));
        }
        // Under the lock, so an older link cannot deliver between a newer one's batches.
        self.service
            .deliver_from(from, batch)
            .map_err(|status| (LinkRefusal::HeaderRefused, status.message().to_owned()))?;
        newest.insert(from, link);
        Ok(())
    }
}

/// Serve one accepted link until it ends, `stop` fires, or a batch is refused.
async fn serve_link<M: StateMachine>(
    port: Arc<Port<M>>,
    link: u64,
    conn: LinkIo,
    peer: Option<std::net::SocketAddr>,
    certified: Option<NodeId>,
    mut stop: ShutdownSignal,
) {
    let (reader, mut writer) = tokio::io::split(conn);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let refusal = tokio::select! {
        r = receive(&port, link, certified, &mut reader) => r,
        _ = stop.wait() => return,
    };
    let Some((why, mut reason)) = refusal else {
        return;
    };
    crate::metrics::RAFT.link_refusals.inc(why as usize);
    let label = LinkRefusal::LABELS[why as usize];
    if why == LinkRefusal::Replaced {
        tracing::debug!(?peer, "raft link closed: {reason}");
    } else if let Some(suppressed) = LINK_WARN_GATE.pass(why as usize) {
        tracing::warn!(
            ?peer,
            reason = label,
            suppressed_since_last_warning = suppressed,
            "refused a raft link: {reason}"
        );
    }
    truncate(&mut reason, REASON_BYTES_MAX);
    let mut frame = (reason.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(reason.as_bytes());
    let _ = writer.write_all(&frame).await;
    let _ = writer.shutdown().await;
    // Read what the peer had already sent before closing: a close with unread data sends a
    // reset, which can overtake the reason on the wire.
    let wait = Duration::from_millis(REASON_WAIT_MS);
    let _ = tokio::time::timeout(wait, tokio::io::copy(&mut reader, &mut tokio::io::sink())).await;
}

/// Cut `s` to at most `max` bytes, on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Deliver the link's batches; `Some(why)` when the link breaks a rule or a batch is refused,
/// `None` when the peer closed it (or the connection failed).
async fn receive<M: StateMachine>(
    port: &Port<M>,
    link: u64,
    certified: Option<NodeId>,
    reader: &mut BufReader<ReadHalf<LinkIo>>,
) -> Option<(LinkRefusal, String)> {
    let hello_wait = Duration::from_millis(HELLO_READ_TIMEOUT_MS);
    let hello = async {
        let mut magic = [0u8; MAGIC.len()];
        reader.read_exact(&mut magic).await?;
        if &magic != MAGIC {
            return Ok(Err((
                LinkRefusal::BadMagic,
                "not a nines raft link (bad magic)".to_owned(),
            )));
        }
        read_frame(reader, HELLO_FRAME_BYTES_MAX).await.map(Ok)
    };
    let first = match tokio::time::timeout(hello_wait, hello).await {
        Err(_) => {
            return Some((
                LinkRefusal::HelloDeadline,
                format!("no magic and first frame within {HELLO_READ_TIMEOUT_MS} ms"),
            ))
        }
        Ok(Ok(Err(refused))) => return Some(refused),
        Ok(Ok(Ok(frame))) => Some(Ok(frame)),
        Ok(Err(e)) => Some(Err(e)),
    };
    let mut sender = None;
    let mut next = first;
    loop {
        let bytes = match next {
            None => {
                return Some((
                    LinkRefusal::FrameDeadline,
                    format!("a frame did not arrive whole within {FRAME_READ_TIMEOUT_MS} ms"),
                ))
            }
            Some(Ok(Some(b))) => b,
            Some(Ok(None)) => return None,
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                let why = if sender.is_none() {
                    LinkRefusal::HelloTooLarge
                } else {
                    LinkRefusal::FrameTooLarge
                };
                return Some((why, e.to_string()));
            }
            // The peer closed or reset, or the kernel gave up on it (`watch_for_death`).
            Some(Err(_)) => return None,
        };
        let batch = match MessageBatch::decode(bytes.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                return Some((
                    LinkRefusal::UndecodableBatch,
                    format!("undecodable message batch: {e}"),
                ))
            }
        };
        if let Err(refused) = port.deliver(link, &mut sender, certified, batch) {
            return Some(refused);
        }
        next = read_frame_in_time(reader).await;
    }
}

/// The next frame of an authenticated link: waits as long as it takes for its first byte, then
/// at most [`FRAME_READ_TIMEOUT_MS`] for the rest; `None` past that.
async fn read_frame_in_time(
    reader: &mut BufReader<ReadHalf<LinkIo>>,
) -> Option<io::Result<Option<Vec<u8>>>> {
    match reader.fill_buf().await {
        Ok([]) => return Some(Ok(None)),
        Ok(_) => {}
        Err(e) => return Some(Err(e)),
    }
    let wait = Duration::from_millis(FRAME_READ_TIMEOUT_MS);
    tokio::time::timeout(wait, read_frame(reader, FRAME_BYTES_MAX))
        .await
        .ok()
}

/// The peer port: accepts connections, serves raft links itself and yields the rest to the gRPC
/// server through [`PeerPort::incoming`].
pub struct PeerPort;

impl PeerPort {
    /// Accept on `listener`. Raft links go to `service`; every other connection (with Nagle's
    /// algorithm off) comes out of the returned stream, to pass to tonic's
    /// `serve_with_incoming`. Dropping the stream (tonic does when its shutdown begins) stops
    /// accepting; the links already open keep delivering until `stop` (the node's own
    /// shutdown), so a draining node still hears its peers.
    pub fn incoming<M: StateMachine>(
        listener: TcpListener,
        service: PeerService<M>,
        stop: ShutdownSignal,
    ) -> impl tokio_stream::Stream<Item = io::Result<PeerConn>> + Send + 'static {
        Self::incoming_tls(listener, service, stop, None)
    }

    /// [`incoming`](Self::incoming), over mutual TLS when `tls` is given: every connection
    /// must finish a TLS handshake with a certificate of the cluster's CA (within
    /// [`HANDSHAKE_TIMEOUT_MS`](super::tls::HANDSHAKE_TIMEOUT_MS)); ALPN tells a raft link, which
    /// only a node certificate may open, from gRPC, whose requests carry the caller's
    /// [`ConnInfo`](nines_tls::ConnInfo).
    pub fn incoming_tls<M: StateMachine>(
        listener: TcpListener,
        service: PeerService<M>,
        stop: ShutdownSignal,
        tls: Option<Arc<PeerTls>>,
    ) -> impl tokio_stream::Stream<Item = io::Result<PeerConn>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<io::Result<PeerConn>>(64);
        let port = Arc::new(Port {
            service,
            newest: Mutex::default(),
        });
        tokio::spawn(accept_loop(listener, port, tx, stop, tls));
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Connections in their handshake at once, at most: more wait in the kernel's accept queue, so
/// a flood of silent connections cannot hold the agent's memory.
const HANDSHAKES_MAX: usize = 256;

async fn accept_loop<M: StateMachine>(
    listener: TcpListener,
    port: Arc<Port<M>>,
    tx: mpsc::Sender<io::Result<PeerConn>>,
    stop: ShutdownSignal,
    tls: Option<Arc<PeerTls>>,
) {
    let mut accepted_links = 0u64;
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = tx.closed() => return,
        };
        let (conn, remote) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // tonic logs and goes on after an accept error; so do we, after a pause, so that
                // running out of file descriptors does not spin.
                tracing::warn!("peer port accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Nagle off: every raft round trip is a small message, and Nagle plus delayed ACKs would
        // add milliseconds to each. (tonic's `tcp_nodelay` covers only listeners it makes.)
        if let Err(e) = conn.set_nodelay(true) {
            tracing::debug!("dropped a peer connection: {e}");
            continue;
        }
        accepted_links += 1;
        let link = accepted_links;
        let port = port.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut info = ConnInfo {
                remote: Some(remote),
                identity: None,
            };
            let Some(tls) = tls else {
                drop(permit);
                if is_link(&conn).await {
                    if let Err(e) = watch_for_death(&conn) {
                        tracing::debug!("dropped a raft link: {e}");
                        return;
                    }
                    serve_link(port, link, Box::new(conn), Some(remote), None, stop).await;
                } else {
                    let _ = tx.send(Ok(PeerConn::Plain(conn, info))).await;
                }
                return;
            };
            let accepted = tls.accept(conn).await;
            drop(permit);
            let (stream, identity, is_link) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    crate::metrics::RAFT.tls_refusals.inc();
                    tracing::warn!(%remote, "refused a connection: {e}");
                    return;
                }
            };
            if is_link {
                let Identity::Node { id, .. } = identity else {
                    crate::metrics::RAFT.tls_refusals.inc();
                    tracing::warn!(
                        %remote,
                        "refused a raft link from a client certificate ({})",
                        identity.uri()
                    );
                    return;
                };
                // Links only (see `watch_for_death`): not gRPC clients, which may stop reading a
                // stream for a while.
                if let Err(e) = watch_for_death(stream.get_ref().0) {
                    tracing::debug!("dropped a raft link: {e}");
                    return;
                }
                serve_link(port, link, Box::new(stream), Some(remote), Some(id), stop).await;
                return;
            }
            info.identity = Some(identity);
            let _ = tx.send(Ok(PeerConn::Tls(Box::new(stream), info))).await;
        });
    }
}

/// Whether `conn` starts with the link's first byte (waits for it, bounded).
async fn is_link(conn: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    let wait = Duration::from_millis(CLASSIFY_TIMEOUT_MS);
    matches!(
        tokio::time::timeout(wait, conn.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == MAGIC[0]
    )
}
