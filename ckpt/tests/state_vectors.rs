//! Data-driven tests of the checkpoint state machine.
//!
//! Every `testdata/*.toml` file is one story: `[[step]]`s applied in order to a fresh
//! [`CkptState`]. A step may apply a command (`cmd`, with the expected outcome `expect`) and/or
//! check queries afterwards. `testdata/README.md` describes the format.
//!
//! Beyond what each step states, the runner checks on every step that
//! - a refused command changed nothing but the expiry every `apply` does first (it compares
//!   with a copy that applied `Expire` at the same time stamp), and
//! - the state round-trips through postcard to an identical state; the story then continues on
//!   the restored copy, so every later expectation also holds for a restored state.
//!
//! Finally it checks that the files together exercise every command with every outcome the
//! service defines for it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nines_ckpt::limits::defaults;
use nines_ckpt::{
    Attributes, CkptCommand, CkptResponse, CkptState, SectionRead, SectionWrite, UpdateMode,
    WriteKind,
};
use nines_consensus::ApplyContext;
use serde::Deserialize;

// ---- The file format -------------------------------------------------------------------------

/// One data file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    /// What the story shows.
    #[allow(dead_code)]
    about: String,
    /// The steps, in order.
    step: Vec<Step>,
}

/// One step: an optional command with its expected outcome, then optional query checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// What this step shows (printed on failure).
    note: Option<String>,
    /// The entry's time stamp; default: the previous step's.
    time_ms: Option<u64>,
    /// The entry's log index; default: the previous command's + 1 (the first is 1).
    index: Option<u64>,
    /// The command.
    cmd: Option<Cmd>,
    /// "ok" or an `ErrorCode` variant name (e.g. "NotExist"); required with `cmd`.
    expect: Option<String>,
    /// A substring the error message must contain.
    message: Option<String>,
    /// Expected `Opened.handle`.
    handle: Option<u64>,
    /// Expected `Opened.created`.
    created: Option<bool>,
    /// Expected `SectionCreated.section`.
    section: Option<Text>,
    /// Expected `Expired` counts.
    expired: Option<ExpiredCheck>,
    /// Checkpoint statuses to check.
    #[serde(default)]
    status: Vec<StatusCheck>,
    /// Checkpoints that must not exist.
    #[serde(default)]
    missing: Vec<Text>,
    /// Section reads to check.
    #[serde(default)]
    read: Vec<ReadCheck>,
    /// Section listings to check.
    #[serde(default)]
    sections: Vec<SectionsCheck>,
    /// Per-section details to check.
    #[serde(default)]
    section_info: Vec<SectionInfoCheck>,
    /// Every checkpoint's name, in order.
    list: Option<Vec<Text>>,
    /// `next_deadline_ms()`, 0 = none.
    next_deadline_ms: Option<u64>,
}

/// A command, TOML-friendly: `{ op = "open", name = "a", ... }`, data as text.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Cmd {
    Open {
        name: Text,
        create: Option<Attrs>,
    },
    Close {
        handle: u64,
    },
    Unlink {
        name: String,
    },
    CreateSection {
        ckpt: String,
        section: Option<Text>,
        data: Option<Text>,
        #[serde(default)]
        expires_at_ms: u64,
        #[serde(default)]
        epoch: u64,
    },
    DeleteSection {
        ckpt: String,
        section: String,
        #[serde(default)]
        epoch: u64,
    },
    Write {
        ckpt: String,
        writes: Vec<Write>,
        #[serde(default)]
        epoch: u64,
    },
    SetExpiration {
        ckpt: String,
        section: String,
        expires_at_ms: u64,
        #[serde(default)]
        epoch: u64,
    },
    Expire,
}

/// Creation attributes; left-out ones take the service defaults (retention 0, sync).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    update_mode: Option<UpdateMode>,
    sections_max: Option<u32>,
    section_size_max: Option<u64>,
    checkpoint_size_max: Option<u64>,
    #[serde(default)]
    retention_ms: u64,
}

/// One section write; `times` repeats it (for the per-call limit).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Write {
    section: Text,
    kind: Kind,
    #[serde(default)]
    offset: u64,
    data: Text,
    times: Option<usize>,
}

/// [`WriteKind`], in lower case.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Write,
    Overwrite,
    Upsert,
}

/// Text: a plain string, or `{ fill = "x", len = 4194304 }` for long ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Text {
    Plain(String),
    Fill { fill: String, len: usize },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiredCheck {
    checkpoints: u32,
    sections: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusCheck {
    name: Text,
    attributes: Option<Attrs>,
    sections_used: Option<u32>,
    bytes_used: Option<u64>,
    open_handles: Option<u32>,
    max_epoch: Option<u64>,
    retention_deadline_ms: Option<u64>,
}

/// `read` of one range; expects `data` (default "") or the error `expect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadCheck {
    ckpt: String,
    section: String,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    len: u64,
    data: Option<Text>,
    expect: Option<String>,
}

/// `sections` of a checkpoint; expects `ids` or the error `expect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionsCheck {
    ckpt: String,
    expiring_before_ms: Option<u64>,
    ids: Option<Vec<Text>>,
    expect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionInfoCheck {
    ckpt: String,
    section: String,
    size: Option<u64>,
    expires_at_ms: Option<u64>,
    last_update_index: Option<u64>,
}

impl Text {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Text::Plain(s) => s.clone().into_bytes(),
            Text::Fill { fill, len } => {
                assert!(!fill.is_empty(), "fill text must not be empty");
                let mut bytes = fill.repeat(len / fill.len() + 1).into_bytes();
                bytes.truncate(*len);
                bytes
            }
        }
    }

    fn string(&self) -> String {
        String::from_utf8(self.bytes()).expect("fill text is cut on a char boundary")
    }
}

impl Attrs {
    fn to_attributes(&self) -> Attributes {
        Attributes {
            update_mode: self.update_mode.unwrap_or(UpdateMode::Sync),
            sections_max: self.sections_max.unwrap_or(defaults::SECTIONS_MAX),
            section_size_max: self.section_size_max.unwrap_or(defaults::SECTION_SIZE_MAX),
            checkpoint_size_max: self
                .checkpoint_size_max
                .unwrap_or(defaults::CHECKPOINT_SIZE_MAX),
            retention_ms: self.retention_ms,
        }
    }
}

impl Cmd {
    /// The command's name, for the coverage check.
    fn op(&self) -> &'static str {
        match self {
            Cmd::Open { .. } => "open",
            Cmd::Close { .. } => "close",
            Cmd::Unlink { .. } => "unlink",
            Cmd::CreateSection { .. } => "create_section",
            Cmd::DeleteSection { .. } => "delete_section",
            Cmd::Write { .. } => "write",
            Cmd::SetExpiration { .. } => "set_expiration",
            Cmd::Expire => "expire",
        }
    }

    fn to_command(&self) -> CkptCommand {
        match self {
            Cmd::Open { name, create } => CkptCommand::Open {
                name: name.string(),
                create: create.as_ref().map(Attrs::to_attributes),
            },
            Cmd::Close { handle } => CkptCommand::Close { handle: *handle },
            Cmd::Unlink { name } => CkptCommand::Unlink { name: name.clone() },
            Cmd::CreateSection {
                ckpt,
                section,
                data,
                expires_at_ms,
                epoch,
            } => CkptCommand::CreateSection {
                ckpt: ckpt.clone(),
                section: section.as_ref().map(Text::string),
                data: data.as_ref().map(Text::bytes).unwrap_or_default(),
                expires_at_ms: *expires_at_ms,
                epoch: *epoch,
            },
            Cmd::DeleteSection {
                ckpt,
                section,
                epoch,
            } => CkptCommand::DeleteSection {
                ckpt: ckpt.clone(),
                section: section.clone(),
                epoch: *epoch,
            },
            Cmd::Write {
                ckpt,
                writes,
                epoch,
            } => CkptCommand::Write {
                ckpt: ckpt.clone(),
                writes: writes.iter().flat_map(Write::expand).collect(),
                epoch: *epoch,
            },
            Cmd::SetExpiration {
                ckpt,
                section,
                expires_at_ms,
                epoch,
            } => CkptCommand::SetExpiration {
                ckpt: ckpt.clone(),
                section: section.clone(),
                expires_at_ms: *expires_at_ms,
                epoch: *epoch,
            },
            Cmd::Expire => CkptCommand::Expire,
        }
    }
}

impl Write {
    fn expand(&self) -> Vec<SectionWrite> {
        let write = SectionWrite {
            section: self.section.string(),
            kind: match self.kind {
                Kind::Write => WriteKind::Write,
                Kind::Overwrite => WriteKind::Overwrite,
                Kind::Upsert => WriteKind::Upsert,
            },
            offset: self.offset,
            data: self.data.bytes(),
        };
        vec![write; self.times.unwrap_or(1)]
    }
}

// ---- The runner ------------------------------------------------------------------------------

/// Where the runner is, for failure messages.
struct Runner {
    state: CkptState,
    index: u64,
    time_ms: u64,
    /// (op, "ok" or error code name) seen so far, for the coverage check.
    outcomes: BTreeSet<(String, String)>,
}

impl Runner {
    fn new() -> Self {
        Self {
            state: CkptState::default(),
            index: 0,
            time_ms: 0,
            outcomes: BTreeSet::new(),
        }
    }

    fn run_file(&mut self, path: &Path) {
        let text = fs::read_to_string(path).expect("read the data file");
        let vector: Vector = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", path.display()));
        *self = Self {
            outcomes: std::mem::take(&mut self.outcomes),
            ..Self::new()
        };
        for (n, step) in vector.step.iter().enumerate() {
            let at = format!(
                "{} step {} ({})",
                path.display(),
                n + 1,
                step.note.as_deref().unwrap_or("-")
            );
            self.run_step(&at, step);
            self.check_queries(&at, step);
            self.round_trip(&at);
        }
    }

    fn run_step(&mut self, at: &str, step: &Step) {
        if let Some(t) = step.time_ms {
            assert!(t >= self.time_ms, "{at}: time goes backwards");
            self.time_ms = t;
        }
        let Some(cmd) = &step.cmd else {
            assert!(
                step.expect.is_none() && step.index.is_none(),
                "{at}: expect without cmd"
            );
            return;
        };
        let index = step.index.unwrap_or(self.index + 1);
        assert!(index > self.index, "{at}: index {index} does not grow");
        self.index = index;
        let ctx = ApplyContext {
            index,
            term: 1,
            time_ms: self.time_ms,
        };
        let expect = step
            .expect
            .as_deref()
            .expect("a step with cmd needs expect");

        let mut expired_only = self.state.clone();
        expired_only.apply(ctx, CkptCommand::Expire);
        let response = self.state.apply(ctx, cmd.to_command());

        let outcome = match &response {
            CkptResponse::Error(e) => {
                assert_eq!(format!("{:?}", e.code), expect, "{at}: {e}");
                if let Some(m) = &step.message {
                    assert!(
                        e.message.contains(m.as_str()),
                        "{at}: message {:?}",
                        e.message
                    );
                }
                assert!(
                    self.state == expired_only,
                    "{at}: refused command changed the state"
                );
                format!("{:?}", e.code)
            }
            ok => {
                assert_eq!(expect, "ok", "{at}: got {ok:?}");
                check_success(at, step, cmd, index, ok);
                "ok".to_owned()
            }
        };
        self.outcomes.insert((cmd.op().to_owned(), outcome));
    }

    fn check_queries(&self, at: &str, step: &Step) {
        let state = &self.state;
        for check in &step.status {
            check_status(at, state, check);
        }
        for name in &step.missing {
            let err = state.status(&name.string()).expect_err(at);
            assert_eq!(format!("{:?}", err.code), "NotExist", "{at}: {err}");
            assert!(state.attributes(&name.string()).is_none(), "{at}");
            assert!(state.max_epoch(&name.string()).is_none(), "{at}");
        }
        for check in &step.read {
            check_read(at, state, check);
        }
        for check in &step.sections {
            check_sections(at, state, check);
        }
        for check in &step.section_info {
            check_section_info(at, state, check);
        }
        if let Some(names) = &step.list {
            let want: Vec<String> = names.iter().map(Text::string).collect();
            let got: Vec<String> = state.list().into_iter().map(|s| s.name).collect();
            assert_eq!(got, want, "{at}: list");
        }
        if let Some(t) = step.next_deadline_ms {
            let want = (t != 0).then_some(t);
            assert_eq!(state.next_deadline_ms(), want, "{at}: next_deadline_ms");
        }
    }

    /// Snapshot and restore; continue on the restored copy.
    fn round_trip(&mut self, at: &str) {
        let bytes = postcard::to_allocvec(&self.state).expect("the state serializes");
        let restored: CkptState = postcard::from_bytes(&bytes).expect("the snapshot decodes");
        assert!(restored == self.state, "{at}: restored state differs");
        let again = postcard::to_allocvec(&restored).expect("the restored state serializes");
        assert!(
            again == bytes,
            "{at}: restored state serializes differently"
        );
        self.state = restored;
    }
}

fn check_success(at: &str, step: &Step, cmd: &Cmd, index: u64, response: &CkptResponse) {
    match (cmd, response) {
        (
            Cmd::Open { create, .. },
            CkptResponse::Opened {
                handle,
                created,
                attributes,
            },
        ) => {
            assert_eq!(*handle, index, "{at}: a handle is its open's log index");
            if let Some(want) = step.handle {
                assert_eq!(*handle, want, "{at}: handle");
            }
            if let Some(want) = step.created {
                assert_eq!(*created, want, "{at}: created");
            }
            if let (true, Some(attrs)) = (*created, create) {
                assert_eq!(*attributes, attrs.to_attributes(), "{at}: attributes");
            }
        }
        (Cmd::CreateSection { .. }, CkptResponse::SectionCreated { section }) => {
            if let Some(want) = &step.section {
                assert_eq!(*section, want.string(), "{at}: section id");
            }
        }
        (
            Cmd::Expire,
            CkptResponse::Expired {
                checkpoints,
                sections,
            },
        ) => {
            if let Some(want) = &step.expired {
                assert_eq!(
                    (*checkpoints, *sections),
                    (want.checkpoints, want.sections),
                    "{at}"
                );
            }
        }
        (
            Cmd::Close { .. }
            | Cmd::Unlink { .. }
            | Cmd::DeleteSection { .. }
            | Cmd::Write { .. }
            | Cmd::SetExpiration { .. },
            CkptResponse::Done { index: done },
        ) => assert_eq!(*done, index, "{at}: Done carries the log index"),
        (cmd, response) => panic!("{at}: {response:?} does not answer {cmd:?}"),
    }
}

fn check_status(at: &str, state: &CkptState, check: &StatusCheck) {
    let name = check.name.string();
    let status = state
        .status(&name)
        .unwrap_or_else(|e| panic!("{at}: status: {e}"));
    assert_eq!(status.name, name, "{at}");
    let ctx = format!("{at}: status of '{name}'");
    if let Some(attrs) = &check.attributes {
        assert_eq!(
            status.attributes,
            attrs.to_attributes(),
            "{ctx}: attributes"
        );
    }
    assert_eq!(state.attributes(&name), Some(&status.attributes), "{ctx}");
    assert_eq!(state.max_epoch(&name), Some(status.max_epoch), "{ctx}");
    let field = |want: Option<u64>, got: u64, what: &str| {
        if let Some(want) = want {
            assert_eq!(got, want, "{ctx}: {what}");
        }
    };
    field(
        check.sections_used.map(u64::from),
        status.sections_used.into(),
        "sections_used",
    );
    field(check.bytes_used, status.bytes_used, "bytes_used");
    field(
        check.open_handles.map(u64::from),
        status.open_handles.into(),
        "open_handles",
    );
    field(check.max_epoch, status.max_epoch, "max_epoch");
    let deadline = status.retention_deadline_ms;
    field(
        check.retention_deadline_ms,
        deadline,
        "retention_deadline_ms",
    );
    assert!(
        state.list().contains(&status),
        "{ctx}: list agrees with status"
    );
}

fn check_read(at: &str, state: &CkptState, check: &ReadCheck) {
    let read = SectionRead {
        section: check.section.clone(),
        offset: check.offset,
        len: check.len,
    };
    let result = state.read(&check.ckpt, &[read]);
    match (&check.expect, result) {
        (None, Ok(got)) => {
            let want = check.data.as_ref().map(Text::bytes).unwrap_or_default();
            assert_eq!(
                got,
                vec![(check.section.clone(), want)],
                "{at}: read {check:?}"
            );
        }
        (Some(code), Err(e)) => assert_eq!(&format!("{:?}", e.code), code, "{at}: {e}"),
        (want, got) => panic!("{at}: read {check:?}: want {want:?}, got {got:?}"),
    }
}

fn check_sections(at: &str, state: &CkptState, check: &SectionsCheck) {
    let result = state.sections(&check.ckpt, check.expiring_before_ms);
    match (&check.expect, result) {
        (None, Ok(got)) => {
            let got: Vec<String> = got.into_iter().map(|i| i.section).collect();
            let want: Vec<String> = check.ids.iter().flatten().map(Text::string).collect();
            assert_eq!(got, want, "{at}: sections {check:?}");
        }
        (Some(code), Err(e)) => assert_eq!(&format!("{:?}", e.code), code, "{at}: {e}"),
        (want, got) => panic!("{at}: sections {check:?}: want {want:?}, got {got:?}"),
    }
}

fn check_section_info(at: &str, state: &CkptState, check: &SectionInfoCheck) {
    let infos = state
        .sections(&check.ckpt, None)
        .unwrap_or_else(|e| panic!("{at}: {e}"));
    let info = infos
        .iter()
        .find(|i| i.section == check.section)
        .unwrap_or_else(|| panic!("{at}: no section '{}'", check.section));
    let ctx = format!("{at}: section '{}'", check.section);
    if let Some(size) = check.size {
        assert_eq!(info.size, size, "{ctx}: size");
    }
    if let Some(t) = check.expires_at_ms {
        assert_eq!(info.expires_at_ms, t, "{ctx}: expires_at_ms");
    }
    if let Some(i) = check.last_update_index {
        assert_eq!(info.last_update_index, i, "{ctx}: last_update_index");
    }
}

// ---- The tests -------------------------------------------------------------------------------

fn data_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("testdata exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// Every command with every outcome the service defines for it.
const REQUIRED_OUTCOMES: &[(&str, &[&str])] = &[
    ("open", &["ok", "NotExist", "InvalidParam", "Exist"]),
    ("close", &["ok", "BadHandle"]),
    ("unlink", &["ok", "NotExist"]),
    (
        "create_section",
        &[
            "ok",
            "NotExist",
            "InvalidParam",
            "Exist",
            "NoSpace",
            "TooBig",
            "BadOperation",
        ],
    ),
    ("delete_section", &["ok", "NotExist", "BadOperation"]),
    (
        "write",
        &[
            "ok",
            "NotExist",
            "InvalidParam",
            "TooBig",
            "NoSpace",
            "BadOperation",
        ],
    ),
    ("set_expiration", &["ok", "NotExist", "BadOperation"]),
    ("expire", &["ok"]),
];

#[test]
fn every_vector_holds_and_together_they_cover_every_outcome() {
    let files = data_files();
    assert!(
        files.len() >= 12,
        "expected the data files, found {files:?}"
    );
    let mut runner = Runner::new();
    for file in &files {
        runner.run_file(file);
    }
    let mut missing = Vec::new();
    for (op, outcomes) in REQUIRED_OUTCOMES {
        for outcome in *outcomes {
            if !runner
                .outcomes
                .contains(&(op.to_string(), outcome.to_string()))
            {
                missing.push(format!("{op} → {outcome}"));
            }
        }
    }
    assert!(missing.is_empty(), "no data file shows {missing:?}");
}

/// A state with checkpoints, handles, sections, expirations, retention and epochs survives a
/// postcard round trip identically, and both copies answer the same commands the same way.
#[test]
fn snapshot_round_trip_gives_an_identical_state() {
    let mut original = CkptState::default();
    let ctx = |index, time_ms| ApplyContext {
        index,
        term: 2,
        time_ms,
    };
    let attrs = |retention_ms| Attributes {
        update_mode: UpdateMode::Async,
        sections_max: 4,
        section_size_max: 64,
        checkpoint_size_max: 128,
        retention_ms,
    };
    let setup = [
        CkptCommand::Open {
            name: "kept".into(),
            create: Some(attrs(0)),
        },
        CkptCommand::Open {
            name: "retained".into(),
            create: Some(attrs(5_000)),
        },
        CkptCommand::CreateSection {
            ckpt: "kept".into(),
            section: None,
            data: b"generated".to_vec(),
            expires_at_ms: 9_000,
            epoch: 3,
        },
        CkptCommand::CreateSection {
            ckpt: "retained".into(),
            section: Some("state".into()),
            data: vec![0, 1, 2, 255],
            expires_at_ms: 0,
            epoch: 0,
        },
        CkptCommand::Close { handle: 2 },
    ];
    for (i, cmd) in setup.into_iter().enumerate() {
        let response = original.apply(ctx(i as u64 + 1, 1_000), cmd);
        assert!(!matches!(response, CkptResponse::Error(_)), "{response:?}");
    }
    assert_eq!(original.next_deadline_ms(), Some(6_000));

    let bytes = postcard::to_allocvec(&original).expect("serializes");
    let mut restored: CkptState = postcard::from_bytes(&bytes).expect("decodes");
    assert!(restored == original);
    assert_eq!(restored.list(), original.list());
    assert_eq!(restored.next_deadline_ms(), original.next_deadline_ms());

    let tail = [
        (ctx(10, 2_000), CkptCommand::Close { handle: 1 }),
        (ctx(11, 2_000), CkptCommand::Close { handle: 2 }),
        (
            ctx(12, 2_500),
            CkptCommand::CreateSection {
                ckpt: "kept".into(),
                section: None,
                data: vec![7; 10],
                expires_at_ms: 0,
                epoch: 2,
            },
        ),
        (ctx(13, 6_000), CkptCommand::Expire),
        (ctx(14, 9_000), CkptCommand::Expire),
    ];
    for (ctx, cmd) in tail {
        let a = original.apply(ctx, cmd.clone());
        let b = restored.apply(ctx, cmd);
        assert_eq!(a, b, "both copies answer alike");
        assert!(original == restored, "both copies stay identical");
    }
    assert_eq!(original.list().len(), 1, "retention deleted 'retained'");
    let sections = original.sections("kept", None).expect("kept exists");
    assert!(sections.is_empty(), "'s1' expired at 9000: {sections:?}");
}
