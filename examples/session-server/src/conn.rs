//! One active period's service: the sessions' states (cached, backed by the checkpoint) and
//! the handling of one client connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nines_sdk::{Checkpoint, ErrorCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::protocol::{Request, SessionState, LINE_BYTES_MAX, UNAVAILABLE};

/// Most sessions one active instance keeps (the checkpoint is created with room for them).
pub const SESSIONS_MAX: u32 = 1_024;
/// A connection that sends nothing for this long is closed (it holds a connection slot).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A session's cached state: `None` until it is read from the checkpoint (and again after a
/// write whose outcome is unknown). The async lock serialises one session's requests.
type Slot = Arc<tokio::sync::Mutex<Option<SessionState>>>;

/// What an active instance serves, for one assignment (SI, epoch). A new assignment gets a new
/// one, so nothing cached survives a change of HA state: the checkpoint is the only truth.
pub(crate) struct Service {
    /// This component, named in the greeting.
    pub component: String,
    /// The checkpoint holding the sessions, opened with this assignment's epoch: a write from
    /// an older active (a lower epoch) is refused by the checkpoint service.
    pub checkpoint: Checkpoint,
    /// Session id → its state.
    sessions: Mutex<HashMap<String, Slot>>,
}

/// Why a request failed.
enum Failure {
    /// The client's mistake: reply `ERR`, keep the connection.
    Request(String),
    /// The service cannot answer (checkpoint refused or unreachable): reply
    /// `ERR unavailable:` and close, so the client reconnects.
    Service(String),
}

impl Service {
    /// A service over `checkpoint` (already fenced with the assignment's epoch).
    pub fn new(component: String, checkpoint: Checkpoint) -> Service {
        Service {
            component,
            checkpoint,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The checkpoint section of session `id`.
    fn section(id: &str) -> String {
        format!("session-{id}")
    }

    /// The slot of session `id`, creating it (bounded by [`SESSIONS_MAX`]).
    fn slot(&self, id: &str) -> Result<Slot, Failure> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if let Some(s) = sessions.get(id) {
            return Ok(s.clone());
        }
        if sessions.len() >= SESSIONS_MAX as usize {
            return Err(Failure::Request(format!(
                "this server keeps at most {SESSIONS_MAX} sessions; reuse a session id"
            )));
        }
        let s = Slot::default();
        sessions.insert(id.to_string(), s.clone());
        Ok(s)
    }

    /// The state of session `id`, read from the checkpoint unless cached.
    async fn load(
        &self,
        id: &str,
        cached: &mut Option<SessionState>,
    ) -> Result<SessionState, Failure> {
        if let Some(s) = cached {
            return Ok(*s);
        }
        let state = match self.checkpoint.read(&Self::section(id)).await {
            Ok(bytes) => SessionState::decode(&bytes).map_err(Failure::Service)?,
            Err(e) if e.code() == Some(ErrorCode::NotExist) => SessionState::default(),
            Err(e) => return Err(Failure::Service(format!("cannot read the session: {e}"))),
        };
        *cached = Some(state);
        Ok(state)
    }

    /// `HELLO`, `GET`: the session's state.
    async fn get(&self, id: &str) -> Result<SessionState, Failure> {
        let slot = self.slot(id)?;
        let mut cached = slot.lock().await;
        self.load(id, &mut cached).await
    }

    /// `INCR`: count, write the checkpoint with the epoch, and only then answer.
    async fn incr(&self, id: &str, seq: Option<u64>) -> Result<SessionState, Failure> {
        let slot = self.slot(id)?;
        let mut cached = slot.lock().await;
        let state = self.load(id, &mut cached).await?;
        let (next, changed) = state.incr(seq).map_err(Failure::Request)?;
        if changed {
            if let Err(e) = self
                .checkpoint
                .write(&Self::section(id), next.encode())
                .await
            {
                // Written or not, we cannot tell (TIMEOUT), or we were fenced
                // (BAD_OPERATION: a newer active exists): forget the cache either way.
                *cached = None;
                return Err(Failure::Service(format!(
                    "the checkpoint write failed: {e}"
                )));
            }
            *cached = Some(next);
        }
        Ok(next)
    }
}

/// Serve one client until it quits, goes idle, breaks, or `stop` turns true (this instance is
/// no longer active: the client is told so and the connection closed, between requests).
pub(crate) async fn handle(
    stream: TcpStream,
    service: Arc<Service>,
    mut stop: watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let greeting = format!("READY {}\n", service.component);
    if write.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut session: Option<String> = None;
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut read).take(LINE_BYTES_MAX as u64 + 1);
        let got = tokio::select! {
            biased;
            _ = stop.changed() => {
                let bye = format!("ERR {UNAVAILABLE} this instance is no longer active; reconnect\n");
                let _ = write.write_all(bye.as_bytes()).await;
                return;
            }
            got = tokio::time::timeout(
                IDLE_TIMEOUT,
                limited.read_until(b'\n', &mut line),
            ) => got,
        };
        match got {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        if line.last() != Some(&b'\n') {
            let _ = write
                .write_all(format!("ERR a line has at most {LINE_BYTES_MAX} bytes\n").as_bytes())
                .await;
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let (reply, close) = answer(&service, &mut session, text.trim_end()).await;
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

/// The reply to one request line, and whether to close the connection after it.
async fn answer(service: &Service, session: &mut Option<String>, line: &str) -> (String, bool) {
    let request = match Request::parse(line) {
        Ok(r) => r,
        Err(e) => return (format!("ERR {e}"), false),
    };
    let result = match (&request, session.as_deref()) {
        (Request::Quit, _) => return ("BYE".into(), true),
        (Request::Hello(id), _) => {
            let r = service.get(id).await;
            *session = Some(id.clone());
            r
        }
        (_, None) => return ("ERR say HELLO <session-id> first".into(), false),
        (Request::Get, Some(id)) => service.get(id).await,
        (Request::Incr(seq), Some(id)) => service.incr(id, *seq).await,
    };
    match result {
        Ok(state) => (state.to_string(), false),
        Err(Failure::Request(e)) => (format!("ERR {e}"), false),
        Err(Failure::Service(e)) => (format!("ERR {UNAVAILABLE} {e}"), true),
    }
}
