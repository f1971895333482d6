//! Promise 1 where the components stand: three real agents running the counter example as a 2N
//! group, each counter logging its own HA transitions with timestamps (`NINES_COUNTER_DIR`).
//! Each story injects a fault and then checks, from the components' own logs, that no two
//! components ever believed themselves active for the SI at the same time.
//!
//! - The agent hosting the active is paused (SIGSTOP) for 3 s while its components keep running:
//!   the active's SDK stops it at its lease deadline on its own, before the standby is made
//!   active elsewhere, and after the pause the cluster converges again.
//! - The agent hosting the active is paused for 400 ms: longer than its lease (the component
//!   stops acting at its deadline) but shorter than failure detection, so it comes back before
//!   the cluster declares it down; the active resumes, at the same epoch, once the lease returns.
//! - The leader's agent (not the active's) is paused for 3 s: the active's checkpoint writes
//!   through the old leader fail fast once a new leader is elected, the time spent waiting on
//!   nines does not count against its watchdog, and nothing fails over.
//! - Two failovers in a row: the active is killed, and its successor is killed as soon as it
//!   is confirmed active.
//! - The active component hangs (SIGSTOP): its watchdog catches it, and its process is killed
//!   before its standby is made active.
//! - The active's node is drained (`nines admin node drain`): a switchover, the active quiesced
//!   before the standby is made active, then the node leaves.
//! - The active's agent gets SIGTERM: a switchover before it stops; restarted, it unlocks its
//!   node again.

mod promise;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nines_cli::local::{LocalCluster, LocalOptions};
use promise::*;
use serde_json::Value;

struct Story {
    c: LocalCluster,
    counter_dir: tempfile::TempDir,
}

impl Story {
    fn start() -> Story {
        Story::start_with(String::new())
    }

    /// With `extra_config` appended to every agent's config.
    fn start_with(extra_config: String) -> Story {
        let counter_dir = tempfile::tempdir().expect("tempdir");
        let opts = LocalOptions {
            amf_model: Some(model_path()),
            env: vec![(
                "NINES_COUNTER_DIR".into(),
                counter_dir.path().display().to_string(),
            )],
            extra_config,
            ..Default::default()
        };
        let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
        Story { c, counter_dir }
    }

    /// `nines amf status -o json` through `endpoints`.
    fn status(&self, endpoints: &[String]) -> Option<Value> {
        let eps = endpoints.join(",");
        let out = nines(&["amf", "status", "-o", "json", "--endpoints", &eps]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Wait for the 2N assignment, then let the active count for a while; the status, the active
    /// SU and its epoch.
    async fn counting(&self, eps: &[String]) -> (Value, String, u64) {
        let st = self
            .wait_for("2N assignment", eps, |s| settled(s).is_some())
            .await;
        let (active, epoch) = settled(&st).expect("settled");
        tokio::time::sleep(Duration::from_millis(800)).await;
        (st, active, epoch)
    }

    async fn wait_for(&self, what: &str, eps: &[String], pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LONG;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(st) = self.status(eps) {
                if pred(&st) {
                    return st;
                }
                last = st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{what}: not within {LONG:?}\nlast status: {last:#}\ncounter intervals: {:#?}",
            believed_active(self.counter_dir.path())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agents_active_stops_at_its_lease_before_the_standby_takes_over() {
    let story = Story::start();
    let all = story.c.endpoints();
    eprintln!("phase: wait for active + standby, let the active count");
    let (st, active, epoch) = story.counting(&all).await;
    let node = node_of(&st, &active);

    eprintln!("phase: SIGSTOP the agent of node {node} (its components keep running) for 3 s");
    let pid = story.c.pid(node).expect("the agent runs");
    let others: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != node)
        .map(|(_, e)| e.clone())
        .collect();
    let paused_at = Instant::now();
    let paused_at_ms = now_ms();
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let moved = story
        .wait_for("the standby made active elsewhere", &others, |s| {
            active_su(s).is_some_and(|(su, e)| su != active && e > epoch)
        })
        .await;
    let pause = Duration::from_secs(3);
    tokio::time::sleep(pause.saturating_sub(paused_at.elapsed())).await;
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    eprintln!("phase: resumed; the cluster settles again");
    let (new_active, _) = active_su(&moved).expect("an active");
    story
        .wait_for("settled after the pause", &all, |s| {
            settled(s).is_some_and(|(su, _)| su == new_active)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("phase: from the counters' own logs, never two actives");
    assert_never_two_actives(story.counter_dir.path(), &BTreeMap::new(), 2);
    let intervals = believed_active(story.counter_dir.path());
    let old = intervals
        .iter()
        .find(|b| b.epoch == epoch)
        .expect("the old active's interval");
    let stopped_ms = old
        .to_ms
        .expect("an open interval overlaps its successor: the check above fails first")
        as i64;
    let next = intervals
        .iter()
        .find(|b| b.epoch > epoch && b.from_ms >= paused_at_ms)
        .expect("the new active's interval");
    eprintln!(
        "figures: the old active stopped {} ms after the pause began; the new one started {} ms \
         after it",
        stopped_ms - paused_at_ms as i64,
        next.from_ms as i64 - paused_at_ms as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fenced_briefly_resumes_its_active_when_the_lease_returns() {
    // Failure detection slowed to 2 s, so a 600 ms pause outlives the 300 ms lease (the node
    // fences) but never the detection: the cluster must not fail the node over.
    let story = Story::start_with("[heartbeat]\ntimeout_ms = 2000\n".into());
    let all = story.c.endpoints();
    let (st, active, epoch) = story.counting(&all).await;
    let node = node_of(&st, &active);

    eprintln!("phase: SIGSTOP node {node}'s agent for 600 ms (lease 300 ms, detection 2 s)");
    let pid = story.c.pid(node).expect("the agent runs");
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(600)).await;
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    eprintln!("phase: the lease returns; the same component is active again, at the same epoch");
    story
        .wait_for("the old active believing it is active again", &all, |s| {
            settled(s) == Some((active.clone(), epoch))
                && s["belief_mismatches"].as_array().is_some_and(Vec::is_empty)
                && s["components"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["su"] == active.as_str()
                            && c["belief"]["assignments"][0]["ha_state"] == "active"
                    })
                })
        })
        .await;
    assert_never_two_actives(story.counter_dir.path(), &BTreeMap::new(), 1);
    let intervals = believed_active(story.counter_dir.path());
    let runs: Vec<&Believed> = intervals.iter().filter(|b| b.epoch == epoch).collect();
    assert!(
        runs.len() >= 2 && runs[0].to_ms.is_some(),
        "the active should have stopped at its lease deadline and resumed after: {intervals:#?}"
    );
    assert!(
        intervals.iter().all(|b| b.epoch == epoch),
        "no other component may have been made active (no failover): {intervals:#?}"
    );
    let history = nines(&["amf", "history", "--endpoints", &all.join(",")]);
    let h = String::from_utf8_lossy(&history.stdout);
    assert!(
        !h.contains("is down") && !h.contains("lease ran out"),
        "the node was not failed over or reported:\n{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_does_not_fail_over_a_healthy_active() {
    let story = Story::start();
    let all = story.c.endpoints();
    let st = story
        .wait_for("2N assignment", &all, |s| settled(s).is_some())
        .await;
    let (mut active, mut epoch) = settled(&st).expect("settled");
    let leader = story.c.wait_leader(LONG).await.expect("a leader");
    if node_of(&st, &active) == leader {
        eprintln!("phase: the active runs on the leader's node: swap it away first");
        let out = nines(&["admin", "si-swap", SI, "--endpoints", &all.join(",")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = story
            .wait_for("swapped", &all, |s| {
                settled(s).is_some_and(|(su, e)| su != active && e > epoch)
            })
            .await;
        (active, epoch) = settled(&st).expect("settled");
        assert_ne!(
            node_of(&st, &active),
            leader,
            "the standby was on another node"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    eprintln!("phase: SIGSTOP the leader's agent (node {leader}) for 3 s");
    let pid = story.c.pid(leader).expect("the leader runs");
    let paused_at_ms = now_ms();
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let resumed_at_ms = now_ms();
    let st = story
        .wait_for("settled after the pause", &all, |s| settled(s).is_some())
        .await;
    assert_eq!(
        active_su(&st),
        Some((active.clone(), epoch)),
        "the healthy active was failed over: {st:#}"
    );
    let comp = st["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["su"] == active.as_str())
        .and_then(|c| c["name"].as_str())
        .expect("the active's component")
        .to_string();
    let log = std::fs::read_to_string(story.counter_dir.path().join(format!("{comp}.log")))
        .expect("the active's log");
    let wrote_during = log
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("wrote"))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .filter(|ms| (paused_at_ms..resumed_at_ms).contains(ms))
        .count();
    assert!(
        wrote_during > 0,
        "the active never wrote through the new leader while the old one was paused:\n{log}"
    );
    let first_after_ms = log
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("wrote"))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .find(|ms| *ms > paused_at_ms + 150)
        .map(|ms| ms - paused_at_ms);
    eprintln!(
        "figures: {wrote_during} writes acknowledged while the leader was paused; the first more \
         than 150 ms into the pause came {first_after_ms:?} ms after it began"
    );
    assert_never_two_actives(story.counter_dir.path(), &BTreeMap::new(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failovers_in_a_row_never_leave_two_actives() {
    let story = Story::start();
    let all = story.c.endpoints();
    let (st, first, epoch) = story.counting(&all).await;
    let mut killed = BTreeMap::new();
    let (comp, pid) = component_of(&st, &first);
    eprintln!("phase: kill -9 the active {comp}");
    killed.insert(comp, now_ms());
    signal(pid, nix::sys::signal::Signal::SIGKILL);

    let deadline = Instant::now() + LONG;
    let (second, second_epoch, st) = loop {
        assert!(Instant::now() < deadline, "no successor confirmed active");
        if let Some(st) = story.status(&all) {
            let si = st["sis"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == SI));
            let confirmed = si
                .and_then(|si| si["assignments"].as_array())
                .and_then(|a| {
                    a.iter().find(|x| {
                        x["ha_state"] == "active"
                            && x["pending"].is_null()
                            && x["su"] != first.as_str()
                    })
                })
                .map(|x| {
                    (
                        x["su"].as_str().unwrap_or_default().to_string(),
                        x["epoch"].as_u64().unwrap_or(0),
                    )
                });
            if let Some((su, e)) = confirmed.filter(|(_, e)| *e > epoch) {
                break (su, e, st);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (comp, pid) = component_of(&st, &second);
    eprintln!("phase: {second} confirmed active: kill -9 its {comp} at once");
    killed.insert(comp, now_ms());
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    story
        .wait_for("a third active, the SI protected again", &all, |s| {
            settled(s).is_some_and(|(_, e)| e > second_epoch)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The third active may be the first SU again (repaired in the meantime) or the spare.
    assert_never_two_actives(story.counter_dir.path(), &killed, 2);
    let intervals = believed_active(story.counter_dir.path());
    assert!(
        intervals.len() >= 3,
        "three actives in a row expected: {intervals:#?}\n{}",
        raw_logs(story.counter_dir.path())
    );
}

/// Watch process `pid` (bounded by [`LONG`]) and return the earliest moment it may have died:
/// just after it was last seen alive, ms since the Unix epoch (a zombie counts as dead); `None`
/// if it outlived the watch. Two actives are then found only if it was seen alive after the
/// other started, which no delay of this watcher can make up.
fn watch_death(pid: u32) -> std::thread::JoinHandle<Option<u64>> {
    std::thread::spawn(move || {
        let until = Instant::now() + LONG;
        // The time taken just before the last look that found it alive: it was alive at or
        // after this. Taking that, not the time it was first seen dead, keeps a watcher that
        // the loaded machine left unscheduled for a while from dating the death late (seen in
        // the soak: 20 ms late, after the standby's start, though the agent had reaped the
        // process before it reported the failure).
        let mut alive_at = now_ms();
        while Instant::now() < until {
            let before = now_ms();
            let dead = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z')),
            };
            if dead {
                return Some(alive_at + 1);
            }
            alive_at = before;
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_active_is_killed_before_its_standby_takes_over() {
    let story = Story::start();
    let all = story.c.endpoints();
    let (st, active, epoch) = story.counting(&all).await;
    let (comp, pid) = component_of(&st, &active);
    eprintln!("phase: SIGSTOP the active component {comp} (pid {pid}): its watchdog must catch it");
    let death = watch_death(pid);
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    story
        .wait_for("the standby made active", &all, |s| {
            settled(s).is_some_and(|(su, e)| su != active && e > epoch)
        })
        .await;
    let died_at = death
        .join()
        .expect("the watcher")
        .expect("the hung component's process was never killed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("phase: the hung process died before the standby believed itself active");
    let ended = BTreeMap::from([(comp, died_at)]);
    assert_never_two_actives(story.counter_dir.path(), &ended, 2);
}

/// The old active (at `epoch`) gave the SI up with a `set SI quiesced` line (a graceful hand-over
/// quiesces it before the next active starts; a quiesce directive carries an epoch of its own).
fn assert_quiesced_first(dir: &Path, epoch: u64) {
    let intervals = believed_active(dir);
    let old = intervals
        .iter()
        .find(|b| b.epoch == epoch)
        .unwrap_or_else(|| panic!("no interval at epoch {epoch}: {intervals:#?}"));
    let log = std::fs::read_to_string(dir.join(format!("{}.log", old.component))).expect("log");
    let ended_by = old.to_ms.and_then(|end| {
        log.lines()
            .find(|l| l.starts_with(&format!("{end} set {SI} ")) && !l.contains(" active "))
    });
    assert!(
        ended_by.is_some_and(|l| l.contains(" quiesced ")),
        "the old active was not quiesced (a graceful switchover quiesces it first):\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_actives_node_is_a_switchover() {
    let story = Story::start();
    let all = story.c.endpoints();
    let (st, active, epoch) = story.counting(&all).await;
    let node = node_of(&st, &active);

    eprintln!("phase: drain node {node}, which hosts the active");
    let id = node.to_string();
    let out = nines(&[
        "admin",
        "node",
        "drain",
        "--id",
        &id,
        "--endpoints",
        &all.join(","),
    ]);
    assert!(
        out.status.success(),
        "drain failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    story
        .wait_for("the active on another node", &all, |s| {
            active_su(s).is_some_and(|(su, e)| su != active && e > epoch)
        })
        .await;
    eprintln!("phase: status shows every component's belief, matching the agreed state");
    let st = story
        .wait_for("beliefs that agree, the new active's included", &all, |s| {
            let Some((su, e)) = active_su(s) else {
                return false;
            };
            let believes_active = s["components"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["su"] == su.as_str()
                        && c["belief"]["assignments"].as_array().is_some_and(|a| {
                            a.iter()
                                .any(|x| x["ha_state"] == "active" && x["epoch"] == e)
                        })
                })
            });
            believes_active && s["belief_mismatches"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    for c in st["components"].as_array().expect("components") {
        if !c["pid"].is_null() {
            assert_eq!(c["belief"]["agrees"], true, "{c:#}");
        }
    }
    eprintln!("phase: from the counters' own logs, never two actives, the old one quiesced first");
    assert_never_two_actives(story.counter_dir.path(), &BTreeMap::new(), 2);
    assert_quiesced_first(story.counter_dir.path(), epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_actives_agent_is_a_switchover_and_the_restart_unlocks() {
    let mut story = Story::start();
    let all = story.c.endpoints();
    let (st, active, epoch) = story.counting(&all).await;
    let node = node_of(&st, &active);

    eprintln!("phase: SIGTERM the agent of node {node}, which hosts the active");
    let code = story
        .c
        .terminate(node, Duration::from_secs(30))
        .expect("the agent stops");
    assert_eq!(code, Some(0), "a planned stop exits 0");
    let others: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != node)
        .map(|(_, e)| e.clone())
        .collect();
    story
        .wait_for("the active on another node", &others, |s| {
            active_su(s).is_some_and(|(su, e)| su != active && e > epoch)
        })
        .await;
    assert_never_two_actives(story.counter_dir.path(), &BTreeMap::new(), 2);
    assert_quiesced_first(story.counter_dir.path(), epoch);

    eprintln!("phase: restarted, the agent unlocks its node: its SU is back in service");
    story.c.spawn(node).expect("restart the agent");
    let name = format!("n{node}");
    story
        .wait_for("the node's SU unlocked and enabled", &all, |s| {
            s["sus"].as_array().is_some_and(|sus| {
                sus.iter().any(|u| {
                    u["node"] == name.as_str()
                        && u["admin_state"] == "unlocked"
                        && u["readiness"] == "in_service"
                })
            })
        })
        .await;
}

#[test]
fn the_interval_check_fails_on_overlap_and_on_seeing_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(format!("{name}.log")), text).expect("write log")
    };
    write(
        "a",
        "1000 started - 11 0\n1100 set counter-si active 5\n1500 set counter-si quiesced 5\n",
    );
    write(
        "b",
        "1000 started - 12 0\n1200 set counter-si standby 5\n1500 set counter-si active 6\n",
    );
    let none = BTreeMap::new();
    assert_never_two_actives(dir.path(), &none, 2);
    let three = std::panic::catch_unwind(|| assert_never_two_actives(dir.path(), &none, 3));
    assert!(
        three.is_err(),
        "fewer active components than needed must fail"
    );
    write(
        "b",
        "1000 started - 12 0\n1200 set counter-si standby 5\n1499 set counter-si active 6\n",
    );
    let overlap = std::panic::catch_unwind(|| assert_never_two_actives(dir.path(), &none, 2));
    assert!(overlap.is_err(), "an overlap of 1 ms must fail");
    write("a", "1000 started - 11 0\n1100 set counter-si active 5\n");
    let open = std::panic::catch_unwind(|| assert_never_two_actives(dir.path(), &none, 2));
    assert!(
        open.is_err(),
        "an active that never gave up overlaps its successor"
    );
    let killed = BTreeMap::from([("a".to_string(), 1400)]);
    assert_never_two_actives(dir.path(), &killed, 2);
}
