//! The component session end to end: an agent-side `SessionHub` serving a Unix socket in a
//! temporary directory, and the SDK's `Session` connecting to it from this test process (so the
//! peer credentials are real).

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use nines_agent::{InvokeError, SessionError, SessionEvent, SessionHub};
use nines_core::shutdown::Shutdown;
use nines_proto::amf::v1::{self as pb, invocation::Kind};
use nines_sdk::{Callbacks, CsiSet, ErrorCode, HaState, Recovery, SdkError, Session};
use tokio::{
    sync::{broadcast, mpsc},
    task::JoinHandle,
};

/// Every wait in these tests is bounded by this (generous: it is a bound, not a benchmark).
const WAIT: Duration = Duration::from_secs(10);
/// The deadline given to invocations expected to succeed.
const INVOKE: Duration = Duration::from_secs(5);

fn phase(name: &str) {
    eprintln!("--- {name}");
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
}

/// What the test component's callbacks saw.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    CsiSet(CsiSet),
    CsiRemove(String, String),
    Terminate,
    Healthcheck(String),
    AgentLost,
}

/// A component that records its calls. CSI sets of SI `fail` fail, of SI `hang` never answer;
/// healthchecks of key `sick` fail.
struct Recorder {
    calls: mpsc::UnboundedSender<Call>,
}

impl Recorder {
    fn new() -> (Self, mpsc::UnboundedReceiver<Call>) {
        let (calls, rx) = mpsc::unbounded_channel();
        (Self { calls }, rx)
    }

    fn record(&self, call: Call) {
        let _ = self.calls.send(call);
    }
}

impl Callbacks for Recorder {
    async fn csi_set(&self, set: CsiSet) -> Result<(), String> {
        let si = set.si.clone();
        self.record(Call::CsiSet(set));
        match si.as_str() {
            "fail" => Err("cannot open the orders database".into()),
            "hang" => std::future::pending().await,
            _ => Ok(()),
        }
    }

    async fn csi_remove(&self, si: &str, csi: &str) -> Result<(), String> {
        self.record(Call::CsiRemove(si.into(), csi.into()));
        Ok(())
    }

    async fn terminate(&self) -> Result<(), String> {
        self.record(Call::Terminate);
        Ok(())
    }

    async fn healthcheck(&self, key: &str) -> Result<(), String> {
        self.record(Call::Healthcheck(key.into()));
        if key == "sick" {
            Err("the worker pool is stuck".into())
        } else {
            Ok(())
        }
    }

    fn agent_lost(&self) {
        self.record(Call::AgentLost);
    }
}

/// A hub serving a socket in its own temporary directory.
struct Agent {
    hub: SessionHub,
    events: broadcast::Receiver<SessionEvent>,
    socket: PathBuf,
    stop: Shutdown,
    served: JoinHandle<Result<(), SessionError>>,
    _dir: tempfile::TempDir,
}

async fn start_agent() -> Agent {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("run").join("agent.sock");
    let hub = SessionHub::new("n1".into(), 3_000, 100);
    // A node lease that outlives the test: these stories are not about the lease.
    hub.grant_lease(tokio::time::Instant::now() + Duration::from_secs(3_600));
    let events = hub.subscribe();
    let (stop, signal) = Shutdown::new();
    let served = tokio::spawn(hub.clone().serve(socket.clone(), signal));
    wait_served(&socket).await;
    Agent {
        hub,
        events,
        socket,
        stop,
        served,
        _dir: dir,
    }
}

/// Until the hub accepts connections on `socket`.
async fn wait_served(socket: &Path) {
    within("the socket served", async {
        while tokio::net::UnixStream::connect(socket).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

impl Agent {
    /// The next event that `pick` accepts (others are skipped).
    async fn event(&mut self, what: &str, pick: impl Fn(&SessionEvent) -> bool) -> SessionEvent {
        within(what, async {
            loop {
                let e = self.events.recv().await.expect("events flow");
                if pick(&e) {
                    return e;
                }
            }
        })
        .await
    }
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    within("a callback", calls.recv())
        .await
        .expect("the component records calls")
}

fn csi_set(si: &str, state: pb::HaState, epoch: u64) -> Kind {
    Kind::CsiSet(pb::CsiSet {
        si: si.into(),
        csi: format!("{si}-csi"),
        ha_state: state as i32,
        epoch,
        descriptor: pb::TransitionDescriptor::NewAssign as i32,
        attributes: [("port".to_string(), "7000".to_string())]
            .into_iter()
            .collect(),
        active_component: String::new(),
    })
}

fn healthcheck(key: &str) -> Kind {
    Kind::Healthcheck(pb::Healthcheck { key: key.into() })
}

async fn connect(socket: &Path, component: &str) -> (Session, mpsc::UnboundedReceiver<Call>) {
    let (recorder, calls) = Recorder::new();
    let session = within("connect", Session::connect_to(socket, component, recorder))
        .await
        .expect("the expected component registers");
    (session, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_registers_and_answers_its_invocations() {
    let mut agent = start_agent().await;
    let me = std::process::id();
    agent.hub.expect("c1", me);

    phase("register: the agent names the node and its lease");
    let (session, mut calls) = connect(&agent.socket, "c1").await;
    assert_eq!(session.component(), "c1");
    assert_eq!(session.node(), "n1");
    assert_eq!(session.lease_ms(), 3_000);
    let e = agent
        .event("Registered", |e| {
            matches!(e, SessionEvent::Registered { .. })
        })
        .await;
    assert_eq!(
        e,
        SessionEvent::Registered {
            component: "c1".into(),
            pid: me
        }
    );
    assert!(agent.hub.is_registered("c1"));

    phase("CSI set active at epoch 7: the callback sees it, the SDK keeps the epoch");
    let r = agent
        .hub
        .invoke("c1", csi_set("si1", pb::HaState::Active, 7), INVOKE)
        .await;
    assert_eq!(r, Ok(()));
    let Call::CsiSet(set) = next_call(&mut calls).await else {
        panic!("expected a CSI set");
    };
    assert_eq!((set.si.as_str(), set.csi.as_str()), ("si1", "si1-csi"));
    assert_eq!((set.ha_state, set.epoch), (HaState::Active, 7));
    assert_eq!(set.attributes.get("port").map(String::as_str), Some("7000"));
    assert_eq!(session.epoch_for("si1"), Some(7));
    assert_eq!(session.epoch_for("si2"), None);
    assert_eq!(
        session.assignments(),
        vec![("si1".into(), "si1-csi".into(), HaState::Active, 7)]
    );

    phase("a failing callback: the invocation fails with its reason, the epoch is not taken");
    let r = agent
        .hub
        .invoke("c1", csi_set("fail", pb::HaState::Standby, 8), INVOKE)
        .await;
    match r {
        Err(InvokeError::Failed { component, reason }) => {
            assert_eq!(component, "c1");
            assert!(reason.contains("orders database"), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(next_call(&mut calls).await, Call::CsiSet(_)));
    assert_eq!(session.epoch_for("fail"), None);

    phase("healthchecks: healthy, then sick");
    assert_eq!(
        agent.hub.invoke("c1", healthcheck("k"), INVOKE).await,
        Ok(())
    );
    assert_eq!(next_call(&mut calls).await, Call::Healthcheck("k".into()));
    let r = agent.hub.invoke("c1", healthcheck("sick"), INVOKE).await;
    assert!(
        matches!(&r, Err(InvokeError::Failed { reason, .. }) if reason.contains("stuck")),
        "{r:?}"
    );
    assert_eq!(
        next_call(&mut calls).await,
        Call::Healthcheck("sick".into())
    );

    phase("CSI remove: the assignment is gone");
    let remove = Kind::CsiRemove(pb::CsiRemove {
        si: "si1".into(),
        csi: "si1-csi".into(),
    });
    assert_eq!(agent.hub.invoke("c1", remove, INVOKE).await, Ok(()));
    assert_eq!(
        next_call(&mut calls).await,
        Call::CsiRemove("si1".into(), "si1-csi".into())
    );
    assert!(session.assignments().is_empty());

    phase("error reports and healthcheck confirmations reach the hub as events");
    session
        .report_error(Recovery::ComponentRestart, "lost the database connection")
        .await
        .expect("report sent");
    let e = agent
        .event("ErrorReport", |e| {
            matches!(e, SessionEvent::ErrorReport { .. })
        })
        .await;
    assert_eq!(
        e,
        SessionEvent::ErrorReport {
            component: "c1".into(),
            recommended: pb::Recovery::ComponentRestart,
            reason: "lost the database connection".into(),
        }
    );
    session
        .confirm_healthcheck("k", false)
        .await
        .expect("confirmation sent");
    let e = agent
        .event("HealthcheckConfirm", |e| {
            matches!(e, SessionEvent::HealthcheckConfirm { .. })
        })
        .await;
    assert_eq!(
        e,
        SessionEvent::HealthcheckConfirm {
            component: "c1".into(),
            key: "k".into(),
            healthy: false,
        }
    );

    phase("a component that is not registered");
    let r = agent.hub.invoke("c9", healthcheck("k"), INVOKE).await;
    assert_eq!(
        r,
        Err(InvokeError::NotRegistered {
            component: "c9".into()
        })
    );

    phase("a hanging CSI set times out; healthchecks still answer beside it");
    let short = Duration::from_millis(300);
    let r = within(
        "the hanging invocation's deadline",
        agent
            .hub
            .invoke("c1", csi_set("hang", pb::HaState::Active, 9), short),
    )
    .await;
    assert_eq!(
        r,
        Err(InvokeError::Timeout {
            component: "c1".into(),
            after_ms: 300
        })
    );
    assert!(matches!(next_call(&mut calls).await, Call::CsiSet(s) if s.si == "hang"));
    assert_eq!(
        agent.hub.invoke("c1", healthcheck("k2"), INVOKE).await,
        Ok(())
    );
    assert_eq!(next_call(&mut calls).await, Call::Healthcheck("k2".into()));

    phase("dropping the session disconnects the component");
    drop(session);
    let e = agent
        .event("Disconnected", |e| {
            matches!(e, SessionEvent::Disconnected { .. })
        })
        .await;
    assert_eq!(
        e,
        SessionEvent::Disconnected {
            component: "c1".into()
        }
    );
    assert!(!agent.hub.is_registered("c1"));
    let r = agent.hub.invoke("c1", healthcheck("k"), INVOKE).await;
    assert!(
        matches!(
            r,
            Err(InvokeError::NotRegistered { .. } | InvokeError::SessionLost { .. })
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_unknown_components_and_other_processes() {
    let agent = start_agent().await;

    phase("a component the agent did not instantiate");
    let (recorder, _calls) = Recorder::new();
    let e = within(
        "refusal",
        Session::connect_to(&agent.socket, "nobody", recorder),
    )
    .await
    .expect_err("an unknown component is refused");
    assert_eq!(e.code(), Some(ErrorCode::NotExist), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("no component nobody"), "{msg}");
    assert!(msg.contains("NINES_COMPONENT"), "{msg}");

    phase("a component the agent started in another process");
    let mut child = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let child_pid = child.id().expect("the child runs");
    agent.hub.expect("c2", child_pid);
    let (recorder, _calls) = Recorder::new();
    let e = within(
        "refusal",
        Session::connect_to(&agent.socket, "c2", recorder),
    )
    .await
    .expect_err("another process is refused");
    let SdkError::PermissionDenied(msg) = &e else {
        panic!("expected PermissionDenied, got {e:?}");
    };
    assert!(msg.contains("c2"), "{msg}");
    assert!(msg.contains(&child_pid.to_string()), "{msg}");
    assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    assert!(!agent.hub.is_registered("c2"));
    child.kill().await.expect("kill sleep");

    phase("no agent at all");
    let (recorder, _calls) = Recorder::new();
    let missing = agent.socket.with_file_name("missing.sock");
    let e = within("refusal", Session::connect_to(&missing, "c1", recorder))
        .await
        .expect_err("no agent");
    assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");

    phase("no environment from an agent");
    if std::env::var(nines_sdk::COMPONENT_ENV).is_err() {
        let (recorder, _calls) = Recorder::new();
        let e = Session::connect(recorder)
            .await
            .expect_err("no environment");
        assert!(matches!(e, SdkError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("nines agent"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_runs_the_callback_and_closes_the_session() {
    let agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (session, mut calls) = connect(&agent.socket, "c1").await;

    phase("terminate");
    let terminate = Kind::Terminate(pb::Terminate {});
    assert_eq!(agent.hub.invoke("c1", terminate, INVOKE).await, Ok(()));
    assert_eq!(next_call(&mut calls).await, Call::Terminate);
    within("closed", session.closed())
        .await
        .expect("a terminated session closes cleanly");

    phase("the agent forgets the component: no agent_lost after a terminate");
    agent.hub.forget("c1");
    assert!(!agent.hub.is_registered("c1"));
    within("closed", session.closed())
        .await
        .expect("still closed cleanly");
    drop(session);
    assert!(calls.try_recv().is_err(), "no callback after the terminate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_replaces_the_first() {
    let mut agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (first, mut first_calls) = connect(&agent.socket, "c1").await;
    agent
        .event("first Registered", |e| {
            matches!(e, SessionEvent::Registered { .. })
        })
        .await;

    phase("the same component registers again: the first session is closed");
    let (second, mut second_calls) = connect(&agent.socket, "c1").await;
    agent
        .event("second Registered", |e| {
            matches!(e, SessionEvent::Registered { .. })
        })
        .await;
    assert_eq!(next_call(&mut first_calls).await, Call::AgentLost);
    let e = within("first closed", first.closed())
        .await
        .expect_err("replaced");
    assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");

    phase("invocations go to the second session");
    assert_eq!(
        agent.hub.invoke("c1", healthcheck("k"), INVOKE).await,
        Ok(())
    );
    assert_eq!(
        next_call(&mut second_calls).await,
        Call::Healthcheck("k".into())
    );
    assert!(agent.hub.is_registered("c1"));
    drop(first);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_shutdown_tells_the_component() {
    let mut agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (session, mut calls) = connect(&agent.socket, "c1").await;

    phase("the agent shuts down");
    agent.stop.trigger();
    assert_eq!(next_call(&mut calls).await, Call::AgentLost);
    let e = within("closed", session.closed())
        .await
        .expect_err("the agent is gone");
    assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("c1"), "{e}");
    agent
        .event("Disconnected", |e| {
            matches!(e, SessionEvent::Disconnected { .. })
        })
        .await;
    let served = within("serve returns", &mut agent.served)
        .await
        .expect("serve did not panic");
    assert!(served.is_ok(), "{served:?}");
    assert!(!agent.socket.exists(), "the socket file is removed");

    phase("a closed session refuses to send");
    let e = session
        .report_error(Recovery::NoRecommendation, "late")
        .await
        .expect_err("the session is closed");
    assert!(matches!(e, SdkError::Unavailable(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_prepared_and_guarded() {
    use std::os::unix::fs::PermissionsExt;

    phase("a stale socket file (a crashed agent's) is replaced");
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a stale socket"));
    assert!(socket.exists());
    let hub = SessionHub::new("n1".into(), 3_000, 100);
    let (stop, signal) = Shutdown::new();
    let served = tokio::spawn(hub.clone().serve(socket.clone(), signal));
    wait_served(&socket).await;
    hub.expect("c1", std::process::id());
    let (session, _calls) = connect(&socket, "c1").await;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "mode {mode:o}");

    phase("a second agent on the same socket is refused");
    let other = SessionHub::new("n1".into(), 3_000, 100);
    let e = within(
        "second serve",
        other.serve(
            socket.clone(),
            nines_core::shutdown::ShutdownSignal::never(),
        ),
    )
    .await
    .expect_err("the socket is in use");
    assert!(matches!(e, SessionError::InUse { .. }), "{e:?}");
    assert!(e.to_string().contains("agent.sock"), "{e}");

    phase("a path that is not a socket is left alone");
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"data").expect("write");
    let e = within(
        "serve on a file",
        SessionHub::new("n1".into(), 3_000, 100)
            .serve(file.clone(), nines_core::shutdown::ShutdownSignal::never()),
    )
    .await
    .expect_err("not a socket");
    assert!(matches!(e, SessionError::Socket { .. }), "{e:?}");
    assert_eq!(std::fs::read(&file).expect("still there"), b"data");

    stop.trigger();
    within("serve returns", served)
        .await
        .expect("serve did not panic")
        .expect("clean stop");
    drop(session);
}
