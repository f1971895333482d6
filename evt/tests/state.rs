//! The event-channel state machine, story by story: create/open semantics, ids, retention and
//! expiry on the proposer's time stamp, clear retention, resume with lost counts after the ring
//! wraps, refusals that change nothing, snapshots, and the broadcast of published events.
//!
//! Every story drives an `EvtState` through a `Story`, which numbers the log entries, checks that
//! every refused command changed nothing but the expiry every apply runs first, and checks that
//! the state survives a postcard snapshot round trip after every command.

use nines_consensus::ApplyContext;
use nines_core::ErrorCode;
use nines_evt::{EvtCommand, EvtResponse, EvtState, Limits, Pattern};
use tokio::sync::broadcast;

/// An `EvtState` fed numbered entries, with the checks every story shares.
struct Story {
    state: EvtState,
    index: u64,
}

impl Story {
    fn new(limits: Limits) -> Self {
        Self {
            state: EvtState::new(limits).expect("test limits are valid"),
            index: 0,
        }
    }

    fn phase(&self, what: &str) {
        println!("== {what} (index {})", self.index);
    }

    /// Apply `cmd` stamped `time_ms` as the next entry.
    fn apply(&mut self, time_ms: u64, cmd: EvtCommand) -> EvtResponse {
        self.index += 1;
        let ctx = ApplyContext {
            index: self.index,
            term: 1,
            time_ms,
        };
        let mut expired_only = self.state.clone();
        expired_only.apply(ctx, EvtCommand::Expire);
        let response = self.state.apply(ctx, cmd.clone());
        if let EvtResponse::Refused(e) = &response {
            assert_eq!(
                self.state, expired_only,
                "refused {cmd:?} ({e}) changed the state"
            );
        }
        let bytes = postcard::to_allocvec(&self.state).expect("the state serializes");
        let restored: EvtState = postcard::from_bytes(&bytes).expect("the snapshot restores");
        assert_eq!(restored, self.state, "snapshot round trip after {cmd:?}");
        response
    }

    /// Apply `cmd` and expect a refusal with `code` whose message contains `words`.
    fn refused(&mut self, time_ms: u64, cmd: EvtCommand, code: ErrorCode, words: &str) {
        match self.apply(time_ms, cmd.clone()) {
            EvtResponse::Refused(e) => {
                assert_eq!(e.code, code, "{cmd:?}: {e}");
                assert!(e.message.contains(words), "{cmd:?}: '{e}' lacks '{words}'");
            }
            other => panic!("{cmd:?}: want {code:?}, got {other:?}"),
        }
    }

    /// Publish and return the event id.
    fn publish(&mut self, time_ms: u64, cmd: EvtCommand) -> u64 {
        match self.apply(time_ms, cmd.clone()) {
            EvtResponse::Published { event_id } => event_id,
            other => panic!("{cmd:?}: want Published, got {other:?}"),
        }
    }

    fn ids_since(&self, channel: &str, after_id: u64) -> (Vec<u64>, u64) {
        let since = self
            .state
            .since(channel, after_id)
            .expect("the channel exists");
        (since.events.iter().map(|e| e.id).collect(), since.lost)
    }
}

fn create(channel: &str) -> EvtCommand {
    EvtCommand::Create {
        channel: channel.into(),
    }
}

/// A plain publish: priority 2, no patterns, no retention, creating the channel if missing.
fn publish(channel: &str, data: &str) -> EvtCommand {
    EvtCommand::Publish {
        channel: channel.into(),
        create: true,
        patterns: vec![Pattern::new("kind", "test")],
        priority: 2,
        retention_ms: 0,
        publisher: "story".into(),
        data: data.as_bytes().to_vec(),
    }
}

/// `publish` with `retention_ms`.
fn retained(channel: &str, data: &str, retention_ms: u64) -> EvtCommand {
    match publish(channel, data) {
        EvtCommand::Publish {
            channel,
            create,
            patterns,
            priority,
            publisher,
            data,
            ..
        } => EvtCommand::Publish {
            channel,
            create,
            patterns,
            priority,
            retention_ms,
            publisher,
            data,
        },
        _ => unreachable!(),
    }
}

/// `publish` changed by `edit`.
fn publish_with(channel: &str, edit: impl FnOnce(&mut EvtCommand)) -> EvtCommand {
    let mut cmd = publish(channel, "x");
    edit(&mut cmd);
    cmd
}

fn unlink(channel: &str) -> EvtCommand {
    EvtCommand::Unlink {
        channel: channel.into(),
    }
}

fn clear(channel: &str, event_id: u64) -> EvtCommand {
    EvtCommand::ClearRetention {
        channel: channel.into(),
        event_id,
    }
}

#[test]
fn create_open_and_unlink() {
    let mut s = Story::new(Limits {
        channels_max: 2,
        ..Limits::default()
    });
    s.phase("create is idempotent: the second create reports the channel existed");
    assert_eq!(
        s.apply(0, create("a")),
        EvtResponse::Created { existed: false }
    );
    assert_eq!(
        s.apply(0, create("a")),
        EvtResponse::Created { existed: true }
    );
    assert_eq!(s.state.channel("a").expect("a exists").created_index, 1);

    s.phase("publish to a missing channel without create is NOT_EXIST; with create it opens it");
    let no_create = publish_with("b", |c| {
        if let EvtCommand::Publish { create, .. } = c {
            *create = false;
        }
    });
    s.refused(0, no_create, ErrorCode::NotExist, "'b' does not exist");
    assert_eq!(s.publish(0, publish("b", "1")), 1);
    let names: Vec<String> = s.state.channels().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["a", "b"]);

    s.phase("channels full: NO_SPACE for create and for publish-with-create, not for existing");
    s.refused(
        0,
        create("c"),
        ErrorCode::NoSpace,
        "all 2 channels are in use",
    );
    s.refused(0, publish("c", "x"), ErrorCode::NoSpace, "all 2 channels");
    assert_eq!(
        s.apply(0, create("a")),
        EvtResponse::Created { existed: true }
    );

    s.phase("bad names are INVALID_PARAM");
    s.apply(0, unlink("b"));
    s.refused(0, create(""), ErrorCode::InvalidParam, "1..=256");
    s.refused(
        0,
        create(&"n".repeat(257)),
        ErrorCode::InvalidParam,
        "257 bytes",
    );
    assert_eq!(
        s.apply(0, create(&"n".repeat(256))),
        EvtResponse::Created { existed: false }
    );

    s.phase("unlink deletes; unlinking again is NOT_EXIST");
    assert_eq!(s.apply(0, unlink("a")), EvtResponse::Unlinked);
    assert!(s.state.channel("a").is_none());
    s.refused(0, unlink("a"), ErrorCode::NotExist, "'a' does not exist");
    assert_eq!(s.state.since("a", 0).unwrap_err().code, ErrorCode::NotExist);
    assert_eq!(
        s.state.retained("a", 0).unwrap_err().code,
        ErrorCode::NotExist
    );
}

#[test]
fn ids_grow_by_one_per_channel_and_restart_on_recreate() {
    let mut s = Story::new(Limits::default());
    s.phase("interleaved publishes: each channel counts its own ids from 1");
    let mut got = Vec::new();
    for (channel, data) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("a", "a3"),
        ("b", "b2"),
    ] {
        got.push((channel, s.publish(0, publish(channel, data))));
    }
    assert_eq!(got, [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]);
    let a = s.state.since("a", 0).expect("a exists");
    let data: Vec<&[u8]> = a.events.iter().map(|e| e.data.as_slice()).collect();
    assert_eq!(data, [b"a1", b"a2", b"a3"], "ids follow commit order");
    assert_eq!(s.state.channel("a").expect("a").last_id, 3);

    s.phase("unlink and re-create: a new incarnation, ids from 1, told apart by created_index");
    let first = s.state.channel("a").expect("a").created_index;
    s.apply(0, unlink("a"));
    s.apply(0, create("a"));
    let info = s.state.channel("a").expect("a again");
    assert_eq!((info.last_id, info.retained), (0, 0));
    assert!(info.created_index > first);
    assert_eq!(s.ids_since("a", 0), (vec![], 0));
    assert_eq!(s.publish(0, publish("a", "new")), 1);
}

#[test]
fn retention_expires_on_the_proposers_time_stamp() {
    let mut s = Story::new(Limits::default());
    s.phase("two retained events and one not retained");
    assert_eq!(s.publish(1_000, retained("r", "long", 5_000)), 1);
    assert_eq!(s.publish(1_100, retained("r", "short", 400)), 2);
    assert_eq!(s.publish(1_200, publish("r", "plain")), 3);
    let ids = |events: Vec<nines_evt::Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(s.state.retained("r", 1_200).expect("r")), [1, 2]);
    assert_eq!(s.state.next_deadline_ms(), Some(1_500));
    let first = &s.state.retained("r", 1_200).expect("r")[0];
    assert_eq!((first.published_at_ms, first.retention_ms), (1_000, 5_000));

    s.phase("a query at a later time hides what ran out even before an apply drops it");
    assert_eq!(ids(s.state.retained("r", 1_500).expect("r")), [1]);
    assert_eq!(s.state.channel("r").expect("r").retained, 2);

    s.phase("Expire just before the deadline drops nothing; at the deadline it drops it");
    assert_eq!(
        s.apply(1_499, EvtCommand::Expire),
        EvtResponse::Expired { events: 0 }
    );
    assert_eq!(
        s.apply(1_500, EvtCommand::Expire),
        EvtResponse::Expired { events: 1 }
    );
    assert_eq!(s.state.next_deadline_ms(), Some(6_000));
    assert_eq!(s.state.channel("r").expect("r").retained, 1);

    s.phase("any other command expires first, on its own stamp");
    assert_eq!(
        s.apply(6_000, create("other")),
        EvtResponse::Created { existed: false }
    );
    assert_eq!(s.state.retained("r", 0).expect("r"), vec![]);
    assert_eq!(s.state.next_deadline_ms(), None);

    s.phase("expired events stay in the recent ring: retention is not history");
    assert_eq!(s.ids_since("r", 0), (vec![1, 2, 3], 0));
}

#[test]
fn clear_retention_removes_a_retained_event_early() {
    let mut s = Story::new(Limits::default());
    s.publish(0, retained("c", "one", 1_000));
    s.publish(0, retained("c", "two", 2_000));
    s.publish(0, publish("c", "three"));

    s.phase("clearing the earliest moves the deadline to the next one");
    assert_eq!(s.apply(10, clear("c", 1)), EvtResponse::RetentionCleared);
    assert_eq!(s.state.next_deadline_ms(), Some(2_000));
    let left: Vec<u64> = s
        .state
        .retained("c", 10)
        .expect("c")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [2]);

    s.phase("clearing again, a never-retained or unknown event, or a missing channel: NOT_EXIST");
    s.refused(
        10,
        clear("c", 1),
        ErrorCode::NotExist,
        "event 1 of channel 'c' is not retained",
    );
    s.refused(10, clear("c", 3), ErrorCode::NotExist, "not retained");
    s.refused(10, clear("c", 99), ErrorCode::NotExist, "not retained");
    s.refused(
        10,
        clear("nope", 2),
        ErrorCode::NotExist,
        "'nope' does not exist",
    );

    s.phase("an event whose retention ran out cannot be cleared either");
    s.refused(2_000, clear("c", 2), ErrorCode::NotExist, "not retained");
    assert_eq!(s.state.next_deadline_ms(), None);

    s.phase("unlink drops retained events with their deadlines");
    s.publish(3_000, retained("c", "four", 1_000));
    assert_eq!(s.state.next_deadline_ms(), Some(4_000));
    s.apply(3_000, unlink("c"));
    assert_eq!(s.state.next_deadline_ms(), None);
}

#[test]
fn since_reports_lost_ids_after_the_ring_wraps() {
    let mut s = Story::new(Limits {
        recent_events_max: 4,
        ..Limits::default()
    });
    s.phase("an empty channel owes nothing");
    s.apply(0, create("w"));
    assert_eq!(s.ids_since("w", 0), (vec![], 0));

    s.phase("ten events through a ring of four");
    for n in 1..=10 {
        s.publish(0, publish("w", &n.to_string()));
    }
    assert_eq!(
        s.ids_since("w", 0),
        (vec![7, 8, 9, 10], 6),
        "ids 1..=6 are gone"
    );
    assert_eq!(
        s.ids_since("w", 5),
        (vec![7, 8, 9, 10], 1),
        "only id 6 is gone"
    );
    assert_eq!(s.ids_since("w", 6), (vec![7, 8, 9, 10], 0));
    assert_eq!(s.ids_since("w", 8), (vec![9, 10], 0));
    assert_eq!(s.ids_since("w", 10), (vec![], 0));
    assert_eq!(
        s.ids_since("w", 99),
        (vec![], 0),
        "ahead of this replica: nothing, no loss"
    );

    s.phase("the ring is also bounded in bytes, always keeping the newest event");
    let mut s = Story::new(Limits {
        recent_bytes_max: 100,
        ..Limits::default()
    });
    for _ in 0..3 {
        s.publish(0, publish("b", &"x".repeat(40)));
    }
    let (ids, lost) = s.ids_since("b", 0);
    assert_eq!(
        (ids.as_slice(), lost),
        ([3u64].as_slice(), 2),
        "each event is > 50 bytes"
    );
    s.publish(0, publish("b", &"y".repeat(500)));
    assert_eq!(
        s.ids_since("b", 0),
        (vec![4], 3),
        "an oversized event still stays"
    );
}

#[test]
fn refused_publishes_name_what_and_why_and_change_nothing() {
    let mut s = Story::new(Limits {
        patterns_max: 2,
        retained_per_channel_max: 1,
        ..Limits::default()
    });
    s.publish(0, publish("p", "first"));
    let set = |edit: fn(&mut EvtCommand)| publish_with("p", edit);

    s.phase("priority, patterns, sizes, retention");
    let cases: Vec<(EvtCommand, ErrorCode, &str)> = vec![
        (
            set(|c| *field(c).priority = 4),
            ErrorCode::InvalidParam,
            "priority 4 is out of range",
        ),
        (
            set(|c| *field(c).patterns = vec![Pattern::new("a", "b"); 3]),
            ErrorCode::InvalidParam,
            "3 patterns given; at most 2",
        ),
        (
            set(|c| *field(c).patterns = vec![Pattern::new(vec![b'n'; 257], "v")]),
            ErrorCode::TooBig,
            "pattern 0 has a 257-byte",
        ),
        (
            set(|c| *field(c).patterns = vec![Pattern::new("n", vec![b'v'; 257])]),
            ErrorCode::TooBig,
            "at most 256 bytes each",
        ),
        (
            set(|c| *field(c).data = vec![0; 64 * 1024 + 1]),
            ErrorCode::TooBig,
            "the payload has 65537 bytes",
        ),
        (
            set(|c| *field(c).publisher = "p".repeat(300)),
            ErrorCode::TooBig,
            "publisher name has 300 bytes",
        ),
        (
            set(|c| *field(c).retention_ms = 8 * 24 * 3_600_000),
            ErrorCode::InvalidParam,
            "retention 691200000 ms is longer",
        ),
    ];
    for (cmd, code, words) in cases {
        s.refused(0, cmd, code, words);
    }
    assert_eq!(
        s.state.channel("p").expect("p").last_id,
        1,
        "no id was used up"
    );

    s.phase("a refused publish-with-create does not create the channel");
    let bad = publish_with("fresh", |c| *field(c).priority = 9);
    s.refused(
        0,
        bad,
        ErrorCode::InvalidParam,
        "publish to 'fresh' refused",
    );
    assert!(s.state.channel("fresh").is_none());

    s.phase("retained room: per channel, then cluster-wide bytes");
    s.publish(0, retained("p", "kept", 1_000));
    s.refused(
        0,
        retained("p", "more", 1_000),
        ErrorCode::NoSpace,
        "already retains 1",
    );
    assert_eq!(s.publish(0, publish("p", "unretained is fine")), 3);
    let mut s = Story::new(Limits {
        retained_bytes_max: 100,
        ..Limits::default()
    });
    s.publish(0, retained("q", &"x".repeat(50), 1_000));
    s.refused(
        0,
        retained("q", &"y".repeat(50), 1_000),
        ErrorCode::NoSpace,
        "over the cluster's 100",
    );
    s.phase("once retention runs out the room is back");
    s.publish(1_000, retained("q", &"y".repeat(50), 1_000));
}

/// The fields of a `Publish`, to edit.
struct Fields<'a> {
    priority: &'a mut u8,
    patterns: &'a mut Vec<Pattern>,
    data: &'a mut Vec<u8>,
    publisher: &'a mut String,
    retention_ms: &'a mut u64,
}

fn field(cmd: &mut EvtCommand) -> Fields<'_> {
    match cmd {
        EvtCommand::Publish {
            priority,
            patterns,
            data,
            publisher,
            retention_ms,
            ..
        } => Fields {
            priority,
            patterns,
            data,
            publisher,
            retention_ms,
        },
        other => panic!("{other:?} is not a publish"),
    }
}

#[test]
fn configured_limits_and_bad_limits() {
    assert_eq!(
        EvtState::new(Limits {
            channels_max: 0,
            ..Limits::default()
        })
        .unwrap_err()
        .code,
        ErrorCode::InvalidParam
    );
    let limits = Limits {
        patterns_max: 30,
        pattern_bytes_max: 1_024,
        ..Limits::default()
    };
    let mut s = Story::new(limits.clone());
    assert_eq!(s.state.limits(), &limits);
    let many = publish_with("l", |c| {
        *field(c).patterns = vec![Pattern::new("n", vec![1; 1_024]); 30]
    });
    assert_eq!(s.publish(0, many), 1, "raised pattern limits are honoured");
}

#[test]
fn snapshot_round_trip_carries_everything_but_the_announcer() {
    let (tx, _rx) = broadcast::channel(8);
    let mut s = Story::new(Limits {
        recent_events_max: 3,
        ..Limits::default()
    });
    s.state.set_events(tx);
    for n in 0..5 {
        s.publish(100, retained("s", &n.to_string(), 1_000 + n));
    }
    s.apply(100, clear("s", 5));

    s.phase("a restored copy equals the original and lacks the announcer");
    let bytes = postcard::to_allocvec(&s.state).expect("serializes");
    let mut restored: EvtState = postcard::from_bytes(&bytes).expect("restores");
    assert_eq!(restored, s.state);
    assert!(restored.take_events().is_none());
    assert_eq!(
        restored.limits().recent_events_max,
        3,
        "limits travel with the snapshot"
    );

    s.phase("both continue identically");
    let ctx = ApplyContext {
        index: 100,
        term: 2,
        time_ms: 1_102,
    };
    for cmd in [EvtCommand::Expire, publish("s", "next"), clear("s", 3)] {
        assert_eq!(restored.apply(ctx, cmd.clone()), s.state.apply(ctx, cmd));
    }
    let gone = restored.apply(ctx, clear("s", 3));
    assert!(
        matches!(gone, EvtResponse::Refused(_)),
        "id 3 expired at 1_102: {gone:?}"
    );
    assert_eq!(restored, s.state);
    assert_eq!(restored.next_deadline_ms(), Some(1_103));
}

#[test]
fn published_events_are_announced_in_commit_order() {
    let (tx, mut rx) = broadcast::channel(16);
    let mut s = Story::new(Limits::default());
    s.state.set_events(tx);

    s.phase("successful publishes are announced, exactly as stored");
    s.publish(500, publish("x", "1"));
    s.publish(501, retained("y", "2", 10));
    s.publish(502, publish("x", "3"));
    let got: Vec<(String, u64, u64)> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| (e.channel, e.id, e.published_at_ms))
        .collect();
    assert_eq!(
        got,
        [
            ("x".into(), 1, 500),
            ("y".into(), 1, 501),
            ("x".into(), 2, 502)
        ]
    );
    let stored = s.state.since("x", 1).expect("x").events;
    s.publish(503, publish("x", "4"));
    let announced = rx.try_recv().expect("announced");
    assert_eq!(announced.id, 3);
    assert_eq!(stored[0].id, 2);
    assert_eq!(s.state.since("x", 2).expect("x").events, vec![announced]);

    s.phase("refusals and other commands announce nothing");
    s.refused(
        504,
        publish_with("x", |c| *field(c).priority = 7),
        ErrorCode::InvalidParam,
        "",
    );
    s.apply(504, create("z"));
    s.apply(504, clear("y", 1));
    s.apply(600, EvtCommand::Expire);
    assert!(rx.try_recv().is_err());

    s.phase("take_events moves the announcer out: later publishes are not sent");
    let tx = s.state.take_events().expect("the announcer was set");
    s.publish(700, publish("x", "5"));
    assert!(rx.try_recv().is_err());
    s.state.set_events(tx);
    s.publish(701, publish("x", "6"));
    assert_eq!(rx.try_recv().expect("announced again").id, 5);
}

fn set_limits(limits: &Limits, expected: Option<&Limits>) -> EvtCommand {
    EvtCommand::SetLimits {
        limits: limits.clone(),
        expected: expected.cloned(),
    }
}

/// A publish on `channel` with `n` patterns.
fn with_patterns(channel: &str, n: usize) -> EvtCommand {
    publish_with(channel, |c| {
        *field(c).patterns = (0..n).map(|i| Pattern::new(format!("p{i}"), "v")).collect()
    })
}

#[test]
fn limits_change_through_the_log() {
    let mut s = Story::new(Limits::default());
    let defaults = Limits::default();

    s.phase("the AIS default refuses a 21st pattern");
    s.refused(
        0,
        with_patterns("l", 21),
        ErrorCode::InvalidParam,
        "21 patterns given; at most 20",
    );

    s.phase("raising patterns_max to 32 lets it through, and only up to 32");
    let raised = Limits {
        patterns_max: 32,
        ..defaults.clone()
    };
    assert_eq!(
        s.apply(0, set_limits(&raised, Some(&defaults))),
        EvtResponse::LimitsSet
    );
    assert_eq!(s.state.limits(), &raised);
    assert_eq!(s.publish(0, with_patterns("l", 21)), 1);
    assert_eq!(s.publish(0, with_patterns("l", 32)), 2);
    s.refused(
        0,
        with_patterns("l", 33),
        ErrorCode::InvalidParam,
        "at most 32",
    );

    s.phase("limits that fail the check are refused, naming the field");
    let zero = Limits {
        channels_max: 0,
        ..raised.clone()
    };
    s.refused(
        0,
        set_limits(&zero, None),
        ErrorCode::InvalidParam,
        "channels_max is 0",
    );
    let huge = Limits {
        data_bytes_max: 64 * 1024 * 1024,
        ..raised.clone()
    };
    s.refused(
        0,
        set_limits(&huge, None),
        ErrorCode::InvalidParam,
        "data_bytes_max",
    );

    s.phase("a read-modify-write from stale limits is refused: it would undo the raise");
    let stale = Limits {
        data_bytes_max: 1_024,
        ..defaults.clone()
    };
    s.refused(
        0,
        set_limits(&stale, Some(&defaults)),
        ErrorCode::BadOperation,
        "changed since they were read",
    );
    assert_eq!(s.state.limits(), &raised);

    s.phase("lowering patterns_max below stored events is fine: they are kept");
    assert_eq!(
        s.apply(0, set_limits(&defaults, None)),
        EvtResponse::LimitsSet
    );
    assert_eq!(s.ids_since("l", 0), (vec![1, 2], 0));
    s.refused(
        0,
        with_patterns("l", 21),
        ErrorCode::InvalidParam,
        "at most 20",
    );
}

#[test]
fn limits_are_not_lowered_below_what_the_state_holds() {
    let mut s = Story::new(Limits::default());
    let defaults = Limits::default();
    for ch in ["a", "b", "c"] {
        s.apply(0, create(ch));
    }
    for n in 0..3 {
        s.publish(0, retained("a", &format!("r{n}"), 60_000));
    }
    for n in 0..5 {
        s.publish(0, publish("b", &n.to_string()));
    }

    s.phase("fewer channels than exist: NO_SPACE, nothing changes");
    let lower = |edit: fn(&mut Limits)| {
        let mut l = defaults.clone();
        edit(&mut l);
        set_limits(&l, None)
    };
    s.refused(
        0,
        lower(|l| l.channels_max = 2),
        ErrorCode::NoSpace,
        "below the 3 channels that exist; unlink 1",
    );
    assert_eq!(
        s.apply(0, lower(|l| l.channels_max = 3)),
        EvtResponse::LimitsSet
    );
    s.refused(
        0,
        create("d"),
        ErrorCode::NoSpace,
        "all 3 channels are in use",
    );

    s.phase("fewer retained events or bytes than are retained: NO_SPACE");
    s.refused(
        0,
        lower(|l| l.retained_per_channel_max = 2),
        ErrorCode::NoSpace,
        "below the 3 events channel 'a' retains",
    );
    s.refused(
        0,
        lower(|l| l.retained_bytes_max = 10),
        ErrorCode::NoSpace,
        "retained_bytes_max 10 is below",
    );

    s.phase("once the retention is cleared, the same lowering goes through");
    for id in 1..=3 {
        s.apply(0, clear("a", id));
    }
    assert_eq!(
        s.apply(0, lower(|l| l.retained_per_channel_max = 2)),
        EvtResponse::LimitsSet
    );

    s.phase("a smaller ring is trimmed at once: its oldest events are lost to resumers");
    assert_eq!(s.ids_since("b", 0), (vec![1, 2, 3, 4, 5], 0));
    assert_eq!(
        s.apply(0, lower(|l| l.recent_events_max = 2)),
        EvtResponse::LimitsSet
    );
    assert_eq!(s.ids_since("b", 0), (vec![4, 5], 3));
}

#[test]
fn set_limits_survive_a_snapshot() {
    let mut s = Story::new(Limits::default());
    let raised = Limits {
        patterns_max: 32,
        ..Limits::default()
    };
    s.apply(10, set_limits(&raised, None));

    s.phase("a node restored from the snapshot applies with the raised limits");
    let bytes = postcard::to_allocvec(&s.state).expect("serializes");
    let mut restored: EvtState = postcard::from_bytes(&bytes).expect("restores");
    assert_eq!(restored.limits(), &raised);
    let ctx = ApplyContext {
        index: 50,
        term: 2,
        time_ms: 20,
    };
    let both = |state: &mut EvtState| state.apply(ctx, with_patterns("s", 25));
    assert_eq!(both(&mut restored), EvtResponse::Published { event_id: 1 });
    assert_eq!(both(&mut s.state), EvtResponse::Published { event_id: 1 });
    assert_eq!(restored, s.state);
}
