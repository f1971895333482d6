//! API errors: expected outcomes returned to a caller, each with a stable AIS-style code.

use serde::{Deserialize, Serialize};

/// Stable error codes, numbered as SA Forum's `SaAisErrorT` numbers them. The numbers are part of
/// the wire contract: never renumber, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u32)]
pub enum ErrorCode {
    /// SA_AIS_ERR_LIBRARY: an internal error; the message says more.
    Library = 2,
    /// SA_AIS_ERR_TIMEOUT: the deadline passed; the operation may or may not have taken effect.
    Timeout = 5,
    /// SA_AIS_ERR_TRY_AGAIN: the service cannot take the request now (no leader, leadership
    /// changed); retrying later is safe.
    TryAgain = 6,
    /// SA_AIS_ERR_INVALID_PARAM: a parameter is wrong.
    InvalidParam = 7,
    /// SA_AIS_ERR_NO_MEMORY.
    NoMemory = 8,
    /// SA_AIS_ERR_BAD_HANDLE.
    BadHandle = 9,
    /// SA_AIS_ERR_NOT_EXIST: the named entity does not exist.
    NotExist = 12,
    /// SA_AIS_ERR_EXIST: the named entity exists already.
    Exist = 14,
    /// SA_AIS_ERR_NO_SPACE: a configured capacity is exhausted.
    NoSpace = 17,
    /// SA_AIS_ERR_BAD_OPERATION: the operation is not allowed in the current state.
    BadOperation = 20,
    /// SA_AIS_ERR_UNAVAILABLE: the service is stopped on this node.
    Unavailable = 31,
    /// SA_AIS_ERR_TOO_BIG: a value exceeds a size limit.
    TooBig = 25,
    /// SA_AIS_ERR_VERSION: the peer speaks an incompatible version.
    Version = 4,
}

impl ErrorCode {
    /// The stable number of this code.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code for a stable number, if this build knows it.
    pub fn from_u32(n: u32) -> Option<Self> {
        use ErrorCode::*;
        [
            Library,
            Timeout,
            TryAgain,
            InvalidParam,
            NoMemory,
            BadHandle,
            NotExist,
            Exist,
            NoSpace,
            BadOperation,
            Unavailable,
            TooBig,
            Version,
        ]
        .into_iter()
        .find(|c| c.as_u32() == n)
    }

    /// The AIS name, e.g. `SA_AIS_ERR_TRY_AGAIN`.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Library => "SA_AIS_ERR_LIBRARY",
            Timeout => "SA_AIS_ERR_TIMEOUT",
            TryAgain => "SA_AIS_ERR_TRY_AGAIN",
            InvalidParam => "SA_AIS_ERR_INVALID_PARAM",
            NoMemory => "SA_AIS_ERR_NO_MEMORY",
            BadHandle => "SA_AIS_ERR_BAD_HANDLE",
            NotExist => "SA_AIS_ERR_NOT_EXIST",
            Exist => "SA_AIS_ERR_EXIST",
            NoSpace => "SA_AIS_ERR_NO_SPACE",
            BadOperation => "SA_AIS_ERR_BAD_OPERATION",
            Unavailable => "SA_AIS_ERR_UNAVAILABLE",
            TooBig => "SA_AIS_ERR_TOO_BIG",
            Version => "SA_AIS_ERR_VERSION",
        }
    }
}

/// An API error: a stable code plus a message for people saying what failed, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message} ({})", code.name())]
pub struct AisError {
    /// The stable code callers branch on.
    pub code: ErrorCode,
    /// What failed, why, and what to do.
    pub message: String,
}

impl AisError {
    /// An error with `code` and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_numbers() {
        for n in 0..64 {
            if let Some(c) = ErrorCode::from_u32(n) {
                assert_eq!(c.as_u32(), n);
            }
        }
        assert_eq!(ErrorCode::from_u32(6), Some(ErrorCode::TryAgain));
        assert_eq!(ErrorCode::from_u32(1), None);
        assert_eq!(ErrorCode::TryAgain.name(), "SA_AIS_ERR_TRY_AGAIN");
    }
}
