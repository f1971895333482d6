//! systemd notifications: a listener standing in for systemd receives what a `Notifier` sends,
//! on a path socket and in the abstract namespace; `WATCHDOG_USEC` parsing from explicit values.
//! No test mutates the process environment.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use nines_watchdog::{watchdog_interval_from, Notifier, NOTIFY_STATE_BYTES_MAX};

/// The next datagram the listener got, as text.
fn recv(listener: &UnixDatagram) -> String {
    let mut buf = [0u8; 8192];
    let n = listener
        .recv(&mut buf)
        .expect("a datagram within the timeout");
    String::from_utf8(buf[..n].to_vec()).expect("utf-8")
}

fn listener_with_timeout(listener: UnixDatagram) -> UnixDatagram {
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    listener
}

#[test]
fn a_path_socket_receives_ready_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let listener = listener_with_timeout(UnixDatagram::bind(&path).expect("bind"));

    let notifier = Notifier::for_path(&path).expect("short path");
    assert!(notifier.enabled());
    notifier.ready();
    notifier.watchdog();
    notifier.status("serving\n3 nodes");
    notifier.stopping();
    notifier
        .notify("RELOADING=1\nMONOTONIC_USEC=5")
        .expect("sent");

    assert_eq!(recv(&listener), "READY=1");
    assert_eq!(recv(&listener), "WATCHDOG=1");
    assert_eq!(
        recv(&listener),
        "STATUS=serving 3 nodes",
        "a status stays one line"
    );
    assert_eq!(recv(&listener), "STOPPING=1");
    assert_eq!(recv(&listener), "RELOADING=1\nMONOTONIC_USEC=5");
}

#[test]
fn the_abstract_namespace_is_reached_through_an_at_sign() {
    let name = format!("nines-watchdog-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("name fits");
    let listener = listener_with_timeout(UnixDatagram::bind_addr(&addr).expect("bind"));

    let notifier = Notifier::from_socket_value(format!("@{name}").as_bytes());
    assert!(notifier.enabled());
    notifier.ready();
    assert_eq!(recv(&listener), "READY=1");
}

#[test]
fn without_a_usable_socket_notifications_are_a_no_op() {
    for value in [&b""[..], b"relative/notify.sock", b"vsock:2:1234"] {
        let notifier = Notifier::from_socket_value(value);
        assert!(!notifier.enabled(), "{value:?}");
        notifier.notify("READY=1").expect("a no-op succeeds");
    }
    let off = Notifier::disabled();
    assert!(!off.enabled());
    off.ready();
}

#[test]
fn errors_are_returned_by_notify_and_only_logged_by_the_helpers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nobody-listens.sock");
    let notifier = Notifier::for_path(&path).expect("short path");
    assert!(notifier.notify("READY=1").is_err(), "no listener");
    notifier.ready(); // logged, not returned, no panic

    let listener = listener_with_timeout(UnixDatagram::bind(&path).expect("bind"));
    let huge = "X".repeat(NOTIFY_STATE_BYTES_MAX + 1);
    let err = notifier.notify(&huge).expect_err("over the limit");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    notifier.watchdog();
    assert_eq!(
        recv(&listener),
        "WATCHDOG=1",
        "the oversized one was not sent"
    );
}

#[test]
fn the_watchdog_interval_is_half_of_watchdog_usec_for_our_pid() {
    let me = 4242;
    let half = |ms| Some(Duration::from_millis(ms));
    assert_eq!(
        watchdog_interval_from(Some("10000000"), None, me),
        half(5_000)
    );
    assert_eq!(
        watchdog_interval_from(Some("3000000"), Some("4242"), me),
        half(1_500)
    );
    assert_eq!(
        watchdog_interval_from(Some("1"), None, me),
        Some(Duration::from_micros(1))
    );
    assert_eq!(
        watchdog_interval_from(Some("3000000"), Some("4243"), me),
        None,
        "another pid's"
    );
    assert_eq!(
        watchdog_interval_from(Some("3000000"), Some("pid"), me),
        None
    );
    assert_eq!(
        watchdog_interval_from(None, Some("4242"), me),
        None,
        "watchdog off"
    );
    assert_eq!(watchdog_interval_from(Some("0"), None, me), None);
    assert_eq!(watchdog_interval_from(Some("-5"), None, me), None);
    assert_eq!(watchdog_interval_from(Some("soon"), None, me), None);
}
