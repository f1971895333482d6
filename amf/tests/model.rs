//! The entity model: parse, validate (every error, each naming its entity), the policy view,
//! lookups and diff. Story: start from the example model in testdata, break it one way at a
//! time, then several ways at once.

use nines_amf::model::{limits, Model, ModelErrors, Recovery, SiDependency};
use nines_amf::policy::RedundancyModel;

fn counter() -> Model {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/models/counter.toml");
    let text = std::fs::read_to_string(path).expect("read counter.toml");
    Model::parse(&text, "counter.toml").expect("counter.toml parses")
}

/// Validates `m`, expecting errors; returns them.
fn errors(m: &Model) -> ModelErrors {
    m.validate().expect_err("the model should be refused")
}

/// Asserts that `errs` has an error of `entity` whose problem contains `needle`.
fn assert_has(errs: &ModelErrors, entity: &str, needle: &str) {
    assert!(
        errs.0
            .iter()
            .any(|e| e.entity == entity && e.problem.contains(needle)),
        "expected an error of `{entity}` containing `{needle}`; got:\n{errs}"
    );
}

#[test]
fn example_model_parses_and_validates() {
    let m = counter();
    m.validate()
        .unwrap_or_else(|e| panic!("counter.toml is valid, got:\n{e}"));
    assert_eq!(m.sg_names(), vec!["counter"]);
    let sg = &m.sg[0];
    assert_eq!(sg.redundancy, RedundancyModel::TwoN);
    assert!(sg.auto_repair && !sg.auto_adjust);
    assert_eq!(m.node("n1").expect("n1").su_failover_max, 10, "default");
    assert_eq!(m.node("n3").expect("n3").su_failover_max, 5);
    let c = m.component("counter-1-app").expect("component");
    assert_eq!(c.instantiate_timeout_ms, 10_000);
    assert_eq!(c.healthcheck_timeout_ms, 1_000);
    assert_eq!(c.recovery_on_error, Recovery::ComponentRestart);
    assert_eq!(m.su("counter-2").expect("su").node, "n2");
    assert_eq!(m.sus_on_node("n3").len(), 1);
    assert_eq!(m.components_of_su("counter-3").len(), 1);
    assert_eq!(m.csis_of_si("counter-si")[0].attributes["PORT"], "9000");
}

#[test]
fn sg_config_is_the_policy_view() {
    let m = counter();
    let cfg = m.sg_config("counter");
    assert_eq!(cfg.model, RedundancyModel::TwoN);
    let sus: Vec<(&str, &str, u32)> = cfg
        .sus
        .iter()
        .map(|s| (s.name.as_str(), s.node.as_str(), s.rank))
        .collect();
    assert_eq!(
        sus,
        vec![
            ("counter-1", "n1", 1),
            ("counter-2", "n2", 2),
            ("counter-3", "n3", 3)
        ]
    );
    assert!(cfg.sus.iter().all(|s| s.preinstantiable && !s.failover));
    assert_eq!(cfg.sis.len(), 1);
    assert_eq!(cfg.sis[0].name, "counter-si");
    assert_eq!(cfg.pref_inservice_sus, 0);
    assert!(cfg.dependencies.is_empty());
}

#[test]
fn csi_targets_follow_cs_types() {
    let mut m = counter();
    // A second component on counter-1 that takes only "log" CSIs, and a CSI with no cs_type.
    let mut logger = m.component("counter-1-app").expect("component").clone();
    logger.name = "counter-1-log".into();
    logger.cs_types = vec!["log".into()];
    m.component.push(logger);
    let mut any = m.csi[0].clone();
    any.name = "counter-any".into();
    any.cs_type = None;
    m.csi.push(any);
    let targets: Vec<(&str, &str)> = m
        .csi_targets("counter-1", "counter-si")
        .into_iter()
        .map(|(c, csi)| (c.name.as_str(), csi.name.as_str()))
        .collect();
    assert_eq!(
        targets,
        vec![
            ("counter-1-app", "counter-csi"),
            ("counter-1-app", "counter-any"),
            ("counter-1-log", "counter-any"),
        ]
    );
    // counter-3-app has no cs_types: it takes every CSI.
    assert_eq!(m.csi_targets("counter-3", "counter-si").len(), 2);
}

#[test]
fn syntax_errors_name_the_file_line_and_column() {
    let errs =
        Model::parse("[[node]]\nname = \"n1\"\nbogus = = 3\n", "bad.toml").expect_err("syntax");
    assert_eq!(errs.0.len(), 1);
    assert_eq!(errs.0[0].entity, "bad.toml");
    assert!(errs.0[0].problem.starts_with("line 3, column "), "{errs}");
}

#[test]
fn unknown_fields_and_models_are_refused_at_parse() {
    let errs =
        Model::parse("[[node]]\nname = \"n1\"\ncolour = \"red\"\n", "f.toml").expect_err("field");
    assert!(errs.to_string().contains("colour"), "{errs}");
    assert!(errs.0[0].problem.starts_with("line 3"), "{errs}");
    let errs =
        Model::parse("[[sg]]\nname = \"g\"\nredundancy = \"3N\"\n", "f.toml").expect_err("model");
    assert!(errs.0[0].problem.starts_with("line 3"), "{errs}");
}

#[test]
fn unsupported_redundancy_models_parse_but_do_not_validate() {
    for (name, model) in [
        ("NpM", RedundancyModel::NPlusM),
        ("NWay", RedundancyModel::NWay),
        ("NWayActive", RedundancyModel::NWayActive),
    ] {
        let text = format!("[[sg]]\nname = \"g\"\nredundancy = \"{name}\"\n");
        let m = Model::parse(&text, "f.toml").expect("parses");
        assert_eq!(m.sg[0].redundancy, model);
        assert_has(&errors(&m), "sg g", "not supported yet");
    }
}

#[test]
fn duplicates_and_bad_names() {
    let mut m = counter();
    m.node.push(m.node[0].clone());
    m.component.push(m.component[0].clone());
    m.su[2].name = "counter 3".into();
    m.si[0].name = String::new();
    m.csi[0].name = "x".repeat(limits::NAME_BYTES_MAX + 1);
    let errs = errors(&m);
    assert_has(&errs, "node n1", "defined more than once");
    assert_has(&errs, "component counter-1-app", "defined more than once");
    assert_has(&errs, "su \"counter 3\"", "whitespace");
    assert_has(&errs, "si \"\"", "empty name");
    assert!(
        errs.0
            .iter()
            .any(|e| e.problem.contains("longer than 64 bytes")),
        "{errs}"
    );
}

#[test]
fn unknown_references() {
    let mut m = counter();
    m.su[0].node = "n9".into();
    m.su[1].sg = "nosuch".into();
    m.component[2].su = "ghost".into();
    m.csi[0].si = "nosi".into();
    let errs = errors(&m);
    assert_has(
        &errs,
        "su counter-1",
        "node n9 is not a [[node]] of the model",
    );
    assert_has(&errs, "su counter-2", "sg nosuch is not a [[sg]]");
    assert_has(&errs, "component counter-3-app", "su ghost is not a [[su]]");
    assert_has(&errs, "su counter-3", "has no [[component]]");
    assert_has(&errs, "csi counter-csi", "si nosi is not a [[si]]");
    assert_has(&errs, "si counter-si", "has no [[csi]]");
    assert_eq!(
        errs.to_string().lines().next(),
        Some("su counter-1: node n9 is not a [[node]] of the model"),
        "Display is one error per line, `entity: problem`"
    );
    assert_eq!(errs.to_string().lines().count(), errs.0.len());
}

#[test]
fn sg_shape() {
    let mut m = counter();
    m.su.retain(|s| s.name == "counter-1");
    m.component.retain(|c| c.su == "counter-1");
    m.sg.push(m.sg[0].clone());
    m.sg[1].name = "empty".into();
    let errs = errors(&m);
    assert_has(
        &errs,
        "sg counter",
        "redundancy 2N needs at least 2 SUs, has 1",
    );
    assert_has(&errs, "sg empty", "has no [[su]]");
}

#[test]
fn csi_that_no_component_takes() {
    let mut m = counter();
    m.component[1].cs_types = vec!["other".into()];
    let errs = errors(&m);
    assert_has(
        &errs,
        "csi counter-csi",
        "no component of su counter-2 takes cs_type counter",
    );
    assert_eq!(errs.0.len(), 1, "{errs}");
}

#[test]
fn commands_timeouts_and_limits() {
    let mut m = counter();
    let c = &mut m.component[0];
    c.instantiate = "   ".into();
    c.callback_timeout_ms = 0;
    c.healthcheck_timeout_ms = 0; // healthcheck_period_ms is 2000 in the example
    m.component[1].healthcheck_timeout_ms = 0; // fine: no healthcheck
    m.sg[0].comp_restart_prob_ms = 0;
    for i in 0..=limits::ATTRIBUTES_MAX {
        m.csi[0].attributes.insert(format!("K{i}"), "v".into());
    }
    let errs = errors(&m);
    assert_has(
        &errs,
        "component counter-1-app",
        "instantiate command is empty",
    );
    assert_has(&errs, "component counter-1-app", "callback_timeout_ms is 0");
    assert_has(
        &errs,
        "component counter-1-app",
        "healthcheck_timeout_ms is 0",
    );
    assert_has(&errs, "sg counter", "comp_restart_prob_ms is 0");
    assert_has(&errs, "csi counter-csi", "more than the limit of 64");
    assert!(
        !errs.0.iter().any(|e| e.entity == "component counter-2-app"),
        "{errs}"
    );
}

#[test]
fn count_limits() {
    let mut m = counter();
    for i in 0..limits::NODES_MAX {
        let mut n = m.node[0].clone();
        n.name = format!("extra-{i}");
        m.node.push(n);
    }
    assert_has(
        &errors(&m),
        "model",
        "[[node]] entries, more than the limit of 64",
    );
}

fn with_second_si(m: &mut Model, name: &str, rank: u32) {
    let mut si = m.si[0].clone();
    si.name = name.into();
    si.rank = rank;
    m.si.push(si);
    let mut csi = m.csi[0].clone();
    csi.name = format!("{name}-csi");
    csi.si = name.into();
    m.csi.push(csi);
}

#[test]
fn dependencies() {
    let mut m = counter();
    with_second_si(&mut m, "b", 2);
    with_second_si(&mut m, "c", 3);
    let dep = |s: &str, d: &str| SiDependency {
        sponsor: s.into(),
        dependent: d.into(),
        tolerance_ms: 0,
    };
    m.dependency = vec![dep("counter-si", "b")];
    m.validate()
        .unwrap_or_else(|e| panic!("a valid dependency, got:\n{e}"));
    assert_eq!(m.sg_config("counter").dependencies.len(), 1);

    m.dependency = vec![dep("b", "c"), dep("c", "b"), dep("counter-si", "nosuch")];
    let errs = errors(&m);
    assert_has(&errs, "dependency b -> c -> b", "is a cycle");
    assert_has(
        &errs,
        "dependency counter-si -> nosuch",
        "dependent nosuch is not a [[si]]",
    );
    assert_has(&errs, "dependency c -> b", "ranks before its sponsor");
}

#[test]
fn several_errors_are_all_reported() {
    let mut m = counter();
    m.su[0].node = "n9".into();
    m.component[1].instantiate = String::new();
    m.si[0].sg = "nosuch".into();
    m.node.push(m.node[1].clone());
    let errs = errors(&m);
    assert_has(&errs, "su counter-1", "node n9");
    assert_has(
        &errs,
        "component counter-2-app",
        "instantiate command is empty",
    );
    assert_has(&errs, "si counter-si", "sg nosuch");
    assert_has(&errs, "node n2", "defined more than once");
    assert!(errs.0.len() >= 4, "{errs}");
}

#[test]
fn diff_lists_added_removed_changed() {
    let old = counter();
    assert!(
        old.diff(&old.clone()).is_empty(),
        "equal models give an empty diff"
    );

    let mut new = old.clone();
    new.component[0].instantiate = "counter-app --v2".into();
    new.su.retain(|s| s.name != "counter-3");
    new.component.retain(|c| c.su != "counter-3");
    let mut n4 = new.node[0].clone();
    n4.name = "n4".into();
    new.node.push(n4);
    new.dependency.push(SiDependency {
        sponsor: "a".into(),
        dependent: "b".into(),
        tolerance_ms: 5,
    });
    let d = old.diff(&new);
    assert!(!d.is_empty());
    assert_eq!(d.components.changed, vec!["counter-1-app"]);
    assert_eq!(d.components.removed, vec!["counter-3-app"]);
    assert_eq!(d.sus.removed, vec!["counter-3"]);
    assert_eq!(d.nodes.added, vec!["n4"]);
    assert_eq!(d.dependencies.added, vec!["a -> b"]);
    assert!(d.sgs.is_empty() && d.sis.is_empty() && d.csis.is_empty());
    let back = new.diff(&old);
    assert_eq!(back.sus.added, vec!["counter-3"]);
}

#[test]
fn model_round_trips_through_serde() {
    let m = counter();
    let text = toml::to_string(&m).expect("serialize");
    let again = Model::parse(&text, "round-trip").expect("parse again");
    assert_eq!(m, again);
}
