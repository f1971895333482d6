//! The node watchdog: a Linux watchdog device (`/dev/watchdog`) that resets the node unless the
//! agent keeps kicking it.
//!
//! [`NodeWatchdog::run`] kicks every interval while its `may_kick` says so — the agent wires that
//! to `SelfLease::may_kick_watchdog` (nines-heartbeat), so a node that lost its lease, or whose
//! agent hangs, stops kicking in time for the reset to land by its fence deadline plus the fence
//! reaction. [`WatchdogIo`] is the seam: [`DevWatchdog`] talks to a device through ioctls, tests
//! stand in a fake.
//!
//! # Why this module allows `unsafe`
//! The watchdog API is two ioctls (`WDIOC_SETTIMEOUT`, `WDIOC_KEEPALIVE`), and an ioctl call is
//! `unsafe` in Rust: the kernel reads and writes through a raw pointer whose type the request
//! number implies. This is the only module in nines allowed to make such calls; each block
//! states why it is sound.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nines_core::shutdown::ShutdownSignal;
use nix::errno::Errno;
use nix::libc::c_int;
use thiserror::Error;
use tokio::time::MissedTickBehavior;

/// Longest device timeout [`NodeWatchdog::new`] asks for. Linux devices commonly cap lower.
pub const TIMEOUT_SECS_MAX: u32 = 3_600;

/// The byte that, written just before close, tells the driver the stop is planned ("magic
/// close"); without it, closing leaves the device running and the node resets.
const MAGIC_CLOSE: &[u8] = b"V";

// linux/watchdog.h: #define WATCHDOG_IOCTL_BASE 'W'
//                   #define WDIOC_KEEPALIVE  _IOR(WATCHDOG_IOCTL_BASE, 5, int)
//                   #define WDIOC_SETTIMEOUT _IOWR(WATCHDOG_IOCTL_BASE, 6, int)
nix::ioctl_read!(wdioc_keepalive, b'W', 5, c_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, c_int);

/// What a watchdog device failed to do, and on which path.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// The device could not be opened.
    #[error(
        "cannot open watchdog device {}: {source}; check the path exists (load a driver, \
         e.g. softdog, or set [watchdog] device), that the agent may write it, and that no other \
         daemon (watchdog, systemd RuntimeWatchdogSec) holds it",
        path.display()
    )]
    Open {
        /// The device path.
        path: PathBuf,
        /// Why `open(2)` failed.
        source: std::io::Error,
    },
    /// An ioctl on the device failed.
    #[error(
        "watchdog ioctl {call} on {} failed: {source}; is it a watchdog device? load a \
         watchdog driver (softdog for testing) or set [watchdog] device",
        path.display()
    )]
    Ioctl {
        /// The device path.
        path: PathBuf,
        /// The ioctl that failed (`WDIOC_SETTIMEOUT`, `WDIOC_KEEPALIVE`).
        call: &'static str,
        /// The error the kernel returned.
        source: Errno,
    },
    /// Writing to the device (the magic close) failed.
    #[error(
        "cannot write the magic close to watchdog device {}: {source}; the device stays armed \
         and will reset the node unless something keeps kicking it",
        path.display()
    )]
    Write {
        /// The device path.
        path: PathBuf,
        /// Why `write(2)` failed.
        source: std::io::Error,
    },
}

/// The calls a watchdog device takes: a seam so tests can stand in for `/dev/watchdog`.
///
/// # Correctness
/// An implementation must not stop the device on drop: only [`magic_close`](Self::magic_close)
/// is a planned stop. Dropping without it must leave the device running (the node resets), as
/// closing a Linux watchdog without the magic byte does.
///
/// # Errors
/// Each call returns [`DeviceError`] naming the device and the failed call.
pub trait WatchdogIo: Send {
    /// Sets the reset timeout (`WDIOC_SETTIMEOUT`); returns the timeout the device took, which
    /// may differ (devices count in their own steps).
    fn set_timeout(&mut self, secs: u32) -> Result<u32, DeviceError>;
    /// Restarts the countdown (`WDIOC_KEEPALIVE`).
    fn keepalive(&mut self) -> Result<(), DeviceError>;
    /// Writes the magic close and closes: a planned stop that does not reset the node.
    fn magic_close(self: Box<Self>) -> Result<(), DeviceError>;
}

/// A Linux watchdog device opened for writing. Opening it starts the countdown.
///
/// Dropping it closes the device without the magic close: the device keeps running and resets
/// the node. Only [`WatchdogIo::magic_close`] stops it.
#[derive(Debug)]
pub struct DevWatchdog {
    /// The open device (`O_WRONLY | O_CLOEXEC`, so spawned components do not inherit it).
    file: File,
    /// The path it was opened from, for error messages.
    path: PathBuf,
}

impl DevWatchdog {
    /// Opens the device at `path` write-only (and close-on-exec). This arms the device: from
    /// here on, the node resets unless it is kicked within its timeout.
    ///
    /// # Errors
    /// [`DeviceError::Open`] naming the path.
    pub fn open(path: &Path) -> Result<Self, DeviceError> {
        // std opens every file with O_CLOEXEC; write(true) alone gives O_WRONLY, no O_CREAT.
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| DeviceError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(DevWatchdog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ioctl_error(&self, call: &'static str, source: Errno) -> DeviceError {
        DeviceError::Ioctl {
            path: self.path.clone(),
            call,
            source,
        }
    }
}

impl WatchdogIo for DevWatchdog {
    fn set_timeout(&mut self, secs: u32) -> Result<u32, DeviceError> {
        let call = "WDIOC_SETTIMEOUT";
        let mut value = c_int::try_from(secs).map_err(|_| self.ioctl_error(call, Errno::EINVAL))?;
        // SAFETY: the fd is open for the life of `self.file`; WDIOC_SETTIMEOUT reads and writes
        // exactly one `int` through the pointer, which points to a live, aligned, writable
        // `c_int` on our stack for the duration of the call.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut value) }
            .map_err(|e| self.ioctl_error(call, e))?;
        u32::try_from(value).map_err(|_| self.ioctl_error(call, Errno::ERANGE))
    }

    fn keepalive(&mut self) -> Result<(), DeviceError> {
        let mut ignored: c_int = 0;
        // SAFETY: the fd is open for the life of `self.file`; WDIOC_KEEPALIVE writes at most one
        // `int` through the pointer (drivers ignore it), which points to a live, aligned,
        // writable `c_int` on our stack for the duration of the call.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut ignored) }
            .map_err(|e| self.ioctl_error("WDIOC_KEEPALIVE", e))?;
        Ok(())
    }

    fn magic_close(self: Box<Self>) -> Result<(), DeviceError> {
        let DevWatchdog { mut file, path } = *self;
        file.write_all(MAGIC_CLOSE)
            .map_err(|source| DeviceError::Write { path, source })?;
        drop(file);
        Ok(())
    }
}

/// Keeps a watchdog device kicked while the agent may, and stops it only on a planned stop.
#[derive(Debug)]
pub struct NodeWatchdog<D: WatchdogIo> {
    /// The device; dropped without the magic close unless the stop is planned and safe.
    dev: D,
    /// The timeout the device took (may differ from the one asked for).
    timeout_secs: u32,
}

impl<D: WatchdogIo> NodeWatchdog<D> {
    /// Sets the device's timeout to `timeout_secs` and wraps it.
    ///
    /// # Correctness
    /// The device may take another timeout than asked; pass [`timeout_ms`](Self::timeout_ms),
    /// not the configured value, to `SelfLease::may_kick_watchdog`.
    ///
    /// # Errors
    /// The device's [`DeviceError`]. The device is then stopped with the magic close (the
    /// agent is starting and holds no actives yet; dropping it armed would reset a node whose
    /// agent gave up on the watchdog). A failure of that close is logged.
    ///
    /// # Panics
    /// If `timeout_secs` is 0 or above [`TIMEOUT_SECS_MAX`] (validate the config first).
    pub fn new(mut dev: D, timeout_secs: u32) -> Result<Self, DeviceError> {
        assert!(
            (1..=TIMEOUT_SECS_MAX).contains(&timeout_secs),
            "watchdog timeout {timeout_secs} s is outside 1..={TIMEOUT_SECS_MAX}"
        );
        let took_secs = match dev.set_timeout(timeout_secs) {
            Ok(took_secs) => took_secs,
            Err(e) => {
                if let Err(close) = Box::new(dev).magic_close() {
                    tracing::error!(error = %close, "could not stop the watchdog device");
                }
                return Err(e);
            }
        };
        if took_secs != timeout_secs {
            tracing::warn!(
                asked_secs = timeout_secs,
                took_secs,
                "the watchdog device took another timeout than asked; using its value"
            );
        }
        Ok(NodeWatchdog {
            dev,
            timeout_secs: took_secs,
        })
    }

    /// The timeout the device took, in seconds.
    pub fn timeout_secs(&self) -> u32 {
        self.timeout_secs
    }

    /// The timeout the device took, in milliseconds (what `may_kick_watchdog` wants).
    pub fn timeout_ms(&self) -> u64 {
        u64::from(self.timeout_secs) * 1_000
    }

    /// Kicks the device every `interval` (first at once) while `may_kick()` says so, until
    /// `shutdown`.
    ///
    /// - `may_kick()` is asked before every kick. While it says no, the device is not kicked
    ///   and resets the node when its timeout runs out ("a hung agent stops kicking"). If it
    ///   says yes again before then (the agent confirmed its actives gone), kicking resumes:
    ///   `SelfLease::may_kick_watchdog` relies on this.
    /// - On a triggered `shutdown` (a planned stop), `may_kick()` is asked once more: if yes,
    ///   the device gets the magic close and will not reset the node; if no, it is closed
    ///   without it, so the reset still lands (a fenced node whose actives may still run must
    ///   not disarm its last guard). Trigger it only after the components are stopped.
    /// - If the shutdown trigger is dropped without being triggered (its owner crashed), the
    ///   stop is not planned: the device is closed without the magic close and resets the node.
    ///
    /// # Errors
    /// A failed kick or magic close. The device is then closed without the magic close (it
    /// stays armed), so the node resets unless the caller opens it again in time.
    ///
    /// # Panics
    /// If `interval` is zero or not shorter than the device timeout.
    pub async fn run(
        self,
        interval: Duration,
        mut may_kick: impl FnMut() -> bool + Send,
        mut shutdown: ShutdownSignal,
    ) -> Result<(), DeviceError> {
        let timeout = Duration::from_secs(u64::from(self.timeout_secs));
        assert!(
            !interval.is_zero() && interval < timeout,
            "watchdog kick interval {interval:?} must be non-zero and shorter than the device \
             timeout {timeout:?}"
        );
        let NodeWatchdog { mut dev, .. } = self;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut kicking = true;
        loop {
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                _ = ticker.tick() => {
                    let may = may_kick();
                    if may != kicking {
                        log_kicking_change(may);
                        kicking = may;
                    }
                    if may {
                        dev.keepalive()?;
                    }
                }
            }
        }
        stop(dev, shutdown.is_triggered(), may_kick())
    }
}

/// Logs a change between kicking and not kicking.
fn log_kicking_change(may: bool) {
    if may {
        tracing::info!("node watchdog: kicking again");
    } else {
        tracing::error!("node watchdog: may not kick (lease lost or agent stuck); the node resets");
    }
}

/// Ends a run: the magic close only if the stop was requested and kicking is still allowed.
fn stop<D: WatchdogIo>(dev: D, planned: bool, may_kick: bool) -> Result<(), DeviceError> {
    if planned && may_kick {
        Box::new(dev).magic_close()?;
        tracing::info!("node watchdog: stopped with the magic close; the node will not reset");
    } else {
        drop(dev);
        tracing::error!(
            planned,
            may_kick,
            "node watchdog: closed without the magic close; the device stays armed and resets \
             the node"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers match linux/watchdog.h on the generic ioctl encoding (x86, arm).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86"))]
    #[test]
    fn request_numbers_match_linux_watchdog_h() {
        let int = std::mem::size_of::<c_int>();
        assert_eq!(nix::request_code_read!(b'W', 5, int) as u64, 0x8004_5705);
        assert_eq!(
            nix::request_code_readwrite!(b'W', 6, int) as u64,
            0xC004_5706
        );
    }
}
