//! The composite replicated state machine: one envelope, routed to each service's part.
//!
//! Today it holds the cluster part: the member book (from applied membership changes) and a
//! probe register that benchmarks, drills and tests write through the log. Services add their
//! own variants to [`Command`] and [`Response`] (append only: entries already in logs must keep
//! decoding).

use std::collections::BTreeMap;

use nines_amf::state::{AmfCommand, AmfResponse, AmfState};
use nines_ckpt::{CkptCommand, CkptResponse, CkptState};
use nines_evt::{EvtCommand, EvtResponse, EvtState};

use crate::membership::{MembershipCommand, MembershipState};
use nines_consensus::{ApplyContext, Members, StateMachine};
use nines_core::{AisError, ErrorCode};
use serde::{Deserialize, Serialize};

/// Probe keys the register holds at most.
pub const PROBE_KEYS_MAX: usize = 10_000;
/// Longest probe key.
pub const PROBE_KEY_BYTES_MAX: usize = 256;
/// Largest probe value.
pub const PROBE_VALUE_BYTES_MAX: usize = 64 * 1024;

/// Every replicated command, by service. Append-only: entries in existing logs must decode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// The cluster core's own commands.
    Cluster(ClusterCommand),
    /// The checkpoint service's.
    Ckpt(CkptCommand),
    /// Membership health (down / up / left).
    Membership(MembershipCommand),
    /// Availability management.
    Amf(AmfCommand),
    /// The event service.
    Evt(EvtCommand),
}

/// The cluster core's commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterCommand {
    /// Set a probe key.
    ProbeWrite {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
}

/// Every command's outcome, by service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The cluster core's outcomes.
    Cluster(ClusterResponse),
    /// The checkpoint service's.
    Ckpt(CkptResponse),
    /// Membership: the view after the command, or why it was refused.
    Membership(Result<u64, AisError>),
    /// Availability management's outcomes.
    Amf(AmfResponse),
    /// The event service's outcomes.
    Evt(EvtResponse),
}

/// The cluster core's outcomes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterResponse {
    /// The probe was written at this log index.
    ProbeWritten {
        /// The index.
        index: u64,
    },
    /// The command was refused (a business outcome, not a failure of the node).
    Refused(AisError),
}

/// One probe value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The value.
    pub value: Vec<u8>,
    /// The log index it was written at.
    pub index: u64,
}

/// The agent's state machine.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AgentState {
    /// The member book as of the last applied membership change.
    pub members: Members,
    /// The probe register.
    pub probes: BTreeMap<String, Probe>,
    /// The checkpoint service's state.
    pub ckpt: CkptState,
    /// The agreed membership view.
    pub membership: MembershipState,
    /// Availability management.
    pub amf: AmfState,
    /// The event service's channels and retained events.
    pub evt: EvtState,
    /// The last applied entry's context (membership changes arrive without one).
    pub last_ctx: (u64, u64, u64),
}

impl AgentState {
    /// Tell the AMF which nodes (by name) the membership view says are up.
    fn sync_amf_nodes(&mut self, ctx: ApplyContext) {
        use crate::membership::AgreedState;
        let up = self
            .membership
            .states
            .iter()
            .filter(|(_, s)| **s == AgreedState::Up)
            .filter_map(|(id, _)| self.members.get(id).map(|p| p.name.clone()))
            .collect();
        self.amf.sync_cluster(ctx, &up);
    }

    fn apply_cluster(&mut self, ctx: ApplyContext, cmd: ClusterCommand) -> ClusterResponse {
        match cmd {
            ClusterCommand::ProbeWrite { key, value } => {
                if key.len() > PROBE_KEY_BYTES_MAX || value.len() > PROBE_VALUE_BYTES_MAX {
                    return ClusterResponse::Refused(AisError::new(
                        ErrorCode::TooBig,
                        format!(
                            "probe key or value too big (limits {PROBE_KEY_BYTES_MAX} and \
                             {PROBE_VALUE_BYTES_MAX} bytes)"
                        ),
                    ));
                }
                if self.probes.len() >= PROBE_KEYS_MAX && !self.probes.contains_key(&key) {
                    return ClusterResponse::Refused(AisError::new(
                        ErrorCode::NoSpace,
                        format!("the probe register holds {PROBE_KEYS_MAX} keys already"),
                    ));
                }
                let index = ctx.index;
                self.probes.insert(key, Probe { value, index });
                ClusterResponse::ProbeWritten { index }
            }
        }
    }
}

/// The refusal of a checkpoint command whose fencing epoch the AMF never handed out. Fencing
/// epochs are tokens: a writer holds one because the AMF assigned it an HA state at that epoch.
/// Accepting a higher one would raise the checkpoint's fence above every legitimate writer and
/// lock them all out for good.
fn unissued_epoch(epoch: u64, issued: u64) -> AisError {
    AisError::new(
        ErrorCode::InvalidParam,
        format!(
            "fencing epoch {epoch} was never issued: the AMF has handed out epochs up to \
             {issued}; a writer's epoch is the one of its assignment (the SDK's fenced writes \
             use it)"
        ),
    )
}

impl StateMachine for AgentState {
    type Command = Command;
    type Response = Response;

    fn apply(&mut self, ctx: ApplyContext, cmd: Command) -> Result<Response, String> {
        self.last_ctx = (ctx.index, ctx.term, ctx.time_ms);
        Ok(match cmd {
            Command::Cluster(c) => Response::Cluster(self.apply_cluster(ctx, c)),
            Command::Ckpt(c) if c.epoch() > self.amf.epoch => Response::Ckpt(CkptResponse::Error(
                unissued_epoch(c.epoch(), self.amf.epoch),
            )),
            Command::Ckpt(c) => Response::Ckpt(self.ckpt.apply(ctx, c)),
            Command::Membership(c) => {
                let r = self.membership.apply(c);
                self.sync_amf_nodes(ctx);
                Response::Membership(r)
            }
            Command::Amf(c) => Response::Amf(self.amf.apply(ctx, c)),
            Command::Evt(c) => Response::Evt(self.evt.apply(ctx, c)),
        })
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(self).map_err(|e| format!("cannot encode agent state: {e}"))
    }

    fn snapshot_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        *out = postcard::to_extend(self, std::mem::take(out))
            .map_err(|e| format!("cannot encode agent state: {e}"))?;
        Ok(())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let events = self.membership.take_events();
        let amf = self.amf.take_notifier();
        let evt = self.evt.take_events();
        *self =
            postcard::from_bytes(data).map_err(|e| format!("cannot decode agent state: {e}"))?;
        if let Some(tx) = events {
            self.membership.set_events(tx);
        }
        if let Some(tx) = evt {
            self.evt.set_events(tx);
        }
        if let Some(tx) = amf {
            tx.send_modify(|v| *v += 1);
            self.amf.set_notifier(tx);
        }
        Ok(())
    }

    fn on_membership(&mut self, members: &Members) {
        self.members = members.clone();
        self.membership.on_members(members);
        let (index, term, time_ms) = self.last_ctx;
        self.sync_amf_nodes(ApplyContext {
            index,
            term,
            time_ms,
        });
    }
}

/// The event service's view of the agent state.
pub fn evt_handle(
    proposer: nines_consensus::Proposer<AgentState>,
) -> nines_evt::EvtHandle<AgentState> {
    nines_consensus::ServiceHandle::new(
        proposer,
        Command::Evt,
        |r| match r {
            Response::Evt(r) => Some(r),
            _ => None,
        },
        |s| &s.evt,
    )
}

/// The AMF's view of the agent state.
pub fn amf_handle(proposer: nines_consensus::Proposer<AgentState>) -> AmfHandle {
    nines_consensus::ServiceHandle::new(
        proposer,
        Command::Amf,
        |r| match r {
            Response::Amf(r) => Some(r),
            _ => None,
        },
        |s| &s.amf,
    )
}

/// The AMF's typed handle on the agent's state machine.
pub type AmfHandle = nines_amf::director::AmfHandle<AgentState>;

/// The checkpoint service's view of the agent state.
pub fn ckpt_handle(
    proposer: nines_consensus::Proposer<AgentState>,
) -> nines_ckpt::CkptHandle<AgentState> {
    nines_consensus::ServiceHandle::new(
        proposer,
        Command::Ckpt,
        |r| match r {
            Response::Ckpt(r) => Some(r),
            _ => None,
        },
        |s| &s.ckpt,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(index: u64) -> ApplyContext {
        ApplyContext {
            index,
            term: 1,
            time_ms: 0,
        }
    }

    fn write(key: &str, value: &[u8]) -> Command {
        Command::Cluster(ClusterCommand::ProbeWrite {
            key: key.into(),
            value: value.to_vec(),
        })
    }

    #[test]
    fn probes_apply_and_survive_a_snapshot() {
        let mut s = AgentState::default();
        let r = s.apply(ctx(7), write("a", b"1")).expect("applies");
        assert!(matches!(
            r,
            Response::Cluster(ClusterResponse::ProbeWritten { index: 7 })
        ));
        let mut t = AgentState::default();
        t.restore(&s.snapshot().expect("snapshot"))
            .expect("restore");
        assert_eq!(t.probes["a"].value, b"1");
    }

    #[test]
    fn oversized_probes_are_refused_as_values() {
        let mut s = AgentState::default();
        let big = vec![0u8; PROBE_VALUE_BYTES_MAX + 1];
        let r = s.apply(ctx(1), write("a", &big)).expect("applies");
        assert!(
            matches!(r, Response::Cluster(ClusterResponse::Refused(e)) if e.code == ErrorCode::TooBig)
        );
        assert!(s.probes.is_empty());
    }
}
