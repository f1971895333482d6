//! The session server: a TCP service whose client sessions survive failover, built only on the
//! SDK.
//!
//! # How it works
//!
//! Run as a component of a 2N service group (see `model.toml` next to this crate), each
//! instance opens a session with its agent ([`nines_sdk::Session`]). The instance the cluster
//! makes **active** for the SI opens the checkpoint `session-server-<si>` fenced with the
//! assignment's epoch, binds its listen address (the CSI attribute `listen`, else the
//! component's `NINES_SESSION_LISTEN`), and answers the CSI set only then. Clients speak a
//! tiny line protocol ([`protocol`]): `HELLO <session>`, `INCR [<seq>]`, `GET`, `QUIT`. Each
//! session's state lives in its own checkpoint section; an increment is written (replicated,
//! fsynced, with the epoch) **before** the reply, so every count a client saw survives.
//!
//! When the instance is set standby, quiescing or quiesced, removed or terminated, it tells
//! its clients `ERR unavailable: ...`, closes them and the listener, and only then answers:
//! the AMF quiesces the old active before it makes the standby active, so the new active can
//! bind the same address. When the active dies (kill -9), the kernel releases its port and the
//! standby is made active; it reads each session from the checkpoint as clients come back.
//! An old active that somehow still writes is refused by the checkpoint service (its epoch is
//! lower), so it can never overwrite the new one's sessions.
//!
//! The [`SessionClient`] reconnects (to the same address, or the next in its list) and
//! repeats its pending increment with the same sequence number, so the increment counts
//! exactly once even if the old active wrote it but died before replying.
//!
//! Environment (set by the agent): `NINES_COMPONENT`, `NINES_SOCKET`, `NINES_ENDPOINTS`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod conn;
pub mod protocol;
mod server;

pub use client::{Answer, SessionClient, CONNECT_TIMEOUT, REPLY_TIMEOUT, RETRY_PAUSE};
pub use conn::{IDLE_TIMEOUT, SESSIONS_MAX};
pub use server::{run, BIND_RETRY_FOR, CONNECTIONS_MAX, LISTEN_ATTRIBUTE, LISTEN_ENV, STOP_GRACE};
