//! nines-evt: the AIS event service — named channels that publishers send pattern-tagged,
//! prioritized events to, and subscribers receive from through filters, with one total order per
//! channel across the cluster.
//!
//! # How to drive me
//! 1. **Replicate.** The agent wraps an [`EvtCommand`] in its composite command and proposes it
//!    through Raft; every node applies it to its [`EvtState`] with the leader's time stamp and
//!    gets the same [`EvtResponse`] (a publish answers with the event's id). Retention runs out
//!    inside `apply` on that stamp; the leader proposes [`EvtCommand::Expire`] once
//!    [`EvtState::next_deadline_ms`] has passed.
//! 2. **Announce.** Give the state a `tokio::sync::broadcast::Sender<Event>`
//!    ([`EvtState::set_events`]; not replicated, carry it over a restore with
//!    [`EvtState::take_events`]): each applied publish is sent on it, in commit order.
//! 3. **Serve subscribers.** A new subscriber first gets [`EvtState::retained`], one resuming
//!    from an id gets [`EvtState::since`] (with a lost count for what the ring no longer holds),
//!    then the live broadcast, skipping ids it already has. Each subscriber has its own
//!    [`SubscriberQueue`]: events that pass its filters ([`matches()`]) are pushed, the subscriber
//!    pops them by priority, and overflow or broadcast lag ([`SubscriberQueue::lag`]) turn into a
//!    [`Delivery::Lost`] notice — never a silent gap, and a slow subscriber slows no one else.
//!
//! Everything here is synchronous and deterministic: no clock, no I/O. [`limits`] names every
//! bound, and [`Limits`] carries them in the replicated state; the operator changes them with
//! [`EvtCommand::SetLimits`], through the log like every other command. Filters, patterns and
//! limits are `nines_core::evt`'s, shared with the SDK so both sides read them the same way.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod command;
mod filter;
mod queue;
mod service;
mod state;

pub use command::{Event, EvtCommand, EvtResponse};
pub use filter::validate_filters;
pub use nines_core::evt::limits::{self, Limits};
pub use nines_core::evt::{matches, Filter, FilterKind, FilterParseError, Pattern};
pub use queue::{event_cost, Delivery, SubscriberQueue};
pub use service::{
    event_to_pb, subscribers, EvtHandle, EvtMetrics, EvtService, METRICS, SUBSCRIBERS_MAX,
    SUBSCRIBER_QUEUE_BYTES_MAX, SUBSCRIBER_QUEUE_LEN,
};
pub use state::{ChannelInfo, EvtState, Since};
