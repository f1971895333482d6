//! The component-side lease (promise 1 where the component stands).
//!
//! The agent grants the session a deadline on this host's `CLOCK_MONOTONIC` (`Registered`, then
//! a `LeaseGrant` each time its node lease is renewed). Past the deadline the component must not
//! act as active, whatever its agent is doing: paused, hung, cut off or fenced, the agent simply
//! stops renewing. A guard thread of the SDK's own — not a task of the application's runtime,
//! which may be starved — watches the deadline:
//!
//! 1. at the deadline the lease counts as expired: checkpoint writes under an epoch this session
//!    holds are refused by the SDK ([`write_refusal`]) and an ACTIVE CSI set waits for a renewal;
//! 2. if the component holds a CSI active or quiescing, the ordered worker sets each to QUIESCED
//!    through [`Callbacks::csi_set`], so the application stops acting through its own code path;
//! 3. if that has not completed within three quarters of the agent's `lease_reaction_ms`, the
//!    SDK ends the process (SIGKILL of itself), unless the application chose
//!    [`LeaseExpiry::QuiesceOnly`].
//!
//! The agent's proof (`nines_heartbeat::lease`, "The component's lease") needs the component to
//! have stopped acting within `lease_reaction_ms` after the deadline; the quarter left covers the
//! guard's wake-up and the kill. A renewal after an expiry is told to the agent (a `Belief`), which
//! re-delivers the agreed assignment if the cluster still gives it to this component.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Arc, Condvar, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};

use tokio::sync::{mpsc, Notify};

use super::{dispatch::Ordered, dispatch::Shared, Callbacks, CsiSet, HaState};

/// How often the guard looks again while the lease is expired (a CSI may turn active in a
/// callback that began before the deadline).
const EXPIRED_POLL_MS: u64 = 10;
/// The share of the agent's `lease_reaction_ms` the quiesce may take before the process is
/// ended (numerator over 4): the rest covers the guard's wake-up and the kill.
const QUIESCE_SHARE_QUARTERS: u64 = 3;
/// The quiesce bound when the agent gave no reaction time.
const QUIESCE_MS_DEFAULT: u64 = 75;

/// What the SDK does when the lease runs out and quiescing the component's actives does not
/// complete in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseExpiry {
    /// End the process (SIGKILL of itself) if the CSI sets to QUIESCED have not all returned
    /// `Ok` within the bound. The safe default: promise 1 then holds even for an application
    /// whose quiesce path hangs.
    #[default]
    EndProcess,
    /// Only quiesce, and refuse checkpoint writes under the held epochs: the application
    /// promises that its quiesce path stops every active duty in time, and takes on the risk.
    QuiesceOnly,
}

/// This host's `CLOCK_MONOTONIC` in nanoseconds (the clock the agent's grants are read on).
pub(crate) fn mono_now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable on Linux");
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// One session's lease, shared by its dispatcher, worker, guard thread and handle.
#[derive(Debug)]
pub(crate) struct Lease {
    component: String,
    /// The granted deadline (`CLOCK_MONOTONIC` ns; 0 = none). Only grows.
    deadline_ns: AtomicU64,
    /// How long the quiesce may take before the process is ended.
    quiesce_ms: u64,
    /// A [`LeaseExpiry`] as u8.
    action: AtomicU8,
    /// The session is over: the guard thread returns.
    stopped: AtomicBool,
    /// Renewals that came after the previous deadline had passed: the lease lapsed in between,
    /// even if the guard thread (starved, say) did not wake up in time to see it.
    lapses: AtomicU64,
    /// Expiries handled and confirmed, under the guard's lock.
    guard: Mutex<Expiries>,
    /// Wakes the guard thread (a renewal, a confirmation, the end).
    wake: Condvar,
    /// Wakes tasks waiting for a renewal.
    renewed: Notify,
}

#[derive(Debug, Default)]
struct Expiries {
    /// Expiries the guard handed to the worker.
    handed: u64,
    /// The newest one the worker confirmed (every active CSI quiesced).
    confirmed: u64,
}

/// Leases of this process's sessions, for [`write_refusal`].
static LEASES: Mutex<Vec<(Weak<Lease>, Weak<Shared>)>> = Mutex::new(Vec::new());

impl Lease {
    pub(crate) fn new(component: &str, deadline_ns: u64, reaction_ms: u64) -> Arc<Lease> {
        let quiesce_ms = match reaction_ms {
            0 => QUIESCE_MS_DEFAULT,
            // Saturating: the agent's reaction time is outside input (u64::MAX overflowed).
            r => (r.saturating_mul(QUIESCE_SHARE_QUARTERS) / 4).max(1),
        };
        Arc::new(Lease {
            component: component.to_string(),
            deadline_ns: AtomicU64::new(deadline_ns),
            quiesce_ms,
            action: AtomicU8::new(LeaseExpiry::EndProcess as u8),
            stopped: AtomicBool::new(false),
            lapses: AtomicU64::new(0),
            guard: Mutex::new(Expiries::default()),
            wake: Condvar::new(),
            renewed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Expiries> {
        // Two counters: whole whatever a panicking holder did.
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The granted deadline (`CLOCK_MONOTONIC` ns; 0 = none).
    pub(crate) fn deadline_ns(&self) -> u64 {
        self.deadline_ns.load(Ordering::Acquire)
    }

    /// Whether the component may act as active now.
    pub(crate) fn is_valid(&self) -> bool {
        mono_now_ns() < self.deadline_ns()
    }

    /// How long the quiesce after an expiry may take.
    pub(crate) fn quiesce_bound(&self) -> Duration {
        Duration::from_millis(self.quiesce_ms)
    }

    pub(crate) fn set_action(&self, action: LeaseExpiry) {
        self.action.store(action as u8, Ordering::Release);
    }

    fn action(&self) -> LeaseExpiry {
        match self.action.load(Ordering::Acquire) {
            x if x == LeaseExpiry::QuiesceOnly as u8 => LeaseExpiry::QuiesceOnly,
            _ => LeaseExpiry::EndProcess,
        }
    }

    /// A grant from the agent. Returns whether it revived an expired lease (the agent should
    /// then hear what the component believes, to re-deliver what the cluster still assigns).
    pub(crate) fn renew(&self, deadline_ns: u64) -> bool {
        let now = mono_now_ns();
        let old = self.deadline_ns.fetch_max(deadline_ns, Ordering::AcqRel);
        if deadline_ns <= old {
            return false;
        }
        let lapsed = old != 0 && old <= now;
        if lapsed {
            self.lapses.fetch_add(1, Ordering::AcqRel);
        }
        // Taken so the guard cannot miss the wake-up between its check and its wait.
        drop(self.lock());
        self.wake.notify_all();
        self.renewed.notify_waiters();
        lapsed && deadline_ns > now
    }

    /// The worker quiesced every active CSI for expiry `n`.
    pub(crate) fn confirm(&self, n: u64) {
        let mut e = self.lock();
        e.confirmed = e.confirmed.max(n);
        drop(e);
        self.wake.notify_all();
    }

    /// The session is gone: stop the guard thread.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        drop(self.lock());
        self.wake.notify_all();
    }

    /// Wait until the lease is valid, at most `wait`; whether it is.
    pub(crate) async fn wait_valid(&self, wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let renewed = self.renewed.notified();
            if self.is_valid() {
                return true;
            }
            let poll = Duration::from_millis(EXPIRED_POLL_MS);
            let now = tokio::time::Instant::now();
            if now >= until {
                return false;
            }
            let _ = tokio::time::timeout((until - now).min(poll), renewed).await;
        }
    }
}

/// Register `lease` (of the session sharing `shared`) for [`write_refusal`].
pub(crate) fn register(lease: &Arc<Lease>, shared: &Arc<Shared>) {
    let mut all = LEASES.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(l, _)| l.strong_count() > 0);
    all.push((Arc::downgrade(lease), Arc::downgrade(shared)));
}

/// Why a checkpoint write under fencing `epoch` must not be sent now, for a process that has
/// component sessions: none of them acts under `epoch` (holds a CSI active or quiescing at it,
/// or is taking one on), or the one that does has let its lease run out. `None`: it may be sent
/// (and always for epoch 0, and for a process with no session, such as an operator's tool).
pub(crate) fn write_refusal(epoch: u64) -> Option<String> {
    if epoch == 0 {
        return None;
    }
    let all = LEASES.lock().unwrap_or_else(|p| p.into_inner());
    let mut components = Vec::new();
    for (lease, shared) in all.iter() {
        let (Some(lease), Some(shared)) = (lease.upgrade(), shared.upgrade()) else {
            continue;
        };
        if !shared.acts_under(epoch) {
            components.push(lease.component.clone());
            continue;
        }
        if lease.is_valid() {
            return None;
        }
        return Some(format!(
            "component {}: its lease from the agent has run out (the agent is paused, hung, cut \
             off or fenced), so it may not act under epoch {epoch}; the write was not sent. It \
             waits for the lease to be renewed and the assignment re-delivered",
            lease.component
        ));
    }
    if components.is_empty() {
        return None;
    }
    Some(format!(
        "component {}: it holds no active assignment at epoch {epoch} (it was moved, removed or \
         quiesced), so it may not write under it; the write was not sent. Use the epoch of its \
         current active assignment (Session::epoch_for)",
        components.join(", ")
    ))
}

/// Whether the component holds a CSI active or quiescing.
fn holds_active(shared: &Shared) -> bool {
    shared
        .assignments()
        .iter()
        .any(|(_, _, s, _)| matches!(s, HaState::Active | HaState::Quiescing))
}

/// Start the guard thread of `lease`: at each deadline that passes while the component holds an
/// active CSI, hand the quiesce to the worker (`ordered`) and end the process if it is not
/// confirmed within the bound (unless the application chose [`LeaseExpiry::QuiesceOnly`]).
pub(crate) fn spawn_guard(
    lease: Arc<Lease>,
    shared: Arc<Shared>,
    ordered: mpsc::Sender<Ordered>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("nines-lease".into())
        .spawn(move || guard(&lease, &shared, &ordered))
}

fn guard(lease: &Lease, shared: &Shared, ordered: &mpsc::Sender<Ordered>) {
    // The deadline whose expiry was last handled, and whether its quiesce was confirmed.
    let mut handled: Option<(u64, bool)> = None;
    // Lapses already looked at.
    let mut seen_lapses = 0;
    let mut e = lease.lock();
    loop {
        if lease.stopped.load(Ordering::Acquire) {
            return;
        }
        let deadline = lease.deadline_ns();
        let now = mono_now_ns();
        // A renewal that came after the deadline had passed does not undo the lapse: a guard
        // that woke too late to see it still stops the component (the agent re-delivers).
        let lapses = lease.lapses.load(Ordering::Acquire);
        let lapsed = lapses != seen_lapses;
        if now < deadline && !lapsed {
            e = wait(lease, e, Duration::from_nanos(deadline - now));
            continue;
        }
        seen_lapses = lapses;
        let again = lapsed
            || match handled {
                Some((d, confirmed)) => d != deadline || confirmed,
                None => true,
            };
        if !holds_active(shared) || !again {
            if now >= deadline {
                e = wait(lease, e, Duration::from_millis(EXPIRED_POLL_MS));
            }
            continue;
        }
        e.handed += 1;
        let n = e.handed;
        let late_ms = (now - deadline.min(now)) / 1_000_000;
        tracing::warn!(
            component = %lease.component, late_ms, lapsed,
            "lease from the agent ran out: the component stops acting as active"
        );
        if ordered
            .try_send(Ordered::LeaseExpired { expiry: n })
            .is_err()
        {
            tracing::error!(component = %lease.component, "the session's worker is congested");
        }
        let until = std::time::Instant::now() + lease.quiesce_bound();
        while e.confirmed < n && !lease.stopped.load(Ordering::Acquire) {
            let now = std::time::Instant::now();
            if now >= until {
                break;
            }
            e = wait(lease, e, until - now);
        }
        let confirmed = e.confirmed >= n;
        handled = Some((deadline, confirmed));
        if !confirmed && holds_active(shared) && lease.action() == LeaseExpiry::EndProcess {
            end_process(&lease.component, lease.quiesce_ms);
        }
    }
}

fn wait<'a>(
    lease: &'a Lease,
    e: MutexGuard<'a, Expiries>,
    at_most: Duration,
) -> MutexGuard<'a, Expiries> {
    lease
        .wake
        .wait_timeout(e, at_most)
        .map(|(g, _)| g)
        .unwrap_or_else(|p| p.into_inner().0)
}

/// The component did not quiesce in time after its lease ran out: it must not go on acting.
fn end_process(component: &str, quiesce_ms: u64) -> ! {
    let why = format!(
        "nines: component {component}: the lease from the agent ran out and the component did \
         not quiesce within {quiesce_ms} ms; ending the process so that it cannot act as active \
         beside its replacement (choose LeaseExpiry::QuiesceOnly to take this on yourself)"
    );
    tracing::error!("{why}");
    eprintln!("{why}");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

/// The CSIs to quiesce: those held active or quiescing, as CSI sets to QUIESCED at their epoch.
pub(crate) fn to_quiesce(held: Vec<(String, String, HaState, u64)>) -> Vec<CsiSet> {
    held.into_iter()
        .filter(|(_, _, state, _)| matches!(state, HaState::Active | HaState::Quiescing))
        .map(|(si, csi, _, epoch)| CsiSet {
            si,
            csi,
            ha_state: HaState::Quiesced,
            epoch,
            descriptor: None,
            attributes: BTreeMap::new(),
            active_component: None,
        })
        .collect()
}

/// Quiesce every CSI still held active or quiescing (through [`Callbacks::csi_set`]), each
/// within `bound`. Whether every one of them returned `Ok`.
pub(crate) async fn quiesce_held<C: Callbacks>(
    callbacks: &C,
    shared: &Shared,
    bound: Duration,
) -> bool {
    let component = &shared.component;
    let mut all_ok = true;
    for set in to_quiesce(shared.assignments()) {
        let (si, csi, epoch) = (set.si.clone(), set.csi.clone(), set.epoch);
        tracing::warn!(%component, %si, %csi, epoch, "lease ran out: quiescing");
        match tokio::time::timeout(bound, callbacks.csi_set(set)).await {
            Ok(Ok(())) => shared.set_state(&si, &csi, HaState::Quiesced),
            Ok(Err(reason)) => {
                all_ok = false;
                tracing::error!(%component, %si, %csi, %reason, "could not quiesce");
            }
            Err(_) => {
                all_ok = false;
                tracing::error!(
                    %component, %si, %csi,
                    "quiescing took more than {} ms: abandoned", bound.as_millis()
                );
            }
        }
    }
    all_ok
}

/// The session broke: at `lease_expires` (the last grant's deadline), quiesce what is still held
/// active (the guard usually did already), then tell the callbacks nothing supervises the
/// component any more.
pub(crate) async fn expire<C: Callbacks>(
    callbacks: &C,
    shared: &Shared,
    lease: &Lease,
    lease_expires: tokio::time::Instant,
) {
    tokio::time::sleep_until(lease_expires).await;
    quiesce_held(callbacks, shared, lease.quiesce_bound()).await;
    let component = &shared.component;
    tracing::warn!(%component, "no longer supervised: the agent's lease ran out");
    callbacks.supervision_lost();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_and_quiescing_csis_are_quiesced_at_their_epoch() {
        let held = vec![
            ("a".to_string(), "a1".to_string(), HaState::Active, 7),
            ("b".to_string(), "b1".to_string(), HaState::Standby, 8),
            ("c".to_string(), "c1".to_string(), HaState::Quiescing, 9),
            ("d".to_string(), "d1".to_string(), HaState::Quiesced, 3),
        ];
        let sets = to_quiesce(held);
        let got: Vec<_> = sets
            .iter()
            .map(|s| {
                (
                    s.si.as_str(),
                    s.csi.as_str(),
                    s.ha_state,
                    s.epoch,
                    s.descriptor,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "a1", HaState::Quiesced, 7, None),
                ("c", "c1", HaState::Quiesced, 9, None),
            ]
        );
        assert!(sets.iter().all(|s| s.attributes.is_empty()));
    }

    #[test]
    fn fenced_writes_need_an_active_assignment_at_their_epoch_and_a_valid_lease() {
        assert_eq!(write_refusal(0), None, "unfenced writes are never refused");
        let shared = Arc::new(Shared::new("w1".into()));
        let far = mono_now_ns() + 60_000_000_000;
        let lease = Lease::new("w1", far, 100);
        register(&lease, &shared);
        let refused = write_refusal(9_999_001).expect("no assignment at that epoch");
        assert!(refused.contains("holds no active assignment"), "{refused}");
        shared.accept_for_test("si", "csi", HaState::Active, 9_999_001);
        assert_eq!(
            write_refusal(9_999_001),
            None,
            "active at that epoch, lease valid"
        );
        shared.set_state("si", "csi", HaState::Quiesced);
        assert!(
            write_refusal(9_999_001).is_some(),
            "quiesced: no more writes"
        );
        shared.set_state("si", "csi", HaState::Active);
        let expired = Lease::new("w1", 1, 100);
        let shared2 = Arc::new(Shared::new("w2".into()));
        shared2.accept_for_test("si2", "csi2", HaState::Active, 9_999_002);
        register(&expired, &shared2);
        let refused = write_refusal(9_999_002).expect("the lease ran out");
        assert!(
            refused.contains("lease from the agent has run out"),
            "{refused}"
        );
        drop((lease, expired));
        assert_eq!(
            write_refusal(9_999_003),
            None,
            "once its sessions are gone, a process is a plain client again"
        );
    }

    #[test]
    fn a_grant_only_extends_and_says_when_it_revived_an_expired_lease() {
        let now = mono_now_ns();
        let lease = Lease::new("c", now + 60_000_000_000, 100);
        assert!(lease.is_valid());
        assert_eq!(lease.quiesce_bound(), Duration::from_millis(75));
        assert!(!lease.renew(now), "an older grant never shortens the lease");
        assert!(lease.is_valid());
        let expired = Lease::new("c", now.saturating_sub(1), 100);
        assert!(!expired.is_valid());
        assert!(expired.renew(mono_now_ns() + 60_000_000_000));
        assert!(expired.is_valid());
        assert_eq!(
            expired.lapses.load(Ordering::Acquire),
            1,
            "a renewal after the deadline records the lapse"
        );
        assert_eq!(lease.lapses.load(Ordering::Acquire), 0);
        assert!(!Lease::new("c", 0, 0).is_valid(), "no grant: no lease");
    }
}
