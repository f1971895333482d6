//! nines-cli: the pieces behind the `nines` binary, shared with its tests.
//!
//! - [`client`]: talk to agents (status of the whole cluster from any endpoints, admin calls).
//! - [`local`]: start and control a throw-away cluster of real agent processes on loopback
//!   (`nines bench`, `nines demo`, and the integration tests use it).
//! - [`bench`](mod@bench): the benchmarks.
//! - [`ckpt_cmd`]: `nines ckpt ...`, the checkpoint commands (built on nines-sdk).
//! - [`evt_cmd`]: `nines evt ...`, event channels: publish, subscribe (built on nines-sdk).
//! - [`members_cmd`]: `nines members [--watch]` and `nines admin node drain` (membership
//!   tracking, built on nines-sdk).
//! - [`amf_cmd`]: `nines amf status|history`, `nines admin model apply`, AMF admin operations.
//! - [`bench_amf`]: `nines bench amf`, AMF failover timelines (component or node kill).
//! - [`bench_evt`]: `nines bench evt`, publish → delivery latency and throughput.
//! - [`bench_ckpt`]: `nines bench ckpt`, checkpoint throughput and latency.
//! - [`drill`]: `nines drill ...`, failure drills against a running cluster, with their
//!   timelines and the three promises checked.
//! - [`cert_cmd`]: `nines cert init|node|client|show`, the cluster's CA and certificates (built
//!   on nines-tls).
//! - [`netns`]: network namespaces whose links can be cut (`nines drill link-flap --local`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod amf_cmd;
pub mod bench;
pub mod bench_amf;
pub mod bench_ckpt;
pub mod bench_evt;
pub mod cert_cmd;
pub mod ckpt_cmd;
pub mod client;
pub mod drill;
pub mod evt_cmd;
pub mod evt_limits_cmd;
pub mod local;
pub mod members_cmd;
pub mod netns;
pub mod output;
