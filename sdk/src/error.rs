//! The SDK's error: what the service answered, or why no service could be asked.

use nines_core::{AisError, ErrorCode};

/// Why a call failed.
///
/// Every variant's message names the operation (and checkpoint) that failed, why, and what to
/// do about it, so `eprintln!("{e}")` is enough for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkError {
    /// The service answered with an API error (or the deadline passed: [`ErrorCode::Timeout`]).
    /// Branch on [`AisError::code`]; the message is the service's, prefixed with the operation.
    #[error("{0}")]
    Ais(AisError),
    /// No endpoint could be reached (connection refused, unreachable, not serving). Nothing was
    /// done; retrying later is safe. The message lists why each endpoint failed.
    #[error("{0}")]
    Unavailable(String),
    /// The caller passed something the SDK rejects before sending (an empty name, a malformed
    /// endpoint). Nothing was sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// The agent refused a component session: the process is not the one the agent started for
    /// that component (SO_PEERCRED), or runs as another user. The message names the component,
    /// the expected pid and this process's pid. Retrying does not help.
    #[error("{0}")]
    PermissionDenied(String),
}

impl SdkError {
    /// The stable AIS code, when the error is (or stands for) an answer from the service:
    /// `Some` for [`SdkError::Ais`], `Some(InvalidParam)` for [`SdkError::InvalidArgument`], and
    /// `None` for [`SdkError::Unavailable`] (no service answered at all) and
    /// [`SdkError::PermissionDenied`] (AIS has no code for it here).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Ais(e) => Some(e.code),
            SdkError::InvalidArgument(_) => Some(ErrorCode::InvalidParam),
            SdkError::Unavailable(_) | SdkError::PermissionDenied(_) => None,
        }
    }

    /// Whether the same call may simply be retried later: nothing was done
    /// ([`SdkError::Unavailable`], `TRY_AGAIN`, `UNAVAILABLE`). A `TIMEOUT` is not retryable in
    /// this sense: the operation may or may not have taken effect.
    pub fn is_retryable(&self) -> bool {
        match self {
            SdkError::Unavailable(_) => true,
            SdkError::Ais(e) => matches!(e.code, ErrorCode::TryAgain | ErrorCode::Unavailable),
            SdkError::InvalidArgument(_) | SdkError::PermissionDenied(_) => false,
        }
    }
}

impl From<AisError> for SdkError {
    fn from(e: AisError) -> Self {
        SdkError::Ais(e)
    }
}

/// Shorthand for results of SDK calls.
pub type Result<T, E = SdkError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_retryability_follow_the_variant() {
        let busy = SdkError::Ais(AisError::new(ErrorCode::TryAgain, "no leader"));
        let gone = SdkError::Ais(AisError::new(ErrorCode::NotExist, "no such checkpoint"));
        let timeout = SdkError::Ais(AisError::new(ErrorCode::Timeout, "no answer"));
        let down = SdkError::Unavailable("nobody home".into());
        let bad = SdkError::InvalidArgument("empty name".into());
        assert_eq!(busy.code(), Some(ErrorCode::TryAgain));
        assert_eq!(gone.code(), Some(ErrorCode::NotExist));
        assert_eq!(down.code(), None);
        assert_eq!(bad.code(), Some(ErrorCode::InvalidParam));
        assert!(busy.is_retryable() && down.is_retryable());
        assert!(!gone.is_retryable() && !timeout.is_retryable() && !bad.is_retryable());
        assert_eq!(
            gone.to_string(),
            "no such checkpoint (SA_AIS_ERR_NOT_EXIST)"
        );
    }
}
