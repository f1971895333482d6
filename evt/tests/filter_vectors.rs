//! Data-driven tests of filter matching and the CLI filter syntax.
//!
//! Every `testdata/filters/*.toml` file holds `[[case]]`s (filters × patterns → matches?) and
//! `[[parse]]`s (CLI text → filter or error); `testdata/filters/README.md` describes the format.
//! Beyond each case, the runner checks that parsed filters print back to equivalent text, and
//! that the files together show every kind both matching and not matching.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nines_evt::{matches, Filter, FilterKind, FilterParseError, Pattern};
use serde::Deserialize;

/// One data file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    /// What the file shows.
    #[allow(dead_code)]
    about: String,
    /// Matching cases.
    #[serde(default)]
    case: Vec<Case>,
    /// Parsing cases.
    #[serde(default)]
    parse: Vec<ParseCase>,
}

/// Does this filter array match this pattern array?
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What it shows.
    note: String,
    /// The filter array.
    filters: Vec<FilterSpec>,
    /// The event's pattern array.
    patterns: Vec<PatternSpec>,
    /// The expected answer.
    matches: bool,
}

/// A filter as CLI text or as a table with raw bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FilterSpec {
    /// `Filter::parse` syntax.
    Text(String),
    /// `{ kind, value | hex, name? }`.
    Table {
        kind: String,
        value: Option<String>,
        hex: Option<String>,
        name: Option<String>,
    },
}

/// A pattern as `[name, value]` or a table with raw bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PatternSpec {
    /// `[name, value]`.
    Pair(String, String),
    /// `{ name, value | hex }`.
    Table {
        name: String,
        value: Option<String>,
        hex: Option<String>,
    },
}

/// What CLI text parses to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParseCase {
    /// The text.
    text: String,
    /// Expected kind, name and pattern on success.
    kind: Option<String>,
    name: Option<String>,
    pattern: Option<String>,
    /// Expected `FilterParseError` variant name on failure.
    error: Option<String>,
}

fn hex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII hex");
            assert_eq!(pair.len(), 2, "odd-length hex '{text}'");
            u8::from_str_radix(pair, 16).expect("hex digits")
        })
        .collect()
}

fn bytes(value: &Option<String>, hex_text: &Option<String>) -> Vec<u8> {
    match (value, hex_text) {
        (Some(v), None) => v.as_bytes().to_vec(),
        (None, Some(h)) => hex(h),
        _ => panic!("give exactly one of value and hex"),
    }
}

fn kind(text: &str) -> FilterKind {
    match text {
        "prefix" => FilterKind::Prefix,
        "suffix" => FilterKind::Suffix,
        "exact" => FilterKind::Exact,
        "all" => FilterKind::PassAll,
        other => panic!("unknown kind '{other}' in a vector"),
    }
}

impl FilterSpec {
    fn build(&self) -> Filter {
        match self {
            FilterSpec::Text(text) => Filter::parse(text).expect("vector filter text parses"),
            FilterSpec::Table {
                kind: k,
                value,
                hex,
                name,
            } => {
                let filter = Filter::new(kind(k), bytes(value, hex));
                match name {
                    Some(name) => filter.named(name.as_bytes()),
                    None => filter,
                }
            }
        }
    }
}

impl PatternSpec {
    fn build(&self) -> Pattern {
        match self {
            PatternSpec::Pair(name, value) => Pattern::new(name.as_bytes(), value.as_bytes()),
            PatternSpec::Table { name, value, hex } => {
                Pattern::new(name.as_bytes(), bytes(value, hex))
            }
        }
    }
}

fn error_name(e: &FilterParseError) -> &'static str {
    match e {
        FilterParseError::MissingColon(_) => "MissingColon",
        FilterParseError::UnknownKind(_) => "UnknownKind",
        FilterParseError::MissingEquals(_) => "MissingEquals",
        FilterParseError::PassAllWithValue(_) => "PassAllWithValue",
    }
}

fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/filters");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("testdata/filters exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no filter vectors in {}", dir.display());
    files
}

/// Check one parse case; returns the kinds of filters it produced.
fn check_parse(file: &str, case: &ParseCase) {
    let got = Filter::parse(&case.text);
    let at = format!("{file}: parse '{}'", case.text);
    match (&case.error, got) {
        (Some(want), Err(e)) => {
            assert_eq!(error_name(&e), want, "{at}: error {e}");
            assert!(
                e.to_string().contains(&case.text),
                "{at}: message names the text: {e}"
            );
        }
        (Some(want), Ok(f)) => panic!("{at}: want error {want}, got {f:?}"),
        (None, Err(e)) => panic!("{at}: want a filter, got {e}"),
        (None, Ok(f)) => {
            assert_eq!(Some(f.kind), case.kind.as_deref().map(kind), "{at}: kind");
            let name = case.name.as_deref().unwrap_or_default().as_bytes();
            assert_eq!(f.name, name, "{at}: name");
            let pattern = case.pattern.as_deref().unwrap_or_default().as_bytes();
            assert_eq!(f.pattern, pattern, "{at}: pattern");
            let printed = f.to_string();
            assert_eq!(
                Filter::parse(&printed).as_ref(),
                Ok(&f),
                "{at}: reprint '{printed}'"
            );
        }
    }
}

#[test]
fn filter_vectors() {
    let mut seen = BTreeSet::new();
    let (mut cases, mut parses) = (0, 0);
    for path in vector_files() {
        let file = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        let text = fs::read_to_string(&path).expect("readable vector");
        let vector: Vector = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for case in &vector.case {
            let filters: Vec<Filter> = case.filters.iter().map(FilterSpec::build).collect();
            let patterns: Vec<Pattern> = case.patterns.iter().map(PatternSpec::build).collect();
            let got = matches(&filters, &patterns);
            assert_eq!(got, case.matches, "{file}: {}", case.note);
            for f in &filters {
                seen.insert((f.kind.as_str(), case.matches));
            }
            cases += 1;
        }
        for case in &vector.parse {
            check_parse(&file, case);
            parses += 1;
        }
    }
    for kind in ["prefix", "suffix", "exact", "all"] {
        assert!(
            seen.contains(&(kind, true)),
            "no vector shows {kind} matching"
        );
        if kind != "all" {
            assert!(
                seen.contains(&(kind, false)),
                "no vector shows {kind} not matching"
            );
        }
    }
    assert!(
        cases >= 40 && parses >= 15,
        "only {cases} cases and {parses} parses ran"
    );
}
