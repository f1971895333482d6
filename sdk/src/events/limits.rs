//! The event service's limits: read and changed through any agent, applied by every agent alike
//! (they are part of the replicated state).

use nines_core::{evt::Limits, AisError, ErrorCode};
use nines_proto::evt::v1 as pb;

use super::EventClient;
use crate::{
    error::{Result, SdkError},
    retry::Idempotency,
};

/// Rounds of read-modify-write [`EventClient::update_limits`] makes before it gives up because
/// the limits keep changing under it.
const UPDATE_ROUNDS_MAX: usize = 3;

impl EventClient {
    /// The limits the event service checks every command against, as of now (a linearizable
    /// read: a change acknowledged before is seen, whichever agent answers).
    ///
    /// # Errors
    /// [`SdkError::Unavailable`] when no agent is reachable; `TRY_AGAIN` (after retries) when
    /// the cluster has no leader.
    pub async fn limits(&self) -> Result<Limits> {
        const WHAT: &str = "read the event limits";
        let r = self
            .inner
            .call(
                self.timeout,
                WHAT,
                Idempotency::Idempotent,
                |_left| pb::GetLimitsRequest {},
                |mut c, r| async move { c.get_limits(r).await },
            )
            .await?;
        let limits = r.limits.ok_or_else(|| {
            AisError::new(
                ErrorCode::Library,
                format!("{WHAT}: the agent answered without limits (a newer or broken agent?)"),
            )
        })?;
        Limits::try_from(limits)
            .map_err(|e| SdkError::Ais(AisError::new(e.code, format!("{WHAT}: {}", e.message))))
    }

    /// Change the limits by `change`: read them, apply `change`, and write the result back
    /// only if nobody changed them in between (else read again and retry, up to 3 rounds), so
    /// a concurrent change is never undone. A `change` that changes nothing writes nothing.
    /// Returns the limits in force afterwards.
    ///
    /// The write goes through the replicated log: once it returns, every agent checks new
    /// commands against the new limits. Lowering a limit never drops a channel or a retained
    /// event (it is refused instead); rings of recent events shrink at once.
    ///
    /// # Errors
    /// `INVALID_PARAM` for limits that make no sense or outgrow the service's memory budget (the
    /// message names the limit); `NO_SPACE` when the cluster already holds more channels,
    /// retained events or retained bytes than the new limits allow; `BAD_OPERATION` when the
    /// limits kept changing, or this client is older than the agents and does not know every
    /// limit (upgrade it); `TIMEOUT` when the outcome is unknown (read the limits to see).
    pub async fn update_limits(&self, mut change: impl FnMut(&mut Limits)) -> Result<Limits> {
        let mut round = 0;
        loop {
            round += 1;
            let current = self.limits().await?;
            let mut wanted = current.clone();
            change(&mut wanted);
            if wanted == current {
                return Ok(current);
            }
            let req = pb::SetLimitsRequest {
                limits: Some(pb::Limits::from(&wanted)),
                expected: Some(pb::Limits::from(&current)),
            };
            let set = self
                .inner
                .call(
                    self.timeout,
                    "set the event limits",
                    Idempotency::Mutating,
                    |_left| req,
                    |mut c, r| async move { c.set_limits(r).await },
                )
                .await;
            match set {
                Ok(_) => return Ok(wanted),
                Err(e)
                    if e.code() == Some(ErrorCode::BadOperation) && round < UPDATE_ROUNDS_MAX => {}
                Err(e) => return Err(e),
            }
        }
    }
}
