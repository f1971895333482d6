//! Hostile event-service input: filter text (`Filter::parse`), wire filters and limits
//! (`TryFrom<pb::Filter>`, `TryFrom<pb::Limits>`, `Limits::check`), `validate_filters` and
//! `matches` with arbitrary filters, patterns and limits, and requests decoded from arbitrary
//! bytes (subscribe, set-limits, publish, applied to a state machine as the service does), all
//! return a value or a clear error and never panic. Parsed filter text reads back unchanged.
//!
//! Cases per property: 256 by default; `PROPTEST_CASES=100000` for a long run.

use nines_consensus::ApplyContext;
use nines_core::ErrorCode;
use nines_evt::{
    matches, validate_filters, EvtCommand, EvtResponse, EvtState, Filter, FilterKind, Limits,
    Pattern,
};
use nines_proto::evt::v1 as pb;
use proptest::prelude::*;
use prost::Message;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Sizes and counts at the bounds, and anywhere.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            20,
            256,
            257,
            1_024,
            65_536,
            u64::MAX / 2,
            u64::MAX
        ]),
        any::<u64>(),
        0u64..100_000,
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn filter() -> impl Strategy<Value = Filter> {
    let kind = prop::sample::select(vec![
        FilterKind::Prefix,
        FilterKind::Suffix,
        FilterKind::Exact,
        FilterKind::PassAll,
    ]);
    (kind, bytes(8), bytes(4))
        .prop_map(|(kind, pattern, name)| Filter::new(kind, pattern).named(name))
}

fn pattern() -> impl Strategy<Value = Pattern> {
    (bytes(4), bytes(8)).prop_map(|(name, value)| Pattern::new(name, value))
}

fn pb_limits() -> impl Strategy<Value = pb::Limits> {
    prop::collection::vec(size(), 11).prop_map(|v| pb::Limits {
        patterns_max: v[0],
        pattern_bytes_max: v[1],
        data_bytes_max: v[2],
        channels_max: v[3],
        channel_name_bytes_max: v[4],
        publisher_bytes_max: v[5],
        retained_per_channel_max: v[6],
        retained_bytes_max: v[7],
        retention_ms_max: v[8],
        recent_events_max: v[9],
        recent_bytes_max: v[10],
    })
}

/// The limits the service would hold after `l` (if they convert and pass the check).
fn limits_of(l: pb::Limits) -> Option<Limits> {
    let limits = match Limits::try_from(l) {
        Ok(limits) => limits,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidParam, "{e}");
            return None;
        }
    };
    match limits.check() {
        Ok(()) => Some(limits),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidParam, "{e}");
            assert!(!e.message.is_empty());
            None
        }
    }
}

/// A subscription's filters as the service takes them: converted, then checked.
fn subscribe(filters: Vec<pb::Filter>, limits: &Limits) {
    let converted: Result<Vec<Filter>, _> = filters.into_iter().map(Filter::try_from).collect();
    match converted {
        Ok(filters) => {
            if let Err(e) = validate_filters(&filters, limits) {
                assert!(
                    matches!(e.code, ErrorCode::InvalidParam | ErrorCode::TooBig),
                    "{e}"
                );
            }
        }
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidParam, "{e}"),
    }
}

/// A publish request as the service turns it into a command.
fn publish_command(r: pb::PublishRequest) -> EvtCommand {
    EvtCommand::Publish {
        channel: r.channel,
        create: r.create,
        patterns: r
            .patterns
            .into_iter()
            .map(|p| Pattern::new(p.name, p.value))
            .collect(),
        priority: u8::try_from(r.priority).unwrap_or(u8::MAX),
        retention_ms: r.retention_ms,
        publisher: r.publisher,
        data: r.data,
    }
}

fn ctx(index: u64, time_ms: u64) -> ApplyContext {
    ApplyContext {
        index,
        term: 1,
        time_ms,
    }
}

#[test]
fn filter_text_examples_read_back() {
    for text in [
        "all",
        "all:sev=",
        "prefix:sev=cr",
        "exact:=a=b",
        "suffix:=x",
        "prefix:=",
    ] {
        let f = Filter::parse(text).expect("valid");
        assert_eq!(Filter::parse(&f.to_string()), Ok(f));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn filter_text_parses_or_says_why_and_reads_back(
        text in prop_oneof![
            any::<String>(),
            "(prefix|suffix|exact|all|PREFIX|x)?:?[a-z=:]{0,8}=?.{0,8}",
        ],
    ) {
        match Filter::parse(&text) {
            Ok(f) => prop_assert_eq!(Filter::parse(&f.to_string()), Ok(f)),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn matching_never_panics(
        filters in prop::collection::vec(filter(), 0..6),
        patterns in prop::collection::vec(pattern(), 0..6),
    ) {
        let passes = matches(&filters, &patterns);
        if filters.iter().all(|f| f.kind == FilterKind::PassAll) {
            prop_assert!(passes);
        }
    }

    #[test]
    fn wire_filters_convert_or_are_refused(
        kind in prop_oneof![any::<i32>(), -1i32..6],
        pattern in bytes(300),
        name in bytes(300),
    ) {
        let wire = pb::Filter { kind, pattern, name };
        match Filter::try_from(wire.clone()) {
            Ok(f) => prop_assert_eq!(pb::Filter::from(&f), wire),
            Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidParam),
        }
    }

    #[test]
    fn filters_are_checked_against_any_limits(
        filters in prop::collection::vec(filter(), 0..30),
        patterns_max in prop_oneof![Just(0usize), Just(usize::MAX), 0usize..40],
        pattern_bytes_max in prop_oneof![Just(0usize), Just(usize::MAX), 0usize..10],
    ) {
        let limits = Limits { patterns_max, pattern_bytes_max, ..Limits::default() };
        let r = validate_filters(&filters, &limits);
        let fits = filters.len() <= patterns_max
            && filters.iter().all(|f| f.pattern.len().max(f.name.len()) <= pattern_bytes_max);
        prop_assert_eq!(r.is_ok(), fits);
    }

    #[test]
    fn wire_limits_convert_and_check_without_panic(l in pb_limits()) {
        if let Some(limits) = limits_of(l) {
            prop_assert!(EvtState::new(limits).is_ok());
        }
    }

    #[test]
    fn decoded_requests_never_panic(bytes in bytes(512)) {
        if let Ok(r) = pb::SubscribeRequest::decode(bytes.as_slice()) {
            subscribe(r.filters, &Limits::default());
        }
        if let Ok(r) = pb::SetLimitsRequest::decode(bytes.as_slice()) {
            let _ = r.limits.map(limits_of);
            let _ = r.expected.map(limits_of);
        }
        if let Ok(r) = pb::PublishRequest::decode(bytes.as_slice()) {
            let mut state = EvtState::new(Limits::default()).expect("default limits");
            let _ = state.apply(ctx(1, 0), publish_command(r));
        }
    }

    /// Publishes with every field at its extremes, on a state whose limits are anything that
    /// passes the check, then retention runs out at the far end of time.
    #[test]
    fn publishes_at_the_extremes_never_panic(
        limits in pb_limits(),
        requests in prop::collection::vec(
            (
                "[a-c]{0,2}",
                any::<bool>(),
                prop::collection::vec((bytes(4), bytes(4)), 0..4),
                prop_oneof![Just(u32::MAX), Just(256u32), 0u32..5],
                size(),
                ".{0,4}",
                bytes(64),
                size(),
            ),
            1..8,
        ),
    ) {
        let limits = limits_of(limits).unwrap_or_default();
        let mut state = EvtState::new(limits).expect("checked limits");
        let mut time_ms = 0u64;
        for (i, (channel, create, patterns, priority, retention_ms, publisher, data, step)) in
            requests.into_iter().enumerate()
        {
            time_ms = time_ms.saturating_add(step);
            let r = pb::PublishRequest {
                channel,
                create,
                patterns: patterns
                    .into_iter()
                    .map(|(name, value)| pb::Pattern { name, value })
                    .collect(),
                priority,
                retention_ms,
                publisher,
                data,
            };
            let index = i as u64 + 1;
            match state.apply(ctx(index, time_ms), publish_command(r)) {
                EvtResponse::Published { .. } => {}
                EvtResponse::Refused(e) => prop_assert!(!e.message.is_empty()),
                other => prop_assert!(false, "a publish answered {:?}", other),
            }
        }
        let _ = state.next_deadline_ms();
        let _ = state.apply(ctx(1_000, u64::MAX), EvtCommand::Expire);
    }
}
