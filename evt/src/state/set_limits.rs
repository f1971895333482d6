//! `SetLimits`: the operator replaces the limits through the log. New limits are checked on their
//! own, then against what the state already holds; nothing changes unless both pass.

use nines_core::{AisError, ErrorCode};

use super::EvtState;
use crate::command::EvtResponse;
use crate::limits::Limits;

impl EvtState {
    /// Replace the limits with `limits`, if the current ones are `expected` (when given).
    pub(super) fn set_limits(
        &mut self,
        limits: Limits,
        expected: Option<Limits>,
    ) -> Result<EvtResponse, AisError> {
        if expected.is_some_and(|e| e != self.limits) {
            return Err(AisError::new(
                ErrorCode::BadOperation,
                "event limits not changed: they changed since they were read (another operator, \
                 or a client that does not know every limit); read them again and retry",
            ));
        }
        limits.check().map_err(|e| {
            AisError::new(e.code, format!("event limits not changed: {}", e.message))
        })?;
        self.check_held_within(&limits)?;
        for channel in self.channels.values_mut() {
            channel.trim(&limits);
        }
        self.limits = limits;
        Ok(EvtResponse::LimitsSet)
    }

    /// NO_SPACE if the state already holds more channels, retained events or retained bytes
    /// than `limits` allow: lowering a limit never drops a channel or a retained event.
    fn check_held_within(&self, limits: &Limits) -> Result<(), AisError> {
        let refuse = |why: String| {
            Err(AisError::new(
                ErrorCode::NoSpace,
                format!("event limits not changed: {why}"),
            ))
        };
        let channels = self.channels.len();
        if channels > limits.channels_max {
            return refuse(format!(
                "channels_max {} is below the {channels} channels that exist; unlink {} of \
                 them first, or set channels_max to at least {channels}",
                limits.channels_max,
                channels - limits.channels_max
            ));
        }
        let fullest = self.channels.iter().max_by_key(|(_, c)| c.retained.len());
        if let Some((name, c)) =
            fullest.filter(|(_, c)| c.retained.len() > limits.retained_per_channel_max)
        {
            let held = c.retained.len();
            return refuse(format!(
                "retained_per_channel_max {} is below the {held} events channel '{name}' \
                 retains; clear their retention or wait for it to run out, or set \
                 retained_per_channel_max to at least {held}",
                limits.retained_per_channel_max
            ));
        }
        if self.retained_bytes > limits.retained_bytes_max {
            return refuse(format!(
                "retained_bytes_max {} is below the {} bytes of events retained now; clear \
                 some retention or wait for it to run out, or set retained_bytes_max to at \
                 least {}",
                limits.retained_bytes_max, self.retained_bytes, self.retained_bytes
            ));
        }
        Ok(())
    }
}
