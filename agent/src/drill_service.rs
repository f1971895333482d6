//! `nines.drill.v1.Drill`: the guarded endpoint `nines drill` uses to break things on this node —
//! signal one of its components, kill the agent with its components, or pause the agent.
//!
//! Off unless the config says `[drill] enabled = true`: a disabled agent refuses every call
//! (FAILED_PRECONDITION) and says how to enable it. Components are found in this agent's own
//! (stale, local) copy of the AMF state and checked against `/proc/<pid>/environ`
//! (`NINES_COMPONENT=<name>`) before any signal, so a reused pid is never hit; the signal goes to
//! the component's process group, as the director's own cleanup does.
//!
//! The agent cannot bring itself back after `KillNode`: its supervisor restarts it (systemd
//! `Restart=`, a container restart policy, the test harness). See docs/design.md, "Drills".

use std::time::Duration;

use nines_amf::director::now_ms;
use nines_consensus::ReadMode;
use nines_core::{limits, AisError, ErrorCode};
use nines_proto::drill::v1::{
    drill_server::Drill, InfoReply, InfoRequest, KillNodeReply, KillNodeRequest, PauseNodeReply,
    PauseNodeRequest, Signal as WireSignal, SignalComponentReply, SignalComponentRequest,
};
use nines_proto::status_from_ais;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};
use tonic::{Request, Response, Status};

use crate::state::AmfHandle;

/// The longest a kill or pause may wait after the reply.
const DELAY_MS_MAX: u64 = 1_000;

/// The drill service of one agent.
pub(crate) struct DrillService {
    /// `[drill] enabled`.
    pub(crate) enabled: bool,
    /// `[drill] pause_ms_max`.
    pub(crate) pause_ms_max: u64,
    /// This node's name (components are matched by node).
    pub(crate) node: String,
    /// The AMF state, read locally (stale) to find this node's components and their pids.
    pub(crate) amf: AmfHandle,
}

fn refused(code: ErrorCode, msg: impl Into<String>) -> Status {
    status_from_ais(&AisError::new(code, msg))
}

/// Whether `pid` is `component`'s process (its environment carries the director's tag).
fn is_component(component: &str, pid: u32) -> bool {
    let tag = format!("NINES_COMPONENT={component}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == tag.as_bytes()))
        .unwrap_or(false)
}

/// Signal a checked component's process group (or the process if it has no group of its own).
fn signal_group(component: &str, pid: u32, sig: Signal) -> Result<(), Status> {
    if !is_component(component, pid) {
        return Err(refused(
            ErrorCode::NotExist,
            format!("component {component} is not running as pid {pid} any more"),
        ));
    }
    let p = Pid::from_raw(pid as i32);
    let sent = match getpgid(Some(p)) {
        Ok(group) if group == p => killpg(group, sig),
        _ => kill(p, sig),
    };
    sent.map_err(|e| {
        refused(
            ErrorCode::BadOperation,
            format!("cannot send {sig} to component {component} (pid {pid}): {e}"),
        )
    })
}

impl DrillService {
    fn check_enabled(&self) -> Result<(), Status> {
        if self.enabled {
            return Ok(());
        }
        Err(refused(
            ErrorCode::BadOperation,
            format!(
                "drills are disabled on node {}: add `[drill]` with `enabled = true` to its agent \
                 config and restart that agent (only on clusters where breaking things is \
                 allowed)",
                self.node
            ),
        ))
    }

    /// This node's running components as (name, pid), from the local copy of the AMF state.
    async fn local_components(&self) -> Result<Vec<(String, u32)>, Status> {
        let timeout = Duration::from_millis(limits::CLIENT_TIMEOUT_MS);
        let st = self
            .amf
            .read(ReadMode::Stale, timeout, |s| s.status())
            .await
            .map_err(|e| status_from_ais(&e.into()))?;
        Ok(st
            .components
            .into_iter()
            .filter(|c| c.node == self.node)
            .filter_map(|c| c.pid.map(|p| (c.name, p)))
            .collect())
    }
}

#[tonic::async_trait]
impl Drill for DrillService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoReply>, Status> {
        Ok(Response::new(InfoReply {
            enabled: self.enabled,
            node: self.node.clone(),
            agent_pid: std::process::id(),
            pause_ms_max: self.pause_ms_max,
        }))
    }

    async fn signal_component(
        &self,
        req: Request<SignalComponentRequest>,
    ) -> Result<Response<SignalComponentReply>, Status> {
        self.check_enabled()?;
        let r = req.into_inner();
        let sig = match WireSignal::try_from(r.signal).unwrap_or(WireSignal::Unspecified) {
            WireSignal::Kill => Signal::SIGKILL,
            WireSignal::Stop => Signal::SIGSTOP,
            WireSignal::Cont => Signal::SIGCONT,
            WireSignal::Unspecified => {
                return Err(refused(
                    ErrorCode::InvalidParam,
                    "no signal given: one of KILL, STOP, CONT",
                ))
            }
        };
        let comps = self.local_components().await?;
        let Some((_, pid)) = comps.iter().find(|(n, _)| *n == r.component) else {
            return Err(refused(
                ErrorCode::NotExist,
                format!(
                    "component {} is not running on node {}",
                    r.component, self.node
                ),
            ));
        };
        let at_ms = now_ms();
        signal_group(&r.component, *pid, sig)?;
        tracing::warn!(component = %r.component, pid, signal = %sig, "drill: signal sent");
        Ok(Response::new(SignalComponentReply { pid: *pid, at_ms }))
    }

    async fn kill_node(
        &self,
        req: Request<KillNodeRequest>,
    ) -> Result<Response<KillNodeReply>, Status> {
        self.check_enabled()?;
        let delay_ms = req.into_inner().delay_ms.min(DELAY_MS_MAX);
        let comps = self.local_components().await?;
        let at_ms = now_ms() + delay_ms;
        tracing::warn!(
            delay_ms,
            components = comps.len(),
            "drill: killing this node"
        );
        let names = comps.iter().map(|(n, _)| n.clone()).collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            for (name, pid) in comps {
                let _ = signal_group(&name, pid, Signal::SIGKILL);
            }
            // The agent's own end: no drain, no magic close, as if the node lost power.
            let _ = kill(Pid::this(), Signal::SIGKILL);
        });
        Ok(Response::new(KillNodeReply {
            at_ms,
            components: names,
            agent_pid: std::process::id(),
        }))
    }

    async fn pause_node(
        &self,
        req: Request<PauseNodeRequest>,
    ) -> Result<Response<PauseNodeReply>, Status> {
        self.check_enabled()?;
        let r = req.into_inner();
        if r.duration_ms == 0 || r.duration_ms > self.pause_ms_max {
            return Err(refused(
                ErrorCode::InvalidParam,
                format!(
                    "a pause of {} ms is outside 1 ..= {} ms (`[drill] pause_ms_max` on node {})",
                    r.duration_ms, self.pause_ms_max, self.node
                ),
            ));
        }
        let delay_ms = r.delay_ms.min(DELAY_MS_MAX);
        let pid = std::process::id();
        // A stopped process cannot wake itself: a helper process stops and continues it.
        let script = format!(
            "sleep {}; kill -STOP {pid}; sleep {}; kill -CONT {pid}",
            secs(delay_ms),
            secs(r.duration_ms)
        );
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                refused(
                    ErrorCode::Library,
                    format!("cannot start the pause helper (/bin/sh): {e}"),
                )
            })?;
        let at_ms = now_ms() + delay_ms;
        tracing::warn!(duration_ms = r.duration_ms, "drill: pausing this agent");
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(Response::new(PauseNodeReply {
            at_ms,
            agent_pid: pid,
        }))
    }
}

/// `ms` as seconds with millisecond digits, for sleep(1).
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1_000, ms % 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_arguments_keep_milliseconds() {
        assert_eq!(secs(50), "0.050");
        assert_eq!(secs(2_500), "2.500");
    }

    #[test]
    fn a_process_without_the_tag_is_not_a_component() {
        assert!(!is_component("x-app", std::process::id()));
    }
}
