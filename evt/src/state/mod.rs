//! The event-channel state machine: pure and deterministic.
//!
//! Every node applies the same committed [`EvtCommand`]s in log order to its [`EvtState`] and
//! gets the same state and the same [`EvtResponse`]. Nothing here reads a clock or does I/O; the
//! only time is the leader's stamp on the entry ([`ApplyContext::time_ms`]), and every collection
//! is ordered, so iteration order is the same everywhere.
//!
//! Each `apply` first drops the retained events whose retention ran out as of the entry's time
//! stamp (walking an ordered deadline index, O(expired · log n)), then runs the command. A
//! refused command is [`EvtResponse::Refused`] and changes nothing beyond that expiry.
//!
//! # Event ids
//! Ids are per channel: 1, 2, 3, … in commit order, so a channel has one total order across the
//! cluster. Unlinking a channel forgets it entirely, and re-creating it starts a new sequence at
//! 1: remembering the last id of every channel ever unlinked would grow without bound. The
//! channel's `created_index` (the log index of its creation, see [`ChannelInfo`]) tells the two
//! incarnations apart; a subscriber resuming by id should keep it with the id.

mod channel;
mod expiry;
mod invariants;
mod publish;
mod set_limits;

use std::collections::{BTreeMap, BTreeSet};

use nines_consensus::ApplyContext;
use nines_core::{AisError, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::command::{Event, EvtCommand, EvtResponse};
use crate::limits::Limits;

use self::channel::Channel;

/// What a channel listing says about one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// The channel's name.
    pub name: String,
    /// The id of its last published event; 0 if none yet.
    pub last_id: u64,
    /// Retained events it holds (some may have expired but not yet been dropped by an `apply`).
    pub retained: usize,
    /// Log index of the command that created this incarnation of the channel.
    pub created_index: u64,
}

/// The answer to "what happened after id N" for a resuming subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// Events with id > N still in the channel's ring of recent events, in id order.
    pub events: Vec<Event>,
    /// How many ids after N are no longer available (dropped from the ring); announce them as
    /// lost before `events`.
    pub lost: u64,
}

/// The event service's replicated state.
///
/// # Correctness
/// Deterministic: the same commands with the same [`ApplyContext`]s give the same state and
/// responses on every node, provided every node starts with the same [`Limits`] (they change
/// only through [`EvtCommand::SetLimits`]). It round-trips through serde (the node snapshots it
/// with postcard), limits and deadline index included. The event announcer
/// ([`EvtState::set_events`]) is not part of it: it is neither serialized nor compared.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct EvtState {
    /// The limits every command is checked against.
    limits: Limits,
    /// Channels by name.
    channels: BTreeMap<String, Channel>,
    /// (retention deadline, channel, event id) for every retained event.
    deadlines: BTreeSet<(u64, String, u64)>,
    /// Sum of `size_bytes` over every retained event (≤ `limits.retained_bytes_max`).
    retained_bytes: u64,
    /// Where published events are announced (not part of the replicated state).
    #[serde(skip)]
    events: Option<broadcast::Sender<Event>>,
}

impl PartialEq for EvtState {
    /// Replicated state only: the announcer is ignored.
    fn eq(&self, other: &Self) -> bool {
        self.limits == other.limits
            && self.channels == other.channels
            && self.deadlines == other.deadlines
            && self.retained_bytes == other.retained_bytes
    }
}

impl Eq for EvtState {}

impl EvtState {
    /// An empty state with `limits`.
    ///
    /// # Errors
    /// INVALID_PARAM if the limits fail [`Limits::check`].
    pub fn new(limits: Limits) -> Result<Self, AisError> {
        limits.check()?;
        Ok(Self {
            limits,
            ..Self::default()
        })
    }

    /// The limits commands are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Announce every successfully published event on `tx` (after it is applied). Sending never
    /// blocks; a lagging receiver learns how many it missed from the broadcast itself.
    pub fn set_events(&mut self, tx: broadcast::Sender<Event>) {
        self.events = Some(tx);
    }

    /// Move the announcer out (to carry it over a snapshot restore, which replaces the state).
    pub fn take_events(&mut self) -> Option<broadcast::Sender<Event>> {
        self.events.take()
    }

    /// Apply one committed command: drop the retained events expired as of `ctx.time_ms`, then
    /// run `cmd`.
    ///
    /// A refused command returns [`EvtResponse::Refused`] and changes nothing beyond the expiry.
    /// A broken internal invariant panics: the state is corrupt and must not spread.
    pub fn apply(&mut self, ctx: ApplyContext, cmd: EvtCommand) -> EvtResponse {
        let expired = self.expire_due(ctx.time_ms);
        let result = match cmd {
            EvtCommand::Expire => Ok(EvtResponse::Expired { events: expired }),
            EvtCommand::Create { channel } => self.create(ctx, channel),
            EvtCommand::Unlink { channel } => self.unlink(&channel),
            EvtCommand::Publish {
                channel,
                create,
                patterns,
                priority,
                retention_ms,
                publisher,
                data,
            } => {
                let event = Event {
                    channel,
                    id: 0,
                    priority,
                    patterns,
                    publisher,
                    published_at_ms: ctx.time_ms,
                    retention_ms,
                    data,
                };
                self.publish(ctx, create, event)
            }
            EvtCommand::ClearRetention { channel, event_id } => {
                self.clear_retention(&channel, event_id)
            }
            EvtCommand::SetLimits { limits, expected } => self.set_limits(limits, expected),
        };
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        result.unwrap_or_else(EvtResponse::Refused)
    }

    /// Every channel, in name order.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|(name, c)| channel_info(name, c))
            .collect()
    }

    /// The channel `name`, if it exists.
    pub fn channel(&self, name: &str) -> Option<ChannelInfo> {
        self.channels.get(name).map(|c| channel_info(name, c))
    }

    /// The retained events of `channel` whose retention has not run out at `now_ms`, in id
    /// order: what a new subscriber receives first.
    ///
    /// # Errors
    /// NOT_EXIST if the channel does not exist.
    pub fn retained(&self, channel: &str, now_ms: u64) -> Result<Vec<Event>, AisError> {
        let c = self.get(channel)?;
        Ok(c.retained
            .values()
            .filter(|e| e.retention_deadline_ms().is_some_and(|t| t > now_ms))
            .cloned()
            .collect())
    }

    /// The events of `channel` after id `after_id` that are still in its ring of recent events,
    /// and how many after `after_id` are gone: what a subscriber resuming from `after_id` is owed.
    ///
    /// An `after_id` at or beyond the channel's last id gets nothing: the caller may have seen
    /// ids this replica has not applied yet, and the live announcements will carry on.
    ///
    /// # Errors
    /// NOT_EXIST if the channel does not exist.
    pub fn since(&self, channel: &str, after_id: u64) -> Result<Since, AisError> {
        let c = self.get(channel)?;
        let first_kept = c.recent.front().map_or(c.next_id, |e| e.id);
        let lost = first_kept.saturating_sub(1).saturating_sub(after_id);
        let start = c.recent.partition_point(|e| e.id <= after_id);
        let events = c.recent.range(start..).cloned().collect();
        Ok(Since { events, lost })
    }

    /// The earliest retention deadline, if any event is retained: the leader's janitor proposes
    /// [`EvtCommand::Expire`] once it has passed.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(t, _, _)| *t)
    }

    /// The channel `name`, or NOT_EXIST.
    fn get(&self, name: &str) -> Result<&Channel, AisError> {
        self.channels
            .get(name)
            .ok_or_else(|| channel_not_exist(name))
    }
}

/// A channel's listing entry.
fn channel_info(name: &str, c: &Channel) -> ChannelInfo {
    ChannelInfo {
        name: name.to_owned(),
        last_id: c.last_id(),
        retained: c.retained.len(),
        created_index: c.created_index,
    }
}

/// NOT_EXIST for channel `name`.
fn channel_not_exist(name: &str) -> AisError {
    AisError::new(
        ErrorCode::NotExist,
        format!("event channel '{name}' does not exist; create it first (or publish with create)"),
    )
}
