//! Limits on the model, checked by [`super::Model::validate`]. A model past a limit is refused
//! rather than slowing every node that applies it.

/// Longest entity name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Nodes per model.
pub const NODES_MAX: usize = 64;
/// Service groups per model.
pub const SGS_MAX: usize = 256;
/// Service units per model.
pub const SUS_MAX: usize = 1024;
/// Components per model.
pub const COMPONENTS_MAX: usize = 4096;
/// Service instances per model.
pub const SIS_MAX: usize = 1024;
/// Component service instances per model.
pub const CSIS_MAX: usize = 4096;
/// SI dependencies per model.
pub const DEPENDENCIES_MAX: usize = 1024;
/// Attributes per CSI.
pub const ATTRIBUTES_MAX: usize = 64;
/// Environment variables per component.
pub const ENV_MAX: usize = 64;
/// CS types per component.
pub const CS_TYPES_MAX: usize = 32;
/// Longest command line (instantiate, terminate, cleanup), in bytes.
pub const COMMAND_BYTES_MAX: usize = 4096;
/// Longest attribute or environment value, in bytes.
pub const VALUE_BYTES_MAX: usize = 4096;
/// Longest timeout or probation period, in milliseconds (one day).
pub const DURATION_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Shortest component watchdog period (the SDK flushes kicks every quarter period).
pub const WATCHDOG_MS_MIN: u64 = 20;
