//! What a drill reads from the cluster: an SI's assignments, its components, the AMF history's
//! failover timelines, and why an SI has no standby. Pure functions over an [`AmfStatusReply`],
//! plus the bounded waits built on them (shared with `nines bench amf` and `nines demo`).

use std::time::{Duration, Instant};

use anyhow::bail;
use nines_proto::amf::v1::{AmfStatusReply, HistoryEntry, SiStatus};

use crate::amf_cmd::fetch_status;

/// How long one status call may take before the next endpoint is tried.
const STATUS_CALL_MS: u64 = 2_000;

/// Wall-clock ms since the Unix epoch (timelines only; the agents stamp history the same way).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The SI's status, if the model has it.
pub fn si<'a>(st: &'a AmfStatusReply, si: &str) -> Option<&'a SiStatus> {
    st.sis.iter().find(|s| s.name == si)
}

/// The SI's settled (nothing in flight) active and standby SUs.
pub fn settled(st: &AmfStatusReply, si_name: &str) -> Option<(String, String)> {
    let si = si(st, si_name)?;
    if si.assignments.iter().any(|a| !a.pending.is_empty()) {
        return None;
    }
    let one = |ha: &str| {
        let v: Vec<&str> = si
            .assignments
            .iter()
            .filter(|a| a.ha_state == ha)
            .map(|a| a.su.as_str())
            .collect();
        (v.len() == 1).then(|| v[0].to_string())
    };
    Some((one("active")?, one("standby")?))
}

/// The SUs that hold the SI active or are being made active.
pub fn actives(st: &AmfStatusReply, si_name: &str) -> Vec<String> {
    si(st, si_name)
        .map(|s| {
            s.assignments
                .iter()
                .filter(|a| a.ha_state == "active" || a.pending == "active")
                .map(|a| a.su.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The node an SU is configured on.
pub fn node_of_su(st: &AmfStatusReply, su: &str) -> Option<String> {
    st.sus.iter().find(|s| s.name == su).map(|s| s.node.clone())
}

/// The SU's running components as (name, pid).
pub fn running_components(st: &AmfStatusReply, su: &str) -> Vec<(String, u32)> {
    st.components
        .iter()
        .filter(|c| c.su == su && c.running)
        .map(|c| (c.name.clone(), c.pid))
        .collect()
}

/// The highest history index (entries after it are new).
pub fn last_index(st: &AmfStatusReply) -> u64 {
    st.history.iter().map(|h| h.index).max().unwrap_or(0)
}

/// The first completed failover of `si_name` recorded after index `seen`.
pub fn failover_after<'a>(
    st: &'a AmfStatusReply,
    si_name: &str,
    seen: u64,
) -> Option<&'a HistoryEntry> {
    st.history.iter().find(|h| {
        h.kind == "failover" && h.entity == si_name && h.index > seen && h.confirmed_ms > 0
    })
}

/// The first history entry of `kind` about `entity` after index `seen` whose text has `word`.
pub fn entry_after<'a>(
    st: &'a AmfStatusReply,
    seen: u64,
    kind: &str,
    entity: &str,
    word: &str,
) -> Option<&'a HistoryEntry> {
    st.history
        .iter()
        .find(|h| h.index > seen && h.kind == kind && h.entity == entity && h.text.contains(word))
}

/// The first sign after index `seen` that `node` failed: the node declared down, or — when its
/// agent came back before that — a failure the restarted director detected on one of its
/// components or SUs.
pub fn node_failure_after<'a>(
    st: &'a AmfStatusReply,
    seen: u64,
    node: &str,
) -> Option<&'a HistoryEntry> {
    let on_node = |e: &str| {
        st.components.iter().any(|c| c.name == e && c.node == node)
            || st.sus.iter().any(|s| s.name == e && s.node == node)
    };
    st.history.iter().find(|h| {
        h.index > seen
            && ((h.kind == "node" && h.entity == node && h.text.contains("down"))
                || (h.kind == "detected" && on_node(&h.entity)))
    })
}

/// Why the SI has no settled active and standby, in words an operator can act on.
pub fn why_unprotected(st: &AmfStatusReply, si_name: &str) -> String {
    let Some(si) = si(st, si_name) else {
        return format!("the model has no SI {si_name} (see `nines amf status`)");
    };
    if let Some(a) = si.assignments.iter().find(|a| !a.pending.is_empty()) {
        return format!(
            "SI {si_name} is still changing ({} on {} -> {}); wait for it to settle",
            a.su, a.node, a.pending
        );
    }
    let actives = actives(st, si_name);
    if actives.is_empty() {
        return format!("SI {si_name} has no active assignment (it is unassigned)");
    }
    let assigned: Vec<&str> = si.assignments.iter().map(|a| a.su.as_str()).collect();
    let others: Vec<String> = st
        .sus
        .iter()
        .filter(|s| s.sg == si.sg && !assigned.contains(&s.name.as_str()))
        .map(|s| {
            let mut why = Vec::new();
            if s.admin_state != "unlocked" {
                why.push(s.admin_state.replace('_', "-"));
            }
            if s.oper_state != "enabled" {
                why.push(format!("oper {}", s.oper_state));
            }
            if s.readiness != "in_service" {
                why.push(format!("{} (is node {} down?)", s.readiness, s.node));
            }
            if why.is_empty() {
                why.push("in service but not assigned yet".into());
            }
            format!("{} on {}: {}", s.name, s.node, why.join(", "))
        })
        .collect();
    let candidates = if others.is_empty() {
        format!("service group {} has no other SU", si.sg)
    } else {
        others.join("; ")
    };
    format!(
        "SI {si_name} has no standby to fail over to (active: {}; {candidates}); unlock or \
         repair an SU of service group {} (`nines admin unlock su NAME`, `nines admin repaired su \
         NAME`) or bring its node back",
        actives.join(", "),
        si.sg
    )
}

/// The AMF status from the first endpoint that answers within a short deadline, trying
/// `avoid` last (a paused agent would otherwise hold every call for the full RPC timeout).
pub async fn status(endpoints: &[String], avoid: Option<&str>) -> Option<AmfStatusReply> {
    let mut order: Vec<&String> = endpoints
        .iter()
        .filter(|e| Some(e.as_str()) != avoid)
        .collect();
    order.extend(endpoints.iter().filter(|e| Some(e.as_str()) == avoid));
    for ep in order {
        let call = fetch_status(std::slice::from_ref(ep), false);
        if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_millis(STATUS_CALL_MS), call).await
        {
            return Some(st);
        }
    }
    None
}

/// How long the AMF history must stay unchanged before a settled SI is ready for the next fault:
/// a fault injected into the tail of earlier events (a node that resumed reporting what its fence
/// stopped, say) would be timed against them.
pub const QUIET: Duration = Duration::from_millis(500);

/// Tracks how long the AMF history has not grown.
#[derive(Debug, Default)]
pub struct Quiet(Option<(u64, Instant)>);

impl Quiet {
    /// Whether `st`'s history has not grown for [`QUIET`] (false the first time it is seen).
    pub fn is_quiet(&mut self, st: &AmfStatusReply) -> bool {
        let index = last_index(st);
        match self.0 {
            Some((i, since)) if i == index => since.elapsed() >= QUIET,
            _ => {
                self.0 = Some((index, Instant::now()));
                false
            }
        }
    }
}

/// Wait until the SI has a settled active and standby and the history has been quiet for
/// [`QUIET`]; on timeout the error says why not.
pub async fn wait_settled(
    endpoints: &[String],
    si_name: &str,
    limit: Duration,
) -> anyhow::Result<AmfStatusReply> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    let mut quiet = Quiet::default();
    loop {
        if let Some(st) = status(endpoints, None).await {
            if settled(&st, si_name).is_some() && quiet.is_quiet(&st) {
                return Ok(st);
            }
            last = Some(st);
        }
        if Instant::now() >= deadline {
            match last {
                Some(st) => bail!("within {limit:?}: {}", why_unprotected(&st, si_name)),
                None => bail!("no agent answered an AMF status within {limit:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_proto::amf::v1::{AssignmentStatus, SuStatus};

    fn su(name: &str, node: &str, admin: &str) -> SuStatus {
        SuStatus {
            name: name.into(),
            sg: "g".into(),
            node: node.into(),
            admin_state: admin.into(),
            oper_state: "enabled".into(),
            readiness: if admin == "unlocked" {
                "in_service"
            } else {
                "out_of_service"
            }
            .into(),
        }
    }

    fn assignment(su: &str, ha: &str, pending: &str) -> AssignmentStatus {
        AssignmentStatus {
            su: su.into(),
            node: "n1".into(),
            ha_state: ha.into(),
            epoch: 1,
            pending: pending.into(),
        }
    }

    fn status(assignments: Vec<AssignmentStatus>, sus: Vec<SuStatus>) -> AmfStatusReply {
        AmfStatusReply {
            sis: vec![SiStatus {
                name: "s".into(),
                sg: "g".into(),
                assignments,
                assignment_state: String::new(),
            }],
            sus,
            ..Default::default()
        }
    }

    #[test]
    fn settled_needs_one_active_one_standby_and_nothing_in_flight() {
        let a = assignment("a", "active", "");
        let b = assignment("b", "standby", "");
        let st = status(vec![a.clone(), b.clone()], vec![]);
        assert_eq!(settled(&st, "s"), Some(("a".into(), "b".into())));
        let moving = assignment("b", "standby", "active");
        assert_eq!(settled(&status(vec![a.clone(), moving], vec![]), "s"), None);
        assert_eq!(settled(&status(vec![a], vec![]), "s"), None);
    }

    #[test]
    fn a_standby_being_made_active_counts_as_active() {
        let st = status(
            vec![
                assignment("a", "active", ""),
                assignment("b", "standby", "active"),
            ],
            vec![],
        );
        assert_eq!(actives(&st, "s"), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn a_missing_standby_is_explained_with_each_sus_state() {
        let st = status(
            vec![assignment("a", "active", "")],
            vec![
                su("a", "n1", "unlocked"),
                su("b", "n2", "locked"),
                su("c", "n3", "locked"),
            ],
        );
        let why = why_unprotected(&st, "s");
        assert!(why.contains("no standby"), "{why}");
        assert!(why.contains("b on n2: locked"), "{why}");
        assert!(why.contains("c on n3: locked"), "{why}");
    }
}
