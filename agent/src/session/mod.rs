//! The agent's side of the component sessions (`nines.amf.v1.ComponentSession`, over the agent's
//! Unix socket).
//!
//! How to drive it: the node director spawns a component (as a process group leader, with
//! `NINES_COMPONENT` and `NINES_SOCKET` in its environment) and calls [`SessionHub::expect`] with
//! its pid; the component's SDK connects and registers, the hub checks the peer's credentials
//! (SO_PEERCRED: the expected process or one in its group, the agent's uid or root) and announces
//! [`SessionEvent::Registered`]. The director then sends invocations with [`SessionHub::invoke`]
//! and hears error reports, healthcheck confirmations, watchdog kicks and disconnects from
//! [`SessionHub::subscribe`]. When the component is gone it calls [`SessionHub::forget`].
//!
//! A component with a watchdog is expected with [`SessionHub::expect_with`]: it learns its
//! `watchdog_ms` in `Registered`, and its SDK sends coalesced kicks (a few per period, only while
//! its work loop makes progress). The hub records each component's last kick
//! ([`SessionHub::last_kick`]) and announces [`SessionEvent::Kick`]; the director decides when a
//! watchdog is missed.
//!
//! Everything is bounded: connections ([`CONNECTIONS_MAX`]), sessions ([`SESSIONS_MAX`]),
//! message size ([`SESSION_MESSAGE_BYTES_MAX`]), invocations in flight per session
//! ([`INVOCATIONS_IN_FLIGHT_MAX`]), the wait for Register, and every invocation's deadline.

mod conn;
mod error;
mod hub;
mod peer;
#[cfg(test)]
mod props;
mod serve;
mod service;

pub use conn::CONNECTIONS_MAX;
pub use error::{InvokeError, SessionError};
pub use hub::{
    SessionEvent, SessionHub, INVOCATIONS_IN_FLIGHT_MAX, SESSIONS_MAX, SESSION_EVENTS_BUFFER_LEN,
};
pub use serve::SESSION_MESSAGE_BYTES_MAX;
