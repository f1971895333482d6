//! The replicated commands of the checkpoint service and their outcomes.

use nines_core::AisError;
use serde::{Deserialize, Serialize};

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateMode {
    /// After quorum commit and fsync (the default).
    Sync,
    /// Once the local agent accepted it; replicated right after. Weaker: an acknowledged write
    /// can be lost if that agent dies before it commits.
    Async,
}

/// A checkpoint's creation attributes; fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// Sync or async acknowledgement.
    pub update_mode: UpdateMode,
    /// Most sections (1 ..= `limits::SECTIONS_MAX_LIMIT`).
    pub sections_max: u32,
    /// Largest section in bytes (1 ..= `limits::SECTION_SIZE_MAX_LIMIT`).
    pub section_size_max: u64,
    /// Most bytes over all sections (≥ `section_size_max`, ≤ `limits::CHECKPOINT_SIZE_MAX_LIMIT`).
    pub checkpoint_size_max: u64,
    /// How long the checkpoint survives its last close while nobody has it open; 0 = until
    /// unlinked.
    pub retention_ms: u64,
}

/// How one section write changes a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteKind {
    /// Write `data` at `offset` of an existing section (`offset` ≤ its size; it grows if
    /// needed).
    Write,
    /// Replace an existing section's data.
    Overwrite,
    /// Replace the section's data, creating it if missing.
    Upsert,
}

/// One section's part of an atomic write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionWrite {
    /// The section id.
    pub section: String,
    /// How it changes.
    pub kind: WriteKind,
    /// Where the data goes (only for [`WriteKind::Write`]).
    pub offset: u64,
    /// The bytes.
    #[serde(with = "nines_core::bytes")]
    pub data: Vec<u8>,
}

/// A replicated checkpoint command. `epoch` is the writer's fencing epoch (0 = none): a command
/// with an epoch below the checkpoint's highest accepted epoch is refused with BAD_OPERATION,
/// and epoch 0 is accepted only while the checkpoint has never seen a non-zero epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CkptCommand {
    /// Open `name`; with `create`, create it first if missing (EXIST if it exists with other
    /// attributes; NOT_EXIST without `create` if missing).
    Open {
        /// The checkpoint's name.
        name: String,
        /// Attributes to create it with.
        create: Option<Attributes>,
    },
    /// Close a handle (BAD_HANDLE if unknown).
    Close {
        /// The handle from `Open`.
        handle: u64,
    },
    /// Delete a checkpoint now, sections and handles included.
    Unlink {
        /// The checkpoint's name.
        name: String,
    },
    /// Create a section.
    CreateSection {
        /// The checkpoint.
        ckpt: String,
        /// Its id; `None` generates one.
        section: Option<String>,
        /// Initial data.
        #[serde(with = "nines_core::bytes")]
        data: Vec<u8>,
        /// Absolute expiration time (ms since the epoch); 0 = never.
        expires_at_ms: u64,
        /// Fencing epoch.
        epoch: u64,
    },
    /// Delete a section.
    DeleteSection {
        /// The checkpoint.
        ckpt: String,
        /// The section.
        section: String,
        /// Fencing epoch.
        epoch: u64,
    },
    /// Write several sections atomically: all succeed or nothing changes.
    Write {
        /// The checkpoint.
        ckpt: String,
        /// The writes, applied in order.
        writes: Vec<SectionWrite>,
        /// Fencing epoch.
        epoch: u64,
    },
    /// Set a section's expiration time (0 = never).
    SetExpiration {
        /// The checkpoint.
        ckpt: String,
        /// The section.
        section: String,
        /// Absolute expiration time (ms since the epoch).
        expires_at_ms: u64,
        /// Fencing epoch.
        epoch: u64,
    },
    /// Apply time-based expiry up to the entry's time stamp (the leader proposes it when a
    /// deadline has passed; every other command also expires what is due first).
    Expire,
}

impl CkptCommand {
    /// The fencing epoch the command carries (0: none, or a command without one).
    pub fn epoch(&self) -> u64 {
        match self {
            CkptCommand::CreateSection { epoch, .. }
            | CkptCommand::DeleteSection { epoch, .. }
            | CkptCommand::Write { epoch, .. }
            | CkptCommand::SetExpiration { epoch, .. } => *epoch,
            CkptCommand::Open { .. }
            | CkptCommand::Close { .. }
            | CkptCommand::Unlink { .. }
            | CkptCommand::Expire => 0,
        }
    }
}

/// A command's outcome. Business errors are values ([`CkptResponse::Error`]), never failures of
/// the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CkptResponse {
    /// `Open` succeeded.
    Opened {
        /// The new handle (unique: the log index of the open).
        handle: u64,
        /// Whether this call created the checkpoint.
        created: bool,
        /// The checkpoint's attributes.
        attributes: Attributes,
    },
    /// `CreateSection` succeeded.
    SectionCreated {
        /// The section's id (generated ones look like `s<N>`).
        section: String,
    },
    /// `Close`, `Unlink`, `DeleteSection`, `Write`, `SetExpiration` succeeded at this log index.
    Done {
        /// The log index.
        index: u64,
    },
    /// `Expire` ran.
    Expired {
        /// Checkpoints deleted by retention.
        checkpoints: u32,
        /// Sections deleted by expiration.
        sections: u32,
    },
    /// Refused; nothing changed.
    Error(AisError),
}
