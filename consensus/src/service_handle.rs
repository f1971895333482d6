//! [`ServiceHandle`]: one service's typed view of the composite state machine.

use std::time::Duration;

use crate::{NodeStatus, ProposeError, Proposer, ReadMode, StateMachine};

/// How a service (CKPT, EVT, AMF) reaches replicated state without knowing the composite state
/// machine it lives in: its commands are wrapped into the composite's, its responses unwrapped,
/// and its reads see only its own part. The agent builds one per service.
pub struct ServiceHandle<M: StateMachine, C, R, S> {
    proposer: Proposer<M>,
    wrap: fn(C) -> M::Command,
    unwrap: fn(M::Response) -> Option<R>,
    part: fn(&M) -> &S,
}

impl<M: StateMachine, C, R, S> Clone for ServiceHandle<M, C, R, S> {
    fn clone(&self) -> Self {
        Self {
            proposer: self.proposer.clone(),
            wrap: self.wrap,
            unwrap: self.unwrap,
            part: self.part,
        }
    }
}

impl<M: StateMachine, C, R, S: 'static> ServiceHandle<M, C, R, S> {
    /// A view through `proposer`: `wrap` a service command into the composite, `unwrap` the
    /// composite response (None if it belongs to another service: a bug), and the service's
    /// `part` of the state.
    pub fn new(
        proposer: Proposer<M>,
        wrap: fn(C) -> M::Command,
        unwrap: fn(M::Response) -> Option<R>,
        part: fn(&M) -> &S,
    ) -> Self {
        Self {
            proposer,
            wrap,
            unwrap,
            part,
        }
    }

    /// Propose a service command; see [`Proposer::propose`].
    pub async fn propose(&self, cmd: C, timeout: Duration) -> Result<R, ProposeError> {
        let fut = self.proposer.propose(&(self.wrap)(cmd), timeout);
        let resp = fut.await?;
        (self.unwrap)(resp)
            .ok_or_else(|| ProposeError::Unknown("the response belongs to another service".into()))
    }

    /// Read the service's part; see [`Proposer::read`].
    pub async fn read<T: Send + 'static>(
        &self,
        mode: ReadMode,
        timeout: Duration,
        f: impl FnOnce(&S) -> T + Send + 'static,
    ) -> Result<T, ProposeError> {
        let part = self.part;
        self.proposer
            .read(mode, timeout, move |m: &M| f(part(m)))
            .await
    }

    /// The node's status.
    pub fn status(&self) -> NodeStatus {
        self.proposer.status()
    }
}
