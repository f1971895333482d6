//! Wire ↔ domain conversions for the checkpoint service.

use nines_core::{limits as core_limits, AisError, ErrorCode};
use nines_proto::ckpt::v1 as pb;

use crate::{
    limits::{self, defaults},
    Attributes, CheckpointStatus, SectionWrite, UpdateMode, WriteKind,
};

/// Creation attributes from the wire; zero fields take the defaults.
pub(crate) fn attrs_from_pb(a: Option<&pb::CreationAttributes>) -> Result<Attributes, String> {
    let d = pb::CreationAttributes::default();
    let a = a.unwrap_or(&d);
    let update_mode = match pb::UpdateMode::try_from(a.update_mode) {
        Ok(pb::UpdateMode::Async) => UpdateMode::Async,
        Ok(pb::UpdateMode::Sync | pb::UpdateMode::Unspecified) => UpdateMode::Sync,
        Err(_) => return Err(format!("unknown update mode {}", a.update_mode)),
    };
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    let section_size_max = or(a.section_size_max, defaults::SECTION_SIZE_MAX);
    Ok(Attributes {
        update_mode,
        sections_max: if a.sections_max == 0 {
            defaults::SECTIONS_MAX
        } else {
            a.sections_max
        },
        section_size_max,
        checkpoint_size_max: or(
            a.checkpoint_size_max,
            defaults::CHECKPOINT_SIZE_MAX.max(section_size_max),
        ),
        retention_ms: a.retention_ms,
    })
}

/// A section write's kind from the wire.
pub(crate) fn write_kind(k: i32) -> Result<WriteKind, AisError> {
    match pb::WriteKind::try_from(k) {
        Ok(pb::WriteKind::Write) => Ok(WriteKind::Write),
        Ok(pb::WriteKind::Overwrite) => Ok(WriteKind::Overwrite),
        Ok(pb::WriteKind::Upsert) => Ok(WriteKind::Upsert),
        _ => Err(AisError::new(
            ErrorCode::InvalidParam,
            "each section write needs a kind (write, overwrite, upsert)",
        )),
    }
}

/// A write request's section writes from the wire.
pub(crate) fn writes_from_pb(writes: Vec<pb::SectionWrite>) -> Result<Vec<SectionWrite>, AisError> {
    writes
        .into_iter()
        .map(|w| {
            Ok(SectionWrite {
                section: w.section,
                kind: write_kind(w.kind)?,
                offset: w.offset,
                data: w.data,
            })
        })
        .collect()
}

/// The size each write needs its section to allow: where its data ends (saturating: an offset
/// near `u64::MAX` is refused as too big, not wrapped).
pub(crate) fn write_sizes(writes: &[pb::SectionWrite]) -> Vec<u64> {
    writes
        .iter()
        .map(|w| w.offset.saturating_add(w.data.len() as u64))
        .collect()
}

/// Refuse a write beyond the service's own limits, before anything is read or proposed: no
/// section (INVALID_PARAM), more than `WRITES_PER_CALL_MAX` sections or more than a proposal's
/// bytes in all (TOO_BIG).
pub(crate) fn check_write_sizes(sizes: &[u64]) -> Result<(), AisError> {
    if sizes.is_empty() {
        return Err(AisError::new(
            ErrorCode::InvalidParam,
            "a write needs at least one section",
        ));
    }
    if sizes.len() > limits::WRITES_PER_CALL_MAX {
        return Err(AisError::new(
            ErrorCode::TooBig,
            format!(
                "{} section writes in one call; the limit is {}",
                sizes.len(),
                limits::WRITES_PER_CALL_MAX
            ),
        ));
    }
    // Saturating: sizes come from client offsets, and two near u64::MAX overflowed the sum.
    let total = sizes.iter().fold(0u64, |sum, s| sum.saturating_add(*s));
    if total > core_limits::PROPOSAL_BYTES_MAX as u64 {
        return Err(AisError::new(
            ErrorCode::TooBig,
            format!(
                "{total} bytes in one call; the limit is {}",
                core_limits::PROPOSAL_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// Creation attributes for the wire.
pub(crate) fn attrs_to_pb(a: &Attributes) -> pb::CreationAttributes {
    pb::CreationAttributes {
        update_mode: match a.update_mode {
            UpdateMode::Sync => pb::UpdateMode::Sync,
            UpdateMode::Async => pb::UpdateMode::Async,
        } as i32,
        sections_max: a.sections_max,
        section_size_max: a.section_size_max,
        checkpoint_size_max: a.checkpoint_size_max,
        retention_ms: a.retention_ms,
    }
}

/// A checkpoint's status for the wire.
pub(crate) fn status_to_pb(s: &CheckpointStatus) -> pb::CheckpointStatus {
    pb::CheckpointStatus {
        name: s.name.clone(),
        attributes: Some(attrs_to_pb(&s.attributes)),
        sections_used: s.sections_used,
        bytes_used: s.bytes_used,
        open_handles: s.open_handles,
        max_epoch: s.max_epoch,
        retention_deadline_ms: s.retention_deadline_ms,
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_attributes_take_defaults_and_round_trip() {
        let a = attrs_from_pb(None).expect("defaults");
        assert_eq!(a.sections_max, defaults::SECTIONS_MAX);
        assert_eq!(a.update_mode, UpdateMode::Sync);
        assert_eq!(
            attrs_from_pb(Some(&attrs_to_pb(&a))).expect("round trip"),
            a
        );
        let bad = pb::CreationAttributes {
            update_mode: 99,
            ..Default::default()
        };
        assert!(attrs_from_pb(Some(&bad)).is_err());
    }
}
