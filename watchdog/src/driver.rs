//! The async shell around [`DeadlineTable`]: turns its millisecond times into `tokio::time`.
//!
//! The owner of the table (the agent's node director) fixes an `origin` instant once, counts
//! every time as milliseconds since it ([`elapsed_ms`]), and puts [`sleep_until_next`] in its
//! `select!` loop:
//!
//! ```ignore
//! let origin = tokio::time::Instant::now();
//! loop {
//!     tokio::select! {
//!         biased;
//!         _ = shutdown.wait() => break,
//!         _ = sleep_until_next(&table, origin) => {
//!             for expiry in table.expire(elapsed_ms(origin)) { /* error report + recovery */ }
//!         }
//!         Some(kick) = kicks.recv() => { table.kick(&kick.component, elapsed_ms(origin)); }
//!     }
//! }
//! ```
//!
//! The future [`sleep_until_next`] returns does not borrow the table (it reads the deadline
//! when created), so the loop's handlers may change the table; a new loop iteration makes a new
//! future with the new deadline. Time comes from `tokio::time`, so a paused test clock or a
//! simulator drives it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::deadline::DeadlineTable;

/// Milliseconds from `origin` to now on the tokio clock, rounded down (0 before `origin`).
///
/// Rounding down keeps expiries exact: once [`sleep_until_next`] returns, `elapsed_ms` is at
/// least the deadline it slept to.
pub fn elapsed_ms(origin: Instant) -> u64 {
    let elapsed = Instant::now().saturating_duration_since(origin);
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Resolves when the table's next deadline ([`DeadlineTable::next_deadline`], milliseconds
/// since `origin`) is reached; pends forever if no key is armed (or the deadline is past what
/// an `Instant` can hold). Resolves at once if the deadline has already passed.
///
/// The deadline is read now, so the returned future does not borrow `table`.
pub fn sleep_until_next<K: Ord + Clone>(
    table: &DeadlineTable<K>,
    origin: Instant,
) -> impl Future<Output = ()> + Send {
    sleep_until_ms(table.next_deadline(), origin)
}

/// Resolves at `origin + deadline_ms`, or never if `deadline_ms` is `None` (see
/// [`sleep_until_next`]).
pub async fn sleep_until_ms(deadline_ms: Option<u64>, origin: Instant) {
    match deadline_ms.and_then(|ms| origin.checked_add(Duration::from_millis(ms))) {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
