//! The session's transport: a gRPC channel over the agent's Unix socket, and the Register
//! handshake.

use std::{path::Path, time::Duration};

use hyper_util::rt::TokioIo;
use nines_core::{AisError, ErrorCode, PROTOCOL_VERSION};
use nines_proto::{
    ais_from_status,
    amf::v1::{
        agent_message, component_message, component_session_client::ComponentSessionClient,
        AgentMessage, ComponentMessage, Register, Registered,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    transport::{Endpoint, Uri},
    Code, Status, Streaming,
};

use crate::SdkError;

/// How long connecting to the agent's socket may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long the agent may take to answer Register.
const REGISTER_TIMEOUT_MS: u64 = 5_000;
/// Largest message on the session, either way (matches the agent's limit).
const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A registered session's streams.
pub(crate) struct Opened {
    pub registered: Registered,
    pub inbound: Streaming<AgentMessage>,
}

/// Connect to the agent at `socket` and register as `component`; `outbound` feeds the request
/// stream from then on.
pub(crate) async fn open(
    socket: &Path,
    component: &str,
    outbound: mpsc::Receiver<ComponentMessage>,
    first: &mpsc::Sender<ComponentMessage>,
) -> Result<Opened, SdkError> {
    let channel = channel(socket).await?;
    let register = ComponentMessage {
        msg: Some(component_message::Msg::Register(Register {
            component: component.to_string(),
            protocol_version: PROTOCOL_VERSION,
            honours_lease: true,
        })),
    };
    first
        .try_send(register)
        .expect("a new session's queue has room for Register");
    let mut client = ComponentSessionClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX);
    let what = format!(
        "register component {component} with the agent at {}",
        socket.display()
    );
    let wait = Duration::from_millis(REGISTER_TIMEOUT_MS);
    let timeout = || {
        SdkError::Ais(AisError::new(
            ErrorCode::Timeout,
            format!("{what}: no answer within {REGISTER_TIMEOUT_MS} ms; is the agent overloaded?"),
        ))
    };
    let mut inbound = tokio::time::timeout(wait, client.session(ReceiverStream::new(outbound)))
        .await
        .map_err(|_| timeout())?
        .map_err(|s| refused(&what, &s))?
        .into_inner();
    let first = tokio::time::timeout(wait, inbound.message())
        .await
        .map_err(|_| timeout())?
        .map_err(|s| refused(&what, &s))?;
    match first {
        Some(AgentMessage {
            msg: Some(agent_message::Msg::Registered(registered)),
        }) => Ok(Opened {
            registered,
            inbound,
        }),
        Some(_) => Err(SdkError::Ais(AisError::new(
            ErrorCode::Library,
            format!("{what}: the agent answered Register with another message; upgrade the SDK"),
        ))),
        None => Err(SdkError::Unavailable(format!(
            "{what}: the agent closed the session without answering; is it shutting down?"
        ))),
    }
}

/// A channel to the agent's socket (the URI is required by tonic and otherwise unused).
async fn channel(socket: &Path) -> Result<tonic::transport::Channel, SdkError> {
    let path = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let endpoint = Endpoint::from_static("http://[::]:50051")
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            SdkError::Unavailable(format!(
                "cannot connect to the agent's socket {}: {}; is the nines agent running on this \
                 node, and is NINES_SOCKET its socket path?",
                socket.display(),
                error_chain(&e)
            ))
        })
}

/// What the agent's refusal means for the caller.
fn refused(what: &str, s: &Status) -> SdkError {
    match s.code() {
        Code::PermissionDenied => SdkError::PermissionDenied(format!("{what}: {}", s.message())),
        Code::NotFound => SdkError::Ais(AisError::new(
            ErrorCode::NotExist,
            format!("{what}: {}", s.message()),
        )),
        Code::Unavailable | Code::Cancelled | Code::Unknown => {
            SdkError::Unavailable(format!("{what}: {}", s.message()))
        }
        _ => {
            let e = ais_from_status(s);
            SdkError::Ais(AisError::new(e.code, format!("{what}: {}", e.message)))
        }
    }
}

/// An error and its sources, for people.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
