//! Logs and traces: the agent's `tracing` subscriber.
//!
//! Logs go to stderr as text, or as JSON lines on request (`--log-json`, or `[telemetry]
//! log_format = "json"`), filtered by `RUST_LOG` (default `info`). When `[telemetry]
//! otlp_endpoint` is set, the spans of nines' own crates (info and above: the failover spans of
//! `nines_amf::telemetry` among them) are also exported over OTLP/gRPC to that collector, with
//! `service.name = nines-agent` and the node's id and name as resource attributes.
//!
//! Export never holds the agent up: spans go into a bounded queue ([`SPAN_QUEUE_LEN`]; when it
//! is full new spans are dropped) that a background thread drains in batches, each export
//! bounded by [`EXPORT_TIMEOUT_MS`]; a collector that is down costs failed exports, logged by
//! the SDK, nothing else. [`Telemetry::shutdown`] flushes what is queued, bounded by
//! [`SHUTDOWN_FLUSH_MS`].

use std::time::Duration;

use opentelemetry::{trace::TracerProvider as _, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
    Resource,
};
use serde::Deserialize;
use tracing_subscriber::{filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt, Layer};

use crate::AgentConfig;

/// Spans waiting for export; beyond this new spans are dropped (never a blocked agent).
pub const SPAN_QUEUE_LEN: usize = 4_096;
/// Spans per export call.
pub const EXPORT_BATCH_LEN: usize = 512;
/// How often queued spans are exported.
pub const EXPORT_INTERVAL_MS: u64 = 1_000;
/// Deadline of one export call.
pub const EXPORT_TIMEOUT_MS: u64 = 3_000;
/// How long the final flush at shutdown may take.
pub const SHUTDOWN_FLUSH_MS: u64 = 5_000;
/// The OpenTelemetry `service.name` of every agent.
pub const SERVICE_NAME: &str = "nines-agent";

/// `[telemetry]`: trace export and log format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// An OTLP/gRPC collector, e.g. "http://127.0.0.1:4317" (none: spans are not exported).
    pub otlp_endpoint: Option<String>,
    /// `text` (the default) or `json` (one JSON object per line).
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl TelemetrySection {
    /// The endpoint, if any, must be an http(s) URI.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let Some(e) = &self.otlp_endpoint else {
            return Ok(());
        };
        let ok = (e.starts_with("http://") || e.starts_with("https://"))
            && e.parse::<tonic::codegen::http::Uri>().is_ok();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "'{e}' is not an http:// or https:// URI (e.g. \"http://127.0.0.1:4317\")"
            ))
        }
    }
}

/// The installed subscriber's exporter; call [`Telemetry::shutdown`] (or drop it) at exit so
/// queued spans are flushed.
#[must_use = "dropping the guard flushes and stops span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

/// Install the global subscriber for an agent with `cfg`: logs (JSON if `json` or the config
/// says so) and, when configured, OTLP span export. Call inside the tokio runtime. An exporter
/// that cannot be built is logged and skipped; the agent runs on.
pub fn init(cfg: &AgentConfig, json: bool) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json || cfg.telemetry.log_format == LogFormat::Json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (provider, export_error) = match &cfg.telemetry.otlp_endpoint {
        Some(endpoint) => match tracer_provider(cfg, endpoint) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(format!("{endpoint}: {e}"))),
        },
        None => (None, None),
    };
    // Only our own crates' spans are exported: never the exporter's own gRPC stack.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(SERVICE_NAME))
            .with_filter(filter_fn(|m| {
                m.target().starts_with("nines") && *m.level() <= tracing::Level::INFO
            }))
    });
    let subscriber = tracing_subscriber::registry().with(fmt).with(otel);
    // `try_init` also routes `log` records (sled's warnings, such as a log file it cannot
    // preallocate) into this subscriber; `set_global_default` alone dropped them.
    if subscriber.try_init().is_err() {
        eprintln!("nines: a tracing subscriber was already installed; keeping it");
    }
    match (&export_error, &cfg.telemetry.otlp_endpoint) {
        (Some(e), _) => tracing::error!("trace export is off: cannot set up OTLP {e}"),
        (None, Some(ep)) => tracing::info!(endpoint = %ep, "exporting traces over OTLP/gRPC"),
        _ => {}
    }
    Telemetry { provider }
}

fn tracer_provider(cfg: &AgentConfig, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_millis(EXPORT_TIMEOUT_MS))
        .build()
        .map_err(|e| e.to_string())?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(SPAN_QUEUE_LEN)
        .with_max_export_batch_size(EXPORT_BATCH_LEN)
        .with_scheduled_delay(Duration::from_millis(EXPORT_INTERVAL_MS))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(SERVICE_NAME)
        .with_attributes([
            KeyValue::new("service.instance.id", cfg.name.clone()),
            KeyValue::new("nines.node.id", cfg.node_id as i64),
            KeyValue::new("nines.node.name", cfg.name.clone()),
            KeyValue::new("nines.cluster", cfg.cluster.clone()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

impl Telemetry {
    /// Flush queued spans and stop exporting (bounded by [`SHUTDOWN_FLUSH_MS`]). Safe to call
    /// from the runtime: the wait happens off the async workers.
    pub fn shutdown(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let flush = move || {
            if let Err(e) = provider.shutdown_with_timeout(Duration::from_millis(SHUTDOWN_FLUSH_MS))
            {
                eprintln!("nines: flushing traces at shutdown failed: {e}");
            }
        };
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            // The export runs on this runtime's I/O: keep the other workers serving it.
            tokio::task::block_in_place(flush);
        } else {
            flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_uris() {
        let mut t = TelemetrySection::default();
        assert!(t.validate().is_ok());
        t.otlp_endpoint = Some("http://127.0.0.1:4317".into());
        assert!(t.validate().is_ok());
        t.otlp_endpoint = Some("127.0.0.1:4317".into());
        assert!(t.validate().unwrap_err().contains("http://"));
    }
}
