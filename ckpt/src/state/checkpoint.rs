//! The per-checkpoint records: [`Checkpoint`] and its [`Section`]s, with their serde encoding.

use std::collections::{BTreeMap, BTreeSet};

use nines_core::AisError;
use serde::{Deserialize, Serialize};

use super::validate::{count_u32, len_u64, section_not_exist};
use super::CheckpointStatus;
use crate::command::Attributes;

/// One section: its bytes and its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Section {
    /// The data; serialized as one byte string so snapshots copy it instead of encoding it
    /// byte by byte.
    #[serde(with = "nines_core::bytes")]
    pub(super) data: Vec<u8>,
    /// Absolute expiration time; 0 = never. Non-zero values are mirrored in
    /// [`CkptState::expiry_queue`](super::CkptState::expiry_queue).
    pub(super) expires_at_ms: u64,
    /// Log index of the last change.
    pub(super) last_update_index: u64,
}

impl Section {
    /// The data's length in bytes.
    pub(super) fn size(&self) -> u64 {
        len_u64(&self.data)
    }
}

/// One checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    /// Creation attributes, fixed for its life.
    pub(super) attributes: Attributes,
    /// Sections by id (ordered, so listings are sorted).
    pub(super) sections: BTreeMap<String, Section>,
    /// Sum of the sections' sizes, kept so limit checks are O(1).
    pub(super) bytes_used: u64,
    /// Open handles; mirrored in [`CkptState::handles`](super::CkptState::handles).
    pub(super) handles: BTreeSet<u64>,
    /// Highest fencing epoch accepted; 0 = never fenced.
    pub(super) max_epoch: u64,
    /// When retention deletes it; 0 = not scheduled. Non-zero values are mirrored in
    /// [`CkptState::retention_queue`](super::CkptState::retention_queue).
    pub(super) retention_deadline_ms: u64,
    /// The N of the last generated section id `s<N>`.
    pub(super) last_generated_id: u64,
}

impl Checkpoint {
    /// A new, empty checkpoint.
    pub(super) fn new(attributes: Attributes) -> Self {
        Self {
            attributes,
            sections: BTreeMap::new(),
            bytes_used: 0,
            handles: BTreeSet::new(),
            max_epoch: 0,
            retention_deadline_ms: 0,
            last_generated_id: 0,
        }
    }

    /// The next free generated id and the counter value that produced it. Skips ids a caller
    /// chose; ends within `sections.len() + 1` tries.
    pub(super) fn next_generated_id(&self) -> (String, u64) {
        let mut n = self.last_generated_id;
        loop {
            n = n.checked_add(1).expect("section id counter below u64::MAX");
            let id = format!("s{n}");
            if !self.sections.contains_key(&id) {
                return (id, n);
            }
        }
    }

    /// This checkpoint's status under `name`.
    pub(super) fn status(&self, name: &str) -> CheckpointStatus {
        CheckpointStatus {
            name: name.to_owned(),
            attributes: self.attributes.clone(),
            sections_used: count_u32(self.sections.len()),
            bytes_used: self.bytes_used,
            open_handles: count_u32(self.handles.len()),
            max_epoch: self.max_epoch,
            retention_deadline_ms: self.retention_deadline_ms,
        }
    }

    /// The section `id`, or NOT_EXIST.
    pub(super) fn section(&self, ckpt: &str, id: &str) -> Result<&Section, AisError> {
        self.sections
            .get(id)
            .ok_or_else(|| section_not_exist(ckpt, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::attrs;

    #[test]
    fn generated_ids_skip_taken_ones() {
        let mut ckpt = Checkpoint::new(attrs());
        let section = Section {
            data: Vec::new(),
            expires_at_ms: 0,
            last_update_index: 1,
        };
        ckpt.sections.insert("s1".into(), section.clone());
        ckpt.sections.insert("s2".into(), section);
        assert_eq!(ckpt.next_generated_id(), ("s3".to_owned(), 3));
        ckpt.last_generated_id = 3;
        assert_eq!(ckpt.next_generated_id(), ("s4".to_owned(), 4));
    }

    #[test]
    fn section_bytes_encode_like_a_byte_vector() {
        let section = Section {
            data: vec![0, 1, 2, 255],
            expires_at_ms: 7,
            last_update_index: 9,
        };
        let plain = (vec![0u8, 1, 2, 255], 7u64, 9u64);
        let bytes = postcard::to_allocvec(&section).expect("serializes");
        assert_eq!(bytes, postcard::to_allocvec(&plain).expect("serializes"));
        let back: Section = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, section);
        // Self-describing formats hand bytes over as a sequence.
        let json = serde_json::to_string(&section).expect("serializes");
        let back: Section = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, section);
    }
}
