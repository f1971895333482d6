//! The component: its AMF callbacks, and the listener it runs while active.

use std::sync::Arc;
use std::time::Duration;

use nines_sdk::{Attributes, Callbacks, CheckpointClient, CsiSet, HaState, OpenOptions, Session};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::conn::{self, Service, SESSIONS_MAX};

/// The CSI attribute naming the address to listen on while active (`host:port`).
pub const LISTEN_ATTRIBUTE: &str = "listen";
/// The environment variable naming it when the CSI has no `listen` attribute (one port per
/// component, set in the component's `env` in the model).
pub const LISTEN_ENV: &str = "NINES_SESSION_LISTEN";
/// Most client connections served at once; more wait in the kernel's backlog.
pub const CONNECTIONS_MAX: usize = 64;
/// How long to keep trying to bind the listen address (the previous active may still be
/// releasing it).
pub const BIND_RETRY_FOR: Duration = Duration::from_secs(3);
/// How long a stop waits for connections to finish their request in progress before they
/// are cut (well inside the agent's 5 s callback deadline).
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// What an active instance runs: the accept loop and its connections.
struct Serving {
    /// The assignment served.
    si: String,
    /// Its epoch.
    epoch: u64,
    /// `true` stops the accept loop and every connection.
    stop: watch::Sender<bool>,
    /// The accept loop; it ends once its connections have.
    task: JoinHandle<()>,
}

/// The state shared by the callbacks.
struct Shared {
    /// This component (`NINES_COMPONENT`).
    component: String,
    /// The listen address from the environment, if any.
    listen_env: Option<String>,
    /// The checkpoint service.
    checkpoints: CheckpointClient,
    /// Set while active. Callbacks come one at a time, so the lock is never contended; it is
    /// async because activating and stopping await.
    serving: tokio::sync::Mutex<Option<Serving>>,
}

/// The [`Callbacks`] of the session server.
struct Component(Arc<Shared>);

impl Callbacks for Component {
    async fn csi_set(&self, set: CsiSet) -> Result<(), String> {
        eprintln!(
            "{}: {} for {} (epoch {})",
            self.0.component, set.ha_state, set.si, set.epoch
        );
        match set.ha_state {
            HaState::Active => self.0.activate(&set).await,
            // Standby, quiescing, quiesced: stop listening before answering, so the new
            // active can bind the same address.
            _ => {
                self.0.deactivate().await;
                Ok(())
            }
        }
    }

    async fn csi_remove(&self, _si: &str, _csi: &str) -> Result<(), String> {
        self.0.deactivate().await;
        Ok(())
    }

    async fn terminate(&self) -> Result<(), String> {
        self.0.deactivate().await;
        Ok(())
    }
}

impl Shared {
    /// Become active for `set`: open the checkpoint with its epoch, bind, serve. Answers only
    /// once clients can connect.
    async fn activate(&self, set: &CsiSet) -> Result<(), String> {
        let mut serving = self.serving.lock().await;
        if let Some(s) = serving.as_ref() {
            if s.si == set.si && s.epoch == set.epoch {
                return Ok(());
            }
        }
        if let Some(old) = serving.take() {
            stop(old).await;
        }
        let addr = set
            .attributes
            .get(LISTEN_ATTRIBUTE)
            .cloned()
            .or_else(|| self.listen_env.clone())
            .ok_or_else(|| {
                format!(
                    "no address to listen on: give the CSI a '{LISTEN_ATTRIBUTE}' attribute or \
                     the component {LISTEN_ENV} (host:port) in the model"
                )
            })?;
        let name = format!("session-server-{}", set.si);
        let attributes = Attributes {
            sections_max: SESSIONS_MAX,
            section_size_max: 64,
            ..Attributes::default()
        };
        let checkpoint = self
            .checkpoints
            .open(&name, OpenOptions::create(attributes))
            .await
            .map_err(|e| format!("cannot open checkpoint '{name}': {e}"))?
            .with_epoch(set.epoch);
        let listener = bind(&addr).await?;
        eprintln!("{}: serving {} on {addr}", self.component, set.si);
        let service = Arc::new(Service::new(self.component.clone(), checkpoint));
        let (stop_tx, stop_rx) = watch::channel(false);
        *serving = Some(Serving {
            si: set.si.clone(),
            epoch: set.epoch,
            stop: stop_tx,
            task: tokio::spawn(accept(listener, service, stop_rx)),
        });
        Ok(())
    }

    /// Stop serving, if serving: the listen address is free when this returns.
    async fn deactivate(&self) {
        if let Some(old) = self.serving.lock().await.take() {
            eprintln!("{}: stopped serving {}", self.component, old.si);
            stop(old).await;
        }
    }
}

/// Bind `addr`, retrying for [`BIND_RETRY_FOR`] while it is in use.
async fn bind(addr: &str) -> Result<TcpListener, String> {
    let deadline = tokio::time::Instant::now() + BIND_RETRY_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(format!(
                    "cannot listen on {addr}: {e}; is another process (or a previous active \
                     that did not stop) using it?"
                ))
            }
        }
    }
}

/// Stop `serving` and wait for it (at most [`STOP_GRACE`], then cut).
async fn stop(serving: Serving) {
    let _ = serving.stop.send(true);
    let mut task = serving.task;
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        // Dropping the accept loop's JoinSet aborts the connections still running.
        task.abort();
        let _ = task.await;
    }
}

/// Accept connections (at most [`CONNECTIONS_MAX`] at once) until `stop`; then close the
/// listener and wait for the connections, which end after their request in progress.
async fn accept(listener: TcpListener, service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.changed() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        // Reap finished connections so the set stays bounded by the live ones.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _peer)) => {
                let service = service.clone();
                let stop = stop.clone();
                conns.spawn(async move {
                    conn::handle(stream, service, stop).await;
                    drop(permit);
                });
            }
            Err(e) => {
                eprintln!("{}: accept failed: {e}", service.component);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Run the session server as a component until the agent terminates it (`Ok`) or the session
/// to the agent breaks (`Err`: exit, so a lost agent never leaves an unsupervised active).
///
/// # Errors
/// The environment is not a component's (not started by the agent), the checkpoint service is
/// unreachable, or the session to the agent broke.
pub async fn run() -> Result<(), String> {
    let checkpoints = CheckpointClient::from_env()
        .await
        .map_err(|e| format!("cannot reach the checkpoint service: {e}"))?;
    let component =
        std::env::var(nines_sdk::COMPONENT_ENV).unwrap_or_else(|_| "session-server".into());
    let shared = Arc::new(Shared {
        component,
        listen_env: std::env::var(LISTEN_ENV).ok().filter(|v| !v.is_empty()),
        checkpoints,
        serving: tokio::sync::Mutex::new(None),
    });
    let session = Session::connect(Component(shared.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let result = session.closed().await.map_err(|e| e.to_string());
    shared.deactivate().await;
    result
}
