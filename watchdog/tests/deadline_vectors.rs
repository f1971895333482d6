//! Data-driven tests of the component watchdog deadline table.
//!
//! Every `testdata/deadline/*.toml` file is one story of `[[step]]`s applied in order to one
//! `DeadlineTable<String>`; `testdata/deadline/README.md` describes the format. Each step moves
//! the clock to its `at_ms`, applies its arms, kicks and disarms in that order, then calls
//! `expire(at_ms)` and compares the result with `expiries` exactly (default: none), so every
//! step also asserts that nothing else expired.
//!
//! Beyond what each step states, the runner checks on every step that each expiry's deadline is
//! `last_kick_ms + watchdog_ms` and not after the step's time, that an expired key's state says
//! so, and that `next_deadline` is `None` exactly when no watched key is armed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nines_watchdog::{ArmError, DeadlineTable, Expiry, WatchState};
use serde::Deserialize;

/// One data file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Story {
    /// What the story shows.
    about: String,
    step: Vec<Step>,
}

/// One step: actions at `at_ms`, then `expire(at_ms)` and the checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    note: Option<String>,
    /// The step's time ("advance to"); default: the previous step's.
    at_ms: Option<u64>,
    #[serde(default)]
    arm: Vec<Arm>,
    /// Keys kicked; each must be known (`kick` returns true).
    #[serde(default)]
    kick: Vec<String>,
    /// Keys kicked that must be unknown (`kick` returns false).
    #[serde(default)]
    kick_unknown: Vec<String>,
    /// Keys disarmed; each must have been watched.
    #[serde(default)]
    disarm: Vec<String>,
    /// Keys disarmed that must not be watched.
    #[serde(default)]
    disarm_unknown: Vec<String>,
    /// The exact result of this step's `expire(at_ms)`, in order.
    #[serde(default)]
    expiries: Vec<ExpectedExpiry>,
    /// The expected `next_deadline()` after the step.
    next_deadline: Option<u64>,
    /// Expect `next_deadline()` to be `None` after the step.
    #[serde(default)]
    no_deadline: bool,
    /// Expected `state(key, at_ms)` after the step.
    #[serde(default)]
    state: Vec<ExpectedState>,
    /// Keys `state()` must not know after the step.
    #[serde(default)]
    unknown: Vec<String>,
    /// Expected `len()` after the step.
    len: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Arm {
    key: String,
    watchdog_ms: u64,
    /// The expected refusal: "TableFull" or "PeriodOutOfRange"; default: accepted.
    refused: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedExpiry {
    key: String,
    last_kick_ms: u64,
    deadline_ms: u64,
    watchdog_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedState {
    key: String,
    watchdog_ms: u64,
    last_kick_age_ms: u64,
    expired: bool,
}

/// Runs one story, panicking with the file and step on the first mismatch.
fn run_story(path: &Path) {
    let text = fs::read_to_string(path).expect("read story");
    let story: Story = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not a valid story: {e}", path.display()));
    assert!(
        !story.about.is_empty(),
        "{}: say what it shows",
        path.display()
    );
    let mut table = DeadlineTable::<String>::new();
    let mut watched = BTreeSet::<String>::new();
    let mut now_ms = 0;
    for (i, step) in story.step.iter().enumerate() {
        let at = format!(
            "{} step {} ({})",
            path.display(),
            i + 1,
            step.note.as_deref().unwrap_or("-")
        );
        now_ms = step.at_ms.unwrap_or(now_ms);
        apply_actions(&mut table, &mut watched, step, now_ms, &at);
        let got = table.expire(now_ms);
        check_expiries(&table, &got, &step.expiries, now_ms, &at);
        check_after(&table, &watched, step, now_ms, &at);
    }
}

/// Applies a step's arms, kicks and disarms, checking each call's result.
fn apply_actions(
    table: &mut DeadlineTable<String>,
    watched: &mut BTreeSet<String>,
    step: &Step,
    now_ms: u64,
    at: &str,
) {
    for arm in &step.arm {
        let result = table.arm(arm.key.clone(), arm.watchdog_ms, now_ms);
        match (&arm.refused, result) {
            (None, Ok(())) => {
                watched.insert(arm.key.clone());
            }
            (Some(want), Err(err)) => {
                let got = match err {
                    ArmError::TableFull { .. } => "TableFull",
                    ArmError::PeriodOutOfRange { .. } => "PeriodOutOfRange",
                };
                assert_eq!(got, want, "{at}: arm {} refusal", arm.key);
            }
            (want, got) => panic!("{at}: arm {}: want {want:?}, got {got:?}", arm.key),
        }
    }
    for key in &step.kick {
        assert!(table.kick(key, now_ms), "{at}: kick {key} must be known");
    }
    for key in &step.kick_unknown {
        assert!(!table.kick(key, now_ms), "{at}: kick {key} must be unknown");
    }
    for key in &step.disarm {
        assert!(table.disarm(key), "{at}: disarm {key} must be watched");
        watched.remove(key);
    }
    for key in &step.disarm_unknown {
        assert!(!table.disarm(key), "{at}: disarm {key} must be unknown");
    }
}

/// Compares `expire`'s result with the expected list and checks each expiry's invariants.
fn check_expiries(
    table: &DeadlineTable<String>,
    got: &[Expiry<String>],
    want: &[ExpectedExpiry],
    now_ms: u64,
    at: &str,
) {
    let want: Vec<Expiry<String>> = want
        .iter()
        .map(|e| Expiry {
            key: e.key.clone(),
            last_kick_ms: e.last_kick_ms,
            deadline_ms: e.deadline_ms,
            watchdog_ms: e.watchdog_ms,
        })
        .collect();
    assert_eq!(got, want.as_slice(), "{at}: expiries");
    for e in got {
        assert_eq!(e.deadline_ms, e.last_kick_ms + e.watchdog_ms, "{at}: {e:?}");
        assert!(e.deadline_ms <= now_ms, "{at}: {e:?} reported early");
        let state = table
            .state(&e.key, now_ms)
            .expect("an expired key is watched");
        assert!(
            state.expired,
            "{at}: {} expired but state says armed",
            e.key
        );
    }
}

/// The step's explicit checks after `expire`, and the runner's invariants.
fn check_after(
    table: &DeadlineTable<String>,
    watched: &BTreeSet<String>,
    step: &Step,
    now_ms: u64,
    at: &str,
) {
    if let Some(want) = step.next_deadline {
        assert_eq!(table.next_deadline(), Some(want), "{at}: next_deadline");
    }
    if step.no_deadline {
        assert_eq!(table.next_deadline(), None, "{at}: next_deadline");
    }
    for s in &step.state {
        let want = WatchState {
            watchdog_ms: s.watchdog_ms,
            last_kick_age_ms: s.last_kick_age_ms,
            expired: s.expired,
        };
        assert_eq!(
            table.state(&s.key, now_ms),
            Some(want),
            "{at}: state of {}",
            s.key
        );
    }
    for key in &step.unknown {
        assert_eq!(
            table.state(key, now_ms),
            None,
            "{at}: {key} must be unknown"
        );
    }
    if let Some(len) = step.len {
        assert_eq!(table.len(), len, "{at}: len");
    }
    assert_eq!(
        table.len(),
        watched.len(),
        "{at}: len agrees with the arms and disarms"
    );
    assert_eq!(table.is_empty(), watched.is_empty(), "{at}: is_empty");
    let states: Vec<(String, WatchState)> = table.states(now_ms).collect();
    let keys: Vec<&String> = states.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        watched.iter().collect::<Vec<_>>(),
        "{at}: states() lists every key"
    );
    for (k, s) in &states {
        assert_eq!(
            table.state(k, now_ms).as_ref(),
            Some(s),
            "{at}: states() agrees"
        );
    }
    let any_armed = states.iter().any(|(_, s)| !s.expired);
    assert_eq!(
        table.next_deadline().is_some(),
        any_armed,
        "{at}: next_deadline is Some exactly when a key is armed"
    );
    if let Some(next) = table.next_deadline() {
        assert!(
            next > now_ms,
            "{at}: a deadline at or before now was not expired"
        );
    }
}

fn story_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/deadline");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("testdata/deadline exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_deadline_story_holds() {
    let files = story_files();
    assert!(files.len() >= 8, "expected the stories, found {files:?}");
    for file in &files {
        run_story(file);
    }
}
