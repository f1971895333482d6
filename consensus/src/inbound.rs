//! The rules a raft message from a peer must pass before raft-rs sees it.
//!
//! raft-rs trusts its input: several malformed messages make it `panic!` (its `fatal!` is a
//! panic too), and a panic in the driver stops the node. Every message that arrives from the
//! network passes two pure checks here: [`check_message`] at the transport (the message alone,
//! with who sent it), then [`check_against_log`] in the driver just before `step` (against the
//! node's log). A refused message is dropped: the rest of its batch is still delivered, since raft
//! copes with any lost message and one bad message should not silence a peer's good ones (a
//! batch whose header fails authentication is refused whole, before any message is decoded).
//! Each refusal is counted by reason (`metrics::RAFT.refused_messages`) and logged as a warning,
//! at most one per reason per [`REFUSAL_WARN_INTERVAL_MS`].
//!
//! # What raft-rs 0.7 would panic on, and the rule that keeps it out
//! Read from raft-rs 0.7's `step` and everything it calls with a remote message:
//! - `Raft::step_leader`, `fatal!("stepped empty MsgProp")` for a MsgPropose without entries;
//!   a MsgPropose with entries would append a peer's entries as the leader's own (and parse conf
//!   changes in them with protobuf 2): MsgPropose is refused ([`Refusal::Propose`]). Our nodes
//!   never send one: the driver proposes only as leader (raft-rs 0.7 has no
//!   `disable_proposal_forwarding`, so that is what keeps raft from forwarding) and followers
//!   forward through the `Forward` RPC.
//! - `RaftLog::commit_to`, `fatal!("to_commit {} is out of range")`, reached from
//!   `handle_heartbeat` with the heartbeat's commit: a MsgHeartbeat whose commit is beyond this
//!   node's last index, at a term raft would act on, is refused
//!   ([`Refusal::HeartbeatCommitBeyondLog`]).
//! - `commit_to` again from `maybe_append` (commit `min(m.commit, index + entries)`), from
//!   `maybe_commit_by_vote` and from `MsgReadIndexResp`, when an index beyond the log "matches"
//!   term 0 (raft-rs's `term()` answers 0 outside the log): every message but MsgReadIndex must
//!   carry a term ([`Refusal::TermMissing`]); a MsgAppend's `log_term` is 0 only at index 0, and
//!   its entries' terms are at least 1 ([`Refusal::AppendLogTerm`], [`Refusal::AppendEntryTerm`]).
//!   With those, an append either conflicts at or before `last_index + 1` (and its entries
//!   become the log's end) or lies within the log, so its commit never passes the log.
//! - `maybe_append`, `fatal!("entry {} conflict with committed entry {}")`, and the index
//!   arithmetic after it (`conflict - (index + 1)` and the slice it starts, then
//!   `RaftLog::append`'s `fatal!("after {} is out of range")` and the unstable log's bounds
//!   `fatal!`s): entries must be contiguous from `index + 1` without overflow
//!   ([`Refusal::AppendEntries`]); then every entry lies past `index`, which raft has already
//!   checked is at least the commit index.
//! - `Raft::step_candidate`, `debug_assert_eq!(self.term, m.term)` for MsgAppend, MsgHeartbeat
//!   and MsgSnapshot: only reachable with term 0 (a higher term turns the node follower first):
//!   [`Refusal::TermMissing`].
//! - `Raft::send`, `fatal!("term should not be set when sending {:?}")` when a follower forwards
//!   a MsgReadIndex (or MsgTransferLeader) that arrived with a term: MsgReadIndex must come
//!   without one ([`Refusal::TermOnReadIndex`]); MsgTransferLeader is refused outright
//!   ([`Refusal::TransferLeader`]: our leader transfers are local calls on the leader).
//!   `fatal!("term should be set when sending")` for vote responses to a vote of term 0:
//!   [`Refusal::TermMissing`].
//! - `ReadOnly::add_request` (`req.entries[0]`) and `handle_ready_read_index`
//!   (`take_entries()[0]`) index a MsgReadIndex's first entry: it must hold exactly one entry,
//!   the read's context ([`Refusal::ReadIndexShape`]), at most [`CONTEXT_BYTES_MAX`] long.
//! - `Progress::maybe_update` (`n + 1`) and `maybe_decr_to` (`match_hint + 1`) overflow (a
//!   panic in builds with overflow checks) for a MsgAppendResponse with index or reject hint
//!   `u64::MAX` ([`Refusal::AppendResponseIndex`]); an acknowledged index past this leader's
//!   log would also make a follower's next index point beyond it
//!   ([`Refusal::AppendResponseBeyondLog`]).
//! - `Raft::restore` (MsgSnapshot), `fatal!("unable to restore config")` and
//!   `fatal!("invalid restore")` when the snapshot's conf state is not one raft-rs rebuilds to
//!   the same value (no voters, id 0, a voter that is also a learner, joint state, which our
//!   simple conf changes never make): [`Refusal::SnapshotConfState`]; `commit_to` when a
//!   snapshot of term 0 "matches" an index beyond the log: the metadata must name an index and
//!   term of at least 1, the term at most the message's ([`Refusal::SnapshotMeta`]); a snapshot
//!   at the commit index with another term would replace committed state:
//!   [`Refusal::SnapshotConflictsCommitted`].
//! - `RawNode::step` already refuses MsgHup, MsgBeat, MsgUnreachable, MsgSnapStatus and
//!   MsgCheckQuorum as local messages; they are refused here too, and counted
//!   ([`Refusal::LocalType`]).
//! - `MsgAppendResponse` with `request_snapshot` makes the leader wait for a snapshot at that
//!   index; this design never requests snapshots ([`Refusal::SnapshotRequest`]).
//!
//! Out of scope here: the content of entries and snapshots. A member the cluster follows as
//! leader is trusted with the log's content (Raft tolerates crashes, not lies); what raft-rs
//! would panic on is what these rules keep out.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    OnceLock,
};

use nines_core::NodeId;
use raft::eraftpb::{ConfState, Message, MessageType};

/// Longest context a message may carry (a read's context, a campaign marker): ours are 16
/// bytes; a leader echoes a read's context in every heartbeat, so it is kept short.
pub(crate) const CONTEXT_BYTES_MAX: usize = 1024;

/// Shortest time between two warnings of the same refusal reason (the count goes on).
pub(crate) const REFUSAL_WARN_INTERVAL_MS: u64 = 10_000;

/// Why a peer's raft message was refused; `label` names it in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The bytes are no raft message (or hold an enum value raft-rs lacks).
    Undecodable,
    /// Addressed to another node.
    WrongRecipient,
    /// `from` is not the node the transport authenticated.
    ForgedSender,
    /// `from` is this node's own id.
    FromSelf,
    /// A type raft-rs makes only locally (MsgHup, MsgBeat, MsgUnreachable, MsgSnapStatus,
    /// MsgCheckQuorum).
    LocalType,
    /// MsgPropose: proposals travel by the `Forward` RPC.
    Propose,
    /// MsgTransferLeader: leader transfers are local calls on the leader.
    TransferLeader,
    /// Term 0 on a type that always carries a term.
    TermMissing,
    /// A term on a MsgReadIndex (which travels without one).
    TermOnReadIndex,
    /// A read index request or answer without exactly one entry (the context).
    ReadIndexShape,
    /// A context longer than [`CONTEXT_BYTES_MAX`].
    ContextTooLarge,
    /// A MsgAppend whose `log_term` is above its term, or 0 at an index other than 0.
    AppendLogTerm,
    /// A MsgAppend whose entries are not contiguous from `index + 1`.
    AppendEntries,
    /// A MsgAppend entry with term 0, above the message's term, below `log_term` or below the
    /// entry before it.
    AppendEntryTerm,
    /// A MsgAppendResponse whose index or reject hint is `u64::MAX`.
    AppendResponseIndex,
    /// A MsgAppendResponse asking for a snapshot.
    SnapshotRequest,
    /// A snapshot whose metadata index or term is 0, or whose term is above the message's.
    SnapshotMeta,
    /// A snapshot whose conf state raft-rs could not restore as is.
    SnapshotConfState,
    /// A heartbeat whose commit is beyond this node's last index.
    HeartbeatCommitBeyondLog,
    /// An append acknowledgement beyond this node's last index.
    AppendResponseBeyondLog,
    /// A snapshot at this node's commit index with another term.
    SnapshotConflictsCommitted,
}

impl Refusal {
    /// How many reasons there are.
    pub(crate) const COUNT: usize = 21;

    /// Every reason's metric label, indexed by `reason as usize`.
    pub(crate) const LABELS: [&'static str; Self::COUNT] = [
        "undecodable",
        "wrong_recipient",
        "forged_sender",
        "from_self",
        "local_type",
        "propose",
        "transfer_leader",
        "term_missing",
        "term_on_read_index",
        "read_index_shape",
        "context_too_large",
        "append_log_term",
        "append_entries",
        "append_entry_term",
        "append_response_index",
        "snapshot_request",
        "snapshot_meta",
        "snapshot_conf_state",
        "heartbeat_commit_beyond_log",
        "append_response_beyond_log",
        "snapshot_conflicts_committed",
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// A refusal and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) reason: Refusal,
    pub(crate) why: String,
}

fn refuse(reason: Refusal, why: impl Into<String>) -> Result<(), Refused> {
    Err(Refused {
        reason,
        why: why.into(),
    })
}

/// Check a message on its own: addressed to `me`, from `sender` (the node the transport
/// authenticated), of a type peers send, and well formed for that type.
pub(crate) fn check_message(m: &Message, me: NodeId, sender: NodeId) -> Result<(), Refused> {
    if m.to != me {
        return refuse(
            Refusal::WrongRecipient,
            format!("addressed to node {}", m.to),
        );
    }
    if m.from == me {
        return refuse(Refusal::FromSelf, "claims to come from this node");
    }
    if m.from != sender {
        return refuse(
            Refusal::ForgedSender,
            format!("claims node {} but node {sender} sent it", m.from),
        );
    }
    if m.context.len() > CONTEXT_BYTES_MAX {
        return refuse(
            Refusal::ContextTooLarge,
            format!(
                "context of {} bytes (at most {CONTEXT_BYTES_MAX})",
                m.context.len()
            ),
        );
    }
    use MessageType::*;
    let t = m.get_msg_type();
    match t {
        MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
            return refuse(Refusal::LocalType, "raft makes this type only locally")
        }
        MsgPropose => return refuse(Refusal::Propose, "proposals travel by the Forward RPC"),
        MsgTransferLeader => {
            return refuse(
                Refusal::TransferLeader,
                "leader transfers are local calls on the leader",
            )
        }
        MsgReadIndex if m.term != 0 => {
            return refuse(Refusal::TermOnReadIndex, format!("term {}", m.term))
        }
        MsgReadIndex => {}
        _ if m.term == 0 => return refuse(Refusal::TermMissing, "term 0"),
        _ => {}
    }
    match t {
        MsgReadIndex | MsgReadIndexResp => check_read_entries(m),
        MsgAppend => check_append(m),
        MsgAppendResponse => check_append_response(m),
        MsgSnapshot => check_snapshot(m),
        _ => Ok(()),
    }
}

fn check_read_entries(m: &Message) -> Result<(), Refused> {
    match m.get_entries() {
        [e] if e.data.len() > CONTEXT_BYTES_MAX => refuse(
            Refusal::ContextTooLarge,
            format!(
                "read context of {} bytes (at most {CONTEXT_BYTES_MAX})",
                e.data.len()
            ),
        ),
        [_] => Ok(()),
        es => refuse(
            Refusal::ReadIndexShape,
            format!("{} entries, not one", es.len()),
        ),
    }
}

fn check_append(m: &Message) -> Result<(), Refused> {
    if m.log_term > m.term {
        return refuse(
            Refusal::AppendLogTerm,
            format!("log term {} above term {}", m.log_term, m.term),
        );
    }
    if m.log_term == 0 && m.index != 0 {
        return refuse(
            Refusal::AppendLogTerm,
            format!("log term 0 at index {}", m.index),
        );
    }
    let mut prev_term = m.log_term.max(1);
    for (i, e) in m.get_entries().iter().enumerate() {
        let expected = m.index.checked_add(i as u64 + 1);
        if expected != Some(e.index) {
            return refuse(
                Refusal::AppendEntries,
                format!(
                    "entry {i} has index {} after index {} (not contiguous)",
                    e.index, m.index
                ),
            );
        }
        if e.term < prev_term || e.term > m.term {
            return refuse(
                Refusal::AppendEntryTerm,
                format!(
                    "entry {} has term {} (must be in [{prev_term}, {}])",
                    e.index, e.term, m.term
                ),
            );
        }
        prev_term = e.term;
    }
    Ok(())
}

fn check_append_response(m: &Message) -> Result<(), Refused> {
    if m.index == u64::MAX || m.reject_hint == u64::MAX {
        return refuse(
            Refusal::AppendResponseIndex,
            format!("index {} / reject hint {}", m.index, m.reject_hint),
        );
    }
    if m.request_snapshot != 0 {
        return refuse(
            Refusal::SnapshotRequest,
            format!("requests a snapshot at {}", m.request_snapshot),
        );
    }
    Ok(())
}

fn check_snapshot(m: &Message) -> Result<(), Refused> {
    let meta = m.get_snapshot().get_metadata();
    if meta.index == 0 || meta.term == 0 || meta.term > m.term {
        return refuse(
            Refusal::SnapshotMeta,
            format!(
                "snapshot index {} term {} in a message of term {}",
                meta.index, meta.term, m.term
            ),
        );
    }
    check_conf_state(meta.get_conf_state())
}

fn check_conf_state(cs: &ConfState) -> Result<(), Refused> {
    let bad = |why: String| refuse(Refusal::SnapshotConfState, why);
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return bad("a joint configuration (this design makes none)".into());
    }
    if cs.voters.is_empty() {
        return bad("no voters".into());
    }
    let mut ids: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
    if ids.contains(&0) {
        return bad("node id 0".into());
    }
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return bad(format!("node {} listed twice", w[0]));
    }
    Ok(())
}

/// What [`check_against_log`] needs of this node's raft state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalLog {
    /// The current term.
    pub(crate) term: u64,
    /// The commit index.
    pub(crate) committed: u64,
    /// The last index in the log (entries or snapshot).
    pub(crate) last_index: u64,
}

/// Check a message (already through [`check_message`]) against this node's log, just before
/// `step`. `term_at` answers the term of an index in the log, if known.
pub(crate) fn check_against_log(
    m: &Message,
    log: &LocalLog,
    term_at: impl FnOnce(u64) -> Option<u64>,
) -> Result<(), Refused> {
    match m.get_msg_type() {
        // Below the current term raft answers without touching the log.
        MessageType::MsgHeartbeat if m.term >= log.term && m.commit > log.last_index => refuse(
            Refusal::HeartbeatCommitBeyondLog,
            format!(
                "commit {} beyond the last index {}",
                m.commit, log.last_index
            ),
        ),
        MessageType::MsgAppendResponse if !m.reject && m.index > log.last_index => refuse(
            Refusal::AppendResponseBeyondLog,
            format!(
                "acknowledges index {} beyond the last index {}",
                m.index, log.last_index
            ),
        ),
        MessageType::MsgSnapshot => {
            let meta = m.get_snapshot().get_metadata();
            if meta.index != log.committed {
                return Ok(());
            }
            match term_at(meta.index) {
                Some(t) if t != meta.term => refuse(
                    Refusal::SnapshotConflictsCommitted,
                    format!(
                        "snapshot at the commit index {} with term {}, not {t}",
                        meta.index, meta.term
                    ),
                ),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Count a refusal and warn about it (rate-limited per reason). `sender` is the node the
/// transport authenticated, if known.
pub(crate) fn report(refused: &Refused, m: &Message, sender: Option<NodeId>) {
    report_parts(refused, Some(m.get_msg_type()), m.from, sender);
}

/// Count and warn about a message that did not decode.
pub(crate) fn report_undecodable(why: &str, sender: NodeId) {
    let refused = Refused {
        reason: Refusal::Undecodable,
        why: why.to_owned(),
    };
    report_parts(&refused, None, 0, Some(sender));
}

fn report_parts(
    refused: &Refused,
    t: Option<MessageType>,
    claimed: NodeId,
    sender: Option<NodeId>,
) {
    crate::metrics::RAFT
        .refused_messages
        .inc(refused.reason as usize);
    let Some(suppressed) = WARN_GATE.pass(refused.reason as usize) else {
        return;
    };
    tracing::warn!(
        reason = refused.reason.label(),
        msg_type = ?t,
        claimed_from = claimed,
        sender = ?sender,
        suppressed_since_last_warning = suppressed,
        "refused a raft message from a peer: {}",
        refused.why
    );
}

/// The refusal warnings' gate: one per reason per [`REFUSAL_WARN_INTERVAL_MS`]; a peer that
/// floods bad messages must not flood the log too.
static WARN_GATE: WarnGate<{ Refusal::COUNT }> = WarnGate::new();

/// Rate-limits warnings: at most one per reason (an index below `N`) per
/// [`REFUSAL_WARN_INTERVAL_MS`], and says how many it held back since the last.
pub(crate) struct WarnGate<const N: usize> {
    /// Per reason: 1 + the millisecond (since `EPOCH`) of the last warning; 0 for never.
    last_ms: [AtomicU64; N],
    /// Per reason: refusals not warned about since the last warning.
    suppressed: [AtomicU64; N],
}

/// The time origin of every [`WarnGate`].
static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();

impl<const N: usize> WarnGate<N> {
    /// A gate that has warned about nothing yet.
    pub(crate) const fn new() -> Self {
        Self {
            last_ms: [const { AtomicU64::new(0) }; N],
            suppressed: [const { AtomicU64::new(0) }; N],
        }
    }

    /// `Some(held back since the last warning)` if a warning for `reason` may go out now.
    pub(crate) fn pass(&self, reason: usize) -> Option<u64> {
        let (last_ms, suppressed) = (self.last_ms.get(reason)?, self.suppressed.get(reason)?);
        let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
        let now_ms = 1 + u64::try_from(
            tokio::time::Instant::now()
                .saturating_duration_since(epoch)
                .as_millis(),
        )
        .unwrap_or(u64::MAX - 1);
        let last = last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= REFUSAL_WARN_INTERVAL_MS;
        if due
            && last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(suppressed.swap(0, Ordering::Relaxed));
        }
        suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
// Messages are built field by field, as raft-rs's own tests do.
#[allow(clippy::field_reassign_with_default)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::tests::arb;
    use proptest::prelude::*;
    use raft::eraftpb::{Entry, Snapshot};

    /// Proptest cases per property: small by default (the suite runs on shared machines),
    /// more with `PROPTEST_CASES`.
    pub(crate) fn proptest_cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    }

    const ME: u64 = 1;
    const PEER: u64 = 2;

    fn msg(t: MessageType) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.to = ME;
        m.from = PEER;
        m.term = 5;
        m
    }

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    fn reason(m: &Message) -> Option<Refusal> {
        check_message(m, ME, PEER).err().map(|r| r.reason)
    }

    fn append(index: u64, log_term: u64, entries: &[(u64, u64)]) -> Message {
        let mut m = msg(MessageType::MsgAppend);
        m.index = index;
        m.log_term = log_term;
        m.entries = entries.iter().map(|&(i, t)| entry(i, t)).collect();
        m
    }

    fn snapshot_msg(index: u64, term: u64, voters: &[u64], learners: &[u64]) -> Message {
        let mut m = msg(MessageType::MsgSnapshot);
        let mut s = Snapshot::default();
        let meta = s.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.mut_conf_state().voters = voters.to_vec();
        meta.mut_conf_state().learners = learners.to_vec();
        m.set_snapshot(s);
        m
    }

    fn read_index(ctx: &[&[u8]]) -> Message {
        let mut m = msg(MessageType::MsgReadIndex);
        m.term = 0;
        m.entries = ctx
            .iter()
            .map(|c| {
                let mut e = Entry::default();
                e.data = c.to_vec().into();
                e
            })
            .collect();
        m
    }

    #[test]
    fn what_our_nodes_send_passes() {
        use MessageType::*;
        for t in [
            MsgRequestVote,
            MsgRequestVoteResponse,
            MsgRequestPreVote,
            MsgRequestPreVoteResponse,
            MsgHeartbeat,
            MsgHeartbeatResponse,
            MsgAppendResponse,
            MsgTimeoutNow,
        ] {
            assert_eq!(reason(&msg(t)), None, "{t:?}");
        }
        assert_eq!(reason(&append(7, 4, &[(8, 4), (9, 5), (10, 5)])), None);
        assert_eq!(reason(&append(7, 4, &[])), None, "a probe");
        assert_eq!(reason(&append(0, 0, &[(1, 1)])), None, "from the start");
        assert_eq!(reason(&snapshot_msg(10, 3, &[1, 2, 3], &[4])), None);
        assert_eq!(reason(&read_index(&[&[0; 16]])), None);
        let mut resp = read_index(&[&[0; 16]]);
        resp.set_msg_type(MsgReadIndexResp);
        resp.term = 5;
        assert_eq!(reason(&resp), None);
    }

    #[test]
    fn sender_and_recipient_must_be_right() {
        let mut m = msg(MessageType::MsgHeartbeat);
        m.to = 3;
        assert_eq!(reason(&m), Some(Refusal::WrongRecipient));
        let mut m = msg(MessageType::MsgHeartbeat);
        m.from = 3;
        assert_eq!(reason(&m), Some(Refusal::ForgedSender));
        m.from = ME;
        assert_eq!(reason(&m), Some(Refusal::FromSelf));
        let mut m = msg(MessageType::MsgHeartbeat);
        m.context = vec![0; CONTEXT_BYTES_MAX + 1].into();
        assert_eq!(reason(&m), Some(Refusal::ContextTooLarge));
    }

    #[test]
    fn types_peers_never_send_are_refused() {
        use MessageType::*;
        for t in [
            MsgHup,
            MsgBeat,
            MsgUnreachable,
            MsgSnapStatus,
            MsgCheckQuorum,
        ] {
            assert_eq!(reason(&msg(t)), Some(Refusal::LocalType), "{t:?}");
        }
        // The crash that started this: an empty MsgPropose (and a full one, just as much).
        let mut p = msg(MsgPropose);
        p.term = 0;
        assert_eq!(reason(&p), Some(Refusal::Propose));
        p.entries = vec![entry(0, 0)].into();
        assert_eq!(reason(&p), Some(Refusal::Propose));
        assert_eq!(
            reason(&msg(MsgTransferLeader)),
            Some(Refusal::TransferLeader)
        );
    }

    #[test]
    fn terms_are_where_raft_expects_them() {
        let mut m = msg(MessageType::MsgAppend);
        m.term = 0;
        assert_eq!(reason(&m), Some(Refusal::TermMissing));
        let mut v = msg(MessageType::MsgRequestVote);
        v.term = 0;
        assert_eq!(reason(&v), Some(Refusal::TermMissing));
        let mut r = read_index(&[b"ctx"]);
        r.term = 4;
        assert_eq!(reason(&r), Some(Refusal::TermOnReadIndex));
    }

    #[test]
    fn read_index_carries_exactly_one_short_context() {
        assert_eq!(reason(&read_index(&[])), Some(Refusal::ReadIndexShape));
        assert_eq!(
            reason(&read_index(&[b"a", b"b"])),
            Some(Refusal::ReadIndexShape)
        );
        let long = vec![0u8; CONTEXT_BYTES_MAX + 1];
        assert_eq!(
            reason(&read_index(&[&long])),
            Some(Refusal::ContextTooLarge)
        );
        let mut resp = read_index(&[]);
        resp.set_msg_type(MessageType::MsgReadIndexResp);
        resp.term = 5;
        assert_eq!(reason(&resp), Some(Refusal::ReadIndexShape));
    }

    #[test]
    fn appends_must_be_contiguous_with_sane_terms() {
        use Refusal::*;
        assert_eq!(
            reason(&append(7, 4, &[(9, 4)])),
            Some(AppendEntries),
            "a gap"
        );
        assert_eq!(
            reason(&append(7, 4, &[(8, 4), (8, 4)])),
            Some(AppendEntries)
        );
        assert_eq!(
            reason(&append(7, 4, &[(7, 4)])),
            Some(AppendEntries),
            "overlap"
        );
        assert_eq!(
            reason(&append(u64::MAX, 4, &[(0, 4)])),
            Some(AppendEntries),
            "index overflow"
        );
        assert_eq!(
            reason(&append(7, 4, &[(8, 6)])),
            Some(AppendEntryTerm),
            "term above"
        );
        assert_eq!(
            reason(&append(7, 4, &[(8, 3)])),
            Some(AppendEntryTerm),
            "below log term"
        );
        assert_eq!(
            reason(&append(7, 4, &[(8, 5), (9, 4)])),
            Some(AppendEntryTerm),
            "decreasing"
        );
        assert_eq!(
            reason(&append(0, 0, &[(1, 0)])),
            Some(AppendEntryTerm),
            "term 0"
        );
        assert_eq!(
            reason(&append(7, 6, &[])),
            Some(AppendLogTerm),
            "log term above"
        );
        assert_eq!(
            reason(&append(1000, 0, &[(1001, 1)])),
            Some(AppendLogTerm),
            "term 0 beyond the start"
        );
    }

    #[test]
    fn append_responses_cannot_overflow_or_ask_for_snapshots() {
        let mut m = msg(MessageType::MsgAppendResponse);
        m.index = u64::MAX;
        assert_eq!(reason(&m), Some(Refusal::AppendResponseIndex));
        let mut m = msg(MessageType::MsgAppendResponse);
        m.reject = true;
        m.reject_hint = u64::MAX;
        assert_eq!(reason(&m), Some(Refusal::AppendResponseIndex));
        let mut m = msg(MessageType::MsgAppendResponse);
        m.request_snapshot = 4;
        assert_eq!(reason(&m), Some(Refusal::SnapshotRequest));
    }

    #[test]
    fn snapshots_need_sane_metadata() {
        use Refusal::*;
        assert_eq!(reason(&snapshot_msg(0, 3, &[1], &[])), Some(SnapshotMeta));
        assert_eq!(reason(&snapshot_msg(10, 0, &[1], &[])), Some(SnapshotMeta));
        assert_eq!(reason(&snapshot_msg(10, 6, &[1], &[])), Some(SnapshotMeta));
        assert_eq!(
            reason(&snapshot_msg(10, 3, &[], &[1])),
            Some(SnapshotConfState)
        );
        assert_eq!(
            reason(&snapshot_msg(10, 3, &[1, 0], &[])),
            Some(SnapshotConfState)
        );
        assert_eq!(
            reason(&snapshot_msg(10, 3, &[1, 1], &[])),
            Some(SnapshotConfState)
        );
        assert_eq!(
            reason(&snapshot_msg(10, 3, &[1, 2], &[2])),
            Some(SnapshotConfState)
        );
        let mut joint = snapshot_msg(10, 3, &[1, 2], &[]);
        joint
            .mut_snapshot()
            .mut_metadata()
            .mut_conf_state()
            .voters_outgoing = vec![1, 3];
        assert_eq!(reason(&joint), Some(SnapshotConfState));
        // A message without a snapshot at all.
        assert_eq!(reason(&msg(MessageType::MsgSnapshot)), Some(SnapshotMeta));
    }

    const LOG: LocalLog = LocalLog {
        term: 5,
        committed: 8,
        last_index: 10,
    };

    fn log_reason(m: &Message, term_at: Option<u64>) -> Option<Refusal> {
        check_against_log(m, &LOG, |_| term_at)
            .err()
            .map(|r| r.reason)
    }

    #[test]
    fn heartbeat_commit_must_lie_within_the_log() {
        let mut m = msg(MessageType::MsgHeartbeat);
        m.commit = 10;
        assert_eq!(log_reason(&m, None), None);
        m.commit = u64::MAX;
        assert_eq!(
            log_reason(&m, None),
            Some(Refusal::HeartbeatCommitBeyondLog)
        );
        m.term = 9;
        assert_eq!(
            log_reason(&m, None),
            Some(Refusal::HeartbeatCommitBeyondLog)
        );
        // A stale leader's: raft answers it without committing anything.
        m.term = 4;
        assert_eq!(log_reason(&m, None), None);
    }

    #[test]
    fn append_acks_must_lie_within_the_log() {
        let mut m = msg(MessageType::MsgAppendResponse);
        m.index = 10;
        assert_eq!(log_reason(&m, None), None);
        m.index = 11;
        assert_eq!(log_reason(&m, None), Some(Refusal::AppendResponseBeyondLog));
        m.reject = true;
        assert_eq!(
            log_reason(&m, None),
            None,
            "a rejection names the probe's index"
        );
    }

    #[test]
    fn a_snapshot_may_not_rewrite_the_commit_index() {
        let m = snapshot_msg(8, 3, &[1, 2], &[]);
        assert_eq!(log_reason(&m, Some(3)), None);
        assert_eq!(
            log_reason(&m, Some(2)),
            Some(Refusal::SnapshotConflictsCommitted)
        );
        let later = snapshot_msg(9, 3, &[1, 2], &[]);
        assert_eq!(log_reason(&later, Some(2)), None);
    }

    #[test]
    fn labels_are_unique_and_match_the_count() {
        let mut labels = Refusal::LABELS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::COUNT);
        assert_eq!(
            Refusal::SnapshotConflictsCommitted as usize,
            Refusal::COUNT - 1
        );
        assert_eq!(Refusal::ForgedSender.label(), "forged_sender");
    }

    #[test]
    fn refusals_are_counted_and_warnings_rate_limited() {
        let r = Refused {
            reason: Refusal::TransferLeader,
            why: "test".into(),
        };
        let m = msg(MessageType::MsgTransferLeader);
        let counter = &crate::metrics::RAFT.refused_messages;
        let before = counter.get(Refusal::TransferLeader as usize);
        report(&r, &m, Some(PEER));
        report(&r, &m, Some(PEER));
        assert!(counter.get(Refusal::TransferLeader as usize) >= before + 2);
        // The second within the interval is suppressed.
        assert_eq!(WARN_GATE.pass(Refusal::TransferLeader as usize), None);
        // A gate of its own warns once, then holds back until the interval has passed.
        let gate: WarnGate<2> = WarnGate::new();
        assert_eq!(gate.pass(1), Some(0));
        assert_eq!(gate.pass(1), None);
        assert_eq!(gate.pass(1), None);
        assert_eq!(gate.pass(0), Some(0));
        assert_eq!(gate.pass(7), None, "no such reason");
    }

    /// A raft-rs node (id 1 of voters 1, 2, 3) on a log of five entries (terms 1 1 2 2 2),
    /// commit 3, term 2, as a follower (0), pre-candidate (1), candidate (2) or leader (3).
    fn raft_node(role: u8) -> raft::RawNode<raft::storage::MemStorage> {
        use raft::eraftpb::HardState;
        let store = raft::storage::MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]));
        let ents: Vec<Entry> = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
            .iter()
            .map(|&(i, t)| entry(i, t))
            .collect();
        store.wl().append(&ents).expect("a fresh log takes entries");
        store.wl().set_hardstate(HardState {
            term: 2,
            commit: 3,
            ..Default::default()
        });
        let cfg = raft::Config {
            id: 1,
            check_quorum: true,
            pre_vote: true,
            max_inflight_msgs: 4,
            max_size_per_msg: 64,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = raft::RawNode::new(&cfg, store, &logger).expect("a valid node");
        match role {
            1 => raw.raft.become_pre_candidate(),
            2 => raw.raft.become_candidate(),
            3 => {
                raw.raft.become_candidate();
                raw.raft.become_leader();
            }
            _ => {}
        }
        raw
    }

    /// Handle every Ready the way a driver does, on the in-memory store.
    fn drain(raw: &mut raft::RawNode<raft::storage::MemStorage>) {
        for _ in 0..16 {
            if !raw.has_ready() {
                return;
            }
            let mut rd = raw.ready();
            let store = raw.raft.raft_log.store().clone();
            if !rd.snapshot().is_empty() {
                store
                    .wl()
                    .apply_snapshot(rd.snapshot().clone())
                    .expect("raft hands over only snapshots the store can install");
            }
            store
                .wl()
                .append(rd.entries())
                .expect("raft hands over only entries that extend the log");
            if let Some(hs) = rd.hs() {
                store.wl().set_hardstate(hs.clone());
            }
            let _ = rd.take_messages();
            let _ = rd.take_persisted_messages();
            let mut light = raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                store.wl().mut_hard_state().commit = commit;
            }
            let _ = light.take_messages();
            raw.advance_apply();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(proptest_cases()))]

        /// The point of it all: whatever passes both checks, raft-rs steps (and its Readys are
        /// handled) without a panic, in every role.
        #[test]
        fn raft_rs_never_panics_on_what_passes(
            role in 0u8..4,
            msgs in proptest::collection::vec((arb::message(), any::<bool>()), 1..6),
        ) {
            let mut raw = raft_node(role);
            for (mut m, other) in msgs {
                m.to = ME;
                m.from = if other { 3 } else { PEER };
                let sender = m.from;
                if check_message(&m, ME, sender).is_err() {
                    continue;
                }
                let log = &raw.raft.raft_log;
                let local = LocalLog {
                    term: raw.raft.term,
                    committed: log.committed,
                    last_index: log.last_index(),
                };
                if check_against_log(&m, &local, |i| log.term(i).ok()).is_err() {
                    continue;
                }
                let _ = raw.step(m);
                drain(&mut raw);
            }
        }

        #[test]
        fn arbitrary_messages_never_panic_the_checks(
            m in arb::message(),
            sender in arb::num(),
            term in arb::num(),
            committed in arb::num(),
            last in arb::num(),
            term_at in proptest::option::of(arb::num()),
        ) {
            let _ = check_message(&m, ME, sender);
            let log = LocalLog { term, committed, last_index: last };
            let _ = check_against_log(&m, &log, |_| term_at);
        }

        #[test]
        fn appends_that_pass_are_contiguous(m in arb::message()) {
            let mut m = m;
            m.set_msg_type(MessageType::MsgAppend);
            m.to = ME;
            m.from = PEER;
            if check_message(&m, ME, PEER).is_ok() {
                for (i, e) in m.get_entries().iter().enumerate() {
                    prop_assert_eq!(Some(e.index), m.index.checked_add(i as u64 + 1));
                    prop_assert!(e.term >= 1 && e.term <= m.term);
                }
            }
        }
    }
}
