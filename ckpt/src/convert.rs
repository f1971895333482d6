//! Wire ↔ domain conversions for the checkpoint service.

use nines_proto::ckpt::v1 as pb;

use crate::{limits::defaults, Attributes, CheckpointStatus, UpdateMode};

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
