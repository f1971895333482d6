//! The replicated AMF state machine driven purely: commands in, status and node views out. No
//! I/O, no async, no wall clock: each story builds its own `ApplyContext`s (growing index, a
//! clock the story controls) and plays the node directors' part by hand (`settle`): every
//! component the cluster wants running is reported instantiated, every directive acknowledged.
//!
//! Stories: placement, re-applying a model, model changes, escalation, abrupt failover, node
//! loss, admin operations, presence reports, snapshot round trip.

use std::collections::{BTreeMap, BTreeSet};

use nines_amf::model::{Model, Recovery as ModelRecovery};
use nines_amf::policy::{Descriptor, MsgKind};
use nines_amf::state::{
    AdminOp, AmfCommand, AmfResponse, AmfState, AmfStatus, ComponentView, Directive, HistoryKind,
    Presence, PresenceReport, Recovery, SiView, SuView, TargetKind,
};
use nines_consensus::ApplyContext;
use nines_core::ErrorCode;

/// Rounds `settle` may take before it declares the state machine stuck.
const SETTLE_ROUNDS_MAX: usize = 100;

/// The example model's SI.
const SI: &str = "counter-si";

/// The proposer's side of the log: the next index, the time stamp, and the pids the simulated
/// directors hand out.
#[derive(Clone)]
struct Clock {
    index: u64,
    time_ms: u64,
    next_pid: u32,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            index: 0,
            time_ms: 1_700_000_000_000,
            next_pid: 1000,
        }
    }

    /// The context of the next log entry (index grows by one; time as set).
    fn ctx(&mut self) -> ApplyContext {
        self.index += 1;
        ApplyContext {
            index: self.index,
            term: 1,
            time_ms: self.time_ms,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.time_ms += ms;
    }

    fn pid(&mut self) -> u32 {
        self.next_pid += 1;
        self.next_pid
    }
}

fn phase(name: &str) {
    println!("--- phase: {name}");
}

fn apply(state: &mut AmfState, clock: &mut Clock, cmd: AmfCommand) -> AmfResponse {
    let ctx = clock.ctx();
    state.apply(ctx, cmd)
}

fn nodes(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn all_nodes() -> BTreeSet<String> {
    nodes(&["n1", "n2", "n3"])
}

/// One round of every up node's director: start what should run, stop what should not,
/// acknowledge every directive. Returns whether anything was reported.
fn director_round(state: &mut AmfState, clock: &mut Clock) -> bool {
    let mut acted = false;
    let up: Vec<String> = state.cluster_up.iter().cloned().collect();
    for node in up {
        let view = state.node_view(&node);
        for c in &view.components {
            let report = if c.should_run && c.presence != Presence::Instantiated {
                PresenceReport::Instantiated { pid: clock.pid() }
            } else if !c.should_run && c.presence == Presence::Instantiated {
                PresenceReport::Uninstantiated
            } else {
                continue;
            };
            let cmd = AmfCommand::Presence {
                component: c.name.clone(),
                incarnation: c.incarnation,
                report,
            };
            let resp = apply(state, clock, cmd);
            assert!(
                matches!(resp, AmfResponse::Done { .. }),
                "presence of {} (incarnation {}) on {node}: {resp:?}",
                c.name,
                c.incarnation
            );
            acted = true;
        }
        // Directives as they are now (a presence report above may have changed them).
        for d in state.node_view(&node).directives {
            let done_at_ms = clock.time_ms;
            let cmd = AmfCommand::Ack {
                id: d.directive.id,
                ok: true,
                reason: "".into(),
                done_at_ms,
            };
            // A directive may have been dropped by an earlier ack of this round: Ignored is fine.
            let _ = apply(state, clock, cmd);
            acted = true;
        }
    }
    acted
}

/// Play the directors until nothing changes (no report, no directive to an up node left);
/// panics when the state machine does not settle.
fn settle(state: &mut AmfState, clock: &mut Clock) {
    for _ in 0..SETTLE_ROUNDS_MAX {
        clock.advance(10);
        if !director_round(state, clock) {
            return;
        }
    }
    panic!(
        "not settled after {SETTLE_ROUNDS_MAX} rounds; directives {:?}",
        state.directives
    );
}

fn counter_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/models/counter.toml");
    std::fs::read_to_string(path).expect("read counter.toml")
}

fn parse(text: &str) -> Model {
    let m = Model::parse(text, "test model").unwrap_or_else(|e| panic!("model parses: {e}"));
    m.validate()
        .unwrap_or_else(|e| panic!("model validates: {e}"));
    m
}

fn counter() -> Model {
    parse(&counter_text())
}

/// The counter model without its third (spare) SU: a plain active/standby pair.
fn counter_pair() -> Model {
    let mut m = counter();
    m.su.retain(|s| s.name != "counter-3");
    m.component.retain(|c| c.su != "counter-3");
    m
}

/// All nodes up, `model` applied (first time: one change line), directors settled.
fn start(model: Model) -> (AmfState, Clock) {
    let mut state = AmfState::default();
    let mut clock = Clock::new();
    state.sync_cluster(clock.ctx(), &all_nodes());
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel {
            model: Box::new(model),
        },
    );
    match resp {
        AmfResponse::ModelApplied { changes } => assert_eq!(changes.len(), 1, "{changes:?}"),
        other => panic!("model not applied: {other:?}"),
    }
    settle(&mut state, &mut clock);
    (state, clock)
}

fn si<'a>(st: &'a AmfStatus, name: &str) -> &'a SiView {
    st.sis
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("SI {name} in status"))
}

fn su<'a>(st: &'a AmfStatus, name: &str) -> &'a SuView {
    st.sus
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("SU {name} in status"))
}

fn comp<'a>(st: &'a AmfStatus, name: &str) -> &'a ComponentView {
    st.components
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("component {name} in status"))
}

/// The SUs holding `si` in `ha` (no change in flight).
fn holders(st: &AmfStatus, si_name: &str, ha: &str) -> Vec<String> {
    si(st, si_name)
        .assignments
        .iter()
        .filter(|a| a.ha_state == ha && a.pending.is_none())
        .map(|a| a.su.clone())
        .collect()
}

fn active(st: &AmfStatus, si_name: &str) -> Vec<String> {
    holders(st, si_name, "active")
}

fn standby(st: &AmfStatus, si_name: &str) -> Vec<String> {
    holders(st, si_name, "standby")
}

fn epoch_of(st: &AmfStatus, si_name: &str, su_name: &str) -> u64 {
    si(st, si_name)
        .assignments
        .iter()
        .find(|a| a.su == su_name)
        .unwrap_or_else(|| panic!("{si_name} assigned to {su_name}"))
        .epoch
}

/// Every component's incarnation, as the node directors see it.
fn incarnations(state: &AmfState) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for node in state.nodes.keys() {
        for c in state.node_view(node).components {
            out.insert(c.name, c.incarnation);
        }
    }
    out
}

fn incarnation(state: &AmfState, comp_name: &str) -> u64 {
    *incarnations(state)
        .get(comp_name)
        .unwrap_or_else(|| panic!("component {comp_name} in some node view"))
}

/// The directives in flight to `node`'s SUs.
fn directives_to(state: &AmfState, node: &str) -> Vec<Directive> {
    state
        .node_view(node)
        .directives
        .into_iter()
        .map(|d| d.directive)
        .collect()
}

/// A component error on the current incarnation, with the configured recovery.
fn fail(state: &mut AmfState, clock: &mut Clock, comp_name: &str) -> AmfResponse {
    let incarnation = incarnation(state, comp_name);
    let detected_at_ms = clock.time_ms;
    apply(
        state,
        clock,
        AmfCommand::ComponentError {
            component: comp_name.into(),
            incarnation,
            recommended: Recovery::NoRecommendation,
            reason: "process exited with status 1".into(),
            detected_at_ms,
        },
    )
}

fn admin(
    state: &mut AmfState,
    clock: &mut Clock,
    op: AdminOp,
    kind: TargetKind,
    target: &str,
) -> AmfResponse {
    apply(
        state,
        clock,
        AmfCommand::Admin {
            op,
            kind,
            target: target.into(),
        },
    )
}

fn done_message(resp: &AmfResponse) -> &str {
    match resp {
        AmfResponse::Done { message } => message,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn assert_done(resp: &AmfResponse) {
    let _ = done_message(resp);
}

fn has_history(st: &AmfStatus, kind: HistoryKind, needle: &str) -> bool {
    st.history
        .iter()
        .any(|h| h.kind == kind && (h.entity.contains(needle) || h.text.contains(needle)))
}

fn assert_all_instantiated(st: &AmfStatus) {
    for c in &st.components {
        assert_eq!(c.presence, "instantiated", "{c:?}");
        assert!(c.pid.is_some(), "{c:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Placement
// ---------------------------------------------------------------------------------------------

#[test]
fn placement_puts_the_active_on_rank_1_and_the_standby_on_rank_2() {
    phase("before any model: nothing to run");
    let mut state = AmfState::default();
    let mut clock = Clock::new();
    state.sync_cluster(clock.ctx(), &all_nodes());
    assert!(!state.status().has_model);
    assert!(state.node_view("n1").components.is_empty());

    phase("apply the example model: every component should run, nothing is assigned yet");
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel {
            model: Box::new(counter()),
        },
    );
    assert!(matches!(resp, AmfResponse::ModelApplied { ref changes } if changes.len() == 1));
    for node in ["n1", "n2", "n3"] {
        let view = state.node_view(node);
        assert_eq!(view.components.len(), 1, "{node}: {view:?}");
        assert!(view.components.iter().all(|c| c.should_run), "{node}");
        assert!(
            view.directives.is_empty(),
            "no placement before instantiation"
        );
    }

    phase("directors instantiate and acknowledge until settled");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert!(st.has_model);
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
    assert_eq!(si(&st, SI).assignment_state, "fully_assigned");
    assert_all_instantiated(&st);
    for s in &st.sus {
        assert_eq!(
            (s.admin_state.as_str(), s.oper_state.as_str()),
            ("unlocked", "enabled")
        );
        assert_eq!(s.readiness, "in_service", "{s:?}");
    }

    phase("epochs: both set, different, at most the highest handed out");
    let e1 = epoch_of(&st, SI, "counter-1");
    let e2 = epoch_of(&st, SI, "counter-2");
    assert!(e1 > 0 && e2 > 0 && e1 != e2, "epochs {e1} {e2}");
    assert!(e1 < e2, "2N places the active first, then the standby");
    assert!(st.epoch >= e2);

    phase("history");
    assert!(st
        .history
        .iter()
        .any(|h| h.kind == HistoryKind::Model && h.entity == "model"));
    assert!(has_history(&st, HistoryKind::Assigned, SI));
    assert!(has_history(&st, HistoryKind::Confirmed, SI));
    let indexes: Vec<u64> = st.history.iter().map(|h| h.index).collect();
    assert!(indexes.windows(2).all(|w| w[0] <= w[1]), "{indexes:?}");

    phase("the held CSIs: the active node holds the CSI active, the spare holds none");
    let held = state.node_view("n1").held;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].epoch, e1);
    assert_eq!(held[0].csi.attributes["PORT"], "9000");
    assert!(state.node_view("n3").held.is_empty());
}

#[test]
fn an_su_on_a_down_node_is_out_from_the_start_and_comes_in_later() {
    phase("n3 is down when the model is applied");
    let mut state = AmfState::default();
    let mut clock = Clock::new();
    state.sync_cluster(clock.ctx(), &nodes(&["n1", "n2"]));
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel {
            model: Box::new(counter()),
        },
    );
    assert!(matches!(resp, AmfResponse::ModelApplied { .. }), "{resp:?}");
    assert!(state
        .node_view("n3")
        .components
        .iter()
        .all(|c| !c.should_run));

    phase("the SG starts without waiting for n3");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
    assert_eq!(su(&st, "counter-3").readiness, "out_of_service");
    assert_eq!(comp(&st, "counter-3-app").presence, "uninstantiated");

    phase("n3 joins: its SU comes in as a spare, the SI does not move");
    state.sync_cluster(clock.ctx(), &all_nodes());
    settle(&mut state, &mut clock);
    let after = state.status();
    assert_eq!(su(&after, "counter-3").readiness, "in_service");
    assert_eq!(comp(&after, "counter-3-app").presence, "instantiated");
    assert_eq!(si(&after, SI), si(&st, SI));
}

// ---------------------------------------------------------------------------------------------
// 2. The same model again
// ---------------------------------------------------------------------------------------------

#[test]
fn applying_the_same_model_again_changes_nothing() {
    let (mut state, mut clock) = start(counter());
    let before = state.status();
    let inc_before = incarnations(&state);

    phase("same model again");
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel {
            model: Box::new(counter()),
        },
    );
    assert_eq!(resp, AmfResponse::ModelApplied { changes: vec![] });

    phase("nothing changed");
    assert_eq!(state.status(), before);
    assert_eq!(incarnations(&state), inc_before);
    for node in ["n1", "n2", "n3"] {
        assert!(directives_to(&state, node).is_empty(), "{node}");
    }
    assert!(
        !director_round(&mut state, &mut clock),
        "directors have nothing to do"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Model changes
// ---------------------------------------------------------------------------------------------

const SECOND_SG: &str = r#"
[[sg]]
name = "kv"
redundancy = "2N"

[[su]]
name = "kv-1"
sg = "kv"
node = "n2"
rank = 1

[[su]]
name = "kv-2"
sg = "kv"
node = "n3"
rank = 2

[[component]]
name = "kv-1-app"
su = "kv-1"
instantiate = "kv-app"

[[component]]
name = "kv-2-app"
su = "kv-2"
instantiate = "kv-app"

[[si]]
name = "kv-si"
sg = "kv"
rank = 1

[[csi]]
name = "kv-csi"
si = "kv-si"
"#;

#[test]
fn a_new_sg_is_placed_without_touching_the_running_one() {
    let (mut state, mut clock) = start(counter());
    let before = state.status();
    let inc_before = incarnations(&state);

    phase("apply the model with a second SG");
    let text = format!("{}\n{SECOND_SG}", counter_text());
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel {
            model: Box::new(parse(&text)),
        },
    );
    let AmfResponse::ModelApplied { changes } = resp else {
        panic!("model not applied: {resp:?}");
    };
    assert!(!changes.is_empty());
    assert!(changes.iter().any(|l| l.contains("kv")), "{changes:?}");

    phase("the counter SG: same incarnations, same assignments, nothing in flight");
    let inc_now = incarnations(&state);
    for (name, inc) in &inc_before {
        assert_eq!(inc_now[name], *inc, "{name} kept its incarnation");
    }
    assert!(state.directives.values().all(|d| d.sg != "counter"));
    assert_eq!(si(&state.status(), SI), si(&before, SI));

    phase("settle: the kv SG is placed");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, "kv-si"), vec!["kv-1"]);
    assert_eq!(standby(&st, "kv-si"), vec!["kv-2"]);
    assert_all_instantiated(&st);
    assert_eq!(
        si(&st, SI),
        si(&before, SI),
        "counter untouched after settling too"
    );
    for (name, inc) in &inc_before {
        assert_eq!(incarnations(&state)[name], *inc, "{name}");
    }
    let kv_epoch = epoch_of(&st, "kv-si", "kv-1");
    assert!(
        kv_epoch > epoch_of(&st, SI, "counter-2"),
        "one epoch counter for the AMF"
    );
}

#[test]
fn a_changed_component_alone_gets_a_new_incarnation() {
    let (mut state, mut clock) = start(counter());
    let before = state.status();
    let inc_before = incarnations(&state);

    phase("change counter-2-app's instantiate command");
    let mut m = counter();
    let c = m
        .component
        .iter_mut()
        .find(|c| c.name == "counter-2-app")
        .expect("counter-2-app");
    c.instantiate = "counter-app --state-dir /var/lib/counter --verbose".into();
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel { model: Box::new(m) },
    );
    let AmfResponse::ModelApplied { changes } = resp else {
        panic!("model not applied: {resp:?}");
    };
    assert!(
        changes.iter().any(|l| l.contains("counter-2-app")),
        "{changes:?}"
    );

    phase("only counter-2-app has a new incarnation");
    let inc_now = incarnations(&state);
    for (name, inc) in &inc_before {
        if name == "counter-2-app" {
            assert!(inc_now[name] > *inc, "{name}");
        } else {
            assert_eq!(inc_now[name], *inc, "{name}");
        }
    }
    let plan = state
        .node_view("n2")
        .components
        .into_iter()
        .find(|c| c.name == "counter-2-app")
        .expect("plan");
    assert!(plan.should_run);
    assert!(plan.def.instantiate.ends_with("--verbose"));

    phase("settle: the SI did not move");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
    assert_eq!(si(&st, SI), si(&before, SI));
    assert_all_instantiated(&st);
    assert_eq!(
        comp(&st, "counter-1-app").pid,
        comp(&before, "counter-1-app").pid
    );
}

#[test]
fn a_changed_sg_is_rebuilt_and_placed_again() {
    let (mut state, mut clock) = start(counter());
    let top_epoch = state.status().epoch;
    let inc_before = incarnations(&state);

    phase("change an SU's rank: the SG's policy view changed");
    let mut m = counter();
    m.su.iter_mut()
        .find(|s| s.name == "counter-3")
        .expect("counter-3")
        .rank = 4;
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel { model: Box::new(m) },
    );
    let AmfResponse::ModelApplied { changes } = resp else {
        panic!("model not applied: {resp:?}");
    };
    assert!(
        changes.iter().any(|l| l.contains("counter-3")),
        "{changes:?}"
    );

    phase("rebuilt: every component restarts, nothing assigned, nothing in flight");
    let inc_now = incarnations(&state);
    for (name, inc) in &inc_before {
        assert!(inc_now[name] > *inc, "{name}");
    }
    assert!(state.directives.is_empty());
    assert_eq!(si(&state.status(), SI).assignment_state, "unassigned");

    phase("settle: placed again by rank, with new epochs");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
    assert!(epoch_of(&st, SI, "counter-1") > top_epoch);
    assert_all_instantiated(&st);
}

// ---------------------------------------------------------------------------------------------
// 4. Escalation: component restart → (SU restart) → failover
// ---------------------------------------------------------------------------------------------

/// The counter model with tight restart budgets and probation windows.
fn escalation_model(su_restart_max: u32) -> Model {
    let mut m = counter();
    let sg = &mut m.sg[0];
    sg.comp_restart_max = 2;
    sg.comp_restart_prob_ms = 10_000;
    sg.su_restart_max = su_restart_max;
    sg.su_restart_prob_ms = 10_000;
    assert_eq!(
        m.component("counter-1-app")
            .expect("comp")
            .recovery_on_error,
        ModelRecovery::ComponentRestart
    );
    m
}

#[test]
fn component_restarts_escalate_to_failover_within_probation() {
    let (mut state, mut clock) = start(escalation_model(0));
    let c = "counter-1-app";
    let inc0 = incarnation(&state, c);

    phase("first error: the component restarts, the SI stays");
    let resp = fail(&mut state, &mut clock, c);
    assert!(done_message(&resp).contains("restarts"), "{resp:?}");
    assert_eq!(incarnation(&state, c), inc0 + 1);
    assert!(state.directives.is_empty(), "a restart moves no SI");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(comp(&st, c).restarts, 1);
    assert_eq!(comp(&st, c).presence, "instantiated");
    assert_eq!(active(&st, SI), vec!["counter-1"]);

    phase("a stale report (older incarnation) is ignored");
    let detected_at_ms = clock.time_ms;
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ComponentError {
            component: c.into(),
            incarnation: inc0,
            recommended: Recovery::NoRecommendation,
            reason: "late report".into(),
            detected_at_ms,
        },
    );
    assert_eq!(resp, AmfResponse::Ignored);
    assert_eq!(incarnation(&state, c), inc0 + 1);

    phase("second error: restart again");
    let resp = fail(&mut state, &mut clock, c);
    assert!(done_message(&resp).contains("restarts"), "{resp:?}");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(comp(&st, c).restarts, 2);
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    let top_epoch = st.epoch;

    phase("third error within probation: restarts exhausted, no SU restarts: failover");
    let resp = fail(&mut state, &mut clock, c);
    assert!(done_message(&resp).contains("failover"), "{resp:?}");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert!(epoch_of(&st, SI, "counter-2") > top_epoch);
    assert!(has_history(&st, HistoryKind::Decided, "component failover"));
    assert_all_instantiated(&st);
    assert_eq!(su(&st, "counter-1").oper_state, "enabled", "auto repair");
}

#[test]
fn an_su_restart_comes_between_component_restarts_and_failover() {
    let (mut state, mut clock) = start(escalation_model(1));
    let c = "counter-1-app";
    let mut messages = Vec::new();
    for round in 0..6 {
        phase(&format!("error {}", round + 1));
        let resp = fail(&mut state, &mut clock, c);
        messages.push(done_message(&resp).to_string());
        settle(&mut state, &mut clock);
        let moved = active(&state.status(), SI) != vec!["counter-1".to_string()];
        if moved {
            break;
        }
    }
    phase("component, component, SU, then failover once both budgets are spent");
    assert!(
        messages[0].contains("component counter-1-app restarts"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("component counter-1-app restarts"),
        "{messages:?}"
    );
    assert!(
        messages[2].contains("SU counter-1 restarts"),
        "{messages:?}"
    );
    let last = messages.last().expect("some errors");
    assert!(last.contains("failover"), "{messages:?}");
    assert!(
        messages[3..messages.len() - 1]
            .iter()
            .all(|m| m.contains("component counter-1-app restarts")),
        "{messages:?}"
    );
    assert_eq!(active(&state.status(), SI), vec!["counter-2"]);
}

#[test]
fn the_restart_counter_starts_over_after_the_probation_window() {
    let (mut state, mut clock) = start(escalation_model(0));
    let c = "counter-1-app";

    phase("two errors: two restarts, the budget is spent");
    for _ in 0..2 {
        let resp = fail(&mut state, &mut clock, c);
        assert!(done_message(&resp).contains("restarts"), "{resp:?}");
        settle(&mut state, &mut clock);
    }

    phase("the probation window passes");
    clock.advance(10_001);

    phase("a third error restarts again instead of escalating");
    let resp = fail(&mut state, &mut clock, c);
    assert!(done_message(&resp).contains("restarts"), "{resp:?}");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(comp(&st, c).restarts, 3);
    assert_eq!(active(&st, SI), vec!["counter-1"]);

    phase("and the new window counts again from one: one more restart, then failover");
    let resp = fail(&mut state, &mut clock, c);
    assert!(done_message(&resp).contains("restarts"), "{resp:?}");
    settle(&mut state, &mut clock);
    let resp = fail(&mut state, &mut clock, c);
    assert!(done_message(&resp).contains("failover"), "{resp:?}");
    settle(&mut state, &mut clock);
    assert_eq!(active(&state.status(), SI), vec!["counter-2"]);
}

#[test]
fn failovers_on_one_node_escalate_to_a_node_failover() {
    let mut m = abrupt_model();
    m.node
        .iter_mut()
        .find(|n| n.name == "n1")
        .expect("n1")
        .su_failover_max = 1;
    let (mut state, mut clock) = start(m);

    phase("first error on n1: an SU failover (the node's budget allows one)");
    let resp = fail(&mut state, &mut clock, "counter-1-app");
    assert_eq!(done_message(&resp), "SU failover of counter-1");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);

    phase("second error on n1 within probation: node failover");
    let resp = fail(&mut state, &mut clock, "counter-1-app");
    assert_eq!(done_message(&resp), "node n1 failed over");
    assert!(has_history(
        &state.status(),
        HistoryKind::Decided,
        "node failover of n1"
    ));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_all_instantiated(&st);
}

/// Two SGs with an SU each on n1 (counter-1 and kv-1, both active after placement).
fn two_sgs_on_n1() -> Model {
    parse(&format!("{}\n{KV_ON_N1}", counter_text()))
}

const KV_ON_N1: &str = r#"
[[sg]]
name = "kv"
redundancy = "2N"

[[su]]
name = "kv-1"
sg = "kv"
node = "n1"
rank = 1

[[su]]
name = "kv-2"
sg = "kv"
node = "n2"
rank = 2

[[component]]
name = "kv-1-app"
su = "kv-1"
instantiate = "kv-app"

[[component]]
name = "kv-2-app"
su = "kv-2"
instantiate = "kv-app"

[[si]]
name = "kv-si"
sg = "kv"
rank = 1

[[csi]]
name = "kv-csi"
si = "kv-si"
"#;

#[test]

fn node_switchover_moves_the_other_sus_of_the_node_gracefully() {
    let (mut state, mut clock) = start(two_sgs_on_n1());
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(active(&st, "kv-si"), vec!["kv-1"]);

    phase("counter-1-app fails and recommends a node switchover");
    let incarnation = incarnation(&state, "counter-1-app");
    let detected_at_ms = clock.time_ms;
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ComponentError {
            component: "counter-1-app".into(),
            incarnation,
            recommended: Recovery::NodeSwitchover,
            reason: "healthcheck failed".into(),
            detected_at_ms,
        },
    );
    assert_done(&resp);

    phase("node switchover: the healthy kv-1 (with assignments) takes F-GRACEFUL: QUIESCED first");
    let to_n1 = directives_to(&state, "n1");
    assert!(
        to_n1
            .iter()
            .any(|d| d.su == "kv-1" && d.kind == MsgKind::Quiesced),
        "kv-1 should be quiesced first; to n1: {to_n1:?}, to n2: {:?}",
        directives_to(&state, "n2")
    );
    assert!(
        !directives_to(&state, "n2")
            .iter()
            .any(|d| d.su == "kv-2" && d.kind == MsgKind::Active(Descriptor::NotQuiesced)),
        "kv-2 must not be promoted before kv-1 is quiesced"
    );

    phase("settle: both SIs end up on n2");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(active(&st, "kv-si"), vec!["kv-2"]);
}

// ---------------------------------------------------------------------------------------------
// 5. Abrupt failover (component_failover + SU failover)
// ---------------------------------------------------------------------------------------------

fn abrupt_model() -> Model {
    let mut m = counter();
    for c in &mut m.component {
        c.recovery_on_error = ModelRecovery::ComponentFailover;
    }
    for s in &mut m.su {
        s.failover = true;
    }
    m
}

#[test]
fn failover_promotes_the_standby_in_the_same_apply() {
    let (mut state, mut clock) = start(abrupt_model());
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    let top_epoch = st.epoch;
    let inc_before = incarnation(&state, "counter-1-app");

    phase("one error on the active's component");
    let resp = fail(&mut state, &mut clock, "counter-1-app");
    assert!(done_message(&resp).contains("SU failover"), "{resp:?}");

    phase("same apply: ACTIVE (not quiesced) to the standby, nothing to the faulted SU");
    let to_n2 = directives_to(&state, "n2");
    assert_eq!(to_n2.len(), 1, "{to_n2:?}");
    let d = &to_n2[0];
    assert_eq!((d.su.as_str(), d.si.as_str()), ("counter-2", SI));
    assert_eq!(d.kind, MsgKind::Active(Descriptor::NotQuiesced));
    assert!(d.epoch > top_epoch, "epoch {} after {top_epoch}", d.epoch);
    assert!(
        directives_to(&state, "n1").is_empty(),
        "F-ABRUPT sends nothing to X"
    );
    assert!(
        incarnation(&state, "counter-1-app") > inc_before,
        "cleaned up"
    );
    let st = state.status();
    assert_eq!(su(&st, "counter-1").oper_state, "disabled");

    phase("settle: the faulted SU is repaired and comes back, 2N does not fail back");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI).len(), 1, "{:?}", si(&st, SI));
    let s1 = su(&st, "counter-1");
    assert_eq!(
        (s1.oper_state.as_str(), s1.readiness.as_str()),
        ("enabled", "in_service")
    );
    assert!(
        !si(&st, SI)
            .assignments
            .iter()
            .any(|a| a.su == "counter-1" && a.ha_state == "active"),
        "no failback"
    );
    assert_all_instantiated(&st);

    phase("history: detected, decided, confirmed");
    assert!(has_history(&st, HistoryKind::Detected, "counter-1-app"));
    assert!(has_history(
        &st,
        HistoryKind::Decided,
        "SU failover of counter-1"
    ));
    assert!(st.history.iter().any(|h| h.kind == HistoryKind::Confirmed
        && h.text.contains("active")
        && h.text.contains("counter-2")));
}

/// Acknowledges every directive to `node` (no presence reports).
fn ack_all(state: &mut AmfState, clock: &mut Clock, node: &str) -> Vec<Directive> {
    let ds = directives_to(state, node);
    for d in &ds {
        let done_at_ms = clock.time_ms;
        let cmd = AmfCommand::Ack {
            id: d.id,
            ok: true,
            reason: "".into(),
            done_at_ms,
        };
        assert_done(&apply(state, clock, cmd));
    }
    ds
}

#[test]
fn graceful_component_failover_quiesces_promotes_then_removes() {
    let mut m = counter();
    m.component
        .iter_mut()
        .find(|c| c.name == "counter-1-app")
        .expect("counter-1-app")
        .recovery_on_error = ModelRecovery::ComponentFailover;
    let (mut state, mut clock) = start(m);

    phase("error: F-GRACEFUL, batch 1 = QUIESCED to the active SU");
    let resp = fail(&mut state, &mut clock, "counter-1-app");
    assert_eq!(done_message(&resp), "component failover of counter-1");
    assert!(directives_to(&state, "n2").is_empty());
    let b1 = ack_all(&mut state, &mut clock, "n1");
    assert_eq!(b1.len(), 1);
    assert_eq!(
        (b1[0].su.as_str(), b1[0].kind),
        ("counter-1", MsgKind::Quiesced)
    );

    phase("batch 2 = ACTIVE (quiesced) to the standby");
    let b2 = ack_all(&mut state, &mut clock, "n2");
    assert_eq!(b2.len(), 1);
    assert_eq!(b2[0].kind, MsgKind::Active(Descriptor::Quiesced));
    assert!(b2[0].epoch > b1[0].epoch);

    phase("batch 3 = REMOVE to the old active");
    let b3 = ack_all(&mut state, &mut clock, "n1");
    assert_eq!(b3.len(), 1);
    assert_eq!(b3[0].kind, MsgKind::Remove);

    phase("settle: the spare becomes standby, the faulted SU is repaired as a spare");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI), vec!["counter-3"]);
    assert_eq!(su(&st, "counter-1").readiness, "in_service");
    assert_eq!(comp(&st, "counter-1-app").restarts, 1);
    assert_all_instantiated(&st);
}

// ---------------------------------------------------------------------------------------------
// 6. Node down
// ---------------------------------------------------------------------------------------------

#[test]
fn node_loss_promotes_the_standby_and_the_node_comes_back_without_failback() {
    let (mut state, mut clock) = start(counter());
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    let top_epoch = st.epoch;
    let inc_before = incarnation(&state, "counter-1-app");

    phase("n1 is down");
    state.node_down(clock.ctx(), "n1", "is down");
    let to_n2 = directives_to(&state, "n2");
    assert_eq!(to_n2.len(), 1, "{to_n2:?}");
    assert_eq!(to_n2[0].kind, MsgKind::Active(Descriptor::NotQuiesced));
    assert!(to_n2[0].epoch > top_epoch);
    assert!(incarnation(&state, "counter-1-app") > inc_before);
    let st = state.status();
    assert_eq!(comp(&st, "counter-1-app").presence, "uninstantiated");
    assert_eq!(comp(&st, "counter-1-app").pid, None);
    assert!(has_history(&st, HistoryKind::Node, "n1"));

    phase("while n1 is down: nothing should run there, the rest settles");
    settle(&mut state, &mut clock);
    for c in state.node_view("n1").components {
        assert!(!c.should_run, "{}", c.name);
    }
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(
        standby(&st, SI),
        vec!["counter-3"],
        "the spare became standby"
    );
    assert_eq!(su(&st, "counter-1").readiness, "out_of_service");

    phase("n1 comes back");
    state.sync_cluster(clock.ctx(), &all_nodes());
    assert!(state
        .node_view("n1")
        .components
        .iter()
        .all(|c| c.should_run));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"], "no failback");
    assert_eq!(standby(&st, SI), vec!["counter-3"]);
    let s1 = su(&st, "counter-1");
    assert_eq!(
        (s1.oper_state.as_str(), s1.readiness.as_str()),
        ("enabled", "in_service")
    );
    assert_all_instantiated(&st);
}

#[test]
fn losing_both_sus_unassigns_the_si_and_the_first_one_back_takes_it() {
    let (mut state, mut clock) = start(counter_pair());

    phase("n1 lost, then n2 lost");
    state.node_down(clock.ctx(), "n1", "is down");
    settle(&mut state, &mut clock);
    state.node_down(clock.ctx(), "n2", "is down");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(si(&st, SI).assignment_state, "unassigned");
    assert!(st
        .history
        .iter()
        .any(|h| h.kind == HistoryKind::Alarm && h.entity == SI && h.text.contains("raised")));
    let top_epoch = st.epoch;

    phase("n2 back: it takes the SI active (new assignment), the alarm clears");
    state.sync_cluster(clock.ctx(), &nodes(&["n2", "n3"]));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(si(&st, SI).assignment_state, "partially_assigned");
    assert!(epoch_of(&st, SI, "counter-2") > top_epoch);
    assert!(st
        .history
        .iter()
        .any(|h| h.kind == HistoryKind::Alarm && h.entity == SI && h.text.contains("cleared")));

    phase("n1 back: standby");
    state.sync_cluster(clock.ctx(), &all_nodes());
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI), vec!["counter-1"]);
}

#[test]

fn every_sg_on_a_returning_node_gets_its_su_back() {
    let (mut state, mut clock) = start(two_sgs_on_n1());
    assert_eq!(active(&state.status(), "kv-si"), vec!["kv-1"]);

    phase("n1 lost: both SGs fail over to n2");
    state.node_down(clock.ctx(), "n1", "is down");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(active(&st, "kv-si"), vec!["kv-2"]);

    phase("n1 back: both SUs on n1 come back into service");
    state.sync_cluster(clock.ctx(), &all_nodes());
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(su(&st, "counter-1").readiness, "in_service");
    assert_eq!(su(&st, "kv-1").readiness, "in_service", "{:?}", st.sus);
    assert_eq!(comp(&st, "kv-1-app").presence, "instantiated");
    assert_eq!(
        standby(&st, "kv-si"),
        vec!["kv-1"],
        "{:?}",
        si(&st, "kv-si")
    );
    assert_eq!(si(&st, "kv-si").assignment_state, "fully_assigned");
}

// ---------------------------------------------------------------------------------------------
// 7. Admin operations
// ---------------------------------------------------------------------------------------------

#[test]
fn admin_before_any_model_is_refused() {
    let mut state = AmfState::default();
    let mut clock = Clock::new();
    state.sync_cluster(clock.ctx(), &all_nodes());
    let resp = admin(
        &mut state,
        &mut clock,
        AdminOp::Lock,
        TargetKind::Su,
        "counter-1",
    );
    let AmfResponse::Refused(e) = resp else {
        panic!("expected a refusal, got {resp:?}");
    };
    assert!(e.message.contains("model"), "{e:?}");
    assert!(
        state.status().history.is_empty(),
        "a refusal records nothing"
    );
}

#[test]
fn admin_on_unknown_names_is_refused_naming_the_entity() {
    let (mut state, mut clock) = start(counter());
    let before = state.status();
    let cases = [
        (AdminOp::Lock, TargetKind::Su, "no-such-su"),
        (AdminOp::Restart, TargetKind::Su, "no-such-su"),
        (AdminOp::Repaired, TargetKind::Su, "no-such-su"),
        (AdminOp::SiSwap, TargetKind::Si, "no-such-si"),
        (AdminOp::Lock, TargetKind::Node, "n9"),
        (AdminOp::Repaired, TargetKind::Node, "n9"),
        (AdminOp::Restart, TargetKind::Component, "no-such-comp"),
    ];
    for (op, kind, target) in cases {
        let resp = admin(&mut state, &mut clock, op, kind, target);
        let AmfResponse::Refused(e) = resp else {
            panic!("{op:?} {kind:?} {target}: expected a refusal, got {resp:?}");
        };
        assert_eq!(e.code, ErrorCode::NotExist, "{op:?} {kind:?} {target}");
        assert!(e.message.contains(target), "{e:?}");
    }
    assert_eq!(state.status(), before, "refusals change nothing");
}

#[test]
fn si_swap_lock_and_unlock() {
    let (mut state, mut clock) = start(counter_pair());
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
    let (a0, s0) = (
        epoch_of(&st, SI, "counter-1"),
        epoch_of(&st, SI, "counter-2"),
    );

    phase("SI swap");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::SiSwap,
        TargetKind::Si,
        SI,
    ));
    let to_n1 = directives_to(&state, "n1");
    assert_eq!(to_n1.len(), 1);
    assert_eq!(
        to_n1[0].kind,
        MsgKind::Quiesced,
        "the active is quiesced first"
    );
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI), vec!["counter-1"]);
    let (a1, s1) = (
        epoch_of(&st, SI, "counter-2"),
        epoch_of(&st, SI, "counter-1"),
    );
    assert!(
        a1 > a0.max(s0) && s1 > a0.max(s0),
        "epochs grow: {a0} {s0} -> {a1} {s1}"
    );
    assert!(has_history(&st, HistoryKind::Admin, "si-swap"));

    phase("lock the active SU (counter-2): the SI goes back to counter-1");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::Lock,
        TargetKind::Su,
        "counter-2",
    ));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert!(standby(&st, SI).is_empty());
    assert_eq!(si(&st, SI).assignment_state, "partially_assigned");
    let s2 = su(&st, "counter-2");
    assert_eq!(
        (s2.admin_state.as_str(), s2.readiness.as_str()),
        ("locked", "out_of_service")
    );
    assert!(epoch_of(&st, SI, "counter-1") > a1.max(s1));

    phase("unlock: counter-2 comes back as standby");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::Unlock,
        TargetKind::Su,
        "counter-2",
    ));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
    assert_eq!(su(&st, "counter-2").admin_state, "unlocked");
    assert_eq!(si(&st, SI).assignment_state, "fully_assigned");
}

#[test]
fn admin_restart_of_a_component_bumps_its_incarnation() {
    let (mut state, mut clock) = start(counter());
    let inc_before = incarnations(&state);
    let pid_before = comp(&state.status(), "counter-2-app").pid;

    phase("restart counter-2-app");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::Restart,
        TargetKind::Component,
        "counter-2-app",
    ));
    let inc_now = incarnations(&state);
    for (name, inc) in &inc_before {
        let expect = if name == "counter-2-app" {
            inc + 1
        } else {
            *inc
        };
        assert_eq!(inc_now[name], expect, "{name}");
    }
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(comp(&st, "counter-2-app").restarts, 1);
    assert_ne!(comp(&st, "counter-2-app").pid, pid_before);
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
}

#[test]
fn admin_repaired_clears_the_restart_counters() {
    let (mut state, mut clock) = start(escalation_model(0));
    let c = "counter-1-app";

    phase("spend the restart budget");
    for _ in 0..2 {
        assert!(done_message(&fail(&mut state, &mut clock, c)).contains("restarts"));
        settle(&mut state, &mut clock);
    }

    phase("repaired: the counters are cleared");
    let resp = admin(
        &mut state,
        &mut clock,
        AdminOp::Repaired,
        TargetKind::Su,
        "counter-1",
    );
    assert_eq!(done_message(&resp), "counters cleared");

    phase("a following error restarts instead of escalating");
    let resp = fail(&mut state, &mut clock, c);
    assert!(done_message(&resp).contains("restarts"), "{resp:?}");
    settle(&mut state, &mut clock);
    assert_eq!(active(&state.status(), SI), vec!["counter-1"]);
}

#[test]
fn shutdown_lock_instantiation_and_back() {
    let (mut state, mut clock) = start(counter());

    phase("shutdown of the active SU: QUIESCING first, then it ends up locked");
    let resp = admin(
        &mut state,
        &mut clock,
        AdminOp::Shutdown,
        TargetKind::Su,
        "counter-1",
    );
    assert_done(&resp);
    assert_eq!(
        su(&state.status(), "counter-1").admin_state,
        "shutting_down"
    );
    let to_n1 = directives_to(&state, "n1");
    assert_eq!(to_n1.len(), 1);
    assert_eq!(to_n1[0].kind, MsgKind::Quiescing);
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(su(&st, "counter-1").admin_state, "locked");
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI), vec!["counter-3"]);

    phase("lock-instantiation: its components are terminated");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::LockInstantiation,
        TargetKind::Su,
        "counter-1",
    ));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(su(&st, "counter-1").admin_state, "locked_instantiation");
    assert_eq!(comp(&st, "counter-1-app").presence, "uninstantiated");

    phase("unlock-instantiation: instantiated again, still locked");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::UnlockInstantiation,
        TargetKind::Su,
        "counter-1",
    ));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(su(&st, "counter-1").admin_state, "locked");
    assert_eq!(comp(&st, "counter-1-app").presence, "instantiated");

    phase("unlock: in service as a spare (the SI has its standby)");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::Unlock,
        TargetKind::Su,
        "counter-1",
    ));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(su(&st, "counter-1").readiness, "in_service");
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI), vec!["counter-3"]);
}

#[test]
fn without_auto_repair_a_faulted_su_waits_for_repaired() {
    let mut m = abrupt_model();
    m.sg[0].auto_repair = false;
    let (mut state, mut clock) = start(m);

    phase("failover: the faulted SU is re-instantiated but stays disabled");
    assert_done(&fail(&mut state, &mut clock, "counter-1-app"));
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(su(&st, "counter-1").oper_state, "disabled");
    assert_eq!(comp(&st, "counter-1-app").presence, "instantiated");

    phase("repaired: enabled and in service");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::Repaired,
        TargetKind::Su,
        "counter-1",
    ));
    settle(&mut state, &mut clock);
    let st = state.status();
    let s1 = su(&st, "counter-1");
    assert_eq!(
        (s1.oper_state.as_str(), s1.readiness.as_str()),
        ("enabled", "in_service")
    );
    assert_eq!(active(&st, SI), vec!["counter-2"]);
}

// ---------------------------------------------------------------------------------------------
// 8. Presence reports
// ---------------------------------------------------------------------------------------------

#[test]
fn instantiation_failed_holds_the_component_until_repaired() {
    let (mut state, mut clock) = start(counter());
    let c = "counter-3-app";
    assert!(si(&state.status(), SI)
        .assignments
        .iter()
        .all(|a| a.su != "counter-3"));

    phase("the spare's component is restarted and fails to come up");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::Restart,
        TargetKind::Component,
        c,
    ));
    let inc = incarnation(&state, c);
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::Presence {
            component: c.into(),
            incarnation: inc,
            report: PresenceReport::InstantiationFailed {
                reason: "no registration within 10000 ms".into(),
            },
        },
    );
    assert_done(&resp);
    let st = state.status();
    assert_eq!(comp(&st, c).presence, "instantiation_failed");
    assert!(has_history(
        &st,
        HistoryKind::Detected,
        "instantiation failed"
    ));

    phase("it is not started again; the SI is untouched");
    settle(&mut state, &mut clock);
    let plan = state
        .node_view("n3")
        .components
        .into_iter()
        .find(|p| p.name == c)
        .expect("plan");
    assert!(!plan.should_run);
    let st = state.status();
    assert_eq!(comp(&st, c).presence, "instantiation_failed");
    assert_eq!(su(&st, "counter-3").oper_state, "disabled");
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);

    phase("repaired: started again and back in service as a spare");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::Repaired,
        TargetKind::Su,
        "counter-3",
    ));
    assert!(incarnation(&state, c) > inc);
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(comp(&st, c).presence, "instantiated");
    let s3 = su(&st, "counter-3");
    assert_eq!(
        (s3.oper_state.as_str(), s3.readiness.as_str()),
        ("enabled", "in_service")
    );
    assert_eq!(active(&st, SI), vec!["counter-1"]);
    assert_eq!(standby(&st, SI), vec!["counter-2"]);
}

#[test]
fn termination_failed_fails_the_node_over() {
    let (mut state, mut clock) = start(counter());
    let top_epoch = state.status().epoch;
    let c = "counter-1-app";

    phase("cleanup of the active's component fails");
    let inc = incarnation(&state, c);
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::Presence {
            component: c.into(),
            incarnation: inc,
            report: PresenceReport::TerminationFailed {
                reason: "process group survived SIGKILL".into(),
            },
        },
    );
    assert_done(&resp);

    phase("same apply: the standby on n2 is made active");
    let to_n2 = directives_to(&state, "n2");
    assert_eq!(to_n2.len(), 1, "{to_n2:?}");
    assert_eq!(to_n2[0].kind, MsgKind::Active(Descriptor::NotQuiesced));
    assert!(to_n2[0].epoch > top_epoch);
    assert!(has_history(
        &state.status(),
        HistoryKind::Decided,
        "fails fast"
    ));

    phase("settle: the SI stays on counter-2");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI).len(), 1, "{:?}", si(&st, SI));
}

#[test]
fn an_instantiation_failure_at_start_places_on_the_other_sus() {
    let mut state = AmfState::default();
    let mut clock = Clock::new();
    state.sync_cluster(clock.ctx(), &all_nodes());
    let resp = apply(
        &mut state,
        &mut clock,
        AmfCommand::ApplyModel {
            model: Box::new(counter()),
        },
    );
    assert!(matches!(resp, AmfResponse::ModelApplied { .. }), "{resp:?}");

    phase("the rank-1 SU's component fails to start");
    let inc = incarnation(&state, "counter-1-app");
    assert_done(&apply(
        &mut state,
        &mut clock,
        AmfCommand::Presence {
            component: "counter-1-app".into(),
            incarnation: inc,
            report: PresenceReport::InstantiationFailed {
                reason: "exit status 127".into(),
            },
        },
    ));

    phase("the SG starts on the others");
    settle(&mut state, &mut clock);
    let st = state.status();
    assert_eq!(active(&st, SI), vec!["counter-2"]);
    assert_eq!(standby(&st, SI), vec!["counter-3"]);
    assert_eq!(su(&st, "counter-1").oper_state, "disabled");
    assert_eq!(comp(&st, "counter-1-app").presence, "instantiation_failed");
}

// ---------------------------------------------------------------------------------------------
// 9. Snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_round_trip_keeps_the_status() {
    let (mut state, mut clock) = start(escalation_model(0));

    phase("a few operations: a restart, a lost node, a swap left in flight");
    assert_done(&fail(&mut state, &mut clock, "counter-1-app"));
    settle(&mut state, &mut clock);
    state.node_down(clock.ctx(), "n3", "is down");
    assert_done(&admin(
        &mut state,
        &mut clock,
        AdminOp::SiSwap,
        TargetKind::Si,
        SI,
    ));
    assert!(!state.directives.is_empty(), "a directive in flight");
    assert!(!state.status().history.is_empty());

    phase("serialize, deserialize, compare");
    let bytes = postcard::to_allocvec(&state).expect("serialize");
    let back: AmfState = postcard::from_bytes(&bytes).expect("deserialize");
    assert_eq!(back.status(), state.status());
    for node in ["n1", "n2", "n3"] {
        assert_eq!(back.node_view(node), state.node_view(node), "{node}");
    }
    assert_eq!(back.epoch, state.epoch);
    assert_eq!(back.cluster_up, state.cluster_up);

    phase("both copies go on the same way");
    let mut a = state;
    let mut b = back;
    let mut clock_b = clock.clone();
    settle(&mut a, &mut clock);
    settle(&mut b, &mut clock_b);
    assert_eq!(a.status(), b.status());
    assert_eq!(active(&a.status(), SI), vec!["counter-2"]);
}
