//! Helpers shared by the state machine's unit tests.

use nines_consensus::ApplyContext;
use nines_core::ErrorCode;

use crate::command::{Attributes, CkptCommand, CkptResponse, UpdateMode};

pub(super) fn ctx(index: u64, time_ms: u64) -> ApplyContext {
    ApplyContext {
        index,
        term: 1,
        time_ms,
    }
}

pub(super) fn attrs() -> Attributes {
    Attributes {
        update_mode: UpdateMode::Sync,
        sections_max: 4,
        section_size_max: 8,
        checkpoint_size_max: 16,
        retention_ms: 0,
    }
}

pub(super) fn open(name: &str) -> CkptCommand {
    CkptCommand::Open {
        name: name.into(),
        create: Some(attrs()),
    }
}

pub(super) fn code(response: CkptResponse) -> Option<ErrorCode> {
    match response {
        CkptResponse::Error(e) => Some(e.code),
        _ => None,
    }
}
