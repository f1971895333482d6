//! The node director's process layer against real processes: spawn, watch, terminate, clean up.
//!
//! Each test is a short story in logged phases. Waits are bounded by generous timeouts; no test
//! asserts speed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nines_amf::process::{Exit, ExitKind, ProcessError, ProcessSpec, Supervisor, TerminateOutcome};
use nines_core::ErrorCode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc::Receiver;

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

fn phase(name: &str) {
    eprintln!("--- {name}");
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

async fn next_exit(exits: &mut Receiver<Exit>) -> Exit {
    tokio::time::timeout(WAIT, exits.recv())
        .await
        .expect("an exit arrives in time")
        .expect("the exit channel stays open")
}

/// Process state letter from /proc/<pid>/stat, or None if the process is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ..."; comm may hold spaces, so split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Process group id from /proc/<pid>/stat.
fn proc_pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Whether the process is gone or a zombie waiting for its (non-us) parent.
fn dead(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Waits (bounded) until `cond` holds; for effects we cannot await (another parent's child).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a file a child writes, once it holds a full line.
async fn read_line_file(path: &Path) -> String {
    let mut text = String::new();
    eventually("child wrote its file", || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    })
    .await;
    text.trim().to_owned()
}

#[tokio::test]
async fn killed_from_outside_is_an_unexpected_exit() {
    let (sup, mut exits) = Supervisor::new(8);

    phase("spawn sleep 30");
    let pid = sup.spawn(ProcessSpec::new("c1", "sleep 30")).unwrap();
    assert_eq!(sup.pid("c1"), Some(pid));
    assert_eq!(sup.running(), vec![("c1".to_owned(), pid)]);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(proc_pgrp(pid), Some(pid), "own process group");

    phase("kill -9 from outside");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let exit = next_exit(&mut exits).await;
    assert_eq!(
        exit,
        Exit {
            component: "c1".into(),
            pid,
            kind: ExitKind::Signal(9),
            expected: false
        }
    );
    assert_eq!(sup.pid("c1"), None);
    assert!(sup.running().is_empty());

    phase("cleanup kills what the shell left in the group");
    sup.cleanup("c1", None, &no_env(), WAIT).await.unwrap();
    assert!(exits.try_recv().is_err(), "no second exit for one process");
}

#[tokio::test]
async fn leftovers_of_a_dead_leader_are_killed_by_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let gc_file = dir.path().join("grandchild");
    let (sup, mut exits) = Supervisor::new(8);

    phase("spawn a shell with a background grandchild");
    let mut spec = ProcessSpec::new("leaky", r#"sleep 30 & echo $! > "$GC"; wait"#);
    spec.env.insert("GC".into(), gc_file.display().to_string());
    let pid = sup.spawn(spec).unwrap();
    let grandchild: u32 = read_line_file(&gc_file).await.parse().unwrap();
    assert_eq!(proc_pgrp(grandchild), Some(pid));

    phase("the leader dies alone; the grandchild lives on in the group");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let exit = next_exit(&mut exits).await;
    assert_eq!((exit.pid, exit.expected), (pid, false));
    assert!(!dead(grandchild), "only the leader was killed");

    phase("cleanup of the no longer running component kills the leftover");
    sup.cleanup("leaky", None, &no_env(), WAIT).await.unwrap();
    eventually("grandchild dies", || dead(grandchild)).await;
}

#[tokio::test]
async fn environment_reaches_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (sup, mut exits) = Supervisor::new(8);

    phase("child writes $NINES_COMPONENT");
    let mut spec = ProcessSpec::new("env-comp", r#"printf '%s\n' "$NINES_COMPONENT" > "$OUT""#);
    spec.env.insert("NINES_COMPONENT".into(), "env-comp".into());
    spec.env.insert("OUT".into(), out.display().to_string());
    sup.spawn(spec).unwrap();

    phase("it exits 0, which is still an exit event");
    let exit = next_exit(&mut exits).await;
    assert_eq!(exit.kind, ExitKind::Code(0));
    assert!(!exit.expected);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "env-comp\n");
}

#[tokio::test]
async fn output_is_appended_to_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/nested/comp.log");
    let (sup, mut exits) = Supervisor::new(8);

    phase("spawn with a log path in directories that do not exist yet");
    let mut spec = ProcessSpec::new("log-comp", "echo to-stdout; echo to-stderr >&2; exit 3");
    spec.log_path = Some(log.clone());
    sup.spawn(spec.clone()).unwrap();
    assert_eq!(next_exit(&mut exits).await.kind, ExitKind::Code(3));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "to-stdout\nto-stderr\n"
    );

    phase("a second run appends");
    sup.spawn(spec).unwrap();
    next_exit(&mut exits).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("to-stdout").count(), 2, "log: {text}");
}

#[tokio::test]
async fn terminate_a_process_that_obeys_sigterm() {
    let (sup, mut exits) = Supervisor::new(8);
    let pid = sup.spawn(ProcessSpec::new("obedient", "sleep 30")).unwrap();

    phase("terminate with SIGTERM");
    let outcome = sup
        .terminate("obedient", None, &no_env(), WAIT)
        .await
        .unwrap();
    assert_eq!(outcome, TerminateOutcome::Terminated);
    assert_eq!(sup.pid("obedient"), None);
    let exit = next_exit(&mut exits).await;
    assert_eq!((exit.pid, exit.expected), (pid, true));
    assert!(matches!(exit.kind, ExitKind::Signal(15)), "{exit:?}");

    phase("terminate again: not running");
    let err = sup
        .terminate("obedient", None, &no_env(), WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::NotExist);
}

#[tokio::test]
async fn terminate_command_gets_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen-pid");
    let (sup, mut exits) = Supervisor::new(8);
    let pid = sup
        .spawn(ProcessSpec::new("cmd-term", "exec sleep 30"))
        .unwrap();

    phase("terminate through a command that kills $NINES_PID");
    let mut env = no_env();
    env.insert("SEEN".into(), seen.display().to_string());
    let cmd = r#"echo "$NINES_PID" > "$SEEN"; kill -TERM "$NINES_PID""#;
    let outcome = sup
        .terminate("cmd-term", Some(cmd), &env, WAIT)
        .await
        .unwrap();
    assert_eq!(outcome, TerminateOutcome::Terminated);
    assert_eq!(read_line_file(&seen).await, pid.to_string());
    let exit = next_exit(&mut exits).await;
    assert_eq!(exit.kind, ExitKind::Signal(15));
    assert!(exit.expected);
}

#[tokio::test]
async fn stubborn_process_times_out_then_cleanup_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let gc_file = dir.path().join("grandchild");
    let (sup, mut exits) = Supervisor::new(8);

    phase("spawn a shell that ignores SIGTERM, with a grandchild that ignores it too");
    let mut spec = ProcessSpec::new(
        "stubborn",
        r#"trap '' TERM; sleep 30 & echo $! > "$GC"; while true; do sleep 0.1; done"#,
    );
    spec.env.insert("GC".into(), gc_file.display().to_string());
    let pid = sup.spawn(spec).unwrap();
    let grandchild: u32 = read_line_file(&gc_file).await.parse().unwrap();
    assert_eq!(
        proc_pgrp(grandchild),
        Some(pid),
        "grandchild is in the group"
    );

    phase("terminate times out");
    let outcome = sup
        .terminate("stubborn", None, &no_env(), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(outcome, TerminateOutcome::TimedOut);
    assert_eq!(sup.pid("stubborn"), Some(pid));
    assert!(!dead(grandchild));

    phase("cleanup kills the group");
    sup.cleanup("stubborn", None, &no_env(), WAIT)
        .await
        .unwrap();
    assert_eq!(sup.pid("stubborn"), None);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "leader reaped"
    );
    eventually("grandchild dies", || dead(grandchild)).await;
    let exit = next_exit(&mut exits).await;
    assert_eq!(
        (exit.pid, exit.kind, exit.expected),
        (pid, ExitKind::Signal(9), true)
    );
}

#[tokio::test]
async fn failing_or_overrunning_cleanup_command_is_cleanup_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (sup, mut exits) = Supervisor::new(8);
    let pid = sup.spawn(ProcessSpec::new("dirty", "sleep 30")).unwrap();

    phase("cleanup command exits 3");
    let err = sup
        .cleanup("dirty", Some("exit 3"), &no_env(), WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, ProcessError::CleanupFailed { .. }), "{err}");
    assert!(err.to_string().contains("exited with code 3"), "{err}");
    assert_eq!(err.component(), "dirty");
    assert_eq!(sup.pid("dirty"), None, "the process is gone all the same");
    assert_eq!(next_exit(&mut exits).await.pid, pid);

    phase("cleanup command overruns");
    let err = sup
        .cleanup(
            "dirty",
            Some("sleep 30"),
            &no_env(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err}");

    phase("cleanup of a component that never ran still runs the command");
    let marker = dir.path().join("marker");
    let mut env = no_env();
    env.insert("MARK".into(), marker.display().to_string());
    sup.cleanup("never-ran", Some(r#"echo ok > "$MARK""#), &env, WAIT)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ok\n");
}

#[tokio::test]
async fn spawning_twice_is_already_running() {
    let (sup, _exits) = Supervisor::new(8);
    let pid = sup.spawn(ProcessSpec::new("twice", "sleep 30")).unwrap();
    let err = sup
        .spawn(ProcessSpec::new("twice", "sleep 30"))
        .unwrap_err();
    assert!(
        matches!(&err, ProcessError::AlreadyRunning { component, pid: p } if component == "twice" && *p == pid),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::Exist);
    assert_eq!(sup.running().len(), 1);
    sup.cleanup("twice", None, &no_env(), WAIT).await.unwrap();
}

#[tokio::test]
async fn bad_working_directory_is_a_spawn_error() {
    let (sup, _exits) = Supervisor::new(8);
    let mut spec = ProcessSpec::new("nowhere", "true");
    spec.cwd = Some("/nonexistent/nines/dir".into());
    let err = sup.spawn(spec).unwrap_err();
    assert!(matches!(err, ProcessError::Spawn { .. }), "{err}");
    assert!(sup.running().is_empty());
}

#[tokio::test]
async fn stop_and_continue_signals_reach_the_group() {
    let (sup, mut exits) = Supervisor::new(8);
    let pid = sup
        .spawn(ProcessSpec::new("drill", "exec sleep 30"))
        .unwrap();

    phase("SIGSTOP");
    sup.signal("drill", Signal::SIGSTOP).unwrap();
    eventually("stopped", || proc_state(pid) == Some('T')).await;

    phase("SIGCONT");
    sup.signal("drill", Signal::SIGCONT).unwrap();
    eventually("running again", || proc_state(pid) == Some('S')).await;
    assert_eq!(sup.pid("drill"), Some(pid), "stop/continue is not an exit");

    let err = sup.signal("absent", Signal::SIGCONT).unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning { .. }));

    phase("a stopped process still terminates gracefully");
    sup.signal("drill", Signal::SIGSTOP).unwrap();
    eventually("stopped again", || proc_state(pid) == Some('T')).await;
    let outcome = sup.terminate("drill", None, &no_env(), WAIT).await.unwrap();
    assert_eq!(outcome, TerminateOutcome::Terminated);
    let exit = next_exit(&mut exits).await;
    assert_eq!((exit.kind, exit.expected), (ExitKind::Signal(15), true));
}

#[tokio::test]
async fn shutdown_all_leaves_nothing_running() {
    let (sup, mut exits) = Supervisor::new(8);

    phase("spawn an obedient, a stubborn and an exec'd component");
    let mut pids = vec![
        sup.spawn(ProcessSpec::new("a", "sleep 30")).unwrap(),
        sup.spawn(ProcessSpec::new(
            "b",
            "trap '' TERM; while true; do sleep 0.1; done",
        ))
        .unwrap(),
        sup.spawn(ProcessSpec::new("c", "exec sleep 30")).unwrap(),
    ];
    assert_eq!(sup.running().len(), 3);

    phase("shutdown with a short grace");
    sup.shutdown_all(Duration::from_millis(500)).await;
    assert!(sup.running().is_empty(), "{:?}", sup.running());

    phase("one expected exit each");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let exit = next_exit(&mut exits).await;
        assert!(exit.expected, "{exit:?}");
        seen.push(exit.pid);
    }
    seen.sort();
    pids.sort();
    assert_eq!(seen, pids);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// A component's command runs under `/bin/sh -c`, which need not exec it: the supervisor reaps
/// the shell, while the component is its child. A stopped child dies of the group's SIGKILL
/// only once the kernel runs it; cleanup returns only after it is gone, so whoever is told the
/// component is dead (the AMF, then a standby made active) can rely on it.
#[tokio::test]
async fn cleanup_returns_only_once_the_shells_child_is_gone_too() {
    let dir = tempfile::tempdir().unwrap();
    let child_file = dir.path().join("child");
    let (sup, _exits) = Supervisor::new(8);

    phase("spawn a shell whose child is the real work, and stop the child");
    let mut spec = ProcessSpec::new("nested", r#"sleep 30 & echo $! > "$CHILD"; wait"#);
    spec.env
        .insert("CHILD".into(), child_file.display().to_string());
    let pid = sup.spawn(spec).unwrap();
    let child: u32 = read_line_file(&child_file).await.parse().unwrap();
    assert_eq!(proc_pgrp(child), Some(pid));
    kill(Pid::from_raw(child as i32), Signal::SIGSTOP).unwrap();

    phase("cleanup: when it returns, no process of the group is alive");
    sup.cleanup("nested", None, &no_env(), WAIT).await.unwrap();
    assert!(
        matches!(proc_state(child), None | Some('Z') | Some('X')),
        "the shell's child still runs after cleanup: {:?}",
        proc_state(child)
    );
}
