//! [`SessionClient`]: a client of the session server that reconnects — to the same address or
//! the next one in its list — when the active instance goes away, and retries its request so
//! that each increment counts exactly once.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::protocol::{check_session_id, Reply, SessionState, LINE_BYTES_MAX};

/// Deadline of one TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of one reply (a reply waits for a replicated checkpoint write, itself bounded by
/// the SDK's 5 s deadline).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two rounds over the address list.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// An answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The session's state after the request.
    pub state: SessionState,
    /// The component that answered (from its greeting).
    pub served_by: String,
    /// The address it was reached at.
    pub addr: String,
    /// Whether the client had to connect again (a failover, or the first request).
    pub reconnected: bool,
}

/// One open connection, attached to the session.
struct Conn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    addr: String,
    served_by: String,
}

/// Why one attempt failed.
enum Failed {
    /// Connection lost, refused, timed out, or the server said `unavailable`: try again.
    Retry(String),
    /// The server refused the request itself: retrying cannot help.
    Fatal(String),
}

/// A session of the session server, with reconnection.
///
/// A session belongs to one client at a time: the increments are numbered, and two clients
/// numbering the same session would be taken for retries of each other.
pub struct SessionClient {
    addrs: Vec<String>,
    session: String,
    /// How long one request keeps trying (reconnecting) before it fails.
    retry_for: Duration,
    conn: Option<Conn>,
    /// The address tried first (the one that answered last).
    next: usize,
    /// The sequence number of the session's last increment (learnt from the first `HELLO`).
    seq: Option<u64>,
}

impl SessionClient {
    /// A client of session `session` at any of `addrs` (`host:port`, tried in order); each
    /// request keeps trying for `retry_for`. Connects on the first request.
    ///
    /// # Errors
    /// No address, or an invalid session id.
    pub fn new(addrs: Vec<String>, session: &str, retry_for: Duration) -> anyhow::Result<Self> {
        if addrs.is_empty() {
            bail!("no server address given; pass host:port[,host:port...]");
        }
        check_session_id(session).map_err(|e| anyhow!(e))?;
        Ok(SessionClient {
            addrs,
            session: session.to_string(),
            retry_for,
            conn: None,
            next: 0,
            seq: None,
        })
    }

    /// Count up once (exactly once, across reconnections).
    ///
    /// # Errors
    /// No server answered within the retry period, or the server refused the request (a
    /// sequence number out of order means the server lost the session's state).
    pub async fn incr(&mut self) -> anyhow::Result<Answer> {
        self.request(true).await
    }

    /// The session's state.
    ///
    /// # Errors
    /// As [`SessionClient::incr`].
    pub async fn get(&mut self) -> anyhow::Result<Answer> {
        self.request(false).await
    }

    async fn request(&mut self, incr: bool) -> anyhow::Result<Answer> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        // The increment's number, fixed at the first attempt so every retry repeats it.
        let mut pending: Option<u64> = None;
        let mut reconnected = false;
        loop {
            let err = match self.attempt(incr, &mut pending, &mut reconnected).await {
                Ok(a) => return Ok(a),
                Err(Failed::Fatal(e)) => bail!("session '{}': {e}", self.session),
                Err(Failed::Retry(e)) => e,
            };
            self.conn = None;
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "session '{}': no session server answered within {:?} (tried {}); last \
                     error: {err}. Is the service group active (nines amf status)?",
                    self.session,
                    self.retry_for,
                    self.addrs.join(", ")
                );
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn attempt(
        &mut self,
        incr: bool,
        pending: &mut Option<u64>,
        reconnected: &mut bool,
    ) -> Result<Answer, Failed> {
        if self.conn.is_none() {
            self.conn = Some(self.connect_any().await?);
            *reconnected = true;
        }
        let line = if incr {
            let seq = self.seq.expect("HELLO set the sequence number");
            format!("INCR {}", pending.get_or_insert(seq + 1))
        } else {
            "GET".to_string()
        };
        let conn = self.conn.as_mut().expect("connected above");
        let state = match exchange(conn, &line).await? {
            Reply::Ok(state) => state,
            Reply::Unavailable(e) => return Err(Failed::Retry(format!("unavailable: {e}"))),
            Reply::Err(e) => return Err(Failed::Fatal(format!("'{line}' refused: {e}"))),
            other => return Err(Failed::Fatal(format!("unexpected reply {other:?}"))),
        };
        self.seq = Some(state.seq);
        Ok(Answer {
            state,
            served_by: conn.served_by.clone(),
            addr: conn.addr.clone(),
            reconnected: *reconnected,
        })
    }

    /// Connect to the first address that serves, starting with the last good one.
    async fn connect_any(&mut self) -> Result<Conn, Failed> {
        let mut errors = Vec::new();
        for i in 0..self.addrs.len() {
            let at = (self.next + i) % self.addrs.len();
            let addr = self.addrs[at].clone();
            match self.open(&addr).await {
                Ok(c) => {
                    self.next = at;
                    return Ok(c);
                }
                Err(Failed::Retry(e)) => errors.push(format!("{addr}: {e}")),
                Err(fatal) => return Err(fatal),
            }
        }
        Err(Failed::Retry(errors.join("; ")))
    }

    /// Connect to `addr`, read the greeting, attach to the session.
    async fn open(&mut self, addr: &str) -> Result<Conn, Failed> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| Failed::Retry("connect timed out".into()))?
            .map_err(|e| Failed::Retry(e.to_string()))?;
        let (read, write) = stream.into_split();
        let mut conn = Conn {
            read: BufReader::new(read),
            write,
            addr: addr.to_string(),
            served_by: String::new(),
        };
        conn.served_by = match read_reply(&mut conn).await? {
            Reply::Ready(component) => component,
            other => return Err(Failed::Retry(format!("expected READY, got {other:?}"))),
        };
        let hello = format!("HELLO {}", self.session);
        match exchange(&mut conn, &hello).await? {
            Reply::Ok(state) => {
                // The first HELLO tells where the session stands; later ones must not move a
                // pending increment's number.
                self.seq.get_or_insert(state.seq);
            }
            Reply::Unavailable(e) => return Err(Failed::Retry(format!("unavailable: {e}"))),
            other => return Err(Failed::Fatal(format!("HELLO refused: {other:?}"))),
        }
        Ok(conn)
    }
}

/// Send `line`, read the reply.
async fn exchange(conn: &mut Conn, line: &str) -> Result<Reply, Failed> {
    conn.write
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| Failed::Retry(format!("send to {}: {e}", conn.addr)))?;
    read_reply(conn).await
}

/// Read one reply line (bounded in size and time).
async fn read_reply(conn: &mut Conn) -> Result<Reply, Failed> {
    let mut line = Vec::new();
    let n = tokio::time::timeout(
        REPLY_TIMEOUT,
        (&mut conn.read)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| {
        Failed::Retry(format!(
            "no reply from {} within {REPLY_TIMEOUT:?}",
            conn.addr
        ))
    })?
    .context("read")
    .map_err(|e| Failed::Retry(format!("{}: {e:#}", conn.addr)))?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(Failed::Retry(format!(
            "{} closed the connection",
            conn.addr
        )));
    }
    let text = String::from_utf8_lossy(&line);
    Reply::parse(text.trim_end()).map_err(Failed::Fatal)
}
