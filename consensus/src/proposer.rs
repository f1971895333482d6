//! [`Proposer`]: the handle everyone but the driver holds.

use std::{sync::Arc, time::Duration};

use nines_core::NodeId;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use crate::{
    mailbox::{ReadFn, Request},
    status::NodeStatus,
    transport::{BoxFuture, ForwardHandler, ForwardKind},
    Mailbox, Members, MembershipChange, PeerInfo, ProposeError, StateMachine, Transport,
};

/// How long a caller waits before asking again when no leader is known.
const NO_LEADER_RETRY_MS: u64 = 20;

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Linearizable: a ReadIndex round confirms leadership and the read waits for apply to
    /// reach the leader's commit index. Sees every write acknowledged before it started.
    Linearizable,
    /// From local state at once; may miss recent writes (or, on a partitioned node, many).
    Stale,
}

/// A cheap, cloneable handle to one node: propose, read, change membership, watch status.
///
/// Proposals made on a follower are forwarded to the leader; callers need not know who leads.
/// Every call takes a deadline.
pub struct Proposer<M: StateMachine> {
    inner: Arc<Inner<M>>,
}

struct Inner<M: StateMachine> {
    id: NodeId,
    requests: mpsc::Sender<Request<M>>,
    mailbox: Mailbox,
    status: watch::Receiver<NodeStatus>,
    transport: Arc<dyn Transport>,
}

impl<M: StateMachine> Clone for Proposer<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<M: StateMachine> Proposer<M> {
    pub(crate) fn new(
        id: NodeId,
        requests: mpsc::Sender<Request<M>>,
        mailbox: Mailbox,
        status: watch::Receiver<NodeStatus>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                requests,
                mailbox,
                status,
                transport,
            }),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Where a transport delivers this node's incoming raft messages.
    pub fn mailbox(&self) -> Mailbox {
        self.inner.mailbox.clone()
    }

    /// The node's latest status.
    pub fn status(&self) -> NodeStatus {
        self.inner.status.borrow().clone()
    }

    /// A watch on the node's status (changes after every `Ready` that changed it).
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.inner.status.clone()
    }

    /// Propose `cmd`; returns the state machine's response once the entry is committed on a
    /// quorum (fsynced there) and applied here or on the leader.
    ///
    /// # Errors
    /// See [`ProposeError`]; only `Timeout` and `Unknown` leave the outcome open.
    pub fn propose(
        &self,
        cmd: &M::Command,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<M::Response, ProposeError>> + Send + 'static {
        // Encode now, so the future holds bytes, not a borrow of the command.
        let payload = postcard::to_stdvec(cmd)
            .map_err(|e| ProposeError::Rejected(format!("command does not encode: {e}")));
        let this = self.clone();
        async move {
            let started = Instant::now();
            let r = async {
                let bytes = this
                    .submit(ForwardKind::Propose, payload?, timeout, true)
                    .await?;
                postcard::from_bytes(&bytes)
                    .map_err(|e| ProposeError::Unknown(format!("undecodable response: {e}")))
            }
            .await;
            let m = &crate::metrics::RAFT;
            m.proposal_latency.observe(started.elapsed());
            match &r {
                Ok(_) => m.proposals_ok.inc(),
                Err(_) => m.proposals_failed.inc(),
            }
            r
        }
    }

    /// Add a voter; returns the member book once the change is applied.
    pub async fn add_voter(
        &self,
        id: NodeId,
        info: PeerInfo,
        timeout: Duration,
    ) -> Result<Members, ProposeError> {
        self.change(MembershipChange::AddVoter { id, info }, timeout)
            .await
    }

    /// Remove a member; returns the member book once the change is applied. Removing the
    /// leader first moves leadership away.
    pub async fn remove_member(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<Members, ProposeError> {
        self.change(MembershipChange::Remove { id }, timeout).await
    }

    async fn change(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Members, ProposeError> {
        let payload = postcard::to_stdvec(&change).expect("membership changes encode");
        let bytes = self
            .submit(ForwardKind::ChangeMembership, payload, timeout, true)
            .await?;
        postcard::from_bytes(&bytes)
            .map_err(|e| ProposeError::Unknown(format!("undecodable response: {e}")))
    }

    /// Run `f` against the state machine, linearizably or from local state.
    pub async fn read<R: Send + 'static>(
        &self,
        mode: ReadMode,
        timeout: Duration,
        f: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        let (tx, rx) = oneshot::channel();
        let read: ReadFn<M> = Box::new(move |sm| {
            let _ = tx.send(f(sm));
        });
        let req = Request::Read {
            linearizable: mode == ReadMode::Linearizable,
            deadline: Instant::now() + timeout,
            read,
        };
        let work = async {
            self.inner
                .requests
                .send(req)
                .await
                .map_err(|_| ProposeError::Stopped)?;
            rx.await.map_err(|_| ProposeError::Stopped)
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(ProposeError::Timeout))
    }

    /// Run a request here, forwarding to the leader when this node is not it (if `forward`),
    /// retrying while no leader is known, until `timeout`.
    async fn submit(
        &self,
        kind: ForwardKind,
        payload: Vec<u8>,
        timeout: Duration,
        forward: bool,
    ) -> Result<Vec<u8>, ProposeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProposeError::Timeout);
            }
            let err = match self.local(kind, payload.clone(), remaining).await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() || !forward => return Err(e),
                Err(e) => e,
            };
            if let ProposeError::NotLeader {
                leader_hint: Some(leader),
            } = err
            {
                if leader != self.inner.id {
                    let fwd =
                        self.inner
                            .transport
                            .forward(leader, kind, payload.clone(), remaining);
                    tokio::select! {
                        r = tokio::time::timeout(remaining, fwd) => match r {
                            Ok(Ok(v)) => return Ok(v),
                            Ok(Err(e)) if e.is_retryable() => {}
                            Ok(Err(e)) => return Err(e),
                            Err(_) => return Err(ProposeError::Timeout),
                        },
                        term = self.leader_moved_on(leader) => {
                            // The leader may be cut off and never answer: fail now, so the
                            // caller's next request goes to the new leader, instead of waiting
                            // out the whole deadline (a component blocked here missed its
                            // watchdog although a new leader existed).
                            return Err(ProposeError::Unknown(format!(
                                "node {leader} stopped leading while the request was forwarded \
                                 to it (term {term} now); the outcome is unknown"
                            )));
                        }
                    }
                }
            }
            let pause = Duration::from_millis(NO_LEADER_RETRY_MS).min(remaining);
            tokio::time::sleep(pause).await;
        }
    }

    /// Resolves (with the term then) once this node knows of a leader other than `leader`, or of
    /// a later term than now: a request forwarded to `leader` may then never be answered.
    async fn leader_moved_on(&self, leader: NodeId) -> u64 {
        let mut status = self.inner.status.clone();
        let term = status.borrow().term;
        let moved = status
            .wait_for(|s| s.term > term || s.leader_id.is_some_and(|l| l != leader))
            .await
            .map(|s| s.term);
        match moved {
            Ok(term) => term,
            // The node is stopping: the forward's own deadline ends it.
            Err(_) => std::future::pending().await,
        }
    }

    /// Ask this node's driver to run a request as leader.
    async fn local(
        &self,
        kind: ForwardKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ProposeError> {
        let (reply, rx) = oneshot::channel();
        let req = match kind {
            ForwardKind::Propose => Request::Propose {
                command: payload,
                reply,
            },
            ForwardKind::ChangeMembership => Request::ChangeMembership {
                change: postcard::from_bytes(&payload).map_err(|e| {
                    ProposeError::Rejected(format!("undecodable membership change: {e}"))
                })?,
                reply,
            },
        };
        let work = async {
            self.inner
                .requests
                .send(req)
                .await
                .map_err(|_| ProposeError::Stopped)?;
            rx.await.map_err(|_| ProposeError::Stopped)?
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(ProposeError::Timeout))
    }
}

impl<M: StateMachine> ForwardHandler for Proposer<M> {
    fn handle_forward(
        &self,
        kind: ForwardKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, ProposeError>> {
        let this = self.clone();
        Box::pin(async move { this.submit(kind, payload, timeout, false).await })
    }
}
