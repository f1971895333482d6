//! The channel and event operations: create, unlink, publish, clear retention, and the checks
//! that run before any of them changes anything.

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};

use super::channel::Channel;
use super::{channel_not_exist, EvtState};
use crate::command::{Event, EvtResponse};
use crate::limits::PRIORITY_LOWEST;

impl EvtState {
    /// Create `name` if missing.
    pub(super) fn create(
        &mut self,
        ctx: ApplyContext,
        name: String,
    ) -> Result<EvtResponse, AisError> {
        if self.channels.contains_key(&name) {
            return Ok(EvtResponse::Created { existed: true });
        }
        self.check_new_channel(&name)?;
        self.channels.insert(name, Channel::new(ctx.index));
        Ok(EvtResponse::Created { existed: false })
    }

    /// Delete `name` with its retained and recent events.
    pub(super) fn unlink(&mut self, name: &str) -> Result<EvtResponse, AisError> {
        let channel = self
            .channels
            .remove(name)
            .ok_or_else(|| channel_not_exist(name))?;
        for (id, event) in &channel.retained {
            self.forget_retained(event);
            assert_eq!(*id, event.id, "retained events are keyed by their id");
        }
        Ok(EvtResponse::Unlinked)
    }

    /// Publish `event` (its `id` is assigned here), creating the channel first if `create` and
    /// it is missing. Everything is checked before anything changes.
    pub(super) fn publish(
        &mut self,
        ctx: ApplyContext,
        create: bool,
        mut event: Event,
    ) -> Result<EvtResponse, AisError> {
        self.check_event(&event)?;
        let exists = self.channels.contains_key(&event.channel);
        if !exists && !create {
            return Err(channel_not_exist(&event.channel));
        }
        if !exists {
            self.check_new_channel(&event.channel)?;
        }
        if event.retention_ms > 0 {
            self.check_retained_room(&event)?;
        }
        let limits = self.limits.clone();
        let channel = self
            .channels
            .entry(event.channel.clone())
            .or_insert_with(|| Channel::new(ctx.index));
        event.id = channel.next_id;
        channel.next_id += 1;
        channel.remember(event.clone(), &limits);
        if let Some(deadline) = event.retention_deadline_ms() {
            channel.retained.insert(event.id, event.clone());
            self.deadlines
                .insert((deadline, event.channel.clone(), event.id));
            self.retained_bytes += event.size_bytes();
        }
        let event_id = event.id;
        if let Some(tx) = &self.events {
            // No receiver is fine: nobody is subscribed on this node.
            let _ = tx.send(event);
        }
        Ok(EvtResponse::Published { event_id })
    }

    /// Stop retaining event `id` of `name`.
    pub(super) fn clear_retention(&mut self, name: &str, id: u64) -> Result<EvtResponse, AisError> {
        let channel = self
            .channels
            .get_mut(name)
            .ok_or_else(|| channel_not_exist(name))?;
        let event = channel.retained.remove(&id).ok_or_else(|| {
            AisError::new(
                ErrorCode::NotExist,
                format!(
                    "event {id} of channel '{name}' is not retained (it was published without \
                     retention, its retention ran out or was cleared, or it does not exist)"
                ),
            )
        })?;
        self.forget_retained(&event);
        Ok(EvtResponse::RetentionCleared)
    }

    /// INVALID_PARAM for a bad name, NO_SPACE if no channel can be added.
    fn check_new_channel(&self, name: &str) -> Result<(), AisError> {
        let max = self.limits.channel_name_bytes_max;
        if name.is_empty() || name.len() > max {
            return Err(AisError::new(
                ErrorCode::InvalidParam,
                format!(
                    "event channel name has {} bytes; it must have 1..={max}",
                    name.len()
                ),
            ));
        }
        if self.channels.len() >= self.limits.channels_max {
            return Err(AisError::new(
                ErrorCode::NoSpace,
                format!(
                    "cannot create event channel '{name}': all {} channels are in use; unlink \
                     one you no longer need",
                    self.limits.channels_max
                ),
            ));
        }
        Ok(())
    }

    /// The event's own limits: priority, patterns, payload, publisher, retention.
    fn check_event(&self, event: &Event) -> Result<(), AisError> {
        let limits = &self.limits;
        let channel = &event.channel;
        let refuse = |code, why: String| {
            Err(AisError::new(
                code,
                format!("publish to '{channel}' refused: {why}"),
            ))
        };
        if event.priority > PRIORITY_LOWEST {
            let why = format!(
                "priority {} is out of range; use 0 (highest) ..= {PRIORITY_LOWEST} (lowest)",
                event.priority
            );
            return refuse(ErrorCode::InvalidParam, why);
        }
        if event.patterns.len() > limits.patterns_max {
            let why = format!(
                "{} patterns given; at most {} are allowed",
                event.patterns.len(),
                limits.patterns_max
            );
            return refuse(ErrorCode::InvalidParam, why);
        }
        for (i, p) in event.patterns.iter().enumerate() {
            let longest = p.name.len().max(p.value.len());
            if longest > limits.pattern_bytes_max {
                let why = format!(
                    "pattern {i} has a {longest}-byte name or value; at most {} bytes each",
                    limits.pattern_bytes_max
                );
                return refuse(ErrorCode::TooBig, why);
            }
        }
        if event.data.len() > limits.data_bytes_max {
            let why = format!(
                "the payload has {} bytes; at most {} are allowed",
                event.data.len(),
                limits.data_bytes_max
            );
            return refuse(ErrorCode::TooBig, why);
        }
        if event.publisher.len() > limits.publisher_bytes_max {
            let why = format!(
                "the publisher name has {} bytes; at most {} are allowed",
                event.publisher.len(),
                limits.publisher_bytes_max
            );
            return refuse(ErrorCode::TooBig, why);
        }
        if event.retention_ms > limits.retention_ms_max {
            let why = format!(
                "retention {} ms is longer than the {} ms allowed",
                event.retention_ms, limits.retention_ms_max
            );
            return refuse(ErrorCode::InvalidParam, why);
        }
        Ok(())
    }

    /// NO_SPACE if the channel or the cluster cannot retain one more event.
    fn check_retained_room(&self, event: &Event) -> Result<(), AisError> {
        let name = &event.channel;
        let held = self.channels.get(name).map_or(0, |c| c.retained.len());
        if held >= self.limits.retained_per_channel_max {
            return Err(AisError::new(
                ErrorCode::NoSpace,
                format!(
                    "publish to '{name}' refused: the channel already retains {held} events, \
                     the most allowed; clear some retention, wait for it to run out, or publish \
                     without retention"
                ),
            ));
        }
        let after = self.retained_bytes.saturating_add(event.size_bytes());
        if after > self.limits.retained_bytes_max {
            return Err(AisError::new(
                ErrorCode::NoSpace,
                format!(
                    "publish to '{name}' refused: retaining this {}-byte event would hold {after} \
                     bytes of retained events, over the cluster's {}; clear some retention or \
                     publish without retention",
                    event.size_bytes(),
                    self.limits.retained_bytes_max
                ),
            ));
        }
        Ok(())
    }
}
