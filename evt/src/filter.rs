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
//! which would be a silent false positive; an unnamed filter (`prefix:=crit`) checks only the
//! value, as AIS does. Pass-all ignores the name.

use std::fmt;

use nines_core::{AisError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::command::Pattern;
use crate::limits::Limits;

/// How a filter compares its bytes with a pattern's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterKind {
    /// The value starts with the filter's bytes.
    Prefix,
    /// The value ends with the filter's bytes.
    Suffix,
    /// The value equals the filter's bytes.
    Exact,
    /// Anything matches, even a missing pattern.
    PassAll,
}

impl FilterKind {
    /// The CLI spelling: `prefix`, `suffix`, `exact` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterKind::Prefix => "prefix",
            FilterKind::Suffix => "suffix",
            FilterKind::Exact => "exact",
            FilterKind::PassAll => "all",
        }
    }
}

/// One filter of a subscription's filter array.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Filter {
    /// How it compares.
    pub kind: FilterKind,
    /// The bytes compared with the pattern's value (ignored by pass-all).
    pub pattern: Vec<u8>,
    /// If set, the pattern at this position must have exactly this name (ignored by pass-all).
    pub name: Option<Vec<u8>>,
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
    /// Values starting with `pattern`.
    pub fn prefix(pattern: impl Into<Vec<u8>>) -> Self {
        Self::new(FilterKind::Prefix, pattern)
    }

    /// Values ending with `pattern`.
    pub fn suffix(pattern: impl Into<Vec<u8>>) -> Self {
        Self::new(FilterKind::Suffix, pattern)
    }

    /// Values equal to `pattern`.
    pub fn exact(pattern: impl Into<Vec<u8>>) -> Self {
        Self::new(FilterKind::Exact, pattern)
    }

    /// Anything, even a missing pattern.
    pub fn pass_all() -> Self {
        Self::new(FilterKind::PassAll, Vec::new())
    }

    /// A filter of `kind` on `pattern`, with no name guard.
    pub fn new(kind: FilterKind, pattern: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            pattern: pattern.into(),
            name: None,
        }
    }

    /// The same filter, guarded by the pattern name `name`.
    pub fn named(mut self, name: impl Into<Vec<u8>>) -> Self {
        self.name = Some(name.into());
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
        let filter = Self::new(kind, value.as_bytes());
        Ok(if name.is_empty() {
            filter
        } else {
            filter.named(name.as_bytes())
        })
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
        if self.name.as_ref().is_some_and(|name| *name != pattern.name) {
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
        let name = self.name.as_deref().map(String::from_utf8_lossy);
        match (self.kind, name) {
            (FilterKind::PassAll, None) => f.write_str("all"),
            (FilterKind::PassAll, Some(name)) => write!(f, "all:{name}="),
            (kind, name) => write!(
                f,
                "{}:{}={}",
                kind.as_str(),
                name.unwrap_or_default(),
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

/// Check a subscription's filter array against the limits: at most `patterns_max` filters, each
/// pattern and name at most `pattern_bytes_max` bytes.
///
/// # Errors
/// INVALID_PARAM for too many filters, TOO_BIG for too long a pattern or name.
pub fn validate_filters(filters: &[Filter], limits: &Limits) -> Result<(), AisError> {
    if filters.len() > limits.patterns_max {
        return Err(AisError::new(
            ErrorCode::InvalidParam,
            format!(
                "{} filters given; at most {} (one per pattern position) are allowed",
                filters.len(),
                limits.patterns_max
            ),
        ));
    }
    for (i, filter) in filters.iter().enumerate() {
        let name_len = filter.name.as_ref().map_or(0, Vec::len);
        let longest = filter.pattern.len().max(name_len);
        if longest > limits.pattern_bytes_max {
            return Err(AisError::new(
                ErrorCode::TooBig,
                format!(
                    "filter {i} ('{filter}') has a {longest}-byte name or value; at most {} \
                     bytes each",
                    limits.pattern_bytes_max
                ),
            ));
        }
    }
    Ok(())
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
    }

    #[test]
    fn limits_bound_the_filter_array() {
        let limits = Limits::default();
        let many = vec![Filter::pass_all(); limits.patterns_max + 1];
        let err = validate_filters(&many, &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParam);
        let long = [Filter::exact(vec![b'x'; limits.pattern_bytes_max + 1])];
        assert_eq!(
            validate_filters(&long, &limits).unwrap_err().code,
            ErrorCode::TooBig
        );
        assert_eq!(validate_filters(&many[1..], &limits), Ok(()));
    }
}
