//! Named limits. Every queue, message and batch in nines is bounded by one of these.

/// Largest gRPC message a node accepts or sends (a raft snapshot rides in one message).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest command a client may propose.
pub const PROPOSAL_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Requests queued to the Raft driver before callers are pushed back.
pub const DRIVER_INBOX_LEN: usize = 4096;

/// Raft messages queued per peer before the oldest-first sender drops new ones (raft retries).
pub const PEER_QUEUE_LEN: usize = 4096;

/// Raft messages sent in one peer RPC.
pub const PEER_BATCH_LEN: usize = 256;

/// Deadline of one peer RPC.
pub const PEER_RPC_TIMEOUT_MS: u64 = 2_000;

/// Deadline of a peer RPC that carries a snapshot.
pub const SNAPSHOT_RPC_TIMEOUT_MS: u64 = 30_000;

/// Longest wait between reconnect attempts to an unreachable peer.
pub const PEER_BACKOFF_MAX_MS: u64 = 1_000;

/// Inbox messages the driver handles before it looks at `Ready` again.
pub const DRIVER_BUDGET_MSGS: usize = 1024;

/// Default deadline of a client operation when the caller gives none.
pub const CLIENT_TIMEOUT_MS: u64 = 5_000;
