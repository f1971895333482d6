//! `nines.membership.v1.Membership`: heartbeats in, the membership view and its changes out.

use nines_consensus::{Proposer, ReadMode};
use nines_core::{AisError, ErrorCode, NodeId};
use nines_heartbeat::Health;
use nines_proto::{
    membership::v1::{
        membership_server::Membership, BeatAck, BeatRequest, ChangeKind as PbKind, DrainRequest,
        MemberState, MemberView, MembersRequest, MembershipEvent, MembershipView, RevokeLeaseReply,
        RevokeLeaseRequest, WatchRequest,
    },
    status_from_ais,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    heartbeat::{answer_beat, answer_revoke, HeartbeatHandle},
    membership::{AgreedState, Change, ChangeKind},
    AgentState, Command, MembershipCommand, Response as SmResponse,
};

/// Events queued per watch stream before the watcher is resynchronised with a snapshot.
const WATCH_QUEUE_LEN: usize = 256;
/// Deadline of the local reads behind a view.
const VIEW_READ_TIMEOUT_MS: u64 = 2_000;
/// How far a revocation's lease epoch may run ahead of this replica's epoch for the node: the
/// leader revokes at the epoch its own replica shows, which may be one reinstatement ahead of a
/// follower's. A revocation further ahead was never issued; refusing it is safe (the leader
/// only waits longer for answers), while accepting it would deny the node grants until its
/// epoch caught up with a forged number.
const REVOKE_EPOCH_AHEAD_MAX: u64 = 1;

pub(crate) struct MembershipService {
    pub id: NodeId,
    pub cluster: String,
    pub proposer: Proposer<AgentState>,
    pub heartbeat: HeartbeatHandle,
    pub events: broadcast::Sender<Change>,
}

/// Build this agent's view: the agreed states, with its own detector's suspicion and heartbeat
/// ages laid over them.
async fn view(
    proposer: &Proposer<AgentState>,
    hb: &HeartbeatHandle,
    id: NodeId,
) -> Result<MembershipView, Status> {
    let timeout = std::time::Duration::from_millis(VIEW_READ_TIMEOUT_MS);
    let (view, agreed, members) = proposer
        .read(ReadMode::Stale, timeout, |s: &AgentState| {
            (
                s.membership.view,
                s.membership.states.clone(),
                s.members.clone(),
            )
        })
        .await
        .map_err(|e| status_from_ais(&e.into()))?;
    let local = hb.local();
    let members = members
        .iter()
        .map(|(&node, info)| {
            let detected = local.views.get(&node);
            let state = match (agreed.get(&node), detected.map(|v| v.health)) {
                (Some(AgreedState::Left), _) => MemberState::Left,
                (Some(AgreedState::Down), _) => MemberState::Down,
                (_, Some(Health::Suspect | Health::Down)) => MemberState::Suspect,
                _ => MemberState::Up,
            };
            let age = match detected {
                _ if node == id => 0,
                Some(v) => local.now_ms.saturating_sub(v.last_heartbeat_ms) as i64,
                None => -1,
            };
            MemberView {
                id: node,
                name: info.name.clone(),
                addr: info.addr.clone(),
                state: state as i32,
                last_heartbeat_ms: age,
            }
        })
        .collect();
    Ok(MembershipView {
        view,
        members,
        fenced: local.fenced,
    })
}

fn kind(k: ChangeKind) -> PbKind {
    match k {
        ChangeKind::Joined => PbKind::Joined,
        ChangeKind::Left => PbKind::Left,
        ChangeKind::Down => PbKind::Down,
        ChangeKind::Up => PbKind::Up,
    }
}

/// Over mutual TLS, a peer call's claimed sender must be the node whose certificate it came
/// with (the authorization layer already refused anything but node certificates here).
fn certified_sender<T>(req: &Request<T>, claimed: NodeId) -> Result<(), Status> {
    let certified = match nines_tls::ConnInfo::of(req).and_then(|i| i.identity.as_ref()) {
        Some(nines_tls::Identity::Node { id, .. }) => *id,
        _ => return Ok(()),
    };
    if certified == claimed {
        return Ok(());
    }
    tracing::warn!(
        claimed,
        certified,
        "refused a call claiming node {claimed} sent with node {certified}'s certificate"
    );
    Err(Status::permission_denied(format!(
        "the call claims node {claimed} but came with node {certified}'s certificate"
    )))
}

impl MembershipService {
    /// Agent-to-agent calls come only from members of this cluster.
    fn same_cluster(&self, cluster: &str, from: NodeId) -> Result<(), Status> {
        if cluster == self.cluster {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "node {from} belongs to cluster '{cluster}' but this node to '{}'",
            self.cluster
        )))
    }
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn beat(&self, req: Request<BeatRequest>) -> Result<Response<BeatAck>, Status> {
        certified_sender(&req, req.get_ref().from)?;
        let r = req.into_inner();
        self.same_cluster(&r.cluster, r.from)?;
        Ok(Response::new(answer_beat(
            self.id,
            &self.proposer,
            &self.heartbeat,
            &r,
        )))
    }

    async fn revoke_lease(
        &self,
        req: Request<RevokeLeaseRequest>,
    ) -> Result<Response<RevokeLeaseReply>, Status> {
        certified_sender(&req, req.get_ref().from)?;
        let r = req.into_inner();
        self.same_cluster(&r.cluster, r.from)?;
        let term = self.proposer.status().term;
        if r.term < term {
            return Err(Status::failed_precondition(format!(
                "node {} asked to revoke node {}'s lease at term {}, but this node knows term \
                 {term}: a deposed leader's revocation is refused",
                r.from, r.node, r.term
            )));
        }
        let timeout = std::time::Duration::from_millis(VIEW_READ_TIMEOUT_MS);
        let node = r.node;
        let (member, epoch) = self
            .proposer
            .read(ReadMode::Stale, timeout, move |s: &AgentState| {
                let member = s.members.contains_key(&node);
                (member, s.membership.lease_epochs.get(&node).copied())
            })
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        let epoch = epoch.unwrap_or(0);
        if !member {
            return Err(Status::invalid_argument(format!(
                "node {} asked to revoke the lease of node {}, which is not a member",
                r.from, r.node
            )));
        }
        if r.epoch > epoch.saturating_add(REVOKE_EPOCH_AHEAD_MAX) {
            tracing::warn!(
                from = r.from,
                node = r.node,
                "refused a revocation at lease epoch {} (this replica has node {} at epoch                  {epoch}): no leader issued it",
                r.epoch,
                r.node
            );
            return Err(Status::invalid_argument(format!(
                "node {} asked to revoke node {}'s lease at epoch {}, but node {} is at lease                  epoch {epoch} here: an epoch more than {REVOKE_EPOCH_AHEAD_MAX} ahead was never                  issued",
                r.from, r.node, r.epoch, r.node
            )));
        }
        Ok(Response::new(answer_revoke(
            self.id,
            &self.heartbeat.shared,
            r.node,
            r.epoch,
        )))
    }

    async fn members(
        &self,
        _: Request<MembersRequest>,
    ) -> Result<Response<MembershipView>, Status> {
        Ok(Response::new(
            view(&self.proposer, &self.heartbeat, self.id).await?,
        ))
    }

    type WatchStream = ReceiverStream<Result<MembershipEvent, Status>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let mut changes = self.events.subscribe();
        let first = view(&self.proposer, &self.heartbeat, self.id).await?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE_LEN);
        let (proposer, hb, id) = (self.proposer.clone(), self.heartbeat.clone(), self.id);
        tokio::spawn(async move {
            let mut seen = first.view;
            let snapshot = |current: MembershipView| MembershipEvent {
                view: current.view,
                kind: PbKind::Snapshot as i32,
                node: 0,
                current: Some(current),
            };
            if tx.send(Ok(snapshot(first))).await.is_err() {
                return;
            }
            loop {
                let event = match changes.recv().await {
                    Ok(c) if c.view <= seen => continue,
                    Ok(c) => {
                        seen = c.view;
                        let Ok(current) = view(&proposer, &hb, id).await else {
                            return;
                        };
                        MembershipEvent {
                            view: c.view,
                            kind: kind(c.kind) as i32,
                            node: c.node,
                            current: Some(current),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let Ok(current) = view(&proposer, &hb, id).await else {
                            return;
                        };
                        seen = current.view;
                        snapshot(current)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<MembershipView>, Status> {
        let r = req.into_inner();
        let timeout = std::time::Duration::from_millis(if r.timeout_ms == 0 {
            5_000
        } else {
            r.timeout_ms.min(60_000)
        });
        // A planned leave is a switchover: the node's SUs are locked out of service gracefully
        // (actives quiesced before their standbys take over) before it leaves; leaving first
        // would make the standbys active at once beside the still-running actives.
        let deadline = tokio::time::Instant::now() + timeout;
        let switched = crate::switchover::switch_over(&self.proposer, r.node, deadline)
            .await
            .map_err(|why| why.status(&format!("drain of node {} not done", r.node)))?;
        tracing::info!(
            node = r.node,
            ?switched,
            "drain: switched over; the node now leaves"
        );
        let timeout = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(std::time::Duration::from_millis(500));
        let cmd = Command::Membership(MembershipCommand::Leave { node: r.node });
        match self
            .proposer
            .propose(&cmd, timeout)
            .await
            .map_err(|e| status_from_ais(&e.into()))?
        {
            SmResponse::Membership(Ok(_)) => Ok(Response::new(
                view(&self.proposer, &self.heartbeat, self.id).await?,
            )),
            SmResponse::Membership(Err(e)) => Err(status_from_ais(&e)),
            _ => Err(status_from_ais(&AisError::new(
                ErrorCode::Library,
                "unexpected response to a drain",
            ))),
        }
    }
}
