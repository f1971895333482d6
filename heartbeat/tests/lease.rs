//! Lease and fencing: the node fences exactly at its deadline, and the decider's "surely
//! expired" comes strictly after the node fenced — and after its actives are gone — for every
//! clock drift within the assumed bound, over a grid of contact times and clock offsets.
//!
//! The model: real time in microseconds; each monotonic clock reads
//! `offset_ms + ⌊real_us × (10⁶ + drift_ppm) / 10⁹⌋` (whole milliseconds, drift within
//! ±`CLOCK_DRIFT_PPM_MAX`). For each case the test finds, in closed form, the first real
//! microsecond at which the library's predicate turns true, and checks it against the predicate
//! at that microsecond and the one before, so the assertions are about the library's functions.

use nines_heartbeat::lease::{
    earliest_replacement_ms, lease_surely_expired, margin_ms_required,
    reported_grant_on_decider_ms, CLOCK_DRIFT_PPM_MAX,
};
use nines_heartbeat::{LeaseConfig, SelfLease};

const US_PER_MS: i128 = 1_000;
const PPM_PER_UNIT: i128 = 1_000_000;

/// A monotonic clock with a constant drift and offset.
#[derive(Debug, Clone, Copy)]
struct Clock {
    offset_ms: i128,
    drift_ppm: i128,
}

impl Clock {
    fn read_ms(self, real_us: i128) -> u64 {
        let ms =
            self.offset_ms + real_us * (PPM_PER_UNIT + self.drift_ppm) / (PPM_PER_UNIT * US_PER_MS);
        u64::try_from(ms).expect("readings are non-negative")
    }

    /// The first real microsecond at which this clock reads at least `ms`.
    fn first_real_us_reading(self, ms: u64) -> i128 {
        let need = (i128::from(ms) - self.offset_ms) * PPM_PER_UNIT * US_PER_MS;
        let rate = PPM_PER_UNIT + self.drift_ppm;
        need.div_euclid(rate) + i128::from(need.rem_euclid(rate) != 0)
    }
}

const DRIFTS_PPM: [i128; 5] = [
    -(CLOCK_DRIFT_PPM_MAX as i128),
    -500,
    0,
    500,
    CLOCK_DRIFT_PPM_MAX as i128,
];
const OFFSETS_MS: [i128; 2] = [0, 987_654];
const ANCHORS_REAL_US: [i128; 4] = [0, 777_777, 5_000_000_123, 86_400_000_000_999];
const CONTACT_GAPS_US: [i128; 3] = [0, 1, 40_000];

/// The first real time (µs) at which the node is fenced, checked against `is_fenced`.
fn node_fenced_at_us(lease: &SelfLease, clock: Clock) -> i128 {
    let deadline = lease.fence_deadline_ms().expect("renewed");
    let f = clock.first_real_us_reading(deadline);
    assert!(lease.is_fenced(clock.read_ms(f)), "fenced at {f}");
    assert!(
        !lease.is_fenced(clock.read_ms(f - 1)),
        "not fenced before {f}"
    );
    f
}

/// The first real time (µs) at which the decider may replace, checked against the predicate.
fn decider_expired_at_us(last_contact_ms: u64, clock: Clock, cfg: &LeaseConfig) -> i128 {
    let x = clock.first_real_us_reading(earliest_replacement_ms(last_contact_ms, cfg));
    assert!(lease_surely_expired(last_contact_ms, clock.read_ms(x), cfg));
    assert!(!lease_surely_expired(
        last_contact_ms,
        clock.read_ms(x - 1),
        cfg
    ));
    x
}

/// Runs every case; returns how many broke "actives gone before the replacement starts".
fn violations(cfg: &LeaseConfig) -> usize {
    let reaction_us = i128::from(cfg.fence_reaction_ms) * US_PER_MS;
    let mut bad = 0;
    for node_drift in DRIFTS_PPM {
        for decider_drift in DRIFTS_PPM {
            for (node_off, decider_off) in OFFSETS_MS.iter().zip(OFFSETS_MS.iter().rev()) {
                let node = Clock {
                    offset_ms: *node_off,
                    drift_ppm: node_drift,
                };
                let decider = Clock {
                    offset_ms: *decider_off,
                    drift_ppm: decider_drift,
                };
                for anchor_us in ANCHORS_REAL_US {
                    for gap_us in CONTACT_GAPS_US {
                        let mut lease = SelfLease::new(*cfg);
                        lease.on_quorum_contact(node.read_ms(anchor_us));
                        let fenced = node_fenced_at_us(&lease, node);
                        let contact = decider.read_ms(anchor_us + gap_us);
                        let replace = decider_expired_at_us(contact, decider, cfg);
                        if !(fenced < replace && fenced + reaction_us <= replace) {
                            bad += 1;
                        }
                    }
                }
            }
        }
    }
    bad
}

#[test]
fn fenced_exactly_at_the_deadline() {
    let cfg = LeaseConfig::default();
    let mut lease = SelfLease::new(cfg);
    lease.on_quorum_contact(1_000);
    assert_eq!(lease.fence_deadline_ms(), Some(1_000 + cfg.lease_ms));
    assert!(!lease.is_fenced(2_499));
    assert!(lease.is_fenced(2_500));
    assert!(lease.is_fenced(9_999));
    assert!(lease.on_quorum_contact(2_000), "a later probe extends");
    assert!(!lease.is_fenced(3_499));
    assert!(lease.is_fenced(3_500));
}

#[test]
fn decider_waits_lease_plus_margin() {
    let cfg = LeaseConfig::default();
    assert_eq!(earliest_replacement_ms(1_000, &cfg), 2_750);
    assert!(!lease_surely_expired(1_000, 2_749, &cfg));
    assert!(lease_surely_expired(1_000, 2_750, &cfg));
    assert_eq!(
        earliest_replacement_ms(u64::MAX - 1, &cfg),
        u64::MAX,
        "saturates"
    );
}

#[test]
fn replacement_is_after_fencing_for_every_drift_within_the_margin() {
    for cfg in [
        LeaseConfig::default(),
        LeaseConfig {
            lease_ms: 300,
            drift_margin_ms: 20,
            fence_reaction_ms: 10,
        },
        LeaseConfig {
            lease_ms: 60_000,
            drift_margin_ms: 500,
            fence_reaction_ms: 0,
        },
    ] {
        cfg.validate().expect("a valid config");
        assert_eq!(violations(&cfg), 0, "{cfg:?}");
    }
}

#[test]
fn the_minimum_margin_suffices_and_one_less_can_fail() {
    for (lease_ms, reaction_ms) in [(1_500, 200), (60_000, 0), (10_000, 50)] {
        let need = margin_ms_required(lease_ms, CLOCK_DRIFT_PPM_MAX, reaction_ms);
        let exact = LeaseConfig {
            lease_ms,
            drift_margin_ms: need,
            fence_reaction_ms: reaction_ms,
        };
        assert_eq!(violations(&exact), 0, "{exact:?}");
        // The formula rounds each term up and adds 1 ms for truncated readings, so a margin a
        // few ms below it is within rounding; 4 ms below is below the exact real-number bound.
        let short = LeaseConfig {
            drift_margin_ms: need - 4,
            ..exact
        };
        assert!(
            violations(&short) > 0,
            "the check must be able to fail: {short:?}"
        );
    }
}

/// Wiring 2 of the lease docs: a voter granted the node's probe, later answered the decider's
/// revocation with the age of that grant; the decider, counting from the converted bound, must
/// replace the node only after its actives are gone — for every drift of the three clocks and
/// answers given at once or seconds later.
#[test]
fn a_revocation_answer_bounds_the_nodes_last_renewal() {
    let cfg = LeaseConfig::default();
    let reaction_us = i128::from(cfg.fence_reaction_ms) * US_PER_MS;
    for node_drift in DRIFTS_PPM {
        for voter_drift in DRIFTS_PPM {
            for decider_drift in DRIFTS_PPM {
                for answer_delay_us in [0, 999, 5_000_000] {
                    let node = Clock {
                        offset_ms: 70_000,
                        drift_ppm: node_drift,
                    };
                    let voter = Clock {
                        offset_ms: 5,
                        drift_ppm: voter_drift,
                    };
                    let decider = Clock {
                        offset_ms: 3_000,
                        drift_ppm: decider_drift,
                    };
                    // Worst case: the node's probe was sent the instant the voter granted it.
                    let granted_us = 12_345_678;
                    let mut lease = SelfLease::new(cfg);
                    lease.on_quorum_contact(node.read_ms(granted_us));
                    let gone_us = node_fenced_at_us(&lease, node) + reaction_us;
                    let answered_us = granted_us + answer_delay_us;
                    let age = voter.read_ms(answered_us) - voter.read_ms(granted_us);
                    let recv = decider.read_ms(answered_us + 300);
                    let bound = reported_grant_on_decider_ms(recv, age);
                    let start = earliest_replacement_ms(bound, &cfg);
                    let replace_us = decider.first_real_us_reading(start);
                    assert!(
                        gone_us <= replace_us,
                        "drifts {node_drift}/{voter_drift}/{decider_drift}, delay \
                         {answer_delay_us} us: gone at {gone_us}, replaced at {replace_us}"
                    );
                }
            }
        }
    }
}
