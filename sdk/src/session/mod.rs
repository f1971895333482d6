//! The component session: how a component managed by nines (AMF) talks to its local agent.
//!
//! The agent starts the component's process with `NINES_COMPONENT` (its name) and `NINES_SOCKET`
//! (the agent's Unix socket) in the environment. The component implements [`Callbacks`] and
//! calls [`Session::connect`]; the agent checks that the process is the one it started and
//! registers it. From then on the agent's invocations (CSI set / remove, terminate, healthcheck)
//! run the callbacks, and each callback's answer goes back to the agent. The component can report
//! errors on itself ([`Session::report_error`]) and confirm its health
//! ([`Session::confirm_healthcheck`]).
//!
//! A component with a watchdog ([`Session::watchdog_ms`] > 0) kicks it from its work loop: a
//! [`Kicker`] (or better, a [`Progress`] advanced once per loop iteration) costs one atomic
//! increment, and the session sends the count to the agent a few times per watchdog period. Kick
//! from the work itself, never from a timer task, or a stuck loop is not caught.
//!
//! **The component's lease.** The agent grants the session a deadline, renewed each time its own
//! node lease is renewed. When the deadline passes without renewal — the agent paused, hung, cut
//! off from the cluster, or its node fenced — the SDK stops the component acting as active on its
//! own, with no help from the agent: it sets every CSI held active to QUIESCED through
//! [`Callbacks::csi_set`], refuses checkpoint writes under the epochs it holds, and, if the
//! quiesce has not returned within the agent's reaction bound, ends the process
//! ([`LeaseExpiry`]; [`Session::set_lease_expiry`]). The deadline falls before the earliest moment
//! the cluster may make another component active in its place. Once the lease is renewed, the
//! agent re-delivers the assignment if the cluster still gives it to this component.
//!
//! If the agent goes away without terminating the component, [`Callbacks::agent_lost`] is called
//! at once; once the lease runs out, the SDK quiesces as above and calls
//! [`Callbacks::supervision_lost`]: the component is no longer supervised and should exit.
//!
//! ```no_run
//! use nines_sdk::{Callbacks, CsiSet, Session};
//!
//! struct Orders;
//!
//! impl Callbacks for Orders {
//!     async fn csi_set(&self, set: CsiSet) -> Result<(), String> {
//!         println!("{}/{} is now {} at epoch {}", set.si, set.csi, set.ha_state, set.epoch);
//!         Ok(())
//!     }
//!     async fn csi_remove(&self, _si: &str, _csi: &str) -> Result<(), String> {
//!         Ok(())
//!     }
//!     async fn terminate(&self) -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), nines_sdk::SdkError> {
//! let session = Session::connect(Orders).await?;
//! let progress = session.kicker().progress();
//! // ... serve, putting session.epoch_for("orders") on checkpoint writes, and calling
//! // progress.advance() at the top of each turn of the work loop ...
//! # progress.advance();
//! session.closed().await?; // Ok once the agent asked the component to terminate
//! # Ok(())
//! # }
//! ```

mod callbacks;
mod connect;
mod dispatch;
mod lease;
#[cfg(test)]
mod props;
mod types;
mod watchdog;

use std::{
    path::{Path, PathBuf},
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use nines_core::{AisError, ErrorCode};
use nines_proto::amf::v1::{
    component_message, ComponentMessage, ErrorReport, HealthcheckConfirm, Recovery as PbRecovery,
    Registered,
};
use tokio::{sync::mpsc, task::JoinHandle};

pub use callbacks::Callbacks;
pub(crate) use lease::write_refusal;
pub use lease::LeaseExpiry;
pub use types::{CsiSet, Descriptor, HaState, Recovery};
pub use watchdog::Kicker;
pub use watchdog::Progress;
pub(crate) use watchdog::WaitingOnNines;

use crate::SdkError;
use dispatch::Shared;
use lease::Lease;

/// The environment variable holding the agent's socket path (set by the agent).
pub const SOCKET_ENV: &str = "NINES_SOCKET";
/// The environment variable holding the component's name (set by the agent).
pub const COMPONENT_ENV: &str = "NINES_COMPONENT";

/// Messages queued to the agent before a sender waits.
const OUTBOUND_QUEUE_LEN: usize = 64;
/// How long sending an error report or a healthcheck confirmation may wait for queue room.
const SEND_TIMEOUT_MS: u64 = 5_000;

/// Pause between registrations refused because the agent has not recorded the process yet.
const REGISTER_RACE_PAUSE: Duration = Duration::from_millis(20);
/// Such refusals retried by [`Session::connect`] (about 3 s in all).
const REGISTER_RACE_RETRIES: u32 = 150;

/// A registered component session. Dropping it closes the session (the agent sees the component
/// disconnect) and stops its callbacks; the component then holds nothing it may act on.
pub struct Session {
    shared: Arc<Shared>,
    /// The component's lease (watched by its own guard thread).
    lease: Arc<Lease>,
    node: String,
    lease_ms: u64,
    /// The component's watchdog period from the agent (0 = none).
    watchdog_ms: u64,
    /// Kicks the session's kick count, which the flusher sends.
    kicker: Kicker,
    outbound: mpsc::Sender<ComponentMessage>,
    /// The dispatcher, the ordered worker and the kick flusher: aborted on drop.
    tasks: [JoinHandle<()>; 3],
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("component", &self.shared.component)
            .field("node", &self.node)
            .field("lease_ms", &self.lease_ms)
            .field("watchdog_ms", &self.watchdog_ms)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.lease.stop();
    }
}

impl Session {
    /// Connect to the local agent and register, with the socket and component name the agent
    /// put in the environment ([`SOCKET_ENV`], [`COMPONENT_ENV`]).
    ///
    /// # Errors
    ///
    /// [`SdkError::InvalidArgument`] when either variable is missing (the process was not started
    /// by the agent); otherwise as [`Session::connect_to`].
    pub async fn connect<C: Callbacks>(callbacks: C) -> Result<Session, SdkError> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    SdkError::InvalidArgument(format!(
                        "{name} is not set: a component must be started by the nines agent, which \
                     sets {COMPONENT_ENV} and {SOCKET_ENV}; start it through the AMF model (or \
                     call Session::connect_to)"
                    ))
                })
        };
        let component = var(COMPONENT_ENV)?;
        let socket = PathBuf::from(var(SOCKET_ENV)?);
        // Started by the agent: it may not have recorded this process yet when the process
        // first connects (it learns the pid only once the spawn returned), so NOT_EXIST is
        // retried for a moment.
        Self::open_session(&socket, &component, callbacks, REGISTER_RACE_RETRIES).await
    }

    /// Connect to the agent at `socket` and register as `component`.
    ///
    /// # Errors
    ///
    /// - [`SdkError::Unavailable`]: no agent serves `socket` (or it is shutting down).
    /// - [`SdkError::Ais`] with `NOT_EXIST`: the agent has not instantiated `component`.
    /// - [`SdkError::PermissionDenied`]: this process is not the one the agent started for
    ///   `component` (the message names both pids).
    /// - [`SdkError::Ais`] with `TIMEOUT`: the agent did not answer in time.
    pub async fn connect_to<C: Callbacks>(
        socket: &Path,
        component: &str,
        callbacks: C,
    ) -> Result<Session, SdkError> {
        Self::open_session(socket, component, callbacks, 0).await
    }

    async fn open_session<C: Callbacks>(
        socket: &Path,
        component: &str,
        callbacks: C,
        not_found_retries: u32,
    ) -> Result<Session, SdkError> {
        if component.is_empty() {
            return Err(SdkError::InvalidArgument(
                "the component name is empty; use the name the agent set in NINES_COMPONENT".into(),
            ));
        }
        let mut attempt = 0;
        let (outbound, opened) = loop {
            let (outbound, rx) = mpsc::channel(OUTBOUND_QUEUE_LEN);
            match connect::open(socket, component, rx, &outbound).await {
                Ok(opened) => break (outbound, opened),
                Err(e) if attempt < not_found_retries && e.code() == Some(ErrorCode::NotExist) => {
                    attempt += 1;
                    tokio::time::sleep(REGISTER_RACE_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        };
        let Registered {
            node,
            lease_ms,
            watchdog_ms,
            lease_deadline_mono_ns,
            lease_reaction_ms,
            ..
        } = opened.registered;
        let shared = Arc::new(Shared::new(component.to_string()));
        let lease = Lease::new(component, lease_deadline_mono_ns, lease_reaction_ms);
        lease::register(&lease, &shared);
        let callbacks = Arc::new(callbacks);
        let (ordered, queue) = mpsc::channel(dispatch::ORDERED_QUEUE_LEN);
        lease::spawn_guard(lease.clone(), shared.clone(), ordered.clone()).map_err(|e| {
            SdkError::Unavailable(format!(
                "component {component}: cannot start the lease guard thread: {e}"
            ))
        })?;
        let worker = tokio::spawn(dispatch::run_ordered(
            callbacks.clone(),
            shared.clone(),
            queue,
            outbound.clone(),
            lease.clone(),
        ));
        let dispatcher = tokio::spawn(dispatch::dispatch(
            callbacks,
            shared.clone(),
            opened.inbound,
            ordered,
            outbound.clone(),
            lease.clone(),
        ));
        let kicks = Arc::new(AtomicU64::new(0));
        let flusher = tokio::spawn(watchdog::flush(
            shared.clone(),
            kicks.clone(),
            watchdog_ms,
            outbound.clone(),
        ));
        tracing::info!(component, %node, lease_ms, watchdog_ms, "component session registered");
        Ok(Session {
            shared,
            lease,
            node,
            lease_ms,
            watchdog_ms,
            kicker: Kicker::new(kicks),
            outbound,
            tasks: [dispatcher, worker, flusher],
        })
    }

    /// This component's name.
    pub fn component(&self) -> &str {
        &self.shared.component
    }

    /// The node the component runs on (as the agent names it).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's node lease: the longest the component's lease runs past the agent's last
    /// contact with a quorum of the cluster.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Whether the component's lease from the agent is valid now: while it is not, the component
    /// must not act as active (the SDK quiesces it and refuses its fenced checkpoint writes).
    pub fn lease_valid(&self) -> bool {
        self.lease.is_valid()
    }

    /// What the SDK does when the lease runs out and the quiesce does not return in time:
    /// [`LeaseExpiry::EndProcess`] (the default) or [`LeaseExpiry::QuiesceOnly`].
    pub fn set_lease_expiry(&self, action: LeaseExpiry) {
        self.lease.set_action(action);
    }

    /// The component's watchdog period, from the agent: it expects kicks ([`Session::kicker`])
    /// at least this often. 0 when the component has no watchdog (kicks are then sent every
    /// 250 ms, and only inform the agent).
    pub fn watchdog_ms(&self) -> u64 {
        self.watchdog_ms
    }

    /// A handle that kicks this session's watchdog, cheap enough for a hot loop; clones and its
    /// [`Kicker::progress`] markers share the count. Kick from the work loop, not from a timer
    /// task ([`Progress`] says why).
    pub fn kicker(&self) -> Kicker {
        self.kicker.clone()
    }

    /// Kick this session's watchdog once ([`Kicker::kick`]).
    pub fn kick(&self) {
        self.kicker.kick();
    }

    /// Whether the agent still supervises this component: `false` from the moment the session
    /// broke without a terminate ([`Callbacks::agent_lost`]). A session that ended with a
    /// terminate stays supervised: the agent is stopping the component.
    pub fn supervised(&self) -> bool {
        self.shared.supervised()
    }

    /// The HA state and epoch of each (si, csi), as the callbacks last accepted them (ordered by
    /// si, then csi). A CSI removed with `Ok` is gone.
    pub fn assignments(&self) -> Vec<(String, String, HaState, u64)> {
        self.shared.assignments()
    }

    /// The fencing epoch of this component's assignment of `si` (the highest among its CSIs), to
    /// put on checkpoint writes; `None` when it holds no CSI of `si`.
    pub fn epoch_for(&self, si: &str) -> Option<u64> {
        self.shared.epoch_for(si)
    }

    /// Report an error on this component, recommending a recovery (AIS
    /// `saAmfComponentErrorReport`). The agent decides and applies the recovery.
    ///
    /// # Errors
    ///
    /// [`SdkError::Unavailable`] when the session is closed; `TIMEOUT` when it is congested.
    pub async fn report_error(&self, recommended: Recovery, reason: &str) -> Result<(), SdkError> {
        let msg = component_message::Msg::ErrorReport(ErrorReport {
            recommended: PbRecovery::from(recommended) as i32,
            reason: reason.to_string(),
        });
        self.send(msg, "report an error").await
    }

    /// Confirm (or deny) this component's health for `key` (a component-invoked healthcheck).
    ///
    /// # Errors
    ///
    /// As [`Session::report_error`].
    pub async fn confirm_healthcheck(&self, key: &str, healthy: bool) -> Result<(), SdkError> {
        let msg = component_message::Msg::HealthcheckConfirm(HealthcheckConfirm {
            key: key.to_string(),
            healthy,
        });
        self.send(msg, "confirm a healthcheck").await
    }

    /// Resolves when the session ends: `Ok` once the agent asked the component to terminate and
    /// [`Callbacks::terminate`] answered `Ok` (the component should now exit).
    ///
    /// # Errors
    ///
    /// [`SdkError::Unavailable`] when the session to the agent broke first (the agent stopped or
    /// restarted); [`Callbacks::agent_lost`] was called.
    pub async fn closed(&self) -> Result<(), SdkError> {
        let mut rx = self.shared.closed.subscribe();
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .expect("the session holds the sender")
            .clone();
        outcome.expect("wait_for waited for Some")
    }

    async fn send(&self, msg: component_message::Msg, what: &str) -> Result<(), SdkError> {
        let component = &self.shared.component;
        if let Some(Err(e)) = &*self.shared.closed.borrow() {
            return Err(e.clone());
        }
        let msg = ComponentMessage { msg: Some(msg) };
        let wait = Duration::from_millis(SEND_TIMEOUT_MS);
        match tokio::time::timeout(wait, self.outbound.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SdkError::Unavailable(format!(
                "component {component}: cannot {what}: the session to the agent is closed"
            ))),
            Err(_) => Err(SdkError::Ais(AisError::new(
                ErrorCode::Timeout,
                format!(
                    "component {component}: cannot {what}: the session to the agent is congested \
                     (nothing sent within {SEND_TIMEOUT_MS} ms); retry"
                ),
            ))),
        }
    }
}
