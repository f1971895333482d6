//! `nines.amf.v1.Amf`: apply a model, read the status, run admin operations.

use std::time::Duration;

use nines_amf::model::Model;
use nines_amf::state::{AdminOp, AmfCommand, AmfResponse, AmfStatus, TargetKind};
use nines_consensus::ReadMode;
use nines_core::{limits, AisError, ErrorCode};
use nines_proto::amf::v1::{
    amf_server::Amf, AdminReply, AdminRequest, AmfStatusReply, AmfStatusRequest, ApplyModelReply,
    ApplyModelRequest, AssignmentStatus, BeliefsReply, BeliefsRequest, BelievedAssignment,
    ComponentBelief, ComponentStatus, ComponentWatchdog, HistoryEntry, SiStatus, SuStatus,
    WatchdogsReply, WatchdogsRequest,
};
use nines_proto::status_from_ais;
use tonic::{Request, Response, Status};

use crate::state::AmfHandle;

/// Largest model text accepted.
pub const MODEL_BYTES_MAX: usize = 1024 * 1024;

/// The AMF operator service.
pub(crate) struct AmfService {
    pub(crate) amf: AmfHandle,
    /// This node's name.
    pub(crate) node: String,
    /// This node's component watchdogs (from the director).
    pub(crate) watchdogs: nines_amf::director::WatchdogViews,
    /// This node's components' beliefs (from the director).
    pub(crate) beliefs: nines_amf::director::BeliefViews,
    /// The components' lease deadline (the node lease's fence deadline while renewed).
    pub(crate) lease: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
}

fn timeout() -> Duration {
    Duration::from_millis(limits::CLIENT_TIMEOUT_MS)
}

fn refused(e: AisError) -> Status {
    status_from_ais(&e)
}

/// Parse and validate a model's text; every problem in one error.
pub fn parse_model(text: &str, source: &str) -> Result<Model, AisError> {
    if text.len() > MODEL_BYTES_MAX {
        return Err(AisError::new(
            ErrorCode::TooBig,
            format!(
                "the model is {} bytes; the limit is {MODEL_BYTES_MAX}",
                text.len()
            ),
        ));
    }
    let model = Model::parse(text, source)
        .map_err(|e| AisError::new(ErrorCode::InvalidParam, format!("{source}: {e}")))?;
    model
        .validate()
        .map_err(|e| AisError::new(ErrorCode::InvalidParam, format!("{source}: {e}")))?;
    Ok(model)
}

#[tonic::async_trait]
impl Amf for AmfService {
    async fn apply_model(
        &self,
        req: Request<ApplyModelRequest>,
    ) -> Result<Response<ApplyModelReply>, Status> {
        let r = req.into_inner();
        let source = if r.source.is_empty() {
            "model".to_string()
        } else {
            r.source
        };
        let model = parse_model(&r.toml, &source).map_err(refused)?;
        let resp = self
            .amf
            .propose(
                AmfCommand::ApplyModel {
                    model: Box::new(model),
                },
                timeout(),
            )
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        match resp {
            AmfResponse::ModelApplied { changes } => Ok(Response::new(ApplyModelReply {
                changed: !changes.is_empty(),
                changes,
                index: self.amf.status().applied,
            })),
            AmfResponse::Refused(e) => Err(refused(e)),
            other => Err(refused(AisError::new(
                ErrorCode::Library,
                format!("unexpected answer to a model: {other:?}"),
            ))),
        }
    }

    async fn status(
        &self,
        req: Request<AmfStatusRequest>,
    ) -> Result<Response<AmfStatusReply>, Status> {
        let mode = if req.into_inner().stale {
            ReadMode::Stale
        } else {
            ReadMode::Linearizable
        };
        let st = self
            .amf
            .read(mode, timeout(), |s| s.status())
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        Ok(Response::new(status_proto(st)))
    }

    async fn watchdogs(
        &self,
        _: Request<WatchdogsRequest>,
    ) -> Result<Response<WatchdogsReply>, Status> {
        let views = self.watchdogs.lock().expect("watchdog views lock").clone();
        Ok(Response::new(WatchdogsReply {
            node: self.node.clone(),
            components: views
                .into_iter()
                .map(|(name, v)| ComponentWatchdog {
                    name,
                    watchdog_ms: v.watchdog_ms,
                    last_kick_age_ms: v.last_kick_age_ms,
                    expired: v.expired,
                })
                .collect(),
        }))
    }

    async fn beliefs(&self, _: Request<BeliefsRequest>) -> Result<Response<BeliefsReply>, Status> {
        let views = self.beliefs.lock().expect("belief views lock").clone();
        // Past the deadline this agent granted, no component of it may act, whatever its last
        // report (which may still be on its way: a resumed agent reads it late).
        let lease_out = self
            .lease
            .borrow()
            .is_none_or(|d| tokio::time::Instant::now() >= d);
        Ok(Response::new(BeliefsReply {
            node: self.node.clone(),
            components: views
                .into_iter()
                .map(|(component, v)| ComponentBelief {
                    component,
                    assignments: v
                        .believed
                        .into_iter()
                        .map(|((si, csi), (ha, epoch))| BelievedAssignment {
                            si,
                            csi,
                            ha_state: ha_name(ha).to_string(),
                            epoch,
                        })
                        .collect(),
                    lease_expired: v.lease_expired || lease_out,
                    agrees: v.agrees,
                    differs_for_ms: v.differs_for_ms,
                })
                .collect(),
        }))
    }

    async fn admin(&self, req: Request<AdminRequest>) -> Result<Response<AdminReply>, Status> {
        let r = req.into_inner();
        let op = AdminOp::parse(&r.operation).ok_or_else(|| {
            refused(AisError::new(
                ErrorCode::InvalidParam,
                format!(
                    "unknown operation '{}'; one of lock, unlock, lock-instantiation, \
                     unlock-instantiation, shutdown, si-swap, restart, repaired",
                    r.operation
                ),
            ))
        })?;
        let kind = TargetKind::parse(&r.target_kind).ok_or_else(|| {
            refused(AisError::new(
                ErrorCode::InvalidParam,
                format!(
                    "unknown target kind '{}'; one of su, node, si, component",
                    r.target_kind
                ),
            ))
        })?;
        let resp = self
            .amf
            .propose(
                AmfCommand::Admin {
                    op,
                    kind,
                    target: r.target,
                },
                timeout(),
            )
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        match resp {
            AmfResponse::Done { message } => Ok(Response::new(AdminReply {
                index: self.amf.status().applied,
                message,
            })),
            AmfResponse::Refused(e) => Err(refused(e)),
            other => Err(refused(AisError::new(
                ErrorCode::Library,
                format!("unexpected answer to an admin operation: {other:?}"),
            ))),
        }
    }
}

/// An HA state as the status names it.
fn ha_name(ha: nines_amf::policy::HaState) -> &'static str {
    use nines_amf::policy::HaState;
    match ha {
        HaState::Active => "active",
        HaState::Standby => "standby",
        HaState::Quiescing => "quiescing",
        HaState::Quiesced => "quiesced",
    }
}

/// The wire form of the status.
pub fn status_proto(st: AmfStatus) -> AmfStatusReply {
    AmfStatusReply {
        empty: !st.has_model,
        epoch: st.epoch,
        sis: st
            .sis
            .into_iter()
            .map(|s| SiStatus {
                name: s.name,
                sg: s.sg,
                assignment_state: s.assignment_state,
                assignments: s
                    .assignments
                    .into_iter()
                    .map(|a| AssignmentStatus {
                        su: a.su,
                        node: a.node,
                        ha_state: a.ha_state,
                        epoch: a.epoch,
                        pending: a.pending.unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        components: st
            .components
            .into_iter()
            .map(|c| ComponentStatus {
                name: c.name,
                su: c.su,
                node: c.node,
                pid: c.pid.unwrap_or(0),
                running: c.pid.is_some(),
                presence: c.presence,
                readiness: c.readiness,
                restart_count: c.restarts,
            })
            .collect(),
        sus: st
            .sus
            .into_iter()
            .map(|s| SuStatus {
                name: s.name,
                sg: s.sg,
                node: s.node,
                admin_state: s.admin_state,
                oper_state: s.oper_state,
                readiness: s.readiness,
            })
            .collect(),
        history: st
            .history
            .into_iter()
            .map(|h| HistoryEntry {
                index: h.index,
                time_ms: h.time_ms,
                kind: format!("{:?}", h.kind).to_lowercase(),
                entity: h.entity,
                text: h.text,
                detected_ms: h.timeline.map(|t| t.detected_ms).unwrap_or(0),
                decided_ms: h.timeline.map(|t| t.decided_ms).unwrap_or(0),
                confirmed_ms: h.timeline.map(|t| t.confirmed_ms).unwrap_or(0),
            })
            .collect(),
    }
}
