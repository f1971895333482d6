//! Named limits of the checkpoint service. Attributes beyond these are INVALID_PARAM; data
//! beyond them is TOO_BIG; running out of the cluster-wide budget is NO_SPACE.

/// Longest checkpoint name.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest section id.
pub const SECTION_ID_BYTES_MAX: usize = 256;
/// Most checkpoints in the cluster.
pub const CHECKPOINTS_MAX: usize = 10_000;
/// Largest `sections_max` a checkpoint may ask for.
pub const SECTIONS_MAX_LIMIT: u32 = 65_536;
/// Largest `section_size_max` a checkpoint may ask for.
pub const SECTION_SIZE_MAX_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest `checkpoint_size_max` a checkpoint may ask for.
pub const CHECKPOINT_SIZE_MAX_LIMIT: u64 = 32 * 1024 * 1024;
/// Bytes of section data all checkpoints together may hold (the whole state travels in one
/// snapshot message).
pub const TOTAL_BYTES_MAX: u64 = 48 * 1024 * 1024;
/// Most section writes in one atomic write call.
pub const WRITES_PER_CALL_MAX: usize = 1_024;
/// Most open handles in the cluster.
pub const HANDLES_MAX: usize = 100_000;

/// Defaults for attributes a creator leaves out.
pub mod defaults {
    /// Sections per checkpoint.
    pub const SECTIONS_MAX: u32 = 1_024;
    /// Bytes per section.
    pub const SECTION_SIZE_MAX: u64 = 1024 * 1024;
    /// Bytes per checkpoint.
    pub const CHECKPOINT_SIZE_MAX: u64 = 16 * 1024 * 1024;
}
