//! The agent config's `amf_model`: applied once the cluster has a leader, if the cluster has no
//! model yet (a later `nines admin model apply` is never overwritten by a restart).

use std::path::PathBuf;
use std::time::Duration;

use nines_amf::state::{AmfCommand, AmfResponse};
use nines_consensus::ReadMode;
use nines_core::shutdown::ShutdownSignal;

use crate::state::AmfHandle;

/// Attempts before the loader gives up (one per [`RETRY`]).
const ATTEMPTS_MAX: u32 = 120;
const RETRY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(5);

/// Apply the model file at `path` when the cluster has none.
pub(crate) async fn run(amf: AmfHandle, path: PathBuf, mut shutdown: ShutdownSignal) {
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cannot read the AMF model {}: {e}", path.display());
            return;
        }
    };
    let model = match crate::amf_service::parse_model(&text, &path.display().to_string()) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("the AMF model is not valid, not applied: {e}");
            return;
        }
    };
    for _ in 0..ATTEMPTS_MAX {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
        let has = amf
            .read(ReadMode::Linearizable, TIMEOUT, |s| s.model.is_some())
            .await;
        match has {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => continue,
        }
        let cmd = AmfCommand::ApplyModel {
            model: Box::new(model.clone()),
        };
        match amf.propose(cmd, TIMEOUT).await {
            Ok(AmfResponse::ModelApplied { .. }) => {
                tracing::info!("applied the AMF model {}", path.display());
                return;
            }
            Ok(AmfResponse::Refused(e)) => {
                tracing::error!("the cluster refused the AMF model {}: {e}", path.display());
                return;
            }
            Ok(_) | Err(_) => continue,
        }
    }
    tracing::error!(
        "gave up applying the AMF model {}: no leader",
        path.display()
    );
}
