//! Hostile component messages: whatever the agent decodes from a component's session
//! (`ComponentMessage` from arbitrary bytes, or built field by field with unknown enum values and
//! u64 extremes) goes through the agent's conversions (the Register check, error reports' recovery,
//! belief reports into the director's view) and each returns a value or a clear refusal, never a
//! panic.
//!
//! Cases per property: 256 by default; `PROPTEST_CASES=100000` for a long run.

use nines_core::PROTOCOL_VERSION;
use nines_proto::amf::v1 as pb;
use proptest::prelude::*;
use prost::Message;

use super::service::{check_register, BELIEVED_CSIS_MAX};
use crate::amf_link::{believed, recovery};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![-1i32..8, any::<i32>()]
}

fn belief() -> impl Strategy<Value = pb::Belief> {
    let csi =
        (".{0,4}", ".{0,4}", enum_value(), any::<u64>()).prop_map(|(si, csi, ha_state, epoch)| {
            pb::BelievedCsi {
                si,
                csi,
                ha_state,
                epoch,
            }
        });
    (prop::collection::vec(csi, 0..8), any::<bool>()).prop_map(|(csis, lease_expired)| pb::Belief {
        csis,
        lease_expired,
    })
}

/// What the agent does with one message from a registered component, short of the hub.
fn take(msg: pb::ComponentMessage) {
    match msg.msg {
        Some(pb::component_message::Msg::ErrorReport(e)) => {
            let _ = recovery(
                pb::Recovery::try_from(e.recommended).unwrap_or(pb::Recovery::Unspecified),
            );
        }
        Some(pb::component_message::Msg::Belief(b)) if b.csis.len() <= BELIEVED_CSIS_MAX => {
            let view = believed(&b);
            assert!(view.len() <= b.csis.len());
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn decoded_component_messages_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(msg) = pb::ComponentMessage::decode(bytes.as_slice()) {
            if let Err(status) = check_register(Some(msg.clone())) {
                prop_assert!(!status.message().is_empty());
            }
            take(msg);
        }
    }

    #[test]
    fn registers_are_checked(
        component in ".{0,8}",
        protocol_version in prop_oneof![Just(PROTOCOL_VERSION), any::<u32>()],
        honours_lease in any::<bool>(),
    ) {
        let good = !component.is_empty() && protocol_version == PROTOCOL_VERSION && honours_lease;
        let msg = pb::ComponentMessage {
            msg: Some(pb::component_message::Msg::Register(pb::Register {
                component,
                protocol_version,
                honours_lease,
            })),
        };
        prop_assert_eq!(check_register(Some(msg)).is_ok(), good);
        prop_assert!(check_register(None).is_err());
    }

    #[test]
    fn reports_and_beliefs_never_panic(
        recommended in enum_value(),
        reason in ".{0,8}",
        belief in belief(),
    ) {
        take(pb::ComponentMessage {
            msg: Some(pb::component_message::Msg::ErrorReport(pb::ErrorReport {
                recommended,
                reason,
            })),
        });
        let known = belief.csis.iter().filter(|c| (1..=4).contains(&c.ha_state)).count();
        prop_assert!(believed(&belief).len() <= known);
        take(pb::ComponentMessage { msg: Some(pb::component_message::Msg::Belief(belief)) });
    }
}
