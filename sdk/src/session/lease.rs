//! Agent loss: once the agent's lease has passed since the session broke, the component stops
//! acting active through its own code path (a CSI set to QUIESCED for each CSI it still holds
//! active or quiescing), and is told it is no longer supervised.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;

use super::{dispatch::Shared, Callbacks, CsiSet, HaState};

/// How long each local CSI set to QUIESCED may take before the SDK gives up on it (and still
/// tells the component it is unsupervised).
const QUIESCE_TIMEOUT_MS: u64 = 5_000;

/// The CSIs to quiesce: those held active or quiescing, as CSI sets to QUIESCED at their epoch.
pub(crate) fn to_quiesce(held: Vec<(String, String, HaState, u64)>) -> Vec<CsiSet> {
    held.into_iter()
        .filter(|(_, _, state, _)| matches!(state, HaState::Active | HaState::Quiescing))
        .map(|(si, csi, _, epoch)| CsiSet {
            si,
            csi,
            ha_state: HaState::Quiesced,
            epoch,
            descriptor: None,
            attributes: BTreeMap::new(),
            active_component: None,
        })
        .collect()
}

/// At `lease_expires`, quiesce every CSI still held active or quiescing (through
/// [`Callbacks::csi_set`]), then call [`Callbacks::supervision_lost`].
pub(crate) async fn expire<C: Callbacks>(callbacks: &C, shared: &Shared, lease_expires: Instant) {
    tokio::time::sleep_until(lease_expires).await;
    let component = &shared.component;
    for set in to_quiesce(shared.assignments()) {
        let (si, csi, epoch) = (set.si.clone(), set.csi.clone(), set.epoch);
        tracing::warn!(%component, %si, %csi, epoch, "agent lease expired: quiescing");
        let wait = Duration::from_millis(QUIESCE_TIMEOUT_MS);
        match tokio::time::timeout(wait, callbacks.csi_set(set)).await {
            Ok(Ok(())) => shared.set_state(&si, &csi, HaState::Quiesced),
            Ok(Err(reason)) => {
                tracing::error!(%component, %si, %csi, %reason, "could not quiesce after agent loss");
            }
            Err(_) => tracing::error!(
                %component, %si, %csi,
                "quiescing after agent loss took more than {QUIESCE_TIMEOUT_MS} ms: abandoned"
            ),
        }
    }
    tracing::warn!(%component, "no longer supervised: the agent's lease expired");
    callbacks.supervision_lost();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_and_quiescing_csis_are_quiesced_at_their_epoch() {
        let held = vec![
            ("a".to_string(), "a1".to_string(), HaState::Active, 7),
            ("b".to_string(), "b1".to_string(), HaState::Standby, 8),
            ("c".to_string(), "c1".to_string(), HaState::Quiescing, 9),
            ("d".to_string(), "d1".to_string(), HaState::Quiesced, 3),
        ];
        let sets = to_quiesce(held);
        let got: Vec<_> = sets
            .iter()
            .map(|s| {
                (
                    s.si.as_str(),
                    s.csi.as_str(),
                    s.ha_state,
                    s.epoch,
                    s.descriptor,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "a1", HaState::Quiesced, 7, None),
                ("c", "c1", HaState::Quiesced, 9, None),
            ]
        );
        assert!(sets.iter().all(|s| s.attributes.is_empty()));
    }
}
