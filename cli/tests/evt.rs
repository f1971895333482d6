//! The event service on three real agents, through the `nines evt` commands and the SDK's
//! `EventClient`: retained events reach late subscribers (and expired ones do not), filters
//! pass only matching events, subscribers on different agents see one order with no gaps or
//! duplicates — also while the leader is killed and restarted — a subscriber that resumes
//! from its last id misses nothing, and limits set through `nines evt limits set` hold on every
//! agent.

use std::{collections::BTreeSet, process::Command, time::Duration};

use nines_cli::local::{LocalCluster, LocalOptions};
use nines_sdk::{Delivery, Event, EventClient, EventStream, Publish, Subscription};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(700);

fn nines(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run nines")
}

/// Run `nines` with `--endpoints eps`; panics with its stderr unless it succeeds; stdout.
fn nines_ok(eps: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--endpoints", eps]);
    let out = nines(&all);
    assert!(
        out.status.success(),
        "nines {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The JSON objects of a `-o json` stream, one per line.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The next item of `s`, within `limit`; `None` if nothing came.
async fn next_within(s: &mut EventStream, limit: Duration) -> Option<Delivery> {
    match tokio::time::timeout(limit, s.next()).await {
        Err(_elapsed) => None,
        Ok(None) => panic!("the stream ended"),
        Ok(Some(Err(e))) => panic!("the stream failed: {e}"),
        Ok(Some(Ok(d))) => Some(d),
    }
}

/// The next event of `s` (a lost notice fails the test), within `LONG`.
async fn next_event(s: &mut EventStream) -> Event {
    match next_within(s, LONG).await {
        Some(Delivery::Event(e)) => e,
        Some(Delivery::Lost(n)) => panic!("lost {n} events"),
        None => panic!("no event within {LONG:?}"),
    }
}

/// Assert that nothing more arrives on `s` for a while.
async fn assert_quiet(s: &mut EventStream, why: &str) {
    if let Some(d) = next_within(s, QUIET).await {
        panic!("{why}: got {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_publish_subscribe_retention_filters_and_bad_input() {
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints().join(",");
    let client = EventClient::connect(&c.endpoints()).await.expect("connect");

    eprintln!("phase: publish 3 retained events with patterns and priorities");
    let mut ids = Vec::new();
    for (kind, prio, data) in [
        ("link-down", "2", "eth0 lost carrier"),
        ("power", "0", "psu 2 failed"),
        ("link-up", "1", "eth0 back"),
    ] {
        let out = nines_ok(
            &eps,
            &[
                "evt",
                "publish",
                "alarms",
                "--pattern",
                &format!("kind={kind}"),
                "--pattern",
                "site=lab",
                "--priority",
                prio,
                "--retention",
                "60s",
                "--publisher",
                "test",
                "--data",
                data,
                "-o",
                "json",
            ],
        );
        let v: Value = serde_json::from_str(out.trim()).expect("publish json");
        assert_eq!(v["channel"], "alarms");
        ids.push(v["id"].as_u64().expect("id"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    eprintln!("phase: a late subscriber from 0 gets the retained events, highest priority first");
    let out = nines_ok(
        &eps,
        &[
            "evt",
            "subscribe",
            "alarms",
            "--from",
            "0",
            "--count",
            "3",
            "-o",
            "json",
        ],
    );
    let items = json_lines(&out);
    assert_eq!(items.len(), 3, "{out}");
    let prios: Vec<u64> = items
        .iter()
        .map(|v| v["priority"].as_u64().expect("p"))
        .collect();
    assert_eq!(prios, [0, 1, 2], "waiting events go by priority: {out}");
    let got: BTreeSet<u64> = items
        .iter()
        .map(|v| v["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(got, ids.iter().copied().collect(), "{out}");
    let power = &items[0];
    assert_eq!(power["channel"], "alarms");
    assert_eq!(power["publisher"], "test");
    assert_eq!(power["data"], "psu 2 failed");
    assert!(power.get("data_b64").is_none(), "{power}");
    assert_eq!(
        power["patterns"],
        serde_json::json!([{"name": "kind", "value": "power"}, {"name": "site", "value": "lab"}])
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let at = power["published_at"].as_u64().expect("published_at");
    assert!(
        now_ms.abs_diff(at) < 120_000,
        "published_at {at} is ms since the epoch"
    );

    let out = nines_ok(&eps, &["evt", "subscribe", "alarms", "--count", "1"]);
    assert!(
        out.starts_with(&format!(
            "#{} [p0] test {{kind=power,site=lab}} psu 2 failed",
            ids[1]
        )),
        "{out}"
    );
    let out = nines_ok(&eps, &["evt", "channels", "-o", "json"]);
    let v: Value = serde_json::from_str(out.trim()).expect("channels json");
    let alarms = v["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["name"] == "alarms")
        .unwrap_or_else(|| panic!("no alarms channel: {v}"))
        .clone();
    assert_eq!(alarms["last_id"].as_u64(), ids.last().copied());
    assert_eq!(alarms["retained"], 3);
    let out = nines_ok(&eps, &["evt", "channels"]);
    assert!(out.starts_with("NAME") && out.contains("LAST ID") && out.contains("alarms"));

    eprintln!("phase: a prefix filter passes only matching events");
    let out = nines_ok(
        &eps,
        &[
            "evt",
            "subscribe",
            "alarms",
            "--filter",
            "prefix:kind=link-",
            "--filter",
            "all",
            "--count",
            "2",
            "-o",
            "json",
        ],
    );
    let kinds: BTreeSet<String> = json_lines(&out)
        .iter()
        .map(|v| {
            v["patterns"][0]["value"]
                .as_str()
                .expect("value")
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["link-down", "link-up"].map(String::from).into());
    let mut s = client
        .subscribe(&Subscription::new("alarms").filter(nines_sdk::Filter::prefix("link-")))
        .await
        .expect("subscribe");
    for _ in 0..2 {
        let e = next_event(&mut s).await;
        assert!(e.patterns[0].1.starts_with(b"link-"), "{e:?}");
    }
    assert_quiet(&mut s, "the power event does not pass the filter").await;
    client
        .publish(&Publish::new("alarms", "x").pattern("kind", "power"))
        .await
        .expect("publish");
    let id = client
        .publish(&Publish::new("alarms", "y").pattern("kind", "link-flap"))
        .await
        .expect("publish");
    assert_eq!(
        next_event(&mut s).await.id,
        id,
        "live events are filtered too"
    );
    drop(s);

    eprintln!("phase: retention: 1 s and 60 s; a subscriber joining after 2 s gets the 60 s one");
    let short = nines_ok(
        &eps,
        &[
            "evt",
            "publish",
            "ret",
            "--retention",
            "1s",
            "--data",
            "short",
        ],
    );
    let long = nines_ok(
        &eps,
        &[
            "evt",
            "publish",
            "ret",
            "--retention",
            "60s",
            "--data",
            "long",
        ],
    );
    let long_id: u64 = long.trim().parse().expect("the id");
    assert!(short.trim().parse::<u64>().expect("the id") < long_id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = nines_ok(
        &eps,
        &[
            "evt",
            "subscribe",
            "ret",
            "--from",
            "0",
            "--count",
            "1",
            "-o",
            "json",
        ],
    );
    let items = json_lines(&out);
    assert_eq!(items[0]["id"].as_u64(), Some(long_id), "{out}");
    assert_eq!(items[0]["data"], "long");
    let mut s = client
        .subscribe(&Subscription::new("ret"))
        .await
        .expect("subscribe");
    assert_eq!(next_event(&mut s).await.id, long_id);
    assert_quiet(&mut s, "the expired event is not delivered").await;

    eprintln!("phase: bad input is refused with a reason");
    let out = nines(&[
        "evt",
        "subscribe",
        "c",
        "--filter",
        "bogus",
        "--endpoints",
        &eps,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--filter") && err.contains("bogus"), "{err}");
    let out = nines(&["evt", "publish", "c", "--pattern", "novalue", "--data", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--pattern") && err.contains("novalue"),
        "{err}"
    );
    let out = nines(&["evt", "unlink", "nope", "--endpoints", &eps]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("'nope'") && err.contains("NOT_EXIST"), "{err}");
    let out = nines(&["evt", "publish", "c", "--priority", "9", "--data", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--priority"));

    eprintln!("phase: limits: 21 patterns are refused until `evt limits set` raises the limit");
    let patterns: Vec<String> = (0..21).map(|i| format!("p{i}=v")).collect();
    let mut publish_21 = vec!["evt", "publish", "lim", "--data", "x"];
    for p in &patterns {
        publish_21.extend(["--pattern", p]);
    }
    let limits = |ep: &str| -> Value {
        let out = nines_ok(ep, &["evt", "limits", "-o", "json"]);
        serde_json::from_str(out.trim()).expect("limits json")
    };
    assert_eq!(limits(&eps)["patterns_max"], 20, "the AIS default");
    let out = nines(&[publish_21.as_slice(), &["--endpoints", &eps]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("21 patterns") && err.contains("INVALID_PARAM"),
        "{err}"
    );
    let out = nines_ok(
        &eps,
        &["evt", "limits", "set", "--patterns-max", "32", "-o", "json"],
    );
    let set: Value = serde_json::from_str(out.trim()).expect("set json");
    assert_eq!(set["patterns_max"], 32);
    assert_eq!(set["data_bytes_max"], 64 * 1024, "the other limits stay");
    for ep in c.endpoints() {
        assert_eq!(limits(&ep), set, "agent {ep} applies the same limits");
    }
    let last = c.endpoints().last().cloned().expect("an agent");
    nines_ok(&last, &publish_21);
    let mut wide = Subscription::new("lim");
    for _ in 0..21 {
        wide = wide.filter(nines_sdk::Filter::pass_all());
    }
    drop(client.subscribe(&wide).await.expect("21 filters pass too"));

    eprintln!("phase: lowering a limit below what the cluster holds is refused, in one line");
    let out = nines(&[
        "evt",
        "limits",
        "set",
        "--channels-max",
        "1",
        "--endpoints",
        &eps,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("channels_max 1") && err.contains("NO_SPACE"),
        "{err}"
    );
    let table = nines_ok(&eps, &["evt", "limits"]);
    assert!(
        table.starts_with("LIMIT") && table.contains("channels_max"),
        "{table}"
    );
    assert_eq!(limits(&eps), set, "the refusal changed nothing");
}

/// Subscribe to `channel` through `addr` only, from `from_id`.
async fn subscriber(addr: &str, channel: &str, from_id: u64) -> EventStream {
    EventClient::connect(&[addr])
        .await
        .expect("connect")
        .subscribe(&Subscription::new(channel).from_id(from_id))
        .await
        .expect("subscribe")
}

/// Create `channel` and publish one warm-up event through `publisher`; its id. Subscribing
/// from it delivers every later event, whenever the subscription is registered.
async fn warm_up(publisher: &EventClient, channel: &str) -> u64 {
    publisher
        .publish(&Publish::new(channel, "warm-up").create(true))
        .await
        .expect("warm-up publish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_different_agents_see_one_order() {
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints();
    let publisher = EventClient::connect(&[eps[2].as_str()])
        .await
        .expect("connect");
    let start = warm_up(&publisher, "orders").await;
    let mut a = subscriber(&eps[0], "orders", start).await;
    let mut b = subscriber(&eps[1], "orders", start).await;

    eprintln!("phase: 50 events from the third agent");
    let mut acked = Vec::new();
    for i in 0..50 {
        let p = Publish::new("orders", format!("order {i}")).pattern("n", i.to_string());
        acked.push(publisher.publish(&p).await.expect("publish"));
    }
    let want: Vec<u64> = (start + 1..=start + 50).collect();
    assert_eq!(acked, want, "one id per event, in publish order");
    for (name, s) in [("a", &mut a), ("b", &mut b)] {
        let mut got = Vec::new();
        for _ in 0..50 {
            got.push(next_event(s).await.id);
        }
        assert_eq!(
            got, want,
            "subscriber {name}: same ids, same order, no gaps"
        );
        assert_quiet(s, "no duplicates").await;
    }
}

/// Publish `n` events numbered from `first`, retrying what the cluster refuses while it has no
/// leader; the ids of those acknowledged. A publish whose outcome is unknown (`TIMEOUT`) is not
/// re-sent: it may or may not be delivered.
async fn publish_some(publisher: &EventClient, channel: &str, first: usize, n: usize) -> Vec<u64> {
    let mut acked = Vec::new();
    let deadline = tokio::time::Instant::now() + LONG;
    let mut i = first;
    while i < first + n {
        assert!(tokio::time::Instant::now() < deadline, "publishing stalled");
        let p = Publish::new(channel, format!("event {i}")).pattern("n", i.to_string());
        match publisher.publish(&p).await {
            Ok(id) => {
                acked.push(id);
                i += 1;
            }
            Err(e) if e.is_retryable() => {
                eprintln!("publish {i}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                eprintln!("publish {i}: {e}; outcome unknown, moving on");
                i += 1;
            }
        }
    }
    acked
}

/// Read events from `s` until every id of `acked` has been seen; every id read, in order.
async fn read_until(s: &mut EventStream, acked: &[u64], who: &str) -> Vec<u64> {
    let last = *acked.iter().max().expect("some acknowledged");
    let mut got = Vec::new();
    while got.last().is_none_or(|&id| id < last) {
        got.push(next_event(s).await.id);
    }
    let seen: BTreeSet<u64> = got.iter().copied().collect();
    let missing: Vec<u64> = acked
        .iter()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "subscriber {who} missed acknowledged {missing:?}"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "subscriber {who}: in order, no duplicates: {got:?}"
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_and_no_loss_while_the_leader_is_killed_and_restarted() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    let leader = c.wait_leader(LONG).await.expect("leader");
    let survivors: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.addr.clone())
        .collect();
    let publisher = EventClient::connect(&c.endpoints()).await.expect("connect");
    let start = warm_up(&publisher, "orders").await;
    let mut a = subscriber(&survivors[0], "orders", start).await;
    let mut b = subscriber(&survivors[1], "orders", start).await;
    // A third subscriber streams from the leader (its first endpoint): when the leader dies,
    // its stream reconnects to a survivor and resumes after the last event it delivered.
    let leader_addr = c
        .nodes
        .iter()
        .find(|n| n.id == leader)
        .expect("leader node")
        .addr
        .clone();
    let mut k = EventClient::connect(&[&leader_addr, &survivors[0], &survivors[1]])
        .await
        .expect("connect")
        .subscribe(&Subscription::new("orders").from_id(start))
        .await
        .expect("subscribe");
    assert_eq!(k.endpoint(), leader_addr);

    eprintln!("phase: 25 events, then kill -9 the leader {leader}");
    let mut acked = publish_some(&publisher, "orders", 0, 25).await;
    c.kill(leader).expect("kill the leader");
    eprintln!("phase: 25 more events while the cluster elects a new leader");
    acked.extend(publish_some(&publisher, "orders", 25, 25).await);
    eprintln!("phase: restart node {leader}, 10 more events");
    c.spawn(leader).expect("restart");
    acked.extend(publish_some(&publisher, "orders", 50, 10).await);
    assert!(
        acked.len() >= 55,
        "most publishes acknowledged: {}",
        acked.len()
    );

    let got_a = read_until(&mut a, &acked, "a").await;
    let got_b = read_until(&mut b, &acked, "b").await;
    assert_eq!(
        got_a, got_b,
        "both subscribers: the same events in the same order"
    );
    assert_quiet(&mut a, "no duplicates after the last").await;
    let got_k = read_until(&mut k, &acked, "k").await;
    assert_eq!(
        got_k, got_a,
        "the resumed stream: same events, same order, no duplicates"
    );
    assert!(k.reconnects() >= 1, "k's stream broke with the leader");
    assert_ne!(k.endpoint(), leader_addr, "k resumed on a survivor");
    assert_quiet(&mut k, "no duplicates after the last").await;

    eprintln!("phase: a subscriber resuming from an id in the middle misses nothing");
    let mid = got_a[got_a.len() / 2];
    let mut r = subscriber(&survivors[1], "orders", mid).await;
    let after: Vec<u64> = got_a.iter().copied().filter(|&id| id > mid).collect();
    let mut resumed = Vec::new();
    for _ in 0..after.len() {
        resumed.push(next_event(&mut r).await.id);
    }
    assert_eq!(resumed, after, "resumed from {mid}");
    assert_quiet(&mut r, "nothing beyond the last").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_gets_a_lost_notice_and_does_not_slow_the_others() {
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints();
    let publisher = EventClient::connect(&[eps[2].as_str()])
        .await
        .expect("connect");
    let start = warm_up(&publisher, "flood").await;
    let mut fast = subscriber(&eps[0], "flood", start).await;
    let mut slow = subscriber(&eps[1], "flood", start).await;

    // More than the agent's per-subscriber queue, its stream buffer and the HTTP/2 windows
    // hold, so a subscriber that reads nothing must lose some.
    let total = nines_evt_total();
    eprintln!(
        "phase: publish {total} events (64 at a time) while the slow subscriber reads nothing"
    );
    let fast_reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < total {
            match next_within(&mut fast, LONG).await {
                Some(Delivery::Event(e)) => ids.push(e.id),
                Some(Delivery::Lost(n)) => panic!("the fast subscriber lost {n} events"),
                None => panic!("the fast subscriber stalled after {} events", ids.len()),
            }
        }
        ids
    });
    let payload = vec![b'x'; 1024];
    let mut sent = 0;
    while sent < total {
        let batch: Vec<_> = (0..64.min(total - sent))
            .map(|_| {
                let p = publisher.clone();
                let data = payload.clone();
                tokio::spawn(async move { p.publish(&Publish::new("flood", data)).await })
            })
            .collect();
        for t in batch {
            t.await.expect("task").expect("publish");
        }
        sent += 64.min(total - sent);
    }
    let fast_ids = fast_reader.await.expect("fast reader");
    let mut sorted = fast_ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        total,
        "the fast subscriber got every event once"
    );

    eprintln!("phase: the slow subscriber reads now: a lost notice, and events + lost add up");
    let (mut events, mut lost) = (0u64, 0u64);
    let mut seen = BTreeSet::new();
    while events + lost < total as u64 {
        match next_within(&mut slow, LONG).await {
            Some(Delivery::Event(e)) => {
                assert!(seen.insert(e.id), "duplicate {}", e.id);
                events += 1;
            }
            Some(Delivery::Lost(n)) => lost += n,
            None => panic!("the slow subscriber got {events} events and {lost} lost of {total}"),
        }
    }
    assert!(
        lost > 0,
        "a subscriber that read nothing must have been told it lost events"
    );
    assert_eq!(
        events + lost,
        total as u64,
        "no silent gap: every event delivered or counted"
    );
}

/// Events the flood test publishes (1 KiB each).
fn nines_evt_total() -> usize {
    nines_evt::SUBSCRIBER_QUEUE_LEN * 4
}

/// `nines bench evt` measures only after its warm-up: the events published during the warm-up
/// are delivered but not counted, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_evt_measures_after_its_warm_up() {
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints().join(",");
    eprintln!("phase: 1 s of warm-up then 1 s measured, at 200 events/s");
    let out = nines_ok(
        &eps,
        &[
            "bench",
            "evt",
            "--rate",
            "200",
            "--warmup",
            "1s",
            "--duration",
            "1s",
            "-o",
            "json",
        ],
    );
    let j: Value = serde_json::from_str(out.trim()).expect("one JSON document");
    let r = &j["result"];
    assert_eq!(r["warmup_ms"], 1000, "{j}");
    assert_eq!(r["lost"], 0, "{j}");
    let delivered = r["delivered"].as_u64().expect("delivered");
    // 64 publishing tasks pace 200 events/s: at most about 64 × 4 events fall in the measured
    // second, delivered to 3 subscribers. Counting the warm-up's too would about double it.
    assert!(
        (1..=900).contains(&delivered),
        "{delivered} deliveries counted: {j}"
    );
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// The agent's memory bound under subscribers that never read: what it may reach with
/// SUBSCRIBERS_MAX of them, each queue full (about 160 MiB of queues) over its own ~100 MiB.
const SUBSCRIBED_RSS_MIB_MAX: u64 = 600;

/// Subscribers that never read cannot take the agent's memory: one agent serves at most
/// SUBSCRIBERS_MAX (the next is refused with NO_SPACE, naming the limit, until one ends), each
/// queue is bounded in bytes, and 1,100 events of 4 KiB leave the agent within a stated bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_capped_and_their_queues_bounded_in_bytes() {
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints();
    let publisher = EventClient::connect(&[eps[1].as_str()])
        .await
        .expect("connect");
    let start = warm_up(&publisher, "hoard").await;
    let sub = EventClient::connect(&[eps[0].as_str()])
        .await
        .expect("connect");
    eprintln!(
        "phase: {} subscribers that never read",
        nines_evt::SUBSCRIBERS_MAX
    );
    // The one that will read later has a connection of its own: on a shared one, the others'
    // unread data would hold the connection's HTTP/2 window, and it could read nothing.
    let mut first = EventClient::connect(&[eps[0].as_str()])
        .await
        .expect("connect")
        .subscribe(&Subscription::new("hoard").from_id(start))
        .await
        .expect("subscribe");
    let mut idle = Vec::new();
    for _ in 1..nines_evt::SUBSCRIBERS_MAX {
        let s = sub
            .subscribe(&Subscription::new("hoard").from_id(start))
            .await
            .expect("subscribe within the limit");
        idle.push(s);
    }
    let Err(refused) = sub
        .subscribe(&Subscription::new("hoard").from_id(start))
        .await
    else {
        panic!("one more subscriber than SUBSCRIBERS_MAX must be refused");
    };
    let msg = refused.to_string();
    assert!(msg.contains("subscribers"), "{msg}");

    eprintln!("phase: 1,100 events of 4 KiB (64 at a time)");
    let payload = vec![b'y'; 4096];
    let mut sent = 0;
    while sent < 1_100 {
        let batch: Vec<_> = (0..64.min(1_100 - sent))
            .map(|_| {
                let p = publisher.clone();
                let data = payload.clone();
                tokio::spawn(async move { p.publish(&Publish::new("hoard", data)).await })
            })
            .collect();
        for t in batch {
            t.await.expect("task").expect("publish");
        }
        sent += 64.min(1_100 - sent);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_mib(c.pid(1).expect("n1 runs"));
    eprintln!(
        "figures: n1 RSS {rss} MiB with {} idle subscribers",
        idle.len() + 1
    );
    assert!(
        rss <= SUBSCRIBED_RSS_MIB_MAX,
        "agent RSS {rss} MiB over {SUBSCRIBED_RSS_MIB_MAX} MiB"
    );

    eprintln!("phase: a subscriber that finally reads is told what it lost");
    let (mut lost, mut events) = (0, 0);
    while let Some(d) = next_within(&mut first, QUIET).await {
        match d {
            Delivery::Lost(n) => lost += n,
            Delivery::Event(_) => events += 1,
        }
    }
    eprintln!("figures: it read {events} events and was told {lost} were lost");
    assert!(lost > 0, "a full queue must have lost events, and said so");
    assert_eq!(events + lost, 1_100, "no silent gap");

    eprintln!("phase: once one ends, a new subscriber is served");
    drop(first);
    let deadline = std::time::Instant::now() + LONG;
    loop {
        match sub
            .subscribe(&Subscription::new("hoard").from_id(start))
            .await
        {
            Ok(s) => {
                idle.push(s);
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no place freed within {LONG:?}: {e}"),
        }
    }
}
