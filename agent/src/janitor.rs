//! The leader's janitor: proposes time-based expiry when a deadline has passed, so retention and
//! section expiration happen even when no one writes. `apply` does the expiring, on the time the
//! leader stamps; this task only decides when to ask.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nines_ckpt::{CkptCommand, CkptHandle, CkptState};
use nines_consensus::{ReadMode, Role};
use nines_core::shutdown::ShutdownSignal;
use nines_evt::{EvtCommand, EvtHandle, EvtState};

use crate::AgentState;

/// How often the janitor looks.
const JANITOR_INTERVAL_MS: u64 = 500;

pub(crate) async fn run(
    ckpt: CkptHandle<AgentState>,
    evt: EvtHandle<AgentState>,
    mut shutdown: ShutdownSignal,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(JANITOR_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        if ckpt.status().role != Role::Leader {
            continue;
        }
        let timeout = Duration::from_millis(JANITOR_INTERVAL_MS);
        let next = ckpt
            .read(ReadMode::Stale, timeout, |s: &CkptState| {
                s.next_deadline_ms()
            })
            .await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if matches!(next, Ok(Some(t)) if t <= now) {
            if let Err(e) = ckpt.propose(CkptCommand::Expire, timeout).await {
                tracing::debug!("expiry proposal failed (retried next round): {e}");
            }
        }
        let next = evt
            .read(ReadMode::Stale, timeout, |s: &EvtState| {
                s.next_deadline_ms()
            })
            .await;
        if matches!(next, Ok(Some(t)) if t <= now) {
            if let Err(e) = evt.propose(EvtCommand::Expire, timeout).await {
                tracing::debug!("event expiry proposal failed (retried next round): {e}");
            }
        }
    }
}
