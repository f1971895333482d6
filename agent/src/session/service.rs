//! `nines.amf.v1.ComponentSession`: the handshake (Register, credentials) and, per session, the
//! reader that routes the component's messages to the hub.

use std::{sync::Arc, time::Duration};

use nines_core::PROTOCOL_VERSION;
use nines_proto::amf::v1::{
    component_message::Msg, component_session_server::ComponentSession, AgentMessage,
    ComponentMessage, Recovery, Register,
};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::server::UdsConnectInfo, Request, Response, Status, Streaming};

use super::{
    hub::{Inner, SESSIONS_MAX},
    peer::Peer,
    SessionEvent,
};

/// The most CSIs one belief report may name (a component holding more is misconfigured).
pub(super) const BELIEVED_CSIS_MAX: usize = 1_024;
/// How long a new stream may take to send its Register.
const REGISTER_TIMEOUT_MS: u64 = 5_000;

/// The service over the hub's shared state.
pub(crate) struct Service {
    pub hub: Arc<Inner>,
}

#[tonic::async_trait]
impl ComponentSession for Service {
    type SessionStream = ReceiverStream<Result<AgentMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<ComponentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let permit = self.hub.sessions.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the agent already serves {SESSIONS_MAX} component sessions; retry once some \
                 components have stopped"
            ))
        })?;
        let peer = peer_of(&req)?;
        let mut inbound = req.into_inner();
        let register = check_register(first_message(&mut inbound).await?)?;
        let component = register.component;
        let reg = self.hub.register(&component, peer)?;
        tokio::spawn(read(
            self.hub.clone(),
            component,
            reg.session,
            inbound,
            reg.close,
            permit,
        ));
        Ok(Response::new(ReceiverStream::new(reg.outbound)))
    }
}

/// The peer's credentials, which tonic records for Unix socket connections.
fn peer_of<T>(req: &Request<T>) -> Result<Peer, Status> {
    let cred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .ok_or_else(|| {
            Status::permission_denied(
                "the component session is served only over the agent's Unix socket, where the \
                 agent can check the peer's credentials; connect to NINES_SOCKET",
            )
        })?;
    Ok(Peer {
        pid: cred.pid(),
        uid: cred.uid(),
    })
}

/// The stream's first message, within [`REGISTER_TIMEOUT_MS`].
async fn first_message(
    inbound: &mut Streaming<ComponentMessage>,
) -> Result<Option<ComponentMessage>, Status> {
    tokio::time::timeout(
        Duration::from_millis(REGISTER_TIMEOUT_MS),
        inbound.message(),
    )
    .await
    .map_err(|_| {
        Status::deadline_exceeded(format!(
            "no Register within {REGISTER_TIMEOUT_MS} ms; a session must start with Register"
        ))
    })?
}

/// A session's first message, which must be a Register naming a component, in this agent's
/// protocol version, from an SDK that honours the component lease.
pub(super) fn check_register(first: Option<ComponentMessage>) -> Result<Register, Status> {
    let register = match first.and_then(|m| m.msg) {
        Some(Msg::Register(r)) if !r.component.is_empty() => r,
        Some(Msg::Register(_)) => {
            return Err(Status::invalid_argument(
                "Register names no component; send the name the agent gave in NINES_COMPONENT",
            ))
        }
        _ => {
            return Err(Status::invalid_argument(
                "a component session must start with Register",
            ))
        }
    };
    if register.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "component {} speaks session protocol version {}, this agent speaks {}; use an SDK \
             that matches the agent",
            register.component, register.protocol_version, PROTOCOL_VERSION
        )));
    }
    if !register.honours_lease {
        return Err(Status::failed_precondition(format!(
            "component {}: its SDK does not honour the component lease (it would keep acting as \
             active after its agent stopped renewing); use an SDK that matches the agent",
            register.component
        )));
    }
    Ok(register)
}

/// Route the component's messages to the hub until it closes the stream, the stream breaks, or
/// the hub closes the session; then end the session. Holds the session's slot (`_permit`).
async fn read(
    hub: Arc<Inner>,
    component: String,
    session: u64,
    mut inbound: Streaming<ComponentMessage>,
    mut close: oneshot::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut close => break,
            m = inbound.message() => m,
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%component, %status, "component stream broke");
                break;
            }
        };
        match msg.msg {
            Some(Msg::Response(r)) => hub.deliver(&component, session, r),
            Some(Msg::ErrorReport(e)) => hub.emit(SessionEvent::ErrorReport {
                component: component.clone(),
                recommended: Recovery::try_from(e.recommended).unwrap_or(Recovery::Unspecified),
                reason: e.reason,
            }),
            Some(Msg::HealthcheckConfirm(h)) => hub.emit(SessionEvent::HealthcheckConfirm {
                component: component.clone(),
                key: h.key,
                healthy: h.healthy,
            }),
            Some(Msg::Kick(k)) => hub.kick(&component, session, k.count),
            Some(Msg::Belief(b)) if b.csis.len() <= BELIEVED_CSIS_MAX => {
                hub.belief(&component, session, b)
            }
            Some(Msg::Belief(b)) => {
                tracing::warn!(
                    %component, csis = b.csis.len(),
                    "a belief report over {BELIEVED_CSIS_MAX} CSIs: ignored"
                );
            }
            Some(Msg::Register(_)) | None => {
                tracing::warn!(%component, "unexpected message on a registered session: closed");
                break;
            }
        }
    }
    hub.end(&component, session);
}
