//! The failover policy, pure: what a failed attempt means for the call (no I/O, no time).
//!
//! - The service answered with an AIS code: `TRY_AGAIN` / `UNAVAILABLE` mean nothing was done,
//!   so another endpoint (or the same one a little later) may be asked; anything else is final.
//! - No AIS code and the request provably reached no service (`Unavailable` from the transport:
//!   connection refused, reset before the request was taken; `Unimplemented`: that agent does not
//!   serve checkpoints): ask the next endpoint.
//! - No AIS code, a deadline or cancellation in flight: the outcome is unknown. A read is simply
//!   asked elsewhere; a mutation is never re-sent (it may have taken effect), the caller gets
//!   `TIMEOUT`.

use nines_core::{AisError, ErrorCode};
use nines_proto::{ais_from_status, AIS_CODE_HEADER};
use tonic::Code;

/// Whether re-sending a call that may have taken effect is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads: asking again (anywhere) changes nothing.
    Idempotent,
    /// Writes, opens, closes: asking again after an unknown outcome could apply it twice.
    Mutating,
}

/// What a failed attempt means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The request reached no service on this endpoint; ask the next one now. Carries why.
    NextEndpoint(String),
    /// The service did nothing and asks to be asked again later (or elsewhere).
    Busy(AisError),
    /// The call's final answer.
    Fail(AisError),
}

/// Classify a failed attempt's status.
pub(crate) fn classify(status: &tonic::Status, idempotency: Idempotency) -> Verdict {
    if status.metadata().get(AIS_CODE_HEADER).is_some() {
        let e = ais_from_status(status);
        return match e.code {
            ErrorCode::TryAgain | ErrorCode::Unavailable => Verdict::Busy(e),
            _ => Verdict::Fail(e),
        };
    }
    match status.code() {
        Code::Unavailable => Verdict::NextEndpoint(transport_why(status)),
        Code::Unimplemented => {
            Verdict::NextEndpoint("does not serve the checkpoint service (older agent?)".into())
        }
        Code::DeadlineExceeded | Code::Cancelled => match idempotency {
            Idempotency::Idempotent => Verdict::NextEndpoint(transport_why(status)),
            Idempotency::Mutating => Verdict::Fail(outcome_unknown(status.message())),
        },
        _ => Verdict::Fail(ais_from_status(status)),
    }
}

/// The `TIMEOUT` a mutation gets when its outcome cannot be known.
pub(crate) fn outcome_unknown(why: &str) -> AisError {
    AisError::new(
        ErrorCode::Timeout,
        format!("{why}; the operation may or may not have taken effect: read back before retrying"),
    )
}

/// A transport status's message, with its source when tonic keeps one (the interesting part:
/// "connection refused").
pub(crate) fn transport_why(status: &tonic::Status) -> String {
    let mut why = status.message().to_string();
    let mut source = std::error::Error::source(status);
    let mut depth = 0;
    while let Some(s) = source {
        let text = s.to_string();
        if !why.contains(&text) {
            why.push_str(": ");
            why.push_str(&text);
        }
        source = s.source();
        depth += 1;
        if depth == 4 {
            break;
        }
    }
    if why.is_empty() {
        "unavailable".into()
    } else {
        why
    }
}

/// Pause after a full round of endpoints found only busy or unreachable ones: 50 ms doubling to
/// at most 1 s.
pub(crate) fn backoff_ms(round: u32) -> u64 {
    const FIRST_MS: u64 = 50;
    const MAX_MS: u64 = 1_000;
    FIRST_MS.saturating_mul(1u64 << round.min(16)).min(MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_proto::status_from_ais;

    fn ais(code: ErrorCode) -> tonic::Status {
        status_from_ais(&AisError::new(code, "from the service"))
    }

    #[test]
    fn service_answers_are_final_unless_they_say_try_again() {
        for idem in [Idempotency::Idempotent, Idempotency::Mutating] {
            assert!(matches!(
                classify(&ais(ErrorCode::TryAgain), idem),
                Verdict::Busy(_)
            ));
            assert!(matches!(
                classify(&ais(ErrorCode::Unavailable), idem),
                Verdict::Busy(_)
            ));
            for code in [
                ErrorCode::NotExist,
                ErrorCode::Timeout,
                ErrorCode::BadOperation,
            ] {
                assert_eq!(
                    classify(&ais(code), idem),
                    Verdict::Fail(AisError::new(code, "from the service"))
                );
            }
        }
    }

    #[test]
    fn transport_failures_move_to_the_next_endpoint() {
        let refused = tonic::Status::unavailable("tcp connect error");
        for idem in [Idempotency::Idempotent, Idempotency::Mutating] {
            assert!(
                matches!(classify(&refused, idem), Verdict::NextEndpoint(w) if w.contains("tcp connect"))
            );
            assert!(matches!(
                classify(&tonic::Status::unimplemented(""), idem),
                Verdict::NextEndpoint(_)
            ));
        }
    }

    #[test]
    fn a_mutation_with_an_unknown_outcome_is_never_resent() {
        for s in [
            tonic::Status::deadline_exceeded("deadline"),
            tonic::Status::cancelled("cancelled"),
        ] {
            assert!(matches!(
                classify(&s, Idempotency::Idempotent),
                Verdict::NextEndpoint(_)
            ));
            match classify(&s, Idempotency::Mutating) {
                Verdict::Fail(e) => {
                    assert_eq!(e.code, ErrorCode::Timeout);
                    assert!(e.message.contains("may or may not"));
                }
                other => panic!("{other:?}"),
            }
        }
        let internal = tonic::Status::internal("boom");
        assert!(matches!(
            classify(&internal, Idempotency::Idempotent),
            Verdict::Fail(e) if e.code == ErrorCode::Library
        ));
    }

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let ms: Vec<u64> = (0..7).map(backoff_ms).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ms(u32::MAX), 1000);
    }
}
