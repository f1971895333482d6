//! Hostile agent messages: whatever the SDK decodes from the agent (`AgentMessage` from arbitrary
//! bytes, or built field by field with unknown enum values and u64 extremes) goes through the
//! SDK's conversions (`Registered` into the session's lease and watchdog flush interval, lease
//! grants, `CsiSet` into the plain type) and each returns a value or a clear error, never a
//! panic.
//!
//! Cases per property: 256 by default; `PROPTEST_CASES=100000` for a long run.

use nines_proto::amf::v1 as pb;
use proptest::prelude::*;
use prost::Message;

use super::{lease::Lease, watchdog::flush_interval, CsiSet};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn num() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            3,
            4,
            u64::MAX / 4 + 1,
            u64::MAX / 3 + 1,
            u64::MAX
        ]),
        any::<u64>(),
    ]
}

fn csi_set() -> impl Strategy<Value = pb::CsiSet> {
    let attributes = prop::collection::hash_map(".{0,4}", ".{0,4}", 0..4);
    (
        (
            ".{0,4}",
            ".{0,4}",
            prop_oneof![-1i32..6, any::<i32>()],
            num(),
        ),
        (prop_oneof![-1i32..5, any::<i32>()], attributes, ".{0,4}"),
    )
        .prop_map(
            |((si, csi, ha_state, epoch), (descriptor, attributes, active_component))| pb::CsiSet {
                si,
                csi,
                ha_state,
                epoch,
                descriptor,
                attributes,
                active_component,
            },
        )
}

/// What the SDK does with one message from the agent, short of calling the application.
fn take(msg: pb::AgentMessage) {
    match msg.msg {
        Some(pb::agent_message::Msg::Registered(r)) => {
            let lease = Lease::new(&r.component, r.lease_deadline_mono_ns, r.lease_reaction_ms);
            let _ = (lease.quiesce_bound(), lease.is_valid(), lease.deadline_ns());
            let _ = flush_interval(r.watchdog_ms);
            lease.stop();
        }
        Some(pb::agent_message::Msg::Lease(grant)) => {
            let lease = Lease::new("c", 0, 0);
            let _ = lease.renew(grant.deadline_mono_ns);
            let _ = lease.renew(grant.deadline_mono_ns.saturating_sub(1));
            lease.stop();
        }
        Some(pb::agent_message::Msg::Invocation(i)) => {
            if let Some(pb::invocation::Kind::CsiSet(set)) = i.kind {
                if let Err(e) = CsiSet::from_proto(set) {
                    assert!(!e.is_empty());
                }
            }
        }
        None => {}
    }
}

/// Found while writing `registrations_never_panic` (the arithmetic its values reach): a `lease_reaction_ms` above `u64::MAX / 3` overflowed
/// the quiesce bound's arithmetic (a debug build panicked).
#[test]
fn a_huge_reaction_time_is_not_overflowed() {
    let lease = Lease::new("c", 0, u64::MAX);
    assert_eq!(lease.quiesce_bound().as_millis(), u128::from(u64::MAX / 4));
    lease.stop();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn decoded_agent_messages_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(msg) = pb::AgentMessage::decode(bytes.as_slice()) {
            take(msg);
        }
    }

    #[test]
    fn registrations_never_panic(
        component in ".{0,8}",
        lease_ms in num(),
        watchdog_ms in num(),
        lease_deadline_mono_ns in num(),
        lease_reaction_ms in num(),
    ) {
        take(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Registered(pb::Registered {
                component,
                node: "n".into(),
                lease_ms,
                watchdog_ms,
                lease_deadline_mono_ns,
                lease_reaction_ms,
            })),
        });
    }

    #[test]
    fn lease_grants_never_panic(deadline_mono_ns in num()) {
        take(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Lease(pb::LeaseGrant { deadline_mono_ns })),
        });
    }

    #[test]
    fn csi_sets_convert_or_are_refused(set in csi_set(), id in num()) {
        let known = (1..=4).contains(&set.ha_state);
        let converted = CsiSet::from_proto(set.clone());
        prop_assert_eq!(converted.is_ok(), known);
        take(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Invocation(pb::Invocation {
                id,
                kind: Some(pb::invocation::Kind::CsiSet(set)),
            })),
        });
    }
}
