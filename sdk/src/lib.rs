//! nines-sdk: what an application links to use a nines cluster: the checkpoint service, the
//! event service ([`EventClient`]: publish / subscribe on channels, with filters, priorities
//! and retention), membership tracking ([`MembershipClient`]: the members' states, a watch of
//! every change, drain), and the component session ([`Session`]: a component managed by nines
//! answers its agent's CSI set / remove, terminate and healthcheck invocations through
//! [`Callbacks`]).
//!
//! A checkpoint is a named set of sections (id → bytes) that survives the process: the active
//! instance of a service writes its state there, and the standby that takes over reads it back.
//! Writes are replicated through Raft before they are acknowledged (unless the checkpoint is
//! [`UpdateMode::Async`]); reads are linearizable unless asked to be stale.
//!
//! # How to use it
//!
//! 1. [`CheckpointClient::connect`] with any agents' `host:port` (or
//!    [`CheckpointClient::from_env`], which reads `NINES_ENDPOINTS`). One client per process;
//!    clones share connections.
//! 2. [`CheckpointClient::open`] a checkpoint, creating it with [`Attributes`] or requiring it to
//!    exist ([`OpenOptions`]). The [`Checkpoint`] it returns reads and writes sections.
//! 3. Set a fencing epoch ([`Checkpoint::with_epoch`]) when several instances may write: the
//!    service refuses writes carrying an epoch lower than one it has seen.
//! 4. [`Checkpoint::close`] when done.
//!
//! Every call has a deadline (5 s by default, [`ClientConfig`]). A call goes to the endpoint
//! that answered last and moves on, in the order given, past unreachable endpoints; a
//! `TRY_AGAIN` answer (no leader yet) is retried, after a short backoff, until the deadline. A
//! write whose outcome is unknown is never re-sent: it fails with `TIMEOUT`.
//!
//! Mutual TLS: with [`ClientConfig::tls`] set (by default from `NINES_CA`, `NINES_CERT` and
//! `NINES_KEY`, which an agent with `[tls] component_cert` passes its components), every
//! endpoint is dialled as `https://host:port`, the client presents its certificate and checks
//! the agent's against the cluster's CA for that host. Without it, plaintext. The component
//! session (a Unix socket to the local agent) never uses TLS.
//!
//! Errors are [`SdkError`]s: the service's stable AIS code ([`SdkError::code`]) and a message
//! saying what failed, why and what to do.
//!
//! Latency: every call is a gRPC call, and a synchronous-mode write is answered after a quorum's
//! `fdatasync`. A process that makes sequential calls and cares about each one's latency should
//! drive the client from a tokio current-thread runtime: on a multi-thread runtime the caller
//! and the HTTP/2 connection task run on different workers, and a call's round trip measured
//! about 40 µs longer on a 2-core VM (docs/design.md, "Where the time goes"). Many concurrent
//! calls are served better by a multi-thread runtime.
//!
//! ```no_run
//! use nines_sdk::{Attributes, CheckpointClient, OpenOptions, SectionRead, SectionWrite};
//!
//! # async fn demo() -> Result<(), nines_sdk::SdkError> {
//! let ckpt = CheckpointClient::connect(&["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"])
//!     .await?;
//! let cp = ckpt
//!     .open("orders", OpenOptions::create(Attributes::default()))
//!     .await?
//!     .with_epoch(7);
//! cp.write("cursor", b"42").await?;
//! cp.write_many(&[SectionWrite::upsert("a", b"1"), SectionWrite::at("a", 1, b"x")])
//!     .await?;
//! let cursor: Vec<u8> = cp.read("cursor").await?;
//! assert_eq!(cursor, b"42");
//! let parts = cp
//!     .read_many(&[SectionRead::whole("a"), SectionRead::range("cursor", 0, 1)])
//!     .await?;
//! for s in cp.sections().await? {
//!     println!("{} holds {} bytes", s.section, s.size);
//! }
//! # let _ = parts;
//! cp.close().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod call;
mod checkpoint;
mod client;
mod endpoints;
mod error;
mod events;
mod membership;
mod retry;
mod session;
mod tls;
mod types;

pub use checkpoint::Checkpoint;
pub use client::{CheckpointClient, ClientConfig};
pub use endpoints::{parse_endpoints, ENDPOINTS_ENV};
pub use error::{Result, SdkError};
pub use events::{
    ChannelInfo, Delivery, Event, EventClient, EventLimits, EventStream, Filter, FilterKind,
    Publish, Subscription, PRIORITY_LOWEST, REORDER_WINDOW_IDS,
};
pub use membership::{
    ChangeKind, Member, MemberState, MembershipClient, MembershipEvent, MembershipWatch, View,
};
pub use nines_core::{AisError, ErrorCode};
/// The TLS files a client is given ([`ClientConfig::tls`]), from the crate that makes them.
pub use nines_tls::TlsFiles;
pub use session::{
    Callbacks, CsiSet, Descriptor, HaState, Kicker, LeaseExpiry, Progress, Recovery, Session,
    COMPONENT_ENV, SOCKET_ENV,
};
pub use tls::{explain_tls_failure, grpc_endpoint, tls_from_env, CA_ENV, CERT_ENV, KEY_ENV};
pub use types::{
    Attributes, CheckpointStatus, OpenOptions, SectionData, SectionInfo, SectionRead, SectionWrite,
    UpdateMode,
};
