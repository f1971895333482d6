//! Decoding raft-rs's messages from bytes a peer sent, without raft-rs's protobuf 2 parser.
//!
//! raft-rs 0.7 types are protobuf 2.x messages, and that parser has no recursion limit: a few
//! kilobytes of nested groups or messages overflow the stack before any check runs. Every byte
//! that arrives from the network is therefore decoded here with prost (whose decoder refuses to
//! nest deeper than a fixed limit) into the mirror types of `nines_proto::raftwire::v1` (same
//! field numbers and types as raft-rs's `eraftpb`), then copied field by field into raft-rs's
//! type. Unknown fields are dropped by prost and nothing else is copied, so no sender-chosen
//! unknown field survives into raft-rs (or into the log store, which re-encodes what raft hands
//! it). An enum value this version does not know is refused: raft-rs's parser would have
//! silently replaced it with the default, which for a message type is `MsgHup`.
//!
//! What goes through here: every raft message of a `MessageBatch` (gRPC `RaftPeer` and the raft
//! link), and the conf changes inside committed entries (their bytes came from the leader).
//! Sending still encodes with raft-rs's own types: encoding is not what the advisory is about,
//! and the bytes are identical (tests below decode raft-rs's encodings and compare).

use nines_proto::raftwire::v1 as wire;
use prost::Message as _;
use protobuf::ProtobufEnum;
use raft::eraftpb;

/// Why bytes could not become a raft-rs value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Not a well-formed protobuf encoding of the type (or nested too deeply).
    #[error("undecodable {what}: {reason}")]
    Undecodable {
        /// The type being decoded.
        what: &'static str,
        /// prost's reason.
        reason: String,
    },
    /// An enum field holds a value raft-rs 0.7 does not define.
    #[error("{field} {value} is not a value raft-rs knows")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value found.
        value: i32,
    },
}

fn undecodable(what: &'static str, e: prost::DecodeError) -> WireError {
    WireError::Undecodable {
        what,
        reason: e.to_string(),
    }
}

fn known<E: ProtobufEnum>(field: &'static str, value: i32) -> Result<E, WireError> {
    E::from_i32(value).ok_or(WireError::UnknownEnum { field, value })
}

/// A raft message from a peer's bytes.
///
/// # Errors
/// [`WireError`] for bytes that are no `eraftpb.Message`, or hold an enum value raft-rs lacks.
pub(crate) fn decode_message(bytes: &[u8]) -> Result<eraftpb::Message, WireError> {
    let m = wire::Message::decode(bytes).map_err(|e| undecodable("raft message", e))?;
    message_from_wire(m)
}

/// A `ConfChange` from a committed entry's data.
///
/// # Errors
/// As [`decode_message`].
pub(crate) fn decode_conf_change(bytes: &[u8]) -> Result<eraftpb::ConfChange, WireError> {
    let w = wire::ConfChange::decode(bytes).map_err(|e| undecodable("conf change", e))?;
    let mut cc = eraftpb::ConfChange::default();
    cc.set_id(w.id);
    cc.set_change_type(known("conf change type", w.change_type)?);
    cc.set_node_id(w.node_id);
    cc.set_context(w.context.into());
    Ok(cc)
}

/// A `ConfChangeV2` from a committed entry's data.
///
/// # Errors
/// As [`decode_message`].
pub(crate) fn decode_conf_change_v2(bytes: &[u8]) -> Result<eraftpb::ConfChangeV2, WireError> {
    let w = wire::ConfChangeV2::decode(bytes).map_err(|e| undecodable("conf change v2", e))?;
    let mut cc = eraftpb::ConfChangeV2::default();
    cc.set_transition(known("conf change transition", w.transition)?);
    let mut changes = Vec::with_capacity(w.changes.len());
    for c in w.changes {
        let mut single = eraftpb::ConfChangeSingle::default();
        single.set_change_type(known("conf change type", c.change_type)?);
        single.set_node_id(c.node_id);
        changes.push(single);
    }
    cc.set_changes(changes.into());
    cc.set_context(w.context.into());
    Ok(cc)
}

fn message_from_wire(w: wire::Message) -> Result<eraftpb::Message, WireError> {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(known("message type", w.msg_type)?);
    m.set_to(w.to);
    m.set_from(w.from);
    m.set_term(w.term);
    m.set_log_term(w.log_term);
    m.set_index(w.index);
    let entries = w
        .entries
        .into_iter()
        .map(entry_from_wire)
        .collect::<Result<Vec<_>, _>>()?;
    m.set_entries(entries.into());
    m.set_commit(w.commit);
    m.set_commit_term(w.commit_term);
    if let Some(s) = w.snapshot {
        m.set_snapshot(snapshot_from_wire(s));
    }
    m.set_request_snapshot(w.request_snapshot);
    m.set_reject(w.reject);
    m.set_reject_hint(w.reject_hint);
    m.set_context(w.context.into());
    m.set_deprecated_priority(w.deprecated_priority);
    m.set_priority(w.priority);
    Ok(m)
}

fn entry_from_wire(w: wire::Entry) -> Result<eraftpb::Entry, WireError> {
    let mut e = eraftpb::Entry::default();
    e.set_entry_type(known("entry type", w.entry_type)?);
    e.set_term(w.term);
    e.set_index(w.index);
    e.set_data(w.data.into());
    e.set_context(w.context.into());
    e.set_sync_log(w.sync_log);
    Ok(e)
}

fn snapshot_from_wire(w: wire::Snapshot) -> eraftpb::Snapshot {
    let mut s = eraftpb::Snapshot::default();
    s.set_data(w.data.into());
    if let Some(meta) = w.metadata {
        let mut m = eraftpb::SnapshotMetadata::default();
        if let Some(cs) = meta.conf_state {
            m.set_conf_state(conf_state_from_wire(cs));
        }
        m.set_index(meta.index);
        m.set_term(meta.term);
        s.set_metadata(m);
    }
    s
}

fn conf_state_from_wire(w: wire::ConfState) -> eraftpb::ConfState {
    let mut cs = eraftpb::ConfState::default();
    cs.set_voters(w.voters);
    cs.set_learners(w.learners);
    cs.set_voters_outgoing(w.voters_outgoing);
    cs.set_learners_next(w.learners_next);
    cs.set_auto_leave(w.auto_leave);
    cs
}

#[cfg(test)]
// Messages are built field by field, as raft-rs's own tests do.
#[allow(clippy::field_reassign_with_default)]
pub(crate) mod tests {
    use super::*;
    use eraftpb::{ConfChangeType, EntryType, MessageType};
    use proptest::prelude::*;
    use protobuf::Message as _;

    fn entry(index: u64, term: u64, kind: EntryType, data: &[u8]) -> eraftpb::Entry {
        let mut e = eraftpb::Entry::default();
        e.set_entry_type(kind);
        e.index = index;
        e.term = term;
        e.data = data.to_vec().into();
        e.context = b"stamp".to_vec().into();
        e
    }

    /// One message of every type raft-rs defines, each with every field it may carry set.
    fn every_type() -> Vec<eraftpb::Message> {
        MessageType::values()
            .iter()
            .map(|&t| {
                let mut m = eraftpb::Message::default();
                m.set_msg_type(t);
                m.to = 2;
                m.from = 3;
                m.term = 7;
                m.log_term = 6;
                m.index = 41;
                m.entries = vec![
                    entry(42, 6, EntryType::EntryNormal, b"command"),
                    entry(43, 7, EntryType::EntryConfChange, b"cc"),
                    entry(44, 7, EntryType::EntryConfChangeV2, b""),
                ]
                .into();
                m.commit = 40;
                m.commit_term = 5;
                let mut snap = eraftpb::Snapshot::default();
                snap.data = b"state image".to_vec().into();
                let meta = snap.mut_metadata();
                meta.index = 39;
                meta.term = 5;
                let cs = meta.mut_conf_state();
                cs.voters = vec![1, 2, 3];
                cs.learners = vec![4];
                cs.voters_outgoing = vec![1, 2, 5];
                cs.learners_next = vec![5];
                cs.auto_leave = true;
                m.set_snapshot(snap);
                m.request_snapshot = 38;
                m.reject = true;
                m.reject_hint = 37;
                m.context = b"CampaignTransfer".to_vec().into();
                m.deprecated_priority = 9;
                m.priority = -3;
                m
            })
            .collect()
    }

    #[test]
    fn every_message_type_decodes_to_what_raft_rs_encoded() {
        for m in every_type() {
            let bytes = m.write_to_bytes().expect("raft-rs encodes");
            assert_eq!(decode_message(&bytes), Ok(m.clone()), "{:?}", m.msg_type);
        }
        // And a message with nothing set (all defaults: a MsgHup to node 0).
        let empty = eraftpb::Message::default();
        let bytes = empty.write_to_bytes().expect("raft-rs encodes");
        assert_eq!(decode_message(&bytes), Ok(empty));
    }

    #[test]
    fn conf_changes_decode_to_what_raft_rs_encoded() {
        for t in ConfChangeType::values() {
            let mut cc = eraftpb::ConfChange::default();
            cc.id = 12;
            cc.set_change_type(*t);
            cc.node_id = 4;
            cc.context = b"peer info".to_vec().into();
            let bytes = cc.write_to_bytes().expect("raft-rs encodes");
            assert_eq!(decode_conf_change(&bytes), Ok(cc));
        }
        for t in eraftpb::ConfChangeTransition::values() {
            let mut cc = eraftpb::ConfChangeV2::default();
            cc.set_transition(*t);
            let mut a = eraftpb::ConfChangeSingle::default();
            a.set_change_type(ConfChangeType::AddLearnerNode);
            a.node_id = 5;
            let mut b = eraftpb::ConfChangeSingle::default();
            b.set_change_type(ConfChangeType::RemoveNode);
            b.node_id = 2;
            cc.changes = vec![a, b].into();
            cc.context = b"ctx".to_vec().into();
            let bytes = cc.write_to_bytes().expect("raft-rs encodes");
            assert_eq!(decode_conf_change_v2(&bytes), Ok(cc));
        }
        assert_eq!(
            decode_conf_change_v2(&[]),
            Ok(eraftpb::ConfChangeV2::default())
        );
    }

    #[test]
    fn unknown_fields_are_dropped_and_unknown_enums_refused() {
        let mut m = eraftpb::Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.term = 3;
        let mut bytes = m.write_to_bytes().expect("raft-rs encodes");
        // Field 99, varint 1: unknown to both sides.
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        let decoded = decode_message(&bytes).expect("unknown fields are skipped");
        assert_eq!(decoded, m);
        assert!(decoded.get_unknown_fields().fields.is_none());

        // msg_type 19 does not exist: raft-rs's parser would have made it MsgHup.
        let err = decode_message(&[0x08, 19]).expect_err("unknown message type");
        assert!(
            matches!(err, WireError::UnknownEnum { value: 19, .. }),
            "{err}"
        );
        // An entry type that does not exist, inside a message.
        let err = decode_message(&[0x3a, 0x02, 0x08, 0x07]).expect_err("unknown entry type");
        assert!(
            matches!(err, WireError::UnknownEnum { value: 7, .. }),
            "{err}"
        );
        let err = decode_conf_change(&[0x10, 0x05]).expect_err("unknown change type");
        assert!(
            matches!(err, WireError::UnknownEnum { value: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn deeply_nested_groups_are_refused_not_a_stack_overflow() {
        // The advisory's shape: an unknown field opening group after group (wire type 3, field
        // 99). protobuf 2 recurses once per level and overflows the stack; prost stops at its
        // depth limit and reports an error.
        let depth = 100_000usize;
        let mut bytes = Vec::with_capacity(2 * depth);
        for _ in 0..depth {
            bytes.extend_from_slice(&[0x9b, 0x06]);
        }
        assert!(decode_message(&bytes).is_err());
        assert!(decode_conf_change(&bytes).is_err());
        assert!(decode_conf_change_v2(&bytes).is_err());
        // The same inside an entry of a message.
        let mut nested = vec![0x3a];
        prost::encoding::encode_varint(bytes.len() as u64, &mut nested);
        nested.extend_from_slice(&bytes);
        assert!(decode_message(&nested).is_err());
    }

    /// Strategies for arbitrary raft-rs values (shared with the validator's tests).
    pub(crate) mod arb {
        use super::*;

        pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(any::<u8>(), 0..=max)
        }

        /// Small numbers most of the time (they meet each other), any u64 sometimes.
        pub(crate) fn num() -> impl Strategy<Value = u64> {
            prop_oneof![4 => 0u64..8, 1 => any::<u64>()]
        }

        pub(crate) fn entry() -> impl Strategy<Value = eraftpb::Entry> {
            (0usize..3, num(), num(), bytes(16), bytes(8), any::<bool>()).prop_map(
                |(t, term, index, data, context, sync_log)| {
                    let mut e = eraftpb::Entry::default();
                    e.set_entry_type(EntryType::values()[t]);
                    e.term = term;
                    e.index = index;
                    e.data = data.into();
                    e.context = context.into();
                    e.sync_log = sync_log;
                    e
                },
            )
        }

        pub(crate) fn ids() -> impl Strategy<Value = Vec<u64>> {
            proptest::collection::vec(num(), 0..4)
        }

        pub(crate) fn snapshot() -> impl Strategy<Value = Option<eraftpb::Snapshot>> {
            proptest::option::of(
                (
                    bytes(16),
                    num(),
                    num(),
                    ids(),
                    ids(),
                    ids(),
                    ids(),
                    any::<bool>(),
                )
                    .prop_map(|(data, index, term, v, l, vo, ln, auto_leave)| {
                        let mut s = eraftpb::Snapshot::default();
                        s.data = data.into();
                        let meta = s.mut_metadata();
                        meta.index = index;
                        meta.term = term;
                        let cs = meta.mut_conf_state();
                        cs.voters = v;
                        cs.learners = l;
                        cs.voters_outgoing = vo;
                        cs.learners_next = ln;
                        cs.auto_leave = auto_leave;
                        s
                    }),
            )
        }

        pub(crate) fn message() -> impl Strategy<Value = eraftpb::Message> {
            (
                (0usize..19, num(), num(), num(), num(), num()),
                proptest::collection::vec(entry(), 0..4),
                (num(), num(), snapshot(), num(), any::<bool>(), num()),
                (bytes(8), num(), any::<i64>()),
            )
                .prop_map(|(head, entries, mid, tail)| {
                    let (t, to, from, term, log_term, index) = head;
                    let (commit, commit_term, snap, request_snapshot, reject, reject_hint) = mid;
                    let (context, deprecated_priority, priority) = tail;
                    let mut m = eraftpb::Message::default();
                    m.set_msg_type(MessageType::values()[t]);
                    m.to = to;
                    m.from = from;
                    m.term = term;
                    m.log_term = log_term;
                    m.index = index;
                    m.entries = entries.into();
                    m.commit = commit;
                    m.commit_term = commit_term;
                    if let Some(s) = snap {
                        m.set_snapshot(s);
                    }
                    m.request_snapshot = request_snapshot;
                    m.reject = reject;
                    m.reject_hint = reject_hint;
                    m.context = context.into();
                    m.deprecated_priority = deprecated_priority;
                    m.priority = priority;
                    m
                })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            crate::inbound::tests::proptest_cases()
        ))]

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in arb::bytes(256)) {
            let _ = decode_message(&bytes);
            let _ = decode_conf_change(&bytes);
            let _ = decode_conf_change_v2(&bytes);
        }

        #[test]
        fn arbitrary_raft_messages_round_trip(m in arb::message()) {
            let bytes = m.write_to_bytes().expect("raft-rs encodes");
            prop_assert_eq!(decode_message(&bytes), Ok(m));
        }
    }
}
