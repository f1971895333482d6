//! Hostile model text: `Model::parse` and `Model::validate` return a model or errors naming the
//! problem, and never panic (nor overflow the stack), for any text and for deploy/local/model.toml
//! mutated line by line (lines dropped, duplicated, inserted, values replaced with arbitrary
//! ones). What the agent then does with a valid model (diff against the current one, the
//! policy's per-SG view) must not panic either.
//!
//! Cases per property: 256 by default; `PROPTEST_CASES=100000` for a long run.

use nines_amf::model::{Model, ModelErrors};
use proptest::prelude::*;

/// The model the local cluster runs.
const LOCAL_MODEL: &str = include_str!("../../deploy/local/model.toml");

/// The agent refuses bigger model text before parsing it (`nines_agent::amf_service`).
const MODEL_BYTES_MAX: usize = 1024 * 1024;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Parse and validate `text` as the agent does; errors must name something. Returns whether the
/// model is valid.
fn check(text: &str) -> bool {
    let errors = |e: ModelErrors| {
        assert!(!e.0.is_empty(), "an Err with no problem in it");
        for problem in &e.0 {
            assert!(!problem.problem.is_empty(), "{e}");
        }
        false
    };
    let model = match Model::parse(text, "props.toml") {
        Ok(m) => m,
        Err(e) => return errors(e),
    };
    if let Err(e) = model.validate() {
        return errors(e);
    }
    let base = Model::parse(LOCAL_MODEL, "model.toml").expect("the local model parses");
    let _ = (base.diff(&model).lines(), model.diff(&base).lines());
    for sg in model.sg_names() {
        let _ = model.sg_config(sg);
    }
    for su in &model.su {
        for si in &model.si {
            let _ = model.csi_targets(&su.name, &si.name);
        }
    }
    true
}

/// A TOML value of any type, with numbers at the bounds the validation checks.
fn toml_value() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            -1,
            0,
            1,
            19,
            20,
            i64::from(u32::MAX),
            i64::from(u32::MAX) + 1,
            86_400_000,
            86_400_001,
            i64::MAX,
        ]),
        any::<i64>(),
    ];
    let text = prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "\0",
            "2N",
            "NoRed",
            "NpM",
            "NWay",
            "NWayActive",
            "n1",
            "n9",
            "counter",
            "counter-1",
            "counter-si",
            "a=b",
            "component_failover",
            "node_failfast",
        ])
        .prop_map(String::from),
        Just("x".repeat(5_000)),
        any::<String>(),
    ];
    prop_oneof![
        3 => number.prop_map(|n| n.to_string()),
        3 => text.prop_map(|s| toml::Value::String(s).to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        1 => prop::sample::select(vec![
            "[]", "{}", "[\"a\", \"b\"]", "{ a = \"b\" }", "[{ su = \"counter-1\", rank = 1 }]",
        ])
        .prop_map(String::from),
    ]
}

/// A whole line: a table header, a key, or noise.
fn toml_line() -> impl Strategy<Value = String> {
    let header = prop::sample::select(vec![
        "[[node]]",
        "[[sg]]",
        "[[su]]",
        "[[component]]",
        "[[si]]",
        "[[csi]]",
        "[[dependency]]",
        "[node]",
        "[[bogus]]",
        "[component.env]",
        "[csi.attributes]",
    ]);
    let key = prop::sample::select(vec![
        "name",
        "sg",
        "su",
        "node",
        "si",
        "rank",
        "redundancy",
        "instantiate",
        "cs_type",
        "cs_types",
        "watchdog_ms",
        "sponsor",
        "dependent",
        "tolerance_ms",
        "ranked_su",
        "env",
        "attributes",
        "recovery_on_error",
        "healthcheck_period_ms",
        "failover",
    ]);
    prop_oneof![
        header.prop_map(String::from),
        (key, toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        any::<String>(),
    ]
}

/// Mutate `text` line by line: drop, duplicate, replace a value, or insert a line.
fn mutate(text: &str, ops: &[(u8, usize, String, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for (op, at, value, line) in ops {
        if lines.is_empty() {
            lines.push(line.clone());
            continue;
        }
        let i = at % lines.len();
        match op % 4 {
            0 => {
                lines.remove(i);
            }
            1 => {
                let dup = lines[i].clone();
                lines.insert(i, dup);
            }
            2 => match lines[i].split_once(" = ") {
                Some((key, _)) => lines[i] = format!("{key} = {value}"),
                None => lines.insert(i, line.clone()),
            },
            _ => lines.insert(i, line.clone()),
        }
    }
    lines.join("\n")
}

#[test]
fn the_local_model_is_valid() {
    assert!(check(LOCAL_MODEL));
}

/// Found while writing these properties: a chain of SI dependencies as long as the agent's size
/// limit allows (about 14,000 SIs). The cycle search walked it recursively, a stack frame per SI,
/// and overflowed the stack: an abort of the whole process, not even a panic. Now it walks an
/// explicit stack, and the model is refused for its count.
#[test]
fn a_long_dependency_chain_is_refused_without_overflowing_the_stack() {
    let mut text = String::from(
        "[[node]]\nname = \"n\"\n[[sg]]\nname = \"g\"\nredundancy = \"NoRed\"\n\
         [[su]]\nname = \"u\"\nsg = \"g\"\nnode = \"n\"\n\
         [[component]]\nname = \"c\"\nsu = \"u\"\ninstantiate = \"x\"\n",
    );
    let mut i = 0;
    while text.len() < MODEL_BYTES_MAX - 200 {
        text.push_str(&format!(
            "[[si]]\nname = \"s{i}\"\nsg = \"g\"\n[[dependency]]\nsponsor = \"s{i}\"\n\
             dependent = \"s{}\"\n",
            i + 1
        ));
        i += 1;
    }
    let model = Model::parse(&text, "chain.toml").expect("parses");
    let e = model.validate().expect_err("too many dependencies");
    assert!(e.to_string().contains("[[dependency]] entries"), "{e}");
    // A cycle in it is still found.
    let looped = text.replacen("dependent = \"s1\"\n", "dependent = \"s0\"\n", 1);
    let e = Model::parse(&looped, "loop.toml")
        .expect("parses")
        .validate()
        .expect_err("a cycle");
    assert!(e.to_string().contains("is a cycle"), "{e}");
}

/// Nesting as deep as the size limit allows, in arrays and inline tables: the TOML parser's
/// depth limit refuses it (a recursive parser without one would overflow the stack).
#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for open in ["[", "{ a = "] {
        let text = format!("x = {}", open.repeat((MODEL_BYTES_MAX - 10) / open.len()));
        assert!(!check(&text));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn toml_like_text_never_panics(
        lines in prop::collection::vec(toml_line(), 0..40),
    ) {
        check(&lines.join("\n"));
    }

    #[test]
    fn the_local_model_mutated_never_panics(
        ops in prop::collection::vec(
            (any::<u8>(), any::<usize>(), toml_value(), toml_line()),
            1..8,
        ),
    ) {
        check(&mutate(LOCAL_MODEL, &ops));
    }
}
