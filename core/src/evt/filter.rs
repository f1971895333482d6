//! Subscription filters and how they match an event's pattern array.
//!
//! # Semantics (AIS, positional)
//! Filter `i` is matched against the VALUE of pattern `i`:
//! - [`FilterKind::Prefix`] / [`FilterKind::Suffix`]: the value starts / ends with the filter's
//!   bytes (empty bytes match every value);
//! - [`FilterKind::Exact`]: the value equals the filter's bytes;
//! - [`FilterKind::PassAll`]: anything, including a missing pattern.
//!
//! An event matches when every filter matches; patterns beyond the last filter are not looked
//! at, and an event with fewer patterns than filters matches only if every filter past its last
//! pattern is pass-all. An empty filter array matches every event.
//!
//! # Names (this project's addition)
//! AIS patterns have no names; ours do, and the CLI writes a filter as `KIND:NAME=VALUE`. A
//! filter's name is a guard, not a lookup: matching stays positional, and a named filter (other
//! than pass-all) matches only if the pattern at its position has exactly that name. So
//! `prefix:severity=crit` never matches a `source` pattern that happens to sit at its position,
//! which would be a silent false positive; an unnamed filter (empty name, `prefix:=crit`) checks
//! only the value, as AIS does. Pass-all ignores the name. An empty name means "any name" here
//! and on the wire alike (`nines.evt.v1.Filter.name`), so a filter crosses it unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Pattern;
use crate::{AisError, ErrorCode};

/// How a [`Filter`] compares its bytes with the pattern value at its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterKind {
    /// The value starts with the filter's pattern.
    Prefix,
    /// The value ends with the filter's pattern.
    Suffix,
    /// The value is the filter's pattern.
    Exact,
    /// Any value, even a missing pattern (the filter's pattern is ignored).
    PassAll,
}

impl FilterKind {
    /// The CLI spelling, also used in output: `prefix`, `suffix`, `exact` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterKind::Prefix => "prefix",
            FilterKind::Suffix => "suffix",
            FilterKind::Exact => "exact",
            FilterKind::PassAll => "all",
        }
    }
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One filter of a subscription's filter array. Filters are positional: the i-th filter is
/// matched against the i-th pattern of an event; an event passes when every filter matches
/// ([`matches()`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Filter {
    /// How the pattern value is matched.
    pub kind: FilterKind,
    /// What it is matched against (ignored by [`FilterKind::PassAll`]).
    pub pattern: Vec<u8>,
    /// When not empty, the event's pattern at this position must also carry exactly this name
    /// ([`Filter::named`]; ignored by pass-all); empty (the default): any name.
    pub name: Vec<u8>,
}

/// Why a filter's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterParseError {
    /// No `:` after the kind (only `all` may stand alone).
    #[error(
        "filter '{0}' has no ':'; write KIND:NAME=VALUE, KIND:=VALUE or all \
         (KIND one of prefix, suffix, exact, all)"
    )]
    MissingColon(String),
    /// The kind (before the first `:`) is not one of the four.
    #[error("filter '{0}' has an unknown kind; use prefix, suffix, exact or all (lowercase)")]
    UnknownKind(String),
    /// No `=` between name and value.
    #[error("filter '{0}' has no '='; write KIND:NAME=VALUE, or KIND:=VALUE to match any name")]
    MissingEquals(String),
    /// A pass-all filter with a value (it would be ignored, which is likely a mistake).
    #[error("filter '{0}' is pass-all but has a value; write all or all:NAME=")]
    PassAllWithValue(String),
}

impl From<FilterParseError> for AisError {
    fn from(e: FilterParseError) -> Self {
        AisError::new(ErrorCode::InvalidParam, e.to_string())
    }
}

impl Filter {
    /// Values that start with `pattern`.
    pub fn prefix(pattern: impl Into<Vec<u8>>) -> Self {
        Self::new(FilterKind::Prefix, pattern)
    }

    /// Values that end with `pattern`.
    pub fn suffix(pattern: impl Into<Vec<u8>>) -> Self {
        Self::new(FilterKind::Suffix, pattern)
    }

    /// Values equal to `pattern`.
    pub fn exact(pattern: impl Into<Vec<u8>>) -> Self {
        Self::new(FilterKind::Exact, pattern)
    }

    /// Anything, even a missing pattern (holds a position in the filter array).
    pub fn pass_all() -> Self {
        Self::new(FilterKind::PassAll, Vec::new())
    }

    /// A filter of `kind` on `pattern`, with no name guard.
    pub fn new(kind: FilterKind, pattern: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            pattern: pattern.into(),
            name: Vec::new(),
        }
    }

    /// The same filter, also requiring the event's pattern at this position to be named `name`
    /// (an empty `name`: any name).
    #[must_use]
    pub fn named(mut self, name: impl Into<Vec<u8>>) -> Self {
        self.name = name.into();
        self
    }

    /// Parse the CLI syntax: `KIND:NAME=VALUE` (name-guarded), `KIND:=VALUE` (any name), or for
    /// pass-all `all`, `all:` or `all:NAME=`. KIND is `prefix`, `suffix`, `exact` or `all`; the
    /// name ends at the first `=`, so a value may contain `=` but a name may not.
    ///
    /// # Errors
    /// A [`FilterParseError`] saying what is wrong and how to write it (it converts into
    /// INVALID_PARAM).
    pub fn parse(text: &str) -> Result<Self, FilterParseError> {
        let (kind_text, rest) = match text.split_once(':') {
            Some(split) => split,
            None if text == "all" => (text, ""),
            None => return Err(FilterParseError::MissingColon(text.to_owned())),
        };
        let kind = match kind_text {
            "prefix" => FilterKind::Prefix,
            "suffix" => FilterKind::Suffix,
            "exact" => FilterKind::Exact,
            "all" => FilterKind::PassAll,
            _ => return Err(FilterParseError::UnknownKind(text.to_owned())),
        };
        if kind == FilterKind::PassAll && rest.is_empty() {
            return Ok(Self::pass_all());
        }
        let (name, value) = rest
            .split_once('=')
            .ok_or_else(|| FilterParseError::MissingEquals(text.to_owned()))?;
        if kind == FilterKind::PassAll && !value.is_empty() {
            return Err(FilterParseError::PassAllWithValue(text.to_owned()));
        }
        Ok(Self::new(kind, value.as_bytes()).named(name.as_bytes()))
    }

    /// Whether this filter accepts `pattern` (the pattern at its position, `None` if the event
    /// has none there).
    pub fn accepts(&self, pattern: Option<&Pattern>) -> bool {
        let Some(pattern) = pattern else {
            return self.kind == FilterKind::PassAll;
        };
        if self.kind == FilterKind::PassAll {
            return true;
        }
        if !self.name.is_empty() && self.name != pattern.name {
            return false;
        }
        let value = pattern.value.as_slice();
        match self.kind {
            FilterKind::Prefix => value.starts_with(&self.pattern),
            FilterKind::Suffix => value.ends_with(&self.pattern),
            FilterKind::Exact => value == self.pattern.as_slice(),
            FilterKind::PassAll => true,
        }
    }
}

impl fmt::Display for Filter {
    /// The CLI syntax ([`Filter::parse`] reads it back when name and value are UTF-8).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = String::from_utf8_lossy(&self.name);
        match self.kind {
            FilterKind::PassAll if name.is_empty() => f.write_str("all"),
            FilterKind::PassAll => write!(f, "all:{name}="),
            kind => write!(
                f,
                "{kind}:{name}={}",
                String::from_utf8_lossy(&self.pattern)
            ),
        }
    }
}

/// Whether an event with `patterns` passes the filter array `filters` (see the module docs).
pub fn matches(filters: &[Filter], patterns: &[Pattern]) -> bool {
    filters
        .iter()
        .enumerate()
        .all(|(i, filter)| filter.accepts(patterns.get(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips_through_parse() {
        for text in [
            "all",
            "all:sev=",
            "prefix:sev=cr",
            "exact:=a=b",
            "suffix:=x",
        ] {
            let filter = Filter::parse(text).expect("valid filter text");
            assert_eq!(filter.to_string(), text);
            assert_eq!(Filter::parse(&filter.to_string()), Ok(filter));
        }
        assert_eq!(Filter::parse("all:"), Ok(Filter::pass_all()));
        assert_eq!(FilterKind::PassAll.to_string(), "all");
    }

    #[test]
    fn an_empty_name_is_no_guard_and_a_name_guards_its_position() {
        let crit = Pattern::new("severity", "critical");
        let other = Pattern::new("source", "critical");
        let unnamed = Filter::prefix("crit");
        let named = Filter::prefix("crit").named("severity");
        assert!(unnamed.accepts(Some(&crit)) && unnamed.accepts(Some(&other)));
        assert!(named.accepts(Some(&crit)) && !named.accepts(Some(&other)));
        assert_eq!(Filter::prefix("crit").named(""), unnamed);
        assert!(!named.accepts(None) && Filter::pass_all().named("x").accepts(None));
        assert!(matches(&[], &[]));
        let one = [crit.clone()];
        assert!(matches(&[named.clone(), Filter::pass_all()], &one));
        assert!(!matches(&[Filter::pass_all(), named], &[crit, other]));
    }
}
