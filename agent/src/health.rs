//! The gRPC health checking protocol (`grpc.health.v1.Health`) on the client port, for load
//! balancers, `grpc_health_probe` and Kubernetes `grpc:` probes.
//!
//! Two answers, each a pure function of what the node already knows:
//! - **readiness** (service `""`, the protocol's "whole server", and [`READINESS_SERVICE`]):
//!   SERVING when this node is in the member book and knows a leader, so a request sent to it can
//!   be served or forwarded; NOT_SERVING while it waits to be added, during an election, when it
//!   has lost its quorum, and while it drains at shutdown.
//! - **liveness** ([`LIVENESS_SERVICE`]): SERVING while the agent's heartbeat loop ticks and it is
//!   not fenced with components still running — the same condition that lets it kick its
//!   watchdogs, so Kubernetes restarts an agent that systemd's `WatchdogSec` would have
//!   restarted. Liveness never depends on the cluster: a quorum loss must not restart every pod.
//!
//! [`run`] recomputes both on every raft status change and every `poll` (liveness depends on
//! time) and publishes only changes.

use std::time::Duration;

use nines_consensus::NodeStatus;
use nines_core::shutdown::ShutdownSignal;
use tokio::sync::watch;
use tonic_health::{server::HealthReporter, ServingStatus};

/// The health service name of the readiness answer (also served as `""`).
pub const READINESS_SERVICE: &str = "readiness";
/// The health service name of the liveness answer.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Whether this node can serve clients: it is a member and knows a leader.
pub(crate) fn ready(s: &NodeStatus) -> bool {
    s.leader_id.is_some() && s.members.contains_key(&s.id)
}

fn serving(ok: bool) -> ServingStatus {
    if ok {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// A reporter whose every answer starts NOT_SERVING (the library starts `""` as SERVING).
pub(crate) async fn reporter() -> HealthReporter {
    let r = HealthReporter::new();
    for name in ["", READINESS_SERVICE, LIVENESS_SERVICE] {
        r.set_service_status(name, ServingStatus::NotServing).await;
    }
    r
}

/// Keep `reporter` in step with the node until `shutdown`, then answer NOT_SERVING to every
/// check while the agent drains. `alive` is the liveness condition, sampled every `poll`.
pub(crate) async fn run(
    reporter: HealthReporter,
    mut status: watch::Receiver<NodeStatus>,
    alive: impl Fn() -> bool,
    poll: Duration,
    mut shutdown: ShutdownSignal,
) {
    let mut last: Option<(bool, bool)> = None;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut node_running = true;
    loop {
        let now = (node_running && ready(&status.borrow()), alive());
        if last != Some(now) {
            publish(&reporter, now).await;
            tracing::debug!(ready = now.0, live = now.1, "health changed");
            last = Some(now);
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            changed = status.changed(), if node_running => {
                // The node stopped publishing: it has stopped, so it is not ready.
                node_running = changed.is_ok();
            }
            _ = tick.tick() => {}
        }
    }
    publish(&reporter, (false, false)).await;
}

async fn publish(reporter: &HealthReporter, (is_ready, is_live): (bool, bool)) {
    reporter.set_service_status("", serving(is_ready)).await;
    reporter
        .set_service_status(READINESS_SERVICE, serving(is_ready))
        .await;
    reporter
        .set_service_status(LIVENESS_SERVICE, serving(is_live))
        .await;
}

#[cfg(test)]
mod tests {
    use nines_consensus::{PeerInfo, Role};

    use super::*;

    fn status(id: u64, leader: Option<u64>, members: &[u64]) -> NodeStatus {
        NodeStatus {
            id,
            role: Role::Follower,
            leader_id: leader,
            term: 2,
            commit: 1,
            applied: 1,
            first_index: 1,
            last_index: 1,
            snapshot_index: 1,
            members: members
                .iter()
                .map(|m| {
                    let info = PeerInfo {
                        name: format!("n{m}"),
                        addr: format!("n{m}:7100"),
                        voter: true,
                    };
                    (*m, info)
                })
                .collect(),
        }
    }

    #[test]
    fn ready_needs_membership_and_a_known_leader() {
        assert!(ready(&status(1, Some(2), &[1, 2, 3])));
        assert!(ready(&status(1, Some(1), &[1, 2, 3])));
        assert!(!ready(&status(1, None, &[1, 2, 3])), "no leader: election");
        assert!(!ready(&status(4, Some(1), &[])), "waiting to be added");
        assert!(
            !ready(&status(4, Some(1), &[1, 2, 3])),
            "not (yet) a member"
        );
    }

    use tonic_health::pb::health_check_response::ServingStatus as Answer;

    async fn check(r: &HealthReporter, name: &str) -> Answer {
        use tonic_health::pb::health_server::Health;
        let svc = tonic_health::server::HealthService::from_health_reporter(r.clone());
        let req = tonic_health::pb::HealthCheckRequest {
            service: name.into(),
        };
        let resp = svc
            .check(tonic::Request::new(req))
            .await
            .expect("known service");
        Answer::try_from(resp.into_inner().status).expect("a valid status")
    }

    async fn wait_for(r: &HealthReporter, name: &str, want: Answer) {
        for _ in 0..200 {
            if check(r, name).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name:?} never became {want:?}");
    }

    #[tokio::test]
    async fn follows_the_status_and_goes_not_serving_at_shutdown() {
        let r = reporter().await;
        assert_eq!(check(&r, "").await, Answer::NotServing);
        let (tx, rx) = watch::channel(status(1, None, &[1, 2, 3]));
        let (stop, signal) = nines_core::shutdown::Shutdown::new();
        let task = tokio::spawn(run(
            r.clone(),
            rx,
            || true,
            Duration::from_millis(10),
            signal,
        ));
        wait_for(&r, LIVENESS_SERVICE, Answer::Serving).await;
        assert_eq!(check(&r, "").await, Answer::NotServing);
        tx.send(status(1, Some(3), &[1, 2, 3])).expect("send");
        wait_for(&r, "", Answer::Serving).await;
        wait_for(&r, READINESS_SERVICE, Answer::Serving).await;
        tx.send(status(1, None, &[1, 2, 3])).expect("send");
        wait_for(&r, "", Answer::NotServing).await;
        stop.trigger();
        task.await.expect("health task");
        assert_eq!(check(&r, LIVENESS_SERVICE).await, Answer::NotServing);
    }
}
