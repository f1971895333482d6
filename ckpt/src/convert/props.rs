//! Hostile checkpoint requests: arbitrary wire requests (names empty, long or colliding; sizes,
//! offsets, lengths, epochs and times at the u64 extremes; unknown enum values), and requests
//! decoded from arbitrary bytes, are turned into commands as the service does, and those commands
//! applied to a `CkptState` and read back. Each step returns a value or a clear error (the state
//! machine checks its invariants after every command in these debug builds); none panics.
//!
//! Cases per property: 256 by default; `PROPTEST_CASES=100000` for a long run.

use nines_consensus::ApplyContext;
use nines_core::ErrorCode;
use nines_proto::ckpt::v1 as pb;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::{CkptCommand, CkptResponse, CkptState, SectionRead};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Numbers at the extremes and at the limits, and anywhere.
fn num() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            2,
            8,
            1_024,
            limits::SECTION_SIZE_MAX_LIMIT,
            limits::SECTION_SIZE_MAX_LIMIT + 1,
            limits::CHECKPOINT_SIZE_MAX_LIMIT,
            u64::from(u32::MAX),
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ]),
        any::<u64>(),
        0u64..64,
    ]
}

/// Names that collide often, plus empty, too long and arbitrary ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "s1", ""]).prop_map(String::from),
        1 => Just("n".repeat(limits::NAME_BYTES_MAX + 1)),
        1 => any::<String>(),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..24)
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![-1i32..5, any::<i32>()]
}

fn attributes() -> impl Strategy<Value = Option<pb::CreationAttributes>> {
    let sections_max = prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()];
    prop::option::of((enum_value(), sections_max, num(), num(), num()).prop_map(
        |(update_mode, sections_max, section_size_max, checkpoint_size_max, retention_ms)| {
            pb::CreationAttributes {
                update_mode,
                sections_max,
                section_size_max,
                checkpoint_size_max,
                retention_ms,
            }
        },
    ))
}

fn section_write() -> impl Strategy<Value = pb::SectionWrite> {
    (name(), enum_value(), num(), data()).prop_map(|(section, kind, offset, data)| {
        pb::SectionWrite {
            section,
            kind,
            offset,
            data,
        }
    })
}

/// One client request, as it arrives.
#[derive(Debug, Clone)]
enum Request {
    Open(pb::OpenRequest),
    Close(pb::CloseRequest),
    Unlink(pb::UnlinkRequest),
    CreateSection(pb::CreateSectionRequest),
    DeleteSection(pb::DeleteSectionRequest),
    Write(pb::WriteRequest),
    SetExpiration(pb::SetExpirationRequest),
    Read(pb::ReadRequest),
    Sections(pb::SectionsRequest),
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (name(), any::<bool>(), attributes()).prop_map(|(name, create, attributes)| {
            Request::Open(pb::OpenRequest {
                name,
                create,
                attributes,
                ..Default::default()
            })
        }),
        num().prop_map(|handle| Request::Close(pb::CloseRequest {
            handle,
            ..Default::default()
        })),
        name().prop_map(|name| Request::Unlink(pb::UnlinkRequest {
            name,
            ..Default::default()
        })),
        (name(), name(), data(), num(), num()).prop_map(
            |(checkpoint, section, data, expires_at_ms, epoch)| {
                Request::CreateSection(pb::CreateSectionRequest {
                    checkpoint,
                    section,
                    data,
                    expires_at_ms,
                    epoch,
                    ..Default::default()
                })
            }
        ),
        (name(), name(), num()).prop_map(|(checkpoint, section, epoch)| {
            Request::DeleteSection(pb::DeleteSectionRequest {
                checkpoint,
                section,
                epoch,
                ..Default::default()
            })
        }),
        (name(), prop::collection::vec(section_write(), 0..4), num()).prop_map(
            |(checkpoint, writes, epoch)| Request::Write(pb::WriteRequest {
                checkpoint,
                writes,
                epoch,
                ..Default::default()
            })
        ),
        (name(), name(), num(), num()).prop_map(|(checkpoint, section, expires_at_ms, epoch)| {
            Request::SetExpiration(pb::SetExpirationRequest {
                checkpoint,
                section,
                expires_at_ms,
                epoch,
                ..Default::default()
            })
        }),
        (name(), prop::collection::vec((name(), num(), num()), 0..4)).prop_map(
            |(checkpoint, reads)| Request::Read(pb::ReadRequest {
                checkpoint,
                reads: reads
                    .into_iter()
                    .map(|(section, offset, len)| pb::SectionRead {
                        section,
                        offset,
                        len,
                    })
                    .collect(),
                ..Default::default()
            })
        ),
        (name(), num()).prop_map(|(checkpoint, expiring_before_ms)| {
            Request::Sections(pb::SectionsRequest {
                checkpoint,
                expiring_before_ms,
                ..Default::default()
            })
        }),
    ]
}

/// A refusal must carry a message.
fn refused(e: &nines_core::AisError) {
    assert!(!e.message.is_empty(), "{e:?}");
}

/// The command the service would propose for `r` (`None`: refused before proposing, or a read,
/// which is served here at once).
fn command(state: &CkptState, r: Request) -> Option<CkptCommand> {
    let cmd = match r {
        Request::Open(r) => CkptCommand::Open {
            create: if r.create {
                match attrs_from_pb(r.attributes.as_ref()) {
                    Ok(a) => {
                        assert_eq!(attrs_from_pb(Some(&attrs_to_pb(&a))), Ok(a.clone()));
                        Some(a)
                    }
                    Err(e) => {
                        assert!(!e.is_empty());
                        return None;
                    }
                }
            } else {
                None
            },
            name: r.name,
        },
        Request::Close(r) => CkptCommand::Close { handle: r.handle },
        Request::Unlink(r) => CkptCommand::Unlink { name: r.name },
        Request::CreateSection(r) => {
            if let Err(e) = check_write_sizes(&[r.data.len() as u64]) {
                refused(&e);
                return None;
            }
            CkptCommand::CreateSection {
                ckpt: r.checkpoint,
                section: (!r.section.is_empty()).then_some(r.section),
                data: r.data,
                expires_at_ms: r.expires_at_ms,
                epoch: r.epoch,
            }
        }
        Request::DeleteSection(r) => CkptCommand::DeleteSection {
            ckpt: r.checkpoint,
            section: r.section,
            epoch: r.epoch,
        },
        Request::Write(r) => {
            let checked =
                check_write_sizes(&write_sizes(&r.writes)).and_then(|()| writes_from_pb(r.writes));
            match checked {
                Ok(writes) => CkptCommand::Write {
                    ckpt: r.checkpoint,
                    writes,
                    epoch: r.epoch,
                },
                Err(e) => {
                    refused(&e);
                    return None;
                }
            }
        }
        Request::SetExpiration(r) => CkptCommand::SetExpiration {
            ckpt: r.checkpoint,
            section: r.section,
            expires_at_ms: r.expires_at_ms,
            epoch: r.epoch,
        },
        Request::Read(r) => {
            let reads: Vec<SectionRead> = r
                .reads
                .into_iter()
                .map(|s| SectionRead {
                    section: s.section,
                    offset: s.offset,
                    len: s.len,
                })
                .collect();
            if let Err(e) = state.read(&r.checkpoint, &reads) {
                refused(&e);
            }
            return None;
        }
        Request::Sections(r) => {
            let before = (r.expiring_before_ms != 0).then_some(r.expiring_before_ms);
            if let Err(e) = state.sections(&r.checkpoint, before) {
                refused(&e);
            }
            let _ = (state.status(&r.checkpoint), state.list());
            return None;
        }
    };
    Some(cmd)
}

/// Found while writing `requests_never_panic` (the arithmetic its values reach): two writes ending near `u64::MAX` overflowed the total the
/// service checks against the proposal limit (a debug build panicked; a release build wrapped to
/// a small total and let the request on to the per-section check).
#[test]
fn write_sizes_near_u64_max_are_too_big_not_overflowed() {
    let writes = vec![
        pb::SectionWrite {
            section: "a".into(),
            kind: pb::WriteKind::Write as i32,
            offset: u64::MAX - 1,
            data: vec![0],
        },
        pb::SectionWrite {
            section: "b".into(),
            kind: pb::WriteKind::Write as i32,
            offset: 2,
            data: vec![],
        },
    ];
    let e = check_write_sizes(&write_sizes(&writes)).expect_err("too big");
    assert_eq!(e.code, ErrorCode::TooBig);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn requests_never_panic(
        requests in prop::collection::vec((request(), num()), 1..16),
    ) {
        let mut state = CkptState::default();
        let mut time_ms = 0u64;
        for (i, (r, step)) in requests.into_iter().enumerate() {
            time_ms = time_ms.saturating_add(step);
            let Some(cmd) = command(&state, r) else { continue };
            let ctx = ApplyContext { index: i as u64 + 1, term: 1, time_ms };
            if let CkptResponse::Error(e) = state.apply(ctx, cmd) {
                refused(&e);
            }
        }
        let _ = state.next_deadline_ms();
        let ctx = ApplyContext { index: 1_000, term: 1, time_ms: u64::MAX };
        let _ = state.apply(ctx, CkptCommand::Expire);
    }

    #[test]
    fn decoded_requests_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let state = CkptState::default();
        let b = bytes.as_slice();
        let decoded = [
            pb::OpenRequest::decode(b).ok().map(Request::Open),
            pb::CreateSectionRequest::decode(b).ok().map(Request::CreateSection),
            pb::WriteRequest::decode(b).ok().map(Request::Write),
            pb::SetExpirationRequest::decode(b).ok().map(Request::SetExpiration),
            pb::ReadRequest::decode(b).ok().map(Request::Read),
        ];
        for r in decoded.into_iter().flatten() {
            if let Some(cmd) = command(&state, r) {
                let mut state = state.clone();
                let ctx = ApplyContext { index: 1, term: 1, time_ms: 0 };
                let _ = state.apply(ctx, cmd);
            }
        }
    }

    #[test]
    fn write_size_checks_never_panic(sizes in prop::collection::vec(num(), 0..1_100)) {
        match check_write_sizes(&sizes) {
            Ok(()) => prop_assert!(!sizes.is_empty()),
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::InvalidParam | ErrorCode::TooBig)),
        }
    }
}
