//! nines-watchdog: the component watchdogs, the node watchdog and systemd's watchdog.
//!
//! # How to drive me
//! - **Component watchdogs** ([`DeadlineTable`], pure). The node director arms a key per
//!   component that asked for a watchdog ([`DeadlineTable::arm`]), feeds it the SDK's kicks
//!   ([`DeadlineTable::kick`]), sleeps until [`DeadlineTable::next_deadline`]
//!   ([`driver::sleep_until_next`] in its `select!` loop) and then turns each
//!   [`DeadlineTable::expire`] result into an error report with the component's recovery.
//!   Times are milliseconds since an origin the director fixes ([`driver::elapsed_ms`]).
//! - **Node watchdog** ([`NodeWatchdog`]). If `[watchdog] device` is set
//!   ([`NodeWatchdogConfig`]), the agent opens it ([`DevWatchdog::open`] — this arms it), wraps
//!   it ([`NodeWatchdog::new`] sets the timeout) and spawns [`NodeWatchdog::run`] with
//!   `may_kick` wired to `SelfLease::may_kick_watchdog(now, timeout_ms, actives_gone)`. A hung
//!   agent, or one that lost its lease, stops kicking and the device resets the node. A
//!   planned shutdown writes the magic close.
//! - **systemd** ([`Notifier`]). `READY=1` once serving, `WATCHDOG=1` every
//!   [`Notifier::watchdog_interval`], `STOPPING=1` at drain; a no-op outside systemd.
//!
//! Only the `device` module may use `unsafe` (the watchdog ioctls); everything else is safe code.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod config;
pub mod deadline;
// The ioctl calls need `unsafe`; the module opts in with `#![allow(unsafe_code)]` and says why.
mod device;
pub mod driver;
mod notify;

pub use config::{ConfigError, NodeWatchdogConfig, KICK_INTERVAL_MS_DEFAULT, TIMEOUT_SECS_DEFAULT};
pub use deadline::{ArmError, DeadlineTable, Expiry, WatchState, WATCHDOG_MS_MAX, WATCHED_MAX};
pub use device::{DevWatchdog, DeviceError, NodeWatchdog, WatchdogIo, TIMEOUT_SECS_MAX};
pub use driver::{elapsed_ms, sleep_until_next};
pub use notify::{watchdog_interval_from, Notifier, NOTIFY_STATE_BYTES_MAX};
