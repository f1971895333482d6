//! The component lease's last resort, in a real process: a component whose quiesce never returns
//! after its lease ran out is ended by its own SDK (SIGKILL of itself), with no help from the
//! agent. The test runs itself as the component: the parent serves a session hub and spawns this
//! same test binary with `NINES_TEST_LEASE_CHILD` set, which then plays a component whose CSI
//! set to QUIESCED hangs.

use std::{
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nines_agent::{SessionEvent, SessionHub};
use nines_core::shutdown::Shutdown;
use nines_proto::amf::v1::{self as pb, invocation::Kind};
use nines_sdk::{Callbacks, CsiSet, HaState, Session};

const CHILD_ENV: &str = "NINES_TEST_LEASE_CHILD";
const TEST_NAME: &str = "a_component_whose_quiesce_hangs_is_ended_by_its_own_sdk";
const LEASE_MS: u64 = 300;
const REACTION_MS: u64 = 100;
const WAIT: Duration = Duration::from_secs(10);

/// A component whose CSI set to QUIESCED never returns.
struct HangsOnQuiesce;

impl Callbacks for HangsOnQuiesce {
    async fn csi_set(&self, set: CsiSet) -> Result<(), String> {
        if set.ha_state == HaState::Quiesced {
            eprintln!("child: quiesce called; hanging");
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn csi_remove(&self, _si: &str, _csi: &str) -> Result<(), String> {
        Ok(())
    }
    async fn terminate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The component's side: register, take what the agent gives, never exit by itself.
async fn child() {
    let session = Session::connect(HangsOnQuiesce)
        .await
        .expect("the child registers");
    let _ = tokio::time::timeout(WAIT * 3, session.closed()).await;
    // Still alive: the SDK did not end the process. The parent sees this exit code.
    std::process::exit(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_whose_quiesce_hangs_is_ended_by_its_own_sdk() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child().await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let hub = SessionHub::new("n1".into(), LEASE_MS, REACTION_MS);
    let mut events = hub.subscribe();
    let (stop, signal) = Shutdown::new();
    tokio::spawn(hub.clone().serve(socket.clone(), signal.clone()));
    let renew = Arc::new(AtomicBool::new(true));
    let (renewing, on, mut stopped) = (hub.clone(), renew.clone(), signal);
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

    eprintln!("--- spawn the component (this test binary, as a child)");
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("NINES_COMPONENT", "c1")
        .env("NINES_SOCKET", &socket)
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the child");
    hub.expect("c1", child.id());
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(SessionEvent::Registered { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("the child registered");
    let active = Kind::CsiSet(pb::CsiSet {
        si: "si1".into(),
        csi: "si1-csi".into(),
        ha_state: pb::HaState::Active as i32,
        epoch: 7,
        descriptor: pb::TransitionDescriptor::NewAssign as i32,
        attributes: Default::default(),
        active_component: String::new(),
    });
    assert_eq!(hub.invoke("c1", active, WAIT).await, Ok(()));

    eprintln!("--- renewals stop; the quiesce hangs; the SDK must end the process");
    renew.store(false, Ordering::SeqCst);
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if stopped_at.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the component still ran {WAIT:?} after its lease could have run out");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let after = stopped_at.elapsed();
    stop.trigger();
    eprintln!("child ended {after:?} after renewals stopped: {status:?}");
    assert_eq!(
        status.signal(),
        Some(9),
        "ended by its SDK's SIGKILL, not otherwise: {status:?}"
    );
    assert!(
        after >= Duration::from_millis(LEASE_MS / 2),
        "ended {after:?} after renewals stopped: before the lease could have run out"
    );
}
