//! systemd's notify protocol (`sd_notify(3)`) without libsystemd: one datagram of
//! `KEY=value` lines to the socket named by `NOTIFY_SOCKET`.
//!
//! The agent sends `READY=1` once it serves, `WATCHDOG=1` every [`Notifier::watchdog_interval`]
//! when the unit sets `WatchdogSec=`, `STOPPING=1` when it starts to drain, and `STATUS=` lines
//! for `systemctl status`. Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
//!
//! Sends never block (the socket is non-blocking): a full systemd queue loses the message, it
//! does not stall the runtime. The director should remove `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` from the environment of the components it spawns.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// Largest notification sent, in bytes; longer ones are refused (a `STATUS=` line is short).
pub const NOTIFY_STATE_BYTES_MAX: usize = 4096;

/// Where notifications go: an address parsed from `NOTIFY_SOCKET`, or nowhere.
#[derive(Debug)]
pub struct Notifier {
    /// The notify socket's address; `None` outside systemd (every call a no-op).
    socket: Option<SocketAddr>,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`: an absolute path, or `@name` for the abstract namespace.
    /// Absent, empty or unsupported (e.g. `vsock:`) → a no-op notifier (the last is logged).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Notifier::disabled(),
            Some(value) => Notifier::from_socket_value(value.as_bytes()),
        }
    }

    /// A notifier for a `NOTIFY_SOCKET` value given explicitly (see [`from_env`](Self::from_env)).
    pub fn from_socket_value(value: &[u8]) -> Notifier {
        let socket = match value {
            [] => None,
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name).ok(),
            [b'/', ..] => SocketAddr::from_pathname(Path::new(OsStr::from_bytes(value))).ok(),
            _ => None,
        };
        if socket.is_none() && !value.is_empty() {
            tracing::warn!(
                notify_socket = %String::from_utf8_lossy(value),
                "NOTIFY_SOCKET is not an absolute path or @abstract name (or is too long); \
                 systemd notifications are off"
            );
        }
        Notifier { socket }
    }

    /// A notifier sending to the socket at `path` (for tests and explicit configuration).
    ///
    /// # Errors
    /// If `path` is too long for a Unix socket address.
    pub fn for_path(path: &Path) -> io::Result<Notifier> {
        Ok(Notifier {
            socket: Some(SocketAddr::from_pathname(path)?),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { socket: None }
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) as one datagram. `Ok` without
    /// sending when disabled.
    ///
    /// # Errors
    /// `InvalidInput` if `state` is longer than [`NOTIFY_STATE_BYTES_MAX`]; otherwise the
    /// socket's error (`WouldBlock` when systemd's queue is full).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(addr) = &self.socket else {
            return Ok(());
        };
        if state.len() > NOTIFY_STATE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "notification of {} bytes exceeds {NOTIFY_STATE_BYTES_MAX}",
                    state.len()
                ),
            ));
        }
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let sent = socket.send_to_addr(state.as_bytes(), addr)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", state.len()),
            ));
        }
        Ok(())
    }

    /// `READY=1`: startup finished. Logs a failure, never returns it.
    pub fn ready(&self) {
        self.notify_logged("READY=1");
    }

    /// `WATCHDOG=1`: the service is alive. Logs a failure, never returns it.
    pub fn watchdog(&self) {
        self.notify_logged("WATCHDOG=1");
    }

    /// `STOPPING=1`: shutdown began. Logs a failure, never returns it.
    pub fn stopping(&self) {
        self.notify_logged("STOPPING=1");
    }

    /// `STATUS=<s>` (newlines become spaces, so `s` stays one assignment). Logs a failure,
    /// never returns it.
    pub fn status(&self, s: &str) {
        self.notify_logged(&format!("STATUS={}", s.replace(['\n', '\r'], " ")));
    }

    fn notify_logged(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(error = %e, state, "systemd notification failed");
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if set for this process
    /// (`WATCHDOG_PID` absent or ours). `None` when systemd's watchdog is off.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
    }
}

/// [`Notifier::watchdog_interval`] from explicit values: half of `usec` (a positive integer of
/// microseconds) when `pid` is absent or equals `my_pid`; `None` otherwise, or when `usec` is
/// absent, 0 or malformed.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(my_pid) {
            return None;
        }
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|&u| u > 0)?;
    // At least 1 µs: a zero interval would make a ticker spin (or panic).
    Some(Duration::from_micros((usec / 2).max(1)))
}
