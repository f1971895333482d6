//! Data-driven tests of the per-subscriber queue: priority order, overflow with a lost notice,
//! eviction of lower priorities, and upstream lag.
//!
//! Every `testdata/queue/*.toml` file is one story against a fresh `SubscriberQueue`;
//! `testdata/queue/README.md` describes the format. Beyond each step's checks, the runner checks
//! that nothing is delivered twice and that every pushed event is delivered, waiting, or counted
//! as lost (a gap is never silent).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nines_evt::limits::PRIORITY_LOWEST;
use nines_evt::{Delivery, Event, SubscriberQueue};
use serde::Deserialize;

/// One data file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    /// What the story shows.
    #[allow(dead_code)]
    about: String,
    /// The queue's capacity.
    capacity: usize,
    /// The steps, in order.
    step: Vec<Step>,
}

/// One step: pushes, then lag, then pops, then checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// What it shows (printed on failure).
    note: Option<String>,
    /// Events to push, in order.
    #[serde(default)]
    push: Vec<Push>,
    /// Events missed upstream.
    lag: Option<u64>,
    /// Expected pops: an event id, "lost N" or "none".
    #[serde(default)]
    pop: Vec<String>,
    /// Expected `len()` afterwards.
    len: Option<usize>,
    /// Expected `lost_pending()` afterwards.
    lost_pending: Option<u64>,
    /// Expected `lost_total()` afterwards.
    lost_total: Option<u64>,
}

/// An event to push.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    /// Its id.
    id: u64,
    /// Its priority (default: the lowest).
    priority: Option<u8>,
}

fn event(push: &Push) -> Event {
    Event {
        channel: "c".into(),
        id: push.id,
        priority: push.priority.unwrap_or(PRIORITY_LOWEST),
        patterns: Vec::new(),
        publisher: "vector".into(),
        published_at_ms: 0,
        retention_ms: 0,
        data: push.id.to_be_bytes().to_vec(),
    }
}

/// What a pop yields, in the vectors' spelling.
fn spell(delivery: Option<Delivery>) -> String {
    match delivery {
        None => "none".into(),
        Some(Delivery::Lost { count }) => format!("lost {count}"),
        Some(Delivery::Event(e)) => {
            assert_eq!(
                e.data,
                e.id.to_be_bytes(),
                "event {} came back intact",
                e.id
            );
            e.id.to_string()
        }
    }
}

/// Running totals for the accounting check.
#[derive(Default)]
struct Ledger {
    pushed: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    lagged: u64,
}

fn run(file: &str, vector: &Vector) {
    let mut queue = SubscriberQueue::new(vector.capacity);
    let mut ledger = Ledger::default();
    for (n, step) in vector.step.iter().enumerate() {
        let at = format!("{file} step {n} ({})", step.note.as_deref().unwrap_or("-"));
        for push in &step.push {
            ledger.pushed.insert(push.id);
            queue.push(event(push));
        }
        if let Some(lag) = step.lag {
            ledger.lagged += lag;
            queue.lag(lag);
        }
        for want in &step.pop {
            let got = spell(queue.pop());
            assert_eq!(&got, want, "{at}: pop");
            if let Ok(id) = got.parse::<u64>() {
                assert!(
                    ledger.delivered.insert(id),
                    "{at}: event {id} delivered twice"
                );
            }
        }
        if let Some(len) = step.len {
            assert_eq!(queue.len(), len, "{at}: len");
        }
        if let Some(lost) = step.lost_pending {
            assert_eq!(queue.lost_pending(), lost, "{at}: lost_pending");
        }
        if let Some(total) = step.lost_total {
            assert_eq!(queue.lost_total(), total, "{at}: lost_total");
        }
        assert!(queue.len() <= queue.capacity(), "{at}: over capacity");
        assert_eq!(queue.is_empty(), matches!(queue.len(), 0), "{at}: is_empty");
        let accounted = ledger.delivered.len() as u64
            + queue.len() as u64
            + (queue.lost_total() - ledger.lagged);
        assert_eq!(
            accounted,
            ledger.pushed.len() as u64,
            "{at}: every pushed event is delivered, waiting or counted lost"
        );
    }
}

#[test]
fn queue_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/queue");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("testdata/queue exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "queue vectors missing in {}",
        dir.display()
    );
    for path in files {
        let file = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        let text = fs::read_to_string(&path).expect("readable vector");
        let vector: Vector = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        run(&file, &vector);
    }
}

#[test]
#[should_panic(expected = "room for one event")]
fn a_queue_without_room_is_refused() {
    let _ = SubscriberQueue::new(0);
}

/// The byte bound: events that together exceed it make room by evicting lower-priority ones,
/// or are dropped themselves; every loss is counted, and the bytes held never pass the bound.
#[test]
fn a_queue_is_bounded_in_bytes_too() {
    let big = |id: u64, priority: u8| Event {
        data: vec![0; 1_000],
        ..event(&Push {
            id,
            priority: Some(priority),
        })
    };
    let cost = nines_evt::event_cost(&big(1, 3));
    let mut q = SubscriberQueue::bounded(100, 3 * cost);
    for id in 1..=3 {
        q.push(big(id, 3));
    }
    assert_eq!((q.len(), q.bytes()), (3, 3 * cost));
    // Same priority: the newcomer is dropped.
    q.push(big(4, 3));
    assert_eq!((q.len(), q.lost_pending()), (3, 1));
    // Higher priority: the newest of the lowest priority makes room.
    q.push(big(5, 0));
    assert_eq!((q.len(), q.lost_pending(), q.bytes()), (3, 2, 3 * cost));
    assert_eq!(q.pop(), Some(Delivery::Lost { count: 2 }));
    let ids: Vec<u64> = std::iter::from_fn(|| match q.pop() {
        Some(Delivery::Event(e)) => Some(e.id),
        _ => None,
    })
    .collect();
    assert_eq!(ids, [5, 1, 2], "event 3 was evicted, 4 dropped");
    assert_eq!(q.bytes(), 0);
    // One event bigger than the bound is still let in alone.
    let mut tiny = SubscriberQueue::bounded(10, 10);
    tiny.push(big(9, 3));
    assert_eq!(tiny.len(), 1);
}
