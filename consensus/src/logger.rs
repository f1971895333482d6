//! raft-rs logs through slog; this drain forwards every record to `tracing`.

use std::fmt::{self, Write};

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

/// A field-less slog drain that formats the message and key-values into one tracing event.
struct TracingDrain;

struct KvWriter<'a>(&'a mut String);

impl Serializer for KvWriter<'_> {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut line = format!("{}", record.msg());
        let _ = record.kv().serialize(record, &mut KvWriter(&mut line));
        let _ = values.serialize(record, &mut KvWriter(&mut line));
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{line}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{line}"),
            slog::Level::Info => tracing::info!(target: "raft", "{line}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{line}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{line}"),
        }
        Ok(())
    }
}

/// The logger handed to raft-rs.
pub(crate) fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
