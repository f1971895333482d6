//! Alarms on the event service: a publisher and a subscriber, built only on the SDK.
//!
//! # How it works
//!
//! An alarm is an event on a channel (`alarms` by default) with the pattern array
//! `severity=<critical|major|minor|warning>`, `source=<what>` ([`alarm::raise`]). Its priority
//! follows its severity (critical 0 … warning 3, [`Severity::priority`]), so a critical alarm
//! overtakes waiting minor ones at a slow subscriber; it is **retained** (an hour by default),
//! so a console that starts later still receives every active alarm. Clearing alarm `#id`
//! ([`alarm::clear`]) stops its retention ([`nines_sdk::EventClient::clear_retention`]) and
//! publishes a `severity=cleared`, `source`, `clears=<id>` event for the consoles already
//! listening.
//!
//! A subscriber filters by position ([`alarm::filters`]): `--severity major` matches exactly,
//! `--severity 'maj*'` as a prefix, and likewise `--source`. It prints each alarm, says when
//! alarms were lost (it fell behind, or on resume they were no longer kept), and — through
//! the SDK's [`nines_sdk::EventStream`] — reconnects to another agent and resumes after the
//! last event it received when its agent goes away. With `--state-file` it also resumes there
//! when the process is started again.
//!
//! The command line is [`cli::Cli`]; [`cli::run`] runs it with any writer (what the tests use).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alarm;
pub mod cli;

pub use alarm::{Alarm, Severity};
