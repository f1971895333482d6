//! The SDK's own types, and their conversions to and from the wire (`nines.ckpt.v1`).

use std::time::Duration;

use nines_proto::ckpt::v1 as pb;

/// How a checkpoint acknowledges writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpdateMode {
    /// Acknowledged after quorum commit and fsync: an acknowledged write survives any minority
    /// of failures.
    #[default]
    Sync,
    /// Acknowledged once the local agent accepted the write, replicated right after. Faster, but
    /// an acknowledged write can be lost if that agent dies before it is committed.
    Async,
}

impl UpdateMode {
    /// `"sync"` or `"async"`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateMode::Sync => "sync",
            UpdateMode::Async => "async",
        }
    }

    fn to_wire(self) -> i32 {
        match self {
            UpdateMode::Sync => pb::UpdateMode::Sync as i32,
            UpdateMode::Async => pb::UpdateMode::Async as i32,
        }
    }

    /// Unspecified (or unknown to this build) reads as the service's default, `Sync`.
    fn from_wire(v: i32) -> Self {
        if v == pb::UpdateMode::Async as i32 {
            UpdateMode::Async
        } else {
            UpdateMode::Sync
        }
    }
}

/// A checkpoint's creation attributes: fixed at creation, checked on every open that creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// How writes are acknowledged.
    pub update_mode: UpdateMode,
    /// Most sections the checkpoint holds.
    pub sections_max: u32,
    /// Largest section, in bytes.
    pub section_size_max: u64,
    /// Most bytes of section data the checkpoint holds.
    pub checkpoint_size_max: u64,
    /// How long the checkpoint survives once nobody has it open; zero = until unlinked.
    pub retention: Duration,
}

impl Default for Attributes {
    /// Sync updates, 1024 sections of at most 1 MiB, 16 MiB in all, kept until unlinked.
    fn default() -> Self {
        Self {
            update_mode: UpdateMode::Sync,
            sections_max: 1_024,
            section_size_max: 1024 * 1024,
            checkpoint_size_max: 16 * 1024 * 1024,
            retention: Duration::ZERO,
        }
    }
}

impl Attributes {
    pub(crate) fn to_wire(self) -> pb::CreationAttributes {
        pb::CreationAttributes {
            update_mode: self.update_mode.to_wire(),
            sections_max: self.sections_max,
            section_size_max: self.section_size_max,
            checkpoint_size_max: self.checkpoint_size_max,
            retention_ms: u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn from_wire(a: &pb::CreationAttributes) -> Self {
        Self {
            update_mode: UpdateMode::from_wire(a.update_mode),
            sections_max: a.sections_max,
            section_size_max: a.section_size_max,
            checkpoint_size_max: a.checkpoint_size_max,
            retention: Duration::from_millis(a.retention_ms),
        }
    }
}

/// How [`crate::CheckpointClient::open`] treats a missing checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    pub(crate) create: Option<Attributes>,
}

impl OpenOptions {
    /// Create the checkpoint with `attributes` if it does not exist. If it exists with other
    /// attributes the open fails with `EXIST`.
    pub fn create(attributes: Attributes) -> Self {
        Self {
            create: Some(attributes),
        }
    }

    /// Open an existing checkpoint only; a missing one is `NOT_EXIST`.
    pub fn existing() -> Self {
        Self { create: None }
    }
}

/// One part of an atomic [`crate::Checkpoint::write_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionWrite {
    pub(crate) section: String,
    pub(crate) kind: pb::WriteKind,
    pub(crate) offset: u64,
    pub(crate) data: Vec<u8>,
}

impl SectionWrite {
    /// Replace the section's data, creating the section if missing.
    pub fn upsert(section: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self::new(section, pb::WriteKind::Upsert, 0, data)
    }

    /// Replace an existing section's data (`NOT_EXIST` if it is missing).
    pub fn overwrite(section: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self::new(section, pb::WriteKind::Overwrite, 0, data)
    }

    /// Write `data` at byte `offset` of an existing section; the section grows if needed.
    pub fn at(section: impl Into<String>, offset: u64, data: impl Into<Vec<u8>>) -> Self {
        Self::new(section, pb::WriteKind::Write, offset, data)
    }

    fn new(
        section: impl Into<String>,
        kind: pb::WriteKind,
        offset: u64,
        data: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            section: section.into(),
            kind,
            offset,
            data: data.into(),
        }
    }

    /// The section written.
    pub fn section(&self) -> &str {
        &self.section
    }

    /// The bytes written.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub(crate) fn to_wire(&self) -> pb::SectionWrite {
        pb::SectionWrite {
            section: self.section.clone(),
            kind: self.kind as i32,
            offset: self.offset,
            data: self.data.clone(),
        }
    }
}

/// One part of a [`crate::Checkpoint::read_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRead {
    pub(crate) section: String,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl SectionRead {
    /// The whole section.
    pub fn whole(section: impl Into<String>) -> Self {
        Self {
            section: section.into(),
            offset: 0,
            len: 0,
        }
    }

    /// `len` bytes from byte `offset` (fewer if the section ends first; `len` 0 = to the end).
    pub fn range(section: impl Into<String>, offset: u64, len: u64) -> Self {
        Self {
            section: section.into(),
            offset,
            len,
        }
    }

    pub(crate) fn to_wire(&self) -> pb::SectionRead {
        pb::SectionRead {
            section: self.section.clone(),
            offset: self.offset,
            len: self.len,
        }
    }
}

/// Data read from one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionData {
    /// The section's id.
    pub section: String,
    /// The bytes read.
    pub data: Vec<u8>,
}

impl From<pb::SectionData> for SectionData {
    fn from(d: pb::SectionData) -> Self {
        Self {
            section: d.section,
            data: d.data,
        }
    }
}

/// A section as listed by [`crate::Checkpoint::sections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    /// The section's id.
    pub section: String,
    /// Bytes of data.
    pub size: u64,
    /// When the service deletes it, ms since the Unix epoch; `None` = never.
    pub expires_at_ms: Option<u64>,
    /// Log index of its last change (orders changes across sections).
    pub last_update_index: u64,
}

impl From<pb::SectionInfo> for SectionInfo {
    fn from(s: pb::SectionInfo) -> Self {
        Self {
            section: s.section,
            size: s.size,
            expires_at_ms: nonzero(s.expires_at_ms),
            last_update_index: s.last_update_index,
        }
    }
}

/// A checkpoint's attributes and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStatus {
    /// The checkpoint's name.
    pub name: String,
    /// Its creation attributes.
    pub attributes: Attributes,
    /// Sections it holds.
    pub sections_used: u32,
    /// Bytes of section data it holds.
    pub bytes_used: u64,
    /// Handles open on it, cluster-wide.
    pub open_handles: u32,
    /// The highest fencing epoch any write carried; writes with a lower one are refused.
    pub max_epoch: u64,
    /// When the service deletes it (nobody has it open and its retention runs), ms since the
    /// Unix epoch; `None` = not scheduled.
    pub retention_deadline_ms: Option<u64>,
}

impl From<pb::CheckpointStatus> for CheckpointStatus {
    fn from(s: pb::CheckpointStatus) -> Self {
        Self {
            attributes: s
                .attributes
                .as_ref()
                .map(Attributes::from_wire)
                .unwrap_or_default(),
            name: s.name,
            sections_used: s.sections_used,
            bytes_used: s.bytes_used,
            open_handles: s.open_handles,
            max_epoch: s.max_epoch,
            retention_deadline_ms: nonzero(s.retention_deadline_ms),
        }
    }
}

/// The wire's "0 = none" as an `Option`.
pub(crate) fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_the_wire() {
        let a = Attributes {
            update_mode: UpdateMode::Async,
            sections_max: 7,
            section_size_max: 100,
            checkpoint_size_max: 700,
            retention: Duration::from_secs(90),
        };
        let w = a.to_wire();
        assert_eq!(w.retention_ms, 90_000);
        assert_eq!(w.update_mode, pb::UpdateMode::Async as i32);
        assert_eq!(Attributes::from_wire(&w), a);
        let unspecified = pb::CreationAttributes {
            update_mode: 0,
            ..w
        };
        assert_eq!(
            Attributes::from_wire(&unspecified).update_mode,
            UpdateMode::Sync
        );
    }

    #[test]
    fn defaults_match_the_service_defaults() {
        let a = Attributes::default();
        assert_eq!(a.update_mode, UpdateMode::Sync);
        assert_eq!(a.sections_max, 1024);
        assert_eq!(a.section_size_max, 1 << 20);
        assert_eq!(a.checkpoint_size_max, 16 << 20);
        assert_eq!(a.to_wire().retention_ms, 0);
    }

    #[test]
    fn writes_and_reads_carry_their_kind_offset_and_length() {
        let u = SectionWrite::upsert("a", b"1").to_wire();
        assert_eq!(
            (u.kind, u.offset, u.data),
            (pb::WriteKind::Upsert as i32, 0, b"1".to_vec())
        );
        let at = SectionWrite::at("b", 4, "x").to_wire();
        assert_eq!((at.kind, at.offset), (pb::WriteKind::Write as i32, 4));
        let o = SectionWrite::overwrite("c", vec![1, 2]).to_wire();
        assert_eq!(o.kind, pb::WriteKind::Overwrite as i32);
        let r = SectionRead::range("b", 2, 10).to_wire();
        assert_eq!((r.section.as_str(), r.offset, r.len), ("b", 2, 10));
        assert_eq!(SectionRead::whole("a").to_wire().len, 0);
    }

    #[test]
    fn zero_on_the_wire_means_none() {
        let s = SectionInfo::from(pb::SectionInfo {
            section: "s".into(),
            size: 3,
            expires_at_ms: 0,
            last_update_index: 9,
        });
        assert_eq!(s.expires_at_ms, None);
        let st = CheckpointStatus::from(pb::CheckpointStatus {
            name: "n".into(),
            attributes: None,
            retention_deadline_ms: 1234,
            ..Default::default()
        });
        assert_eq!(st.attributes, Attributes::default());
        assert_eq!(st.retention_deadline_ms, Some(1234));
    }
}
