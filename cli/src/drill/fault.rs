//! Injecting a drill's fault: through the drill endpoint of the agent on the target node (kill
//! or stop a component, kill or pause the agent), or through the AMF admin API (switchover).
//! Each call has a deadline; a node whose drills are disabled is refused with the agent's own
//! explanation of how to enable them.

use std::time::Duration;

use anyhow::anyhow;
use nines_proto::drill::v1::{
    drill_client::DrillClient, InfoReply, InfoRequest, KillNodeReply, KillNodeRequest,
    PauseNodeReply, PauseNodeRequest, Signal, SignalComponentReply, SignalComponentRequest,
};
use tonic::transport::Channel;

use crate::client::cluster_view;
use nines_proto::amf::v1::{amf_client::AmfClient, AdminRequest};

/// How long one drill call may take.
const DRILL_CALL_MS: u64 = 5_000;
/// How long the agent waits after replying before it kills or pauses itself (so the reply gets
/// out first).
pub const SELF_FAULT_DELAY_MS: u64 = 50;

/// A lazily connected channel to one agent, with the drill's deadlines.
fn channel(addr: &str) -> anyhow::Result<Channel> {
    let ep = crate::client::endpoint(addr)?
        .connect_timeout(Duration::from_millis(1_500))
        .timeout(Duration::from_millis(DRILL_CALL_MS))
        .tcp_nodelay(true);
    Ok(ep.connect_lazy())
}

fn connect(addr: &str) -> anyhow::Result<DrillClient<Channel>> {
    Ok(DrillClient::new(channel(addr)?))
}

/// The agent's refusal or the transport failure, said for people.
fn explain(node: &str, addr: &str, s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unimplemented => anyhow!(
            "the agent of node {node} ({addr}) does not serve drills: it predates `nines drill`; \
             upgrade it"
        ),
        _ if crate::client::unreached(addr, &s) => anyhow!(
            "the agent of node {node} ({addr}) is unreachable: {:#}",
            crate::client::call_error(addr, &s)
        ),
        _ => crate::client::call_error(addr, &s),
    }
}

/// A node's drill endpoint, by node name.
#[derive(Debug, Clone)]
pub struct NodeEndpoint {
    /// The node's name.
    pub node: String,
    /// Its agent's host:port.
    pub addr: String,
}

impl NodeEndpoint {
    /// Find `node`'s agent among the cluster's members.
    pub async fn find(endpoints: &[String], node: &str) -> anyhow::Result<NodeEndpoint> {
        let view = cluster_view(endpoints).await?;
        let m = view
            .members
            .iter()
            .find(|m| m.name == node)
            .ok_or_else(|| {
                let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
                anyhow!(
                    "no node named {node} in the cluster (members: {})",
                    names.join(", ")
                )
            })?;
        Ok(NodeEndpoint {
            node: node.to_string(),
            addr: m.addr.clone(),
        })
    }

    /// The current raft leader's agent.
    pub async fn leader(endpoints: &[String]) -> anyhow::Result<NodeEndpoint> {
        let view = cluster_view(endpoints).await?;
        let id = view
            .leader
            .ok_or_else(|| anyhow!("the cluster has no leader right now; retry in a moment"))?;
        let m = view
            .members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| anyhow!("the leader (node id {id}) is not in the member list"))?;
        Ok(NodeEndpoint {
            node: m.name.clone(),
            addr: m.addr.clone(),
        })
    }

    /// Whether drills are enabled there (and the agent's pid).
    pub async fn info(&self) -> anyhow::Result<InfoReply> {
        let r = connect(&self.addr)?.info(InfoRequest {}).await;
        r.map(|r| r.into_inner())
            .map_err(|s| explain(&self.node, &self.addr, s))
    }

    /// Refuse early, before anything is broken, when the node does not allow drills.
    pub async fn require_enabled(&self) -> anyhow::Result<InfoReply> {
        let info = self.info().await?;
        if !info.enabled {
            return Err(anyhow!(
                "drills are disabled on node {}: add `[drill]` with `enabled = true` to its agent \
                 config and restart that agent (only where breaking things is allowed)",
                self.node
            ));
        }
        Ok(info)
    }

    /// Send `signal` to one of the node's components.
    pub async fn signal(
        &self,
        component: &str,
        signal: Signal,
    ) -> anyhow::Result<SignalComponentReply> {
        let req = SignalComponentRequest {
            component: component.to_string(),
            signal: signal as i32,
        };
        let r = connect(&self.addr)?.signal_component(req).await;
        r.map(|r| r.into_inner())
            .map_err(|s| explain(&self.node, &self.addr, s))
    }

    /// kill -9 the node's components and agent.
    pub async fn kill(&self) -> anyhow::Result<KillNodeReply> {
        let req = KillNodeRequest {
            delay_ms: SELF_FAULT_DELAY_MS,
        };
        let r = connect(&self.addr)?.kill_node(req).await;
        r.map(|r| r.into_inner())
            .map_err(|s| explain(&self.node, &self.addr, s))
    }

    /// SIGSTOP the agent for `duration`, then SIGCONT.
    pub async fn pause(&self, duration: Duration) -> anyhow::Result<PauseNodeReply> {
        let req = PauseNodeRequest {
            duration_ms: duration.as_millis() as u64,
            delay_ms: SELF_FAULT_DELAY_MS,
        };
        let r = connect(&self.addr)?.pause_node(req).await;
        r.map(|r| r.into_inner())
            .map_err(|s| explain(&self.node, &self.addr, s))
    }
}

/// `admin si-swap SI` through the first agent that answers; an agent's refusal is final.
pub async fn switchover(endpoints: &[String], si: &str) -> anyhow::Result<()> {
    let mut last = anyhow!("no endpoints given (use --endpoints host:port,...)");
    for addr in endpoints {
        let req = AdminRequest {
            operation: "si-swap".into(),
            target_kind: "si".into(),
            target: si.to_string(),
        };
        match AmfClient::new(channel(addr)?).admin(req).await {
            Ok(_) => return Ok(()),
            Err(s) if crate::client::unreached(addr, &s) => {
                last = crate::client::call_error(addr, &s);
            }
            Err(s) => {
                return Err(anyhow!(
                    "si-swap {si} refused: {:#}",
                    crate::client::call_error(addr, &s)
                ))
            }
        }
    }
    Err(last.context("no agent answered the si-swap; is the cluster running?"))
}
