//! Checking a subscription's filter array against the limits. The filters themselves, their
//! syntax and how they match ([`matches()`](crate::matches)) live in `nines_core::evt`, shared
//! with the SDK.

use nines_core::{AisError, ErrorCode};

use crate::{Filter, Limits};

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
        let longest = filter.pattern.len().max(filter.name.len());
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
        let long_name = [Filter::pass_all().named(vec![b'n'; limits.pattern_bytes_max + 1])];
        assert_eq!(
            validate_filters(&long_name, &limits).unwrap_err().code,
            ErrorCode::TooBig
        );
        assert_eq!(validate_filters(&many[1..], &limits), Ok(()));
    }
}
