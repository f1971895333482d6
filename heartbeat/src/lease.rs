//! Node leases: when an isolated node must stop acting, and when the cluster may replace it
//! (promise 1, "never two actives").
//!
//! # The rule
//! - **The node** holds a lease of `lease_ms`, renewed by contact with the cluster
//!   ([`SelfLease::on_quorum_contact`]). At its fence deadline, `anchor + lease_ms` on its own
//!   monotonic clock ([`SelfLease::is_fenced`]), it demotes its actives and kills any that do not
//!   quiesce in time.
//! - **The decider** (the Raft leader) replaces a lost node's actives only once its lease has
//!   surely expired: at `last_contact + lease_ms + drift_margin_ms` on its own monotonic clock
//!   ([`earliest_replacement_ms`]), `last_contact` bounding the node's last renewal (wiring 2).
//!
//! # Why the old active has stopped before the new one starts
//! Capitals are real (physical) times. `S` = when the node's lease anchor was read, `C` = when
//! the decider last received from the node, `L` = `lease_ms`, `M` = `drift_margin_ms`,
//! `R` = `fence_reaction_ms`, `ρ` = [`CLOCK_DRIFT_PPM_MAX`] / 10⁶.
//!
//! Assumptions:
//! - **A1 bounded drift.** Every monotonic clock runs at a rate within `[1−ρ, 1+ρ]` of real time
//!   (crystals stay within ~±100 ppm, NTP slews `CLOCK_MONOTONIC` by at most 500 ppm; we allow
//!   1000). The node's clock must keep counting while the node is suspended: `CLOCK_MONOTONIC`
//!   stops during system suspend (`CLOCK_BOOTTIME` does not), and a VM pause the guest clock does
//!   not see breaks A1 outright — no margin covers it; only a host-side watchdog does.
//! - **A2 bounded reaction.** Within `R` real ms after the node's clock passes its fence deadline,
//!   its actives are gone: a live agent SIGKILLs them at the deadline; a hung or stopped
//!   (SIGSTOP) agent stops kicking the node watchdog in time for the watchdog to reset the node
//!   by then ([`SelfLease::may_kick_watchdog`]). The watchdog must be hardware (or host-side):
//!   softdog pauses with the kernel.
//! - **A3 anchor condition: `S ≤ C`** — the node never measures its lease from a moment later
//!   than the decider's last contact with it. See the wiring below: it does not hold by itself.
//!
//! Then the node's clock reaches `anchor + L` by real time `S + L/(1−ρ)` (slowest clock), so its
//! actives are gone by `S + L/(1−ρ) + R`. The decider's clock reaches `last_contact + L + M` no
//! earlier than `C + (L+M)/(1+ρ)` (fastest clock). With `S ≤ C` the old actives are gone before
//! the replacement whenever `L/(1−ρ) + R ≤ (L+M)/(1+ρ)`, that is
//! `M ≥ 2ρL/(1−ρ) + (1+ρ)R`, plus 1 ms because clock readings are whole milliseconds (the
//! decider's stamp of its last contact may be up to 1 ms early) — [`margin_ms_required`], which
//! [`LeaseConfig::validate`] enforces. `tests/lease.rs` checks this over drifts and contact
//! times, and that a margin below the exact bound can fail.
//! Messages the old active sent before it stopped may still arrive; epochs refuse them (CKPT).
//!
//! # The wiring that makes `S ≤ C` true (the driver's obligations)
//! 1. **Anchor at the probe's send time.** The node renews with the time it *sent* a heartbeat
//!    (probe) that was acknowledged, never with the arrival time of the acknowledgement or of
//!    others' heartbeats. An acknowledgement proves its sender received the probe at some time
//!    ≥ `S`. Counting arrivals is unsafe under a one-way partition: the node keeps hearing the
//!    cluster and renewing while the cluster, no longer hearing the node, counts down and
//!    promotes a standby. (A delayed probe is still fine: it was sent before the newest one.)
//! 2. **Quorum leases, revoked before replacement.** The node renews only from a probe that a
//!    majority of voters (itself counted if a voter) acknowledged with `granted`. Every node
//!    grants unless it has *revoked* the node's lease. Before the decider replaces the node, it
//!    asks `⌈V/2⌉` voters other than the node — enough to meet every majority that can renew it
//!    — to revoke its lease; each stops granting it and answers how long ago it last granted it
//!    (one lock covers granting and revoking, so no grant follows the answer). The node's last
//!    renewal probe was granted by one of them, so it was sent no later than the latest grant
//!    they report; converted to the decider's clock by [`reported_grant_on_decider_ms`], that is
//!    `C`. No Raft leader is involved: losing the leader fences nobody who still reaches a
//!    majority, and no post-election wait is needed.
//! 3. **Revocations end only through the log.** A node lifts a revocation when its replica
//!    shows the revoked node up at a later lease epoch (the epoch grows when the node comes back
//!    up, or is reinstated because it was revoked but never declared down). The decision to
//!    declare it down carries the epoch of the revocations it relied on and is refused if the
//!    epoch moved, so it can never take effect after the revocations were lifted.

//!
//! # The component's lease (the fence reaches into the component)
//! A node's lease means nothing to a component whose agent is paused or hung: A2's "a live agent
//! kills them at the deadline" fails exactly then, and no watchdog resets a node within a few
//! hundred ms. So each component session holds a lease of its own, and A2 is met by the
//! component itself:
//! - **Grant.** Each time the node's lease is renewed (and only then: the same wiring 1–2
//!   renewals), the agent grants every session the new fence deadline `D = anchor + L`, as a
//!   reading of the host's `CLOCK_MONOTONIC`. It converts by reading `CLOCK_MONOTONIC` before its
//!   own clock, and its whole-ms anchor is never later than the probe's send time, so the
//!   granted `D_c ≤ D`. A paused, hung, cut-off or fenced agent grants nothing new.
//! - **Expiry.** The SDK's guard (a thread of its own, not a task of the application's runtime)
//!   wakes at `D_c`: from then on it refuses checkpoint writes under the epochs the session holds
//!   and refuses ACTIVE; if the component holds a CSI active or quiescing it sets each to
//!   QUIESCED through the application's callback, and if that has not returned within
//!   `Q = ¾ R` it SIGKILLs its own process (unless the application chose to take that on).
//! - **C1 one clock.** Agent and components read the same `CLOCK_MONOTONIC` (one kernel; the
//!   agent starts its components, so they share its time namespace).
//! - **C2 guard reaction.** The guard thread runs, and a SIGKILL of its own process takes effect,
//!   within `R/4` of `D_c` (or of `D_c + Q`). A component that is itself stopped (SIGSTOP) acts on
//!   nothing while stopped; when continued after `D_c`, writes are refused at once (the check
//!   reads the clock), but other application code may run before the guard: an application that
//!   acts outside the SDK checks `nines_sdk::Session::lease_valid` before each act.
//!
//! Then the component has stopped acting by `D_c + Q + R/4 ≤ D + R` on the node's clock, which is
//! A2 with the same `R`; the inequality above then puts every component's stop before the
//! decider's earliest replacement, with no help from the agent. A renewal after an expiry is a
//! new lease under the same proof (a revoked node gets no renewal), and the agent re-delivers the
//! assignment only after a linearizable read shows the cluster still gives it (a lagging replica
//! may show an assignment the cluster has already moved).

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, DURATION_MS_MAX};

/// Default lease: 1.5 s. (a) It fits a 1 s hardware watchdog, the common minimum (most devices
/// count whole seconds), inside `lease + reaction` with room: the agent keeps kicking for 700 ms
/// without a renewal. (b) It is 15 heartbeat intervals, so a few lost round trips never fence a
/// healthy node. (c) A lost node is replaced `lease + margin` (≈ 1.75 s) after its last contact:
/// a shorter lease buys faster node failover at the price of more false self-fencing.
pub const LEASE_MS_DEFAULT: u64 = 1_500;

/// Default time from the fence deadline until the node's actives are surely gone: timer slack,
/// SIGKILL and reaping a large process, or the watchdog resetting a hung node.
pub const FENCE_REACTION_MS_DEFAULT: u64 = 200;

/// Default drift margin: [`margin_ms_required`] for the defaults is 206 ms; 250 leaves room.
pub const DRIFT_MARGIN_MS_DEFAULT: u64 = 250;

/// The clock drift rate assumed (A1), in parts per million: 10× a crystal's typical bound and 2×
/// the largest NTP slew of `CLOCK_MONOTONIC`.
pub const CLOCK_DRIFT_PPM_MAX: u64 = 1_000;

const PPM_PER_UNIT: u64 = 1_000_000;

/// Clock readings are whole milliseconds: a stamp may be up to this much before the instant.
const READING_TRUNCATION_MS: u128 = 1;

/// Lease settings shared by the node side ([`SelfLease`]) and the decider side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// How long a node may act after its last renewal, on its own clock.
    pub lease_ms: u64,
    /// How much longer the decider waits, on its clock, to cover drift and the node's reaction.
    pub drift_margin_ms: u64,
    /// Real time from the node's fence deadline until its actives are surely gone (A2).
    pub fence_reaction_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            lease_ms: LEASE_MS_DEFAULT,
            drift_margin_ms: DRIFT_MARGIN_MS_DEFAULT,
            fence_reaction_ms: FENCE_REACTION_MS_DEFAULT,
        }
    }
}

impl LeaseConfig {
    /// Checks the settings: `lease_ms` between 1 and [`DURATION_MS_MAX`], `fence_reaction_ms`
    /// below `lease_ms`, and `drift_margin_ms` at least [`margin_ms_required`] at
    /// [`CLOCK_DRIFT_PPM_MAX`] (and at most [`DURATION_MS_MAX`]).
    ///
    /// # Errors
    /// The first broken rule, as a [`ConfigError`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, value, rule: String| Err(ConfigError { field, value, rule });
        if !(1..=DURATION_MS_MAX).contains(&self.lease_ms) {
            return err(
                "lease_ms",
                self.lease_ms,
                format!("must be 1 to {DURATION_MS_MAX} ms"),
            );
        }
        if self.fence_reaction_ms >= self.lease_ms {
            let rule = format!("must be less than lease_ms ({})", self.lease_ms);
            return err("fence_reaction_ms", self.fence_reaction_ms, rule);
        }
        let need_ms =
            margin_ms_required(self.lease_ms, CLOCK_DRIFT_PPM_MAX, self.fence_reaction_ms);
        if self.drift_margin_ms < need_ms || self.drift_margin_ms > DURATION_MS_MAX {
            let rule = format!(
                "must be at least {need_ms} ms to cover {CLOCK_DRIFT_PPM_MAX} ppm of clock drift \
                 over lease_ms ({}) plus fence_reaction_ms ({}), and at most {DURATION_MS_MAX}",
                self.lease_ms, self.fence_reaction_ms
            );
            return err("drift_margin_ms", self.drift_margin_ms, rule);
        }
        Ok(())
    }
}

/// The smallest drift margin that keeps the decider's wait past the node's fencing:
/// `⌈2ρL/(1−ρ)⌉ + ⌈(1+ρ)R⌉ + 1` with `ρ = drift_ppm / 10⁶`, the 1 ms covering millisecond
/// clock readings (see the module docs).
///
/// # Panics
/// If `drift_ppm` is 10⁶ or more (a clock that may stand still bounds nothing).
pub fn margin_ms_required(lease_ms: u64, drift_ppm: u64, reaction_ms: u64) -> u64 {
    assert!(
        drift_ppm < PPM_PER_UNIT,
        "drift of {drift_ppm} ppm bounds nothing"
    );
    let (l, p, r, unit) = (
        u128::from(lease_ms),
        u128::from(drift_ppm),
        u128::from(reaction_ms),
        u128::from(PPM_PER_UNIT),
    );
    let drift = (2 * p * l).div_ceil(unit - p);
    let reaction = (r * (unit + p)).div_ceil(unit);
    u64::try_from(drift + reaction + READING_TRUNCATION_MS).unwrap_or(u64::MAX)
}

/// The decider's side: whether `now_ms` is at or past [`earliest_replacement_ms`].
///
/// # Correctness
/// Both times come from the decider's own monotonic clock; the wiring in the module docs must
/// hold (the node anchors its lease no later than this last contact).
pub fn lease_surely_expired(
    last_contact_ms_on_decider: u64,
    now_ms: u64,
    cfg: &LeaseConfig,
) -> bool {
    now_ms >= earliest_replacement_ms(last_contact_ms_on_decider, cfg)
}

/// The decider's side: the earliest time (its clock) at which the node's lease has surely
/// expired and its actives may be replaced: `last_contact + lease_ms + drift_margin_ms`.
pub fn earliest_replacement_ms(last_contact_ms_on_decider: u64, cfg: &LeaseConfig) -> u64 {
    last_contact_ms_on_decider
        .saturating_add(cfg.lease_ms)
        .saturating_add(cfg.drift_margin_ms)
}

/// The decider's side of a revocation answer: another node reported, in an answer the decider
/// received at `recv_ms` (its clock), that it last granted the node `age_ms` ago (its own
/// clock). The grant happened no later than this reading of the decider's clock: an age `a`
/// lasts at least `a (1 − ρ)/(1 + ρ) ≥ a (1 − 2ρ)` on the decider's clock, and the answer was sent
/// before it was received; +1 ms covers whole-ms readings. Use the result as the last contact of
/// [`earliest_replacement_ms`] (module docs, wiring 2).
pub fn reported_grant_on_decider_ms(recv_ms: u64, age_ms: u64) -> u64 {
    let slack = (u128::from(age_ms) * 2 * u128::from(CLOCK_DRIFT_PPM_MAX))
        .div_ceil(u128::from(PPM_PER_UNIT));
    recv_ms
        .saturating_sub(age_ms)
        .saturating_add(u64::try_from(slack).unwrap_or(u64::MAX))
        .saturating_add(READING_TRUNCATION_MS as u64)
}

/// The node's side: its own lease, measured on its own monotonic clock.
///
/// A node starts fenced: it holds no actives until its first renewal.
///
/// # Correctness
/// Feed it only renewals that meet the module docs' wiring (probe send times, granted by a
/// majority of voters), and act on [`is_fenced`](Self::is_fenced) with a timer armed at
/// [`fence_deadline_ms`](Self::fence_deadline_ms), not at the next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfLease {
    cfg: LeaseConfig,
    /// The send time of the newest acknowledged probe; `None` before the first renewal.
    anchor_ms: Option<u64>,
}

impl SelfLease {
    /// A lease never renewed yet (fenced).
    pub fn new(cfg: LeaseConfig) -> Self {
        SelfLease {
            cfg,
            anchor_ms: None,
        }
    }

    /// Renews the lease from `probe_sent_ms`: the node's clock when it sent the probe whose
    /// acknowledgement makes this a renewal (module docs, wiring 1 and 2) — not the time the
    /// acknowledgement arrived. An older probe acknowledged late never shortens the lease.
    /// Returns whether the lease was extended.
    pub fn on_quorum_contact(&mut self, probe_sent_ms: u64) -> bool {
        if self.anchor_ms.is_some_and(|a| a >= probe_sent_ms) {
            return false;
        }
        self.anchor_ms = Some(probe_sent_ms);
        true
    }

    /// Whether the node must not hold actives at `now_ms`: true before the first renewal and
    /// from the fence deadline on (`now_ms ≥ anchor + lease_ms`).
    pub fn is_fenced(&self, now_ms: u64) -> bool {
        self.fence_deadline_ms()
            .is_none_or(|deadline| now_ms >= deadline)
    }

    /// When the lease runs out (`anchor + lease_ms`), or `None` before the first renewal.
    pub fn fence_deadline_ms(&self) -> Option<u64> {
        self.anchor_ms.map(|a| a.saturating_add(self.cfg.lease_ms))
    }

    /// Whether the agent may kick the node watchdog at `now_ms` (A2): yes if its actives are
    /// confirmed gone, or if a hang starting now would still have the watchdog (timeout
    /// `watchdog_timeout_ms`) reset the node by `fence deadline + fence_reaction_ms`. Kicking
    /// every heartbeat interval, a live agent then has `fence_reaction_ms − interval` after the
    /// deadline to kill its actives and confirm before the reset.
    pub fn may_kick_watchdog(
        &self,
        now_ms: u64,
        watchdog_timeout_ms: u64,
        actives_gone: bool,
    ) -> bool {
        actives_gone
            || self.fence_deadline_ms().is_some_and(|deadline| {
                now_ms.saturating_add(watchdog_timeout_ms)
                    <= deadline.saturating_add(self.cfg.fence_reaction_ms)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_margin_formula_matches_the_docs() {
        LeaseConfig::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!(margin_ms_required(1_500, 1_000, 200), 4 + 201 + 1);
        assert_eq!(margin_ms_required(1_500, 0, 0), 1);
    }

    #[test]
    fn validation_names_the_field() {
        let d = LeaseConfig::default;
        let field = |c: LeaseConfig| c.validate().expect_err("refused").field;
        assert_eq!(field(LeaseConfig { lease_ms: 0, ..d() }), "lease_ms");
        assert_eq!(
            field(LeaseConfig {
                fence_reaction_ms: 1_500,
                ..d()
            }),
            "fence_reaction_ms"
        );
        assert_eq!(
            field(LeaseConfig {
                drift_margin_ms: 205,
                ..d()
            }),
            "drift_margin_ms"
        );
        LeaseConfig {
            drift_margin_ms: 206,
            ..d()
        }
        .validate()
        .expect("exactly enough");
    }

    #[test]
    fn a_new_node_is_fenced_and_a_late_old_ack_never_shortens() {
        let mut lease = SelfLease::new(LeaseConfig::default());
        assert!(lease.is_fenced(0));
        assert_eq!(lease.fence_deadline_ms(), None);
        assert!(lease.on_quorum_contact(1_000));
        assert!(!lease.on_quorum_contact(900));
        assert_eq!(lease.fence_deadline_ms(), Some(2_500));
    }

    #[test]
    fn watchdog_kicks_stop_in_time_for_the_reset_to_land_by_deadline_plus_reaction() {
        let mut lease = SelfLease::new(LeaseConfig::default());
        assert!(!lease.may_kick_watchdog(0, 1_000, false));
        assert!(lease.may_kick_watchdog(0, 1_000, true));
        lease.on_quorum_contact(0);
        assert!(lease.may_kick_watchdog(700, 1_000, false));
        assert!(!lease.may_kick_watchdog(701, 1_000, false));
        assert!(lease.may_kick_watchdog(5_000, 1_000, true));
    }
}
