//! Assignment-engine test vectors (schema `amf-assign-vector/1`).
//!
//! Story: each vector file builds an SG, then runs its steps in order against one runtime. A
//! step applies its event, acknowledges every batch successfully until the SG is stable
//! (applying the step's `inject` event after batch `after_batch` is acknowledged and the next one
//! is sent), then compares the batches, alarms, admin result and full table with the file.
//!
//! `testdata/vectors/` holds byte-identical copies of the spec's vectors; `testdata/vectors-nines/`
//! holds ours, in the same format, with two extensions: event kind `node_unlock`, and `result`
//! inside `inject` (the admin result of the injected event).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nines_amf::policy::{
    acknowledge, handle, is_stable, pending, table, Ack, AdminResult, Dependency, Descriptor,
    FaultRecovery, Msg, MsgKind, RankedSu, RedundancyModel, SgConfig, SgEvent, SgRuntime, SiConfig,
    SuConfig,
};
use serde::Deserialize;

/// Acknowledgement rounds per step before the harness calls it a livelock.
const ROUNDS_MAX: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    schema: String,
    id: String,
    #[allow(dead_code)]
    title: String,
    #[allow(dead_code)]
    rule: Option<String>,
    #[allow(dead_code)]
    source: Option<String>,
    sg: SgSection,
    su: Vec<SuSection>,
    si: Vec<SiSection>,
    #[serde(default)]
    dependency: Vec<Dependency>,
    step: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SgSection {
    model: RedundancyModel,
    #[serde(default)]
    auto_adjust: bool,
    #[serde(default)]
    auto_adjust_prob_ms: u64,
    #[serde(default = "yes")]
    auto_repair: bool,
    #[serde(default = "one")]
    pref_active_sus: u32,
    #[serde(default = "one")]
    pref_standby_sus: u32,
    #[serde(default)]
    pref_inservice_sus: u32,
    #[serde(default)]
    pref_assigned_sus: u32,
    #[serde(default)]
    max_active_sis_per_su: u32,
    #[serde(default)]
    max_standby_sis_per_su: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuSection {
    name: String,
    node: String,
    #[serde(default)]
    rank: u32,
    #[serde(default)]
    failover: bool,
    #[serde(default = "yes")]
    preinstantiable: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiSection {
    name: String,
    #[serde(default)]
    rank: u32,
    #[serde(default = "one")]
    pref_active: u32,
    #[serde(default = "one")]
    pref_standby: u32,
    #[serde(default)]
    ranked_su: Vec<RankedSu>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    event: EventSpec,
    result: Option<String>,
    messages_mode: Option<String>,
    messages: Option<Vec<Vec<String>>>,
    alarms: Option<Alarms>,
    expect: BTreeMap<String, ExpectSi>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    kind: String,
    su: Option<String>,
    node: Option<String>,
    si: Option<String>,
    recovery: Option<String>,
    ms: Option<u64>,
    /// Only inside `inject`.
    after_batch: Option<usize>,
    /// Only inside `inject` (our extension): the injected admin event's result.
    result: Option<String>,
    inject: Option<Box<EventSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Alarms {
    raised: Vec<String>,
    cleared: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSi {
    active: Vec<String>,
    standby: Vec<String>,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn sg_config(v: &Vector) -> SgConfig {
    let s = &v.sg;
    SgConfig {
        name: v.id.clone(),
        model: s.model,
        auto_adjust: s.auto_adjust,
        auto_adjust_prob_ms: s.auto_adjust_prob_ms,
        auto_repair: s.auto_repair,
        pref_active_sus: s.pref_active_sus,
        pref_standby_sus: s.pref_standby_sus,
        pref_inservice_sus: s.pref_inservice_sus,
        pref_assigned_sus: s.pref_assigned_sus,
        max_active_sis_per_su: s.max_active_sis_per_su,
        max_standby_sis_per_su: s.max_standby_sis_per_su,
        sus: v
            .su
            .iter()
            .map(|u| SuConfig {
                name: u.name.clone(),
                node: u.node.clone(),
                rank: u.rank,
                failover: u.failover,
                preinstantiable: u.preinstantiable,
            })
            .collect(),
        sis: v
            .si
            .iter()
            .map(|i| SiConfig {
                name: i.name.clone(),
                rank: i.rank,
                pref_active: i.pref_active,
                pref_standby: i.pref_standby,
                ranked_su: i.ranked_su.clone(),
            })
            .collect(),
        dependencies: v.dependency.clone(),
    }
}

fn event(e: &EventSpec) -> Result<SgEvent, String> {
    let field = |f: &Option<String>, name: &str| {
        f.clone()
            .ok_or_else(|| format!("event {} needs `{name}`", e.kind))
    };
    Ok(match e.kind.as_str() {
        "start" => SgEvent::Start,
        "su_fault" => SgEvent::SuFault {
            su: field(&e.su, "su")?,
            recovery: match field(&e.recovery, "recovery")?.as_str() {
                "comp_failover" => FaultRecovery::CompFailover,
                "su_failover" => FaultRecovery::SuFailover,
                other => return Err(format!("unknown recovery {other}")),
            },
        },
        "node_failover" => SgEvent::NodeFailover {
            node: field(&e.node, "node")?,
        },
        "node_up" => SgEvent::NodeUp {
            node: field(&e.node, "node")?,
        },
        "su_repaired" => SgEvent::SuRepaired {
            su: field(&e.su, "su")?,
        },
        "su_lock" => SgEvent::SuLock {
            su: field(&e.su, "su")?,
        },
        "su_shutdown" => SgEvent::SuShutdown {
            su: field(&e.su, "su")?,
        },
        "su_unlock" => SgEvent::SuUnlock {
            su: field(&e.su, "su")?,
        },
        "su_lock_in" => SgEvent::SuLockIn {
            su: field(&e.su, "su")?,
        },
        "su_unlock_in" => SgEvent::SuUnlockIn {
            su: field(&e.su, "su")?,
        },
        "node_lock" => SgEvent::NodeLock {
            node: field(&e.node, "node")?,
        },
        "node_unlock" => SgEvent::NodeUnlock {
            node: field(&e.node, "node")?,
        },
        "si_swap" => SgEvent::SiSwap {
            si: field(&e.si, "si")?,
        },
        "si_lock" => SgEvent::SiLock {
            si: field(&e.si, "si")?,
        },
        "si_unlock" => SgEvent::SiUnlock {
            si: field(&e.si, "si")?,
        },
        "tick" => SgEvent::Tick {
            ms: e.ms.ok_or("event tick needs `ms`")?,
        },
        other => return Err(format!("unknown event kind {other}")),
    })
}

fn admin_name(r: AdminResult) -> &'static str {
    match r {
        AdminResult::Ok => "OK",
        AdminResult::BadOperation => "BAD_OPERATION",
        AdminResult::TryAgain => "TRY_AGAIN",
        AdminResult::NotSupported => "NOT_SUPPORTED",
    }
}

/// A message in the vector grammar, with its descriptor.
fn render(m: &Msg) -> String {
    let ha = match m.kind {
        MsgKind::Active(Descriptor::NewAssign) => "ACTIVE NEW_ASSIGN",
        MsgKind::Active(Descriptor::Quiesced) => "ACTIVE QUIESCED",
        MsgKind::Active(Descriptor::NotQuiesced) => "ACTIVE NOT_QUIESCED",
        MsgKind::Standby => "STANDBY",
        MsgKind::Quiesced => "QUIESCED",
        MsgKind::Quiescing => "QUIESCING",
        MsgKind::Remove => "REMOVE",
    };
    format!("{} {} {}", m.su, m.si, ha)
}

/// What one step produced.
#[derive(Default)]
struct StepLog {
    batches: Vec<Vec<Msg>>,
    raised: BTreeSet<String>,
    cleared: BTreeSet<String>,
    admin: Option<AdminResult>,
    inject_admin: Option<AdminResult>,
}

impl StepLog {
    fn record(&mut self, out: nines_amf::policy::Outcome) {
        if !out.messages.is_empty() {
            self.batches.push(out.messages);
        }
        self.raised.extend(out.alarms_raised);
        self.cleared.extend(out.alarms_cleared);
    }
}

/// The acknowledgements a node director sends for `m`: QUIESCING is acknowledged at once, then
/// reported complete as QUIESCED.
fn acks_for(m: &Msg) -> Vec<Ack> {
    let ack = |kind| Ack {
        su: m.su.clone(),
        si: m.si.clone(),
        kind,
        ok: true,
    };
    match m.kind {
        MsgKind::Quiescing => vec![ack(MsgKind::Quiescing), ack(MsgKind::Quiesced)],
        kind => vec![ack(kind)],
    }
}

fn run_step(cfg: &SgConfig, rt: &mut SgRuntime, step: &Step) -> Result<StepLog, String> {
    let mut log = StepLog::default();
    let out = handle(cfg, rt, &event(&step.event)?);
    log.admin = out.admin;
    log.record(out);
    let mut inject = step.event.inject.as_deref();
    for acked_batches in 0..ROUNDS_MAX {
        if let Some(inj) = inject {
            let k = inj.after_batch.ok_or("inject needs `after_batch`")?;
            if acked_batches == k && log.batches.len() == k + 1 {
                let out = handle(cfg, rt, &event(inj)?);
                log.inject_admin = out.admin;
                log.record(out);
                inject = None;
            }
        }
        let in_flight = pending(rt);
        if in_flight.is_empty() {
            if inject.is_some() {
                return Err("the step became stable before its inject point".into());
            }
            if !is_stable(rt) {
                return Err("nothing pending but the SG is not stable".into());
            }
            return Ok(log);
        }
        for m in &in_flight {
            for ack in acks_for(m) {
                let out = acknowledge(cfg, rt, &ack);
                log.record(out);
            }
        }
    }
    Err(format!(
        "not stable after {ROUNDS_MAX} acknowledgement rounds"
    ))
}

/// Whether the actual message matches the expected one (the descriptor only when given).
fn matches(expected: &str, actual: &Msg) -> bool {
    let want: Vec<&str> = expected.split_whitespace().collect();
    let got = render(actual);
    let got: Vec<&str> = got.split_whitespace().collect();
    got.starts_with(&want) && (want.len() == got.len() || want.len() == 3)
}

/// Whether batch `got` equals batch `want` as a set.
fn batch_matches(want: &[String], got: &[Msg]) -> bool {
    let mut used = vec![false; got.len()];
    for w in want {
        let hit = got
            .iter()
            .enumerate()
            .find(|(i, m)| !used[*i] && matches(w, m));
        match hit {
            Some((i, _)) => used[i] = true,
            None => return false,
        }
    }
    used.iter().all(|u| *u)
}

fn show_batches(batches: &[Vec<Msg>]) -> String {
    let shown: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            let mut b: Vec<String> = b.iter().map(render).collect();
            b.sort();
            b
        })
        .collect();
    format!("{shown:?}")
}

fn check_messages(step: &Step, log: &StepLog, errs: &mut Vec<String>) {
    let mode = step.messages_mode.as_deref().unwrap_or("exact");
    if mode == "none" {
        return;
    }
    let want = step.messages.clone().unwrap_or_default();
    let count_ok = match mode {
        "exact" => want.len() == log.batches.len(),
        "prefix" => want.len() <= log.batches.len(),
        other => {
            errs.push(format!("unknown messages_mode {other}"));
            return;
        }
    };
    let ok = count_ok
        && want
            .iter()
            .zip(&log.batches)
            .all(|(w, g)| batch_matches(w, g));
    if !ok {
        errs.push(format!(
            "messages ({mode}):\n    expected {want:?}\n    got      {}",
            show_batches(&log.batches)
        ));
    }
}

fn check_step(cfg: &SgConfig, rt: &SgRuntime, step: &Step, log: &StepLog) -> Vec<String> {
    let mut errs = Vec::new();
    check_messages(step, log, &mut errs);
    if let Some(a) = &step.alarms {
        let raised: BTreeSet<String> = a.raised.iter().cloned().collect();
        let cleared: BTreeSet<String> = a.cleared.iter().cloned().collect();
        if raised != log.raised || cleared != log.cleared {
            errs.push(format!(
                "alarms: expected raised {raised:?} cleared {cleared:?}, got raised {:?} cleared {:?}",
                log.raised, log.cleared
            ));
        }
    }
    let admin_checks = [
        (&step.result, log.admin),
        (
            &step.event.inject.as_ref().and_then(|i| i.result.clone()),
            log.inject_admin,
        ),
    ];
    for (want, got) in admin_checks {
        if let Some(want) = want {
            if got.map(admin_name) != Some(want.as_str()) {
                errs.push(format!("admin result: expected {want}, got {got:?}"));
            }
        }
    }
    let got = table(cfg, rt);
    let got_sis: BTreeSet<&String> = got.keys().collect();
    let want_sis: BTreeSet<&String> = step.expect.keys().collect();
    if got_sis != want_sis {
        errs.push(format!("table SIs: expected {want_sis:?}, got {got_sis:?}"));
    }
    for (si, want) in &step.expect {
        let Some(g) = got.get(si) else { continue };
        let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
        if set(&want.active) != set(&g.active) || set(&want.standby) != set(&g.standby) {
            errs.push(format!(
                "table {si}: expected active {:?} standby {:?}, got active {:?} standby {:?}",
                want.active, want.standby, g.active, g.standby
            ));
        }
    }
    errs
}

/// Runs one vector file; returns a readable report of every failing step.
fn run_vector(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Vector = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if v.schema != "amf-assign-vector/1" {
        return Err(format!("{}: unknown schema {}", v.id, v.schema));
    }
    let cfg = sg_config(&v);
    let mut rt = SgRuntime::new(&cfg);
    for (i, step) in v.step.iter().enumerate() {
        let n = i + 1;
        let log = run_step(&cfg, &mut rt, step)
            .map_err(|e| format!("vector {} step {n} ({}): {e}", v.id, step.event.kind))?;
        let errs = check_step(&cfg, &rt, step, &log);
        if !errs.is_empty() {
            let mut report = format!("vector {} step {n} ({}):", v.id, step.event.kind);
            for e in errs {
                let _ = write!(report, "\n  {e}");
            }
            return Err(report);
        }
    }
    Ok(v.id)
}

fn vector_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// Runs every vector of `dir`, reporting all failures at once.
fn run_dir(dir: &str, at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let files = vector_files(&dir);
    assert!(
        files.len() >= at_least,
        "{}: expected at least {at_least} vectors",
        dir.display()
    );
    let mut failures = Vec::new();
    for f in &files {
        match run_vector(f) {
            Ok(id) => eprintln!("vector {id}: ok"),
            Err(report) => failures.push(report),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn spec_vectors_pass() {
    run_dir("testdata/vectors", 10);
}

#[test]
fn nines_vectors_pass() {
    run_dir("testdata/vectors-nines", 1);
}

/// When the spec's directory is present (a developer checkout), every vector there has a
/// byte-identical copy in testdata, so a spec update is noticed.
#[test]
fn spec_vectors_are_copied_verbatim() {
    let spec = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/amf/vectors"
    ));
    if !spec.is_dir() {
        return;
    }
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors");
    for f in vector_files(spec) {
        let name = f.file_name().expect("file name");
        let theirs = std::fs::read(&f).expect("read spec vector");
        let copy = std::fs::read(ours.join(name))
            .unwrap_or_else(|e| panic!("{} has no copy in testdata/vectors: {e}", f.display()));
        assert!(
            theirs == copy,
            "testdata/vectors/{} differs from {}",
            name.to_string_lossy(),
            f.display()
        );
    }
}
