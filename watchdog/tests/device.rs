//! The node watchdog: `NodeWatchdog` against a recording fake device on a paused clock, and
//! `DevWatchdog` against paths that are not watchdog devices (the real open and ioctl paths).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nines_core::shutdown::Shutdown;
use nines_watchdog::{DevWatchdog, DeviceError, NodeWatchdog, WatchdogIo};
use nix::errno::Errno;
use tokio::time::Instant;

/// One call the fake device received, with the paused clock's time since the test's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    SetTimeout(u32),
    Keepalive(u64),
    MagicClose,
    /// Dropped without the magic close: a real device would reset the node.
    DroppedArmed,
}

/// A stand-in for `/dev/watchdog` that records its calls.
#[derive(Debug)]
struct FakeWatchdog {
    calls: Arc<Mutex<Vec<Call>>>,
    origin: Instant,
    /// The timeout it "takes" instead of the one asked for, if any.
    took_secs: Option<u32>,
    /// Fail keepalives from this one on (0-based count of keepalives).
    fail_keepalive_from: Option<usize>,
    /// Refuse `set_timeout`.
    fail_set_timeout: bool,
    closed: bool,
}

impl FakeWatchdog {
    fn new(origin: Instant) -> (Self, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fake = FakeWatchdog {
            calls: Arc::clone(&calls),
            origin,
            took_secs: None,
            fail_keepalive_from: None,
            fail_set_timeout: false,
            closed: false,
        };
        (fake, calls)
    }

    fn record(&self, call: Call) {
        self.calls.lock().expect("not poisoned").push(call);
    }

    fn keepalives(&self) -> usize {
        let calls = self.calls.lock().expect("not poisoned");
        calls
            .iter()
            .filter(|c| matches!(c, Call::Keepalive(_)))
            .count()
    }
}

impl WatchdogIo for FakeWatchdog {
    fn set_timeout(&mut self, secs: u32) -> Result<u32, DeviceError> {
        self.record(Call::SetTimeout(secs));
        if self.fail_set_timeout {
            return Err(DeviceError::Ioctl {
                path: PathBuf::from("/dev/fake"),
                call: "WDIOC_SETTIMEOUT",
                source: Errno::EOPNOTSUPP,
            });
        }
        Ok(self.took_secs.unwrap_or(secs))
    }

    fn keepalive(&mut self) -> Result<(), DeviceError> {
        if self
            .fail_keepalive_from
            .is_some_and(|n| self.keepalives() >= n)
        {
            return Err(DeviceError::Ioctl {
                path: PathBuf::from("/dev/fake"),
                call: "WDIOC_KEEPALIVE",
                source: Errno::EIO,
            });
        }
        let ms = Instant::now().duration_since(self.origin).as_millis();
        self.record(Call::Keepalive(u64::try_from(ms).expect("small")));
        Ok(())
    }

    fn magic_close(mut self: Box<Self>) -> Result<(), DeviceError> {
        self.record(Call::MagicClose);
        self.closed = true;
        Ok(())
    }
}

impl Drop for FakeWatchdog {
    fn drop(&mut self) {
        if !self.closed {
            self.record(Call::DroppedArmed);
        }
    }
}

fn calls_of(calls: &Arc<Mutex<Vec<Call>>>) -> Vec<Call> {
    calls.lock().expect("not poisoned").clone()
}

fn keepalives_at(ms: &[u64]) -> Vec<Call> {
    ms.iter().map(|&m| Call::Keepalive(m)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_healthy_agent_kicks_every_interval_and_a_planned_stop_magic_closes() {
    let origin = Instant::now();
    let (fake, calls) = FakeWatchdog::new(origin);
    let wd = NodeWatchdog::new(fake, 1).expect("fake takes any timeout");
    assert_eq!(wd.timeout_ms(), 1_000);
    let (stop, signal) = Shutdown::new();
    let task = tokio::spawn(wd.run(Duration::from_millis(100), || true, signal));

    tokio::time::sleep(Duration::from_millis(350)).await;
    stop.trigger();
    task.await.expect("no panic").expect("clean stop");

    let mut want = vec![Call::SetTimeout(1)];
    want.extend(keepalives_at(&[0, 100, 200, 300]));
    want.push(Call::MagicClose);
    assert_eq!(calls_of(&calls), want);
}

#[tokio::test(start_paused = true)]
async fn a_hung_agent_stops_kicking_and_resumes_once_its_actives_are_gone() {
    let origin = Instant::now();
    let (fake, calls) = FakeWatchdog::new(origin);
    let wd = NodeWatchdog::new(fake, 2).expect("timeout set");
    // The lease says no from 250 ms until the agent confirms its actives gone at 550 ms.
    let may_kick = move || {
        let ms = Instant::now().duration_since(origin).as_millis();
        !(250..550).contains(&ms)
    };
    let (stop, signal) = Shutdown::new();
    let task = tokio::spawn(wd.run(Duration::from_millis(100), may_kick, signal));

    tokio::time::sleep(Duration::from_millis(750)).await;
    stop.trigger();
    task.await.expect("no panic").expect("clean stop");

    let mut want = vec![Call::SetTimeout(2)];
    want.extend(keepalives_at(&[0, 100, 200, 600, 700]));
    want.push(Call::MagicClose);
    assert_eq!(calls_of(&calls), want);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_kicking_is_forbidden_leaves_the_device_armed() {
    let origin = Instant::now();
    let (fake, calls) = FakeWatchdog::new(origin);
    let wd = NodeWatchdog::new(fake, 1).expect("timeout set");
    let allowed = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&allowed);
    let (stop, signal) = Shutdown::new();
    let task = tokio::spawn(wd.run(
        Duration::from_millis(100),
        move || flag.load(Ordering::SeqCst),
        signal,
    ));

    tokio::time::sleep(Duration::from_millis(150)).await;
    allowed.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.trigger();
    task.await.expect("no panic").expect("stops");

    let mut want = vec![Call::SetTimeout(1)];
    want.extend(keepalives_at(&[0, 100]));
    want.push(Call::DroppedArmed);
    assert_eq!(calls_of(&calls), want, "no magic close for a fenced node");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trigger_is_no_planned_stop() {
    let origin = Instant::now();
    let (fake, calls) = FakeWatchdog::new(origin);
    let wd = NodeWatchdog::new(fake, 1).expect("timeout set");
    let (stop, signal) = Shutdown::new();
    let task = tokio::spawn(wd.run(Duration::from_millis(100), || true, signal));
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stop);
    task.await.expect("no panic").expect("stops");
    assert_eq!(
        calls_of(&calls),
        vec![Call::SetTimeout(1), Call::Keepalive(0), Call::DroppedArmed]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_kick_ends_the_run_with_the_device_armed() {
    let origin = Instant::now();
    let (mut fake, calls) = FakeWatchdog::new(origin);
    fake.fail_keepalive_from = Some(2);
    fake.took_secs = Some(3);
    let wd = NodeWatchdog::new(fake, 1).expect("timeout set");
    assert_eq!(wd.timeout_secs(), 3, "the device's own timeout counts");
    let (_stop, signal) = Shutdown::new();
    let err = wd
        .run(Duration::from_millis(100), || true, signal)
        .await
        .expect_err("the third kick fails");
    assert!(err.to_string().contains("WDIOC_KEEPALIVE"), "{err}");
    let mut want = vec![Call::SetTimeout(1)];
    want.extend(keepalives_at(&[0, 100]));
    want.push(Call::DroppedArmed);
    assert_eq!(calls_of(&calls), want);
}

#[test]
fn a_device_that_refuses_the_timeout_is_stopped_not_left_armed() {
    let (mut fake, calls) = FakeWatchdog::new(Instant::now());
    fake.fail_set_timeout = true;
    let err = NodeWatchdog::new(fake, 1).expect_err("refused");
    assert!(matches!(
        err,
        DeviceError::Ioctl {
            call: "WDIOC_SETTIMEOUT",
            ..
        }
    ));
    assert_eq!(
        calls_of(&calls),
        vec![Call::SetTimeout(1), Call::MagicClose]
    );
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "shorter than the device timeout")]
async fn an_interval_as_long_as_the_timeout_is_refused() {
    let (fake, _calls) = FakeWatchdog::new(Instant::now());
    let wd = NodeWatchdog::new(fake, 1).expect("timeout set");
    let _ = wd
        .run(
            Duration::from_secs(1),
            || true,
            nines_core::shutdown::ShutdownSignal::never(),
        )
        .await;
}

#[test]
fn a_regular_file_opens_but_refuses_the_watchdog_ioctls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("not-a-watchdog");
    std::fs::write(&path, b"").expect("create file");
    let mut dev = DevWatchdog::open(&path).expect("a regular file opens for writing");
    assert_eq!(dev.path(), path);

    let err = dev.set_timeout(5).expect_err("not a watchdog");
    match &err {
        DeviceError::Ioctl {
            path: p,
            call,
            source,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*call, "WDIOC_SETTIMEOUT");
            assert_eq!(*source, Errno::ENOTTY);
        }
        other => panic!("want an Ioctl error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("WDIOC_SETTIMEOUT") && msg.contains("softdog"),
        "{msg}"
    );

    let err = dev.keepalive().expect_err("not a watchdog");
    assert!(matches!(
        err,
        DeviceError::Ioctl {
            call: "WDIOC_KEEPALIVE",
            source: Errno::ENOTTY,
            ..
        }
    ));

    Box::new(dev)
        .magic_close()
        .expect("the magic byte is a plain write");
    assert_eq!(std::fs::read(&path).expect("read back"), b"V");
}

#[test]
fn a_missing_device_is_an_open_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("watchdog-missing");
    let err = DevWatchdog::open(&path).expect_err("missing");
    assert!(matches!(&err, DeviceError::Open { path: p, .. } if p == &path));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("[watchdog] device"), "{msg}");
    assert!(!path.exists(), "open must not create the device path");
}
