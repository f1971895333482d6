//! Component watchdogs and agent loss, end to end: an agent-side `SessionHub` serving a Unix
//! socket in a temporary directory, and the SDK's `Session` connecting to it from this test
//! process.
//!
//! 1. Kicks coalesce: a tight loop of kicks reaches the hub as a few messages.
//! 2. Progress: when the work loop stops advancing, the hub's kick count stops growing.
//! 3. Agent loss: after the lease, the SDK quiesces the active CSI and reports supervision lost.
//! 4. Terminate: no supervision lost.

use std::{
    future::Future,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use nines_agent::{InvokeError, SessionError, SessionEvent, SessionHub};
use nines_core::shutdown::Shutdown;
use nines_proto::amf::v1::{self as pb, invocation::Kind};
use nines_sdk::{Callbacks, CsiSet, HaState, LeaseExpiry, Session};
use tokio::{
    sync::{broadcast, mpsc},
    task::JoinHandle,
    time::Instant,
};

/// Every wait in these tests is bounded by this (generous: it is a bound, not a benchmark).
const WAIT: Duration = Duration::from_secs(10);
/// The deadline given to invocations expected to succeed.
const INVOKE: Duration = Duration::from_secs(5);
/// The watchdog the components under test get: flushes every 25 ms.
const WATCHDOG_MS: u64 = 100;
/// The SDK's flush interval for [`WATCHDOG_MS`].
const FLUSH: Duration = Duration::from_millis(WATCHDOG_MS / 4);
/// A short lease, so agent loss plays out quickly.
const LEASE_MS: u64 = 200;

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
    Terminate,
    AgentLost,
    SupervisionLost,
}

/// A component that records its calls, each with when it was made.
struct Recorder {
    calls: mpsc::UnboundedSender<(Instant, Call)>,
}

impl Recorder {
    fn record(&self, call: Call) {
        let _ = self.calls.send((Instant::now(), call));
    }
}

impl Callbacks for Recorder {
    async fn csi_set(&self, set: CsiSet) -> Result<(), String> {
        self.record(Call::CsiSet(set));
        Ok(())
    }

    async fn csi_remove(&self, _si: &str, _csi: &str) -> Result<(), String> {
        Ok(())
    }

    async fn terminate(&self) -> Result<(), String> {
        self.record(Call::Terminate);
        Ok(())
    }

    fn agent_lost(&self) {
        self.record(Call::AgentLost);
    }

    fn supervision_lost(&self) {
        self.record(Call::SupervisionLost);
    }
}

/// A hub serving a socket in its own temporary directory.
struct Agent {
    hub: SessionHub,
    events: broadcast::Receiver<SessionEvent>,
    socket: PathBuf,
    stop: Shutdown,
    served: JoinHandle<Result<(), SessionError>>,
    /// Whether the node lease is being renewed.
    renew: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

async fn start_agent() -> Agent {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let hub = SessionHub::new("n1".into(), LEASE_MS, 100);
    let events = hub.subscribe();
    let (stop, signal) = Shutdown::new();
    // The node lease, renewed four times per lease while the agent runs (as its heartbeats do)
    // and `renew` is set (cleared: a paused agent, its sessions still open).
    let renew = Arc::new(AtomicBool::new(true));
    let (renewing, mut stopped, on) = (hub.clone(), signal.clone(), renew.clone());
    tokio::spawn(async move {
        let lease = Duration::from_millis(LEASE_MS);
        loop {
            if on.load(Ordering::SeqCst) {
                renewing.grant_lease(tokio::time::Instant::now() + lease);
            }
            tokio::select! {
                _ = stopped.wait() => return,
                _ = tokio::time::sleep(lease / 4) => {}
            }
        }
    });
    let served = tokio::spawn(hub.clone().serve(socket.clone(), signal));
    within("the socket served", async {
        while tokio::net::UnixStream::connect(&socket).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    Agent {
        hub,
        events,
        socket,
        stop,
        served,
        renew,
        _dir: dir,
    }
}

type Calls = mpsc::UnboundedReceiver<(Instant, Call)>;

impl Agent {
    /// The next session event that `pick` accepts (others are skipped).
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

    async fn connect(&self, component: &str) -> (Session, Calls) {
        let (calls, rx) = mpsc::unbounded_channel();
        let session = within(
            "connect",
            Session::connect_to(&self.socket, component, Recorder { calls }),
        )
        .await
        .expect("the expected component registers");
        (session, rx)
    }

    /// Until the hub's kick count of `component` is `count`.
    async fn kicked(&self, component: &str, count: u64) -> Instant {
        within(&format!("kick count {count}"), async {
            loop {
                match self.hub.last_kick(component) {
                    Some((at, c)) if c == count => return at,
                    Some((_, c)) => assert!(c < count, "count {c} overshot {count}"),
                    None => {}
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// The counts of `c1`'s Kick events up to the one with count `last` (others are skipped).
    async fn kick_events(&mut self, last: u64) -> Vec<u64> {
        let mut counts = Vec::new();
        within(&format!("Kick event {last}"), async {
            while counts.last() != Some(&last) {
                match self.events.recv().await.expect("events flow") {
                    SessionEvent::Kick { component, count } if component == "c1" => {
                        counts.push(count);
                    }
                    _ => {}
                }
            }
        })
        .await;
        counts
    }

    /// Whether a Kick event is waiting.
    fn kick_event_waiting(&mut self) -> bool {
        std::iter::from_fn(|| self.events.try_recv().ok())
            .any(|e| matches!(e, SessionEvent::Kick { .. }))
    }
}

async fn next_call(calls: &mut Calls) -> (Instant, Call) {
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
        attributes: Default::default(),
        active_component: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicks_from_a_tight_loop_coalesce() {
    let mut agent = start_agent().await;
    agent.hub.expect_with("c1", std::process::id(), WATCHDOG_MS);
    let (session, _calls) = agent.connect("c1").await;

    phase("the agent tells the component its watchdog; no kick yet");
    assert_eq!(session.watchdog_ms(), WATCHDOG_MS);
    assert_eq!(agent.hub.last_kick("c1"), None);

    phase("10,000 kicks in a tight loop");
    let kicker = session.kicker();
    let started = Instant::now();
    for _ in 0..10_000 {
        kicker.kick();
    }
    let looped = started.elapsed();
    agent.kicked("c1", 10_000).await;

    phase("they reached the hub as a few Kick messages, counts growing");
    let counts = agent.kick_events(10_000).await;
    // One flush may fall in each interval the loop took, and one after it.
    let flushes_max = usize::try_from(looped.as_millis() / FLUSH.as_millis()).unwrap_or(0) + 2;
    assert!(
        !counts.is_empty() && counts.len() <= flushes_max,
        "{} Kick messages for a loop of {looped:?} (at most {flushes_max})",
        counts.len()
    );
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");

    phase("Session::kick is a kick too; an unchanged count is not sent again");
    session.kick();
    agent.kicked("c1", 10_001).await;
    assert_eq!(agent.kick_events(10_001).await, vec![10_001]);
    tokio::time::sleep(FLUSH * 4).await;
    assert!(!agent.kick_event_waiting(), "a Kick without a kick");

    phase("the kicks belong to the session: none once it is gone");
    drop(session);
    within("disconnected", async {
        while agent.hub.is_registered("c1") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(agent.hub.last_kick("c1"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicks_stop_when_the_work_loop_stops_advancing() {
    let agent = start_agent().await;
    agent.hub.expect_with("c1", std::process::id(), WATCHDOG_MS);
    let (session, _calls) = agent.connect("c1").await;

    phase("a work loop advances 20 times, then gets stuck");
    let progress = session.kicker().progress();
    let (stuck_tx, stuck) = tokio::sync::oneshot::channel::<()>();
    let work = tokio::spawn(async move {
        for _ in 0..20 {
            progress.advance();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Stuck: waits for something that never comes, without advancing.
        let _ = stuck.await;
    });
    let last = agent.kicked("c1", 20).await;

    phase("the flusher still runs, but the hub's count stays put");
    tokio::time::sleep(FLUSH * 4).await;
    assert_eq!(agent.hub.last_kick("c1"), Some((last, 20)));
    assert!(!work.is_finished(), "the loop is stuck, not finished");

    phase("a loop that advances again is seen again");
    session.kicker().progress().advance();
    agent.kicked("c1", 21).await;
    drop(stuck_tx);
    within("the work loop ends", work).await.expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_watchdog_kicks_still_reach_the_hub() {
    let agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (session, _calls) = agent.connect("c1").await;
    assert_eq!(session.watchdog_ms(), 0);
    session.kick();
    agent.kicked("c1", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_agent_loss_and_the_lease_the_component_quiesces() {
    let mut agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (session, mut calls) = agent.connect("c1").await;
    assert_eq!(session.lease_ms(), LEASE_MS);
    assert!(session.supervised());

    phase("the component is active for si1 and standby for si2");
    for (si, state, epoch) in [
        ("si1", pb::HaState::Active, 7),
        ("si2", pb::HaState::Standby, 3),
    ] {
        let r = agent
            .hub
            .invoke("c1", csi_set(si, state, epoch), INVOKE)
            .await;
        assert_eq!(r, Ok(()));
        assert!(matches!(next_call(&mut calls).await.1, Call::CsiSet(_)));
    }

    phase("the agent shuts down: agent_lost at once, unsupervised");
    agent.stop.trigger();
    let (lost_at, call) = next_call(&mut calls).await;
    assert_eq!(call, Call::AgentLost);
    assert!(!session.supervised());
    let served = within("serve returns", &mut agent.served)
        .await
        .expect("serve did not panic");
    assert!(served.is_ok(), "{served:?}");

    phase("after the lease: the active CSI is quiesced through csi_set, then supervision lost");
    let (quiesced_at, call) = next_call(&mut calls).await;
    let Call::CsiSet(set) = call else {
        panic!("expected the SDK's CSI set to QUIESCED, got {call:?}");
    };
    assert_eq!((set.si.as_str(), set.csi.as_str()), ("si1", "si1-csi"));
    assert_eq!(
        (set.ha_state, set.epoch, set.descriptor),
        (HaState::Quiesced, 7, None)
    );
    // The lease runs from the last grant, at most a quarter lease before the loss.
    let held = quiesced_at - lost_at;
    assert!(
        held >= Duration::from_millis(LEASE_MS / 2),
        "quiesced {held:?} after the loss, before the {LEASE_MS} ms lease ran out"
    );
    assert_eq!(next_call(&mut calls).await.1, Call::SupervisionLost);
    assert_eq!(
        session.assignments(),
        vec![
            ("si1".into(), "si1-csi".into(), HaState::Quiesced, 7),
            ("si2".into(), "si2-csi".into(), HaState::Standby, 3),
        ]
    );
    assert!(!session.supervised());
    assert!(session.closed().await.is_err());
    drop(session);
    assert!(calls.try_recv().is_err(), "nothing after supervision lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_component_also_loses_supervision() {
    let agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (session, mut calls) = agent.connect("c1").await;
    let r = agent
        .hub
        .invoke("c1", csi_set("si1", pb::HaState::Quiescing, 4), INVOKE)
        .await;
    assert_eq!(r, Ok(()));
    assert!(matches!(next_call(&mut calls).await.1, Call::CsiSet(_)));

    phase("the agent forgets the component without terminating it");
    agent.hub.forget("c1");
    assert_eq!(next_call(&mut calls).await.1, Call::AgentLost);
    let Call::CsiSet(set) = next_call(&mut calls).await.1 else {
        panic!("expected the SDK's CSI set to QUIESCED");
    };
    assert_eq!((set.ha_state, set.epoch), (HaState::Quiesced, 4));
    assert_eq!(next_call(&mut calls).await.1, Call::SupervisionLost);
    assert!(!session.supervised());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_component_is_not_told_supervision_lost() {
    let agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (session, mut calls) = agent.connect("c1").await;
    let r = agent
        .hub
        .invoke("c1", csi_set("si1", pb::HaState::Active, 7), INVOKE)
        .await;
    assert_eq!(r, Ok(()));
    assert!(matches!(next_call(&mut calls).await.1, Call::CsiSet(_)));

    phase("terminate, then the agent forgets the component");
    let terminate = Kind::Terminate(pb::Terminate {});
    assert_eq!(agent.hub.invoke("c1", terminate, INVOKE).await, Ok(()));
    assert_eq!(next_call(&mut calls).await.1, Call::Terminate);
    within("closed", session.closed())
        .await
        .expect("a terminated session closes cleanly");
    agent.hub.forget("c1");

    phase("well past the lease: no agent_lost, no quiesce, no supervision lost");
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 3)).await;
    assert!(calls.try_recv().is_err(), "no callback after the terminate");
    assert!(session.supervised());
    assert_eq!(
        session.assignments(),
        vec![("si1".into(), "si1-csi".into(), HaState::Active, 7)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_stops_its_active_at_the_lease_deadline_and_a_renewal_restores_it() {
    let mut agent = start_agent().await;
    agent.hub.expect("c1", std::process::id());
    let (session, mut calls) = agent.connect("c1").await;
    session.set_lease_expiry(LeaseExpiry::QuiesceOnly);
    let r = agent
        .hub
        .invoke("c1", csi_set("si1", pb::HaState::Active, 7), INVOKE)
        .await;
    assert_eq!(r, Ok(()));
    assert!(matches!(next_call(&mut calls).await.1, Call::CsiSet(_)));
    assert!(session.lease_valid());

    phase("a stale ACTIVE directive (an older epoch) is refused");
    let r = agent
        .hub
        .invoke("c1", csi_set("si1", pb::HaState::Active, 6), INVOKE)
        .await;
    let Err(InvokeError::Failed { reason, .. }) = r else {
        panic!("a stale directive must fail, got {r:?}");
    };
    assert!(reason.contains("stale directive"), "{reason}");

    phase("the agent stops renewing (paused), its session still open");
    agent.renew.store(false, Ordering::SeqCst);
    let paused_at = Instant::now();
    let (quiesced_at, call) = next_call(&mut calls).await;
    let Call::CsiSet(set) = call else {
        panic!("expected the SDK's CSI set to QUIESCED, got {call:?}");
    };
    assert_eq!(
        (set.si.as_str(), set.ha_state, set.epoch),
        ("si1", HaState::Quiesced, 7)
    );
    assert!(
        quiesced_at - paused_at >= Duration::from_millis(LEASE_MS / 2),
        "quiesced {:?} after renewals stopped: before the lease ran out",
        quiesced_at - paused_at
    );
    assert!(!session.lease_valid());
    assert!(session.supervised(), "the session itself never broke");
    let expired = agent
        .event(
            "belief with the lease expired",
            |e| matches!(e, SessionEvent::Belief { belief, .. } if belief.lease_expired),
        )
        .await;
    let SessionEvent::Belief { belief, .. } = expired else {
        unreachable!()
    };
    assert_eq!(belief.csis.len(), 1);
    assert_eq!(belief.csis[0].ha_state, pb::HaState::Quiesced as i32);

    phase("an ACTIVE directive while the lease is out is refused after a bounded wait");
    let r = agent
        .hub
        .invoke("c1", csi_set("si1", pb::HaState::Active, 7), INVOKE)
        .await;
    assert!(matches!(r, Err(InvokeError::Failed { .. })), "{r:?}");

    phase("renewals resume: the agent hears the belief again and may restore the active");
    agent.renew.store(true, Ordering::SeqCst);
    agent
        .event(
            "belief with the lease renewed",
            |e| matches!(e, SessionEvent::Belief { belief, .. } if !belief.lease_expired),
        )
        .await;
    assert!(session.lease_valid());
    let r = agent
        .hub
        .invoke("c1", csi_set("si1", pb::HaState::Active, 7), INVOKE)
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        session.assignments(),
        vec![("si1".into(), "si1-csi".into(), HaState::Active, 7)]
    );
    agent.stop.trigger();
    let _ = within("serve returns", &mut agent.served).await;
}
