//! Observing a failover from outside: three real agents run the counter example with metrics on
//! (`metrics_addr`) and trace export to an in-process OTLP collector stub (`[telemetry]
//! otlp_endpoint`). kill -9 of the active component must show up in Prometheus series on every
//! agent (failovers, phase histograms, raft, membership, AMF, CKPT, EVT, watchdog) and as linked
//! spans (fault → decision → callback → confirmation) at the collector. One cluster serves both
//! stories (the suite runs on two cores).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nines_cli::local::{LocalCluster, LocalOptions};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value as Any, KeyValue};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(60);
const SI: &str = "counter-si";

/// Run the CLI, killed if it has not finished within 30 s (a test must never hang).
fn nines(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nines");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait for nines").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("nines output")
}

fn json_of(args: &[&str]) -> Option<Value> {
    let out = nines(args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// One exported span, flattened: its name, its attributes and its resource's.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    attrs: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

fn flatten(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The OTLP collector stub: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in req.into_inner().resource_spans {
            let resource = flatten(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Span {
                        name: s.name,
                        attrs: flatten(&s.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
        self.spans.lock().expect("spans").extend(got);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }
}

/// Start the stub on a free port; returns it and its endpoint URI.
async fn start_collector() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let addr = listener.local_addr().expect("collector address");
    let c = Collector::default();
    let svc = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("the collector stub serves");
    });
    (c, format!("http://{addr}"))
}

/// A raw HTTP/1.1 request; returns (status line, body).
async fn http(addr: &str, request: &str) -> std::io::Result<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer within 20 s"))??;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    Ok((status, body.to_string()))
}

async fn scrape(addr: &str) -> String {
    let req = "GET /metrics HTTP/1.1\r\nHost: nines\r\nAccept: text/plain\r\n\r\n";
    let (status, body) = http(addr, req).await.expect("scrape /metrics");
    assert!(status.contains("200"), "GET /metrics answered {status}");
    body
}

/// The value of one series (`name` or `name{labels}` exactly as exposed).
fn series(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn must(text: &str, key: &str, node: u64) -> f64 {
    series(text, key).unwrap_or_else(|| panic!("node {node}: no series {key} in\n{text}"))
}

/// The SI's settled (nothing pending) active SU, with its epoch.
fn settled_active(st: &Value) -> Option<(String, u64)> {
    let si = st["sis"].as_array()?.iter().find(|s| s["name"] == SI)?;
    let a = si["assignments"].as_array()?;
    if a.iter().any(|x| !x["pending"].is_null()) || a.len() != 2 {
        return None;
    }
    let active: Vec<&Value> = a.iter().filter(|x| x["ha_state"] == "active").collect();
    let one = active.first().filter(|_| active.len() == 1)?;
    Some((one["su"].as_str()?.to_string(), one["epoch"].as_u64()?))
}

async fn wait_json(
    what: &str,
    args: &[&str],
    pred: impl Fn(&Value) -> bool,
    c: &LocalCluster,
) -> Value {
    let deadline = Instant::now() + LONG;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(v) = json_of(args) {
            if pred(&v) {
                return v;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: not within {LONG:?}; last: {last:#}\nlogs in {}\nn1:\n{}",
        c.root().display(),
        c.log_tail(1, 40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_shows_in_metrics_and_in_traces() {
    eprintln!("phase: start the OTLP collector stub and three agents with metrics and traces");
    let (collector, endpoint) = start_collector().await;
    let counter_dir = tempfile::tempdir().expect("tempdir");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/model.toml");
    let opts = LocalOptions {
        amf_model: Some(model),
        env: vec![(
            "NINES_COUNTER_DIR".into(),
            counter_dir.path().display().to_string(),
        )],
        metrics: true,
        extra_config: format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n"),
        ..Default::default()
    };
    let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start the cluster");
    let eps = c.endpoints().join(",");
    let status_args = ["amf", "status", "-o", "json", "--endpoints", &eps];
    let st = wait_json(
        "2N assignment",
        &status_args,
        |s| settled_active(s).is_some(),
        &c,
    )
    .await;
    let (active, epoch) = settled_active(&st).expect("settled");

    eprintln!("phase: publish an event and read it back (EVT series)");
    let out = nines(&[
        "evt",
        "publish",
        "observe",
        "--retention",
        "60s",
        "--data",
        "x",
        "--endpoints",
        &eps,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nines(&[
        "evt",
        "subscribe",
        "observe",
        "--count",
        "1",
        "-o",
        "json",
        "--endpoints",
        &eps,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    eprintln!("phase: kill -9 the active component ({active}) and wait for the failover");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let comp = st["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|x| x["su"] == active.as_str())
        .expect("the active SU's component")
        .clone();
    let pid = comp["pid"].as_u64().expect("the active component's pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the active component");
    let history_args = ["amf", "history", "-o", "json", "--endpoints", &eps];
    let h = wait_json(
        "a failover in the history",
        &history_args,
        |h| {
            h.as_array()
                .is_some_and(|a| a.iter().any(|e| e["kind"] == "failover"))
        },
        &c,
    )
    .await;
    eprintln!("history: {h}");
    let st = wait_json(
        "the new active settled",
        &status_args,
        |s| settled_active(s).is_some_and(|(a, e)| a != active && e > epoch),
        &c,
    )
    .await;
    let (new_active, _) = settled_active(&st).expect("settled");
    let leader = c.wait_leader(LONG).await.expect("a leader");

    eprintln!("phase: scrape every agent's /metrics");
    let mut texts = BTreeMap::new();
    for n in &c.nodes {
        let addr = n.metrics_addr.clone().expect("metrics are on");
        // Every agent applies the failover; allow it a moment to reach each one.
        let deadline = Instant::now() + LONG;
        let text = loop {
            let t = scrape(&addr).await;
            let done = series(&t, "nines_amf_failovers_total").is_some_and(|v| v >= 1.0);
            if done || Instant::now() >= deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        texts.insert(n.id, text);
    }
    for (&id, t) in &texts {
        assert!(must(t, "nines_raft_term", id) >= 1.0);
        assert_eq!(
            must(t, "nines_raft_leader_id", id),
            leader as f64,
            "node {id} knows the leader"
        );
        assert!(must(t, "nines_raft_commit_index", id) >= 1.0);
        assert!(must(t, "nines_raft_applied_index", id) >= 1.0);
        assert_eq!(must(t, "nines_raft_members", id), 3.0);
        must(t, "nines_raft_snapshots_total{kind=\"taken\"}", id);
        for m in 1..=3 {
            let up = format!("nines_member_state{{node=\"{m}\",name=\"n{m}\",state=\"up\"}}");
            assert_eq!(must(t, &up, id), 1.0, "node {id} sees n{m} up");
            let age = format!("nines_member_heartbeat_age_seconds{{node=\"{m}\",name=\"n{m}\"}}");
            let age = must(t, &age, id);
            assert!(
                (0.0..30.0).contains(&age),
                "node {id}: n{m} heard {age} s ago"
            );
        }
        let a = format!("nines_amf_assignments{{si=\"{SI}\",ha_state=\"active\"}}");
        assert_eq!(must(t, &a, id), 1.0, "node {id}: one active");
        assert!(must(t, "nines_amf_failovers_total", id) >= 1.0, "node {id}");
        let phase = "nines_amf_failover_phase_seconds_count{phase=\"detect_to_confirm\"}";
        assert!(must(t, phase, id) >= 1.0, "node {id}");
        let inf = "nines_amf_failover_phase_seconds_bucket{phase=\"detect_to_decide\",le=\"+Inf\"}";
        assert!(must(t, inf, id) >= 1.0, "node {id}");
        must(t, "nines_amf_restarts_total{level=\"component\"}", id);
        must(t, "nines_amf_escalations_total{to=\"node_failover\"}", id);
        must(t, "nines_ckpt_operation_duration_seconds_count", id);
        must(t, "nines_evt_lost_total", id);
        must(t, "nines_watchdog_expiries_total", id);
    }
    let sum = |key: &str| -> f64 { texts.values().filter_map(|t| series(t, key)).sum() };
    assert!(sum("nines_raft_proposals_total{outcome=\"ok\"}") >= 1.0);
    assert!(sum("nines_raft_proposal_duration_seconds_count") >= 1.0);
    assert!(
        sum("nines_ckpt_operations_total{op=\"write\"}") >= 1.0,
        "the counter checkpoints"
    );
    assert!(sum("nines_ckpt_bytes_total{direction=\"written\"}") >= 1.0);
    assert!(sum("nines_evt_published_total") >= 1.0);
    assert!(sum("nines_evt_delivered_total") >= 1.0);
    assert!(
        sum("nines_watchdog_kicks_total") >= 1.0,
        "the counter kicks its watchdog"
    );
    assert!(sum("nines_amf_callbacks_total{outcome=\"ok\"}") >= 1.0);

    eprintln!("phase: the metrics listener refuses what is not a scrape");
    let addr = c.nodes[0].metrics_addr.clone().expect("metrics are on");
    let (status, _) = http(&addr, "GET /nope HTTP/1.1\r\n\r\n")
        .await
        .expect("404");
    assert!(status.contains("404"), "{status}");
    let (status, _) = http(&addr, "POST /metrics HTTP/1.1\r\n\r\n")
        .await
        .expect("405");
    assert!(status.contains("405"), "{status}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    if let Ok((status, _)) = http(&addr, &huge).await {
        assert!(status.contains("431"), "{status}");
    }

    eprintln!("phase: the failover's spans reach the collector, linked by their ids");
    let deadline = Instant::now() + LONG;
    let (fault, decided, callback, confirmed) = loop {
        let spans = collector.spans();
        let by = |name: &str| -> Vec<Span> {
            spans.iter().filter(|s| s.name == name).cloned().collect()
        };
        let decided = by("amf.failover_decided")
            .into_iter()
            .find(|s| s.attrs.get("su").map(String::as_str) == Some(new_active.as_str()));
        let linked = decided.as_ref().and_then(|d| {
            let fault_id = d.attrs.get("fault_id")?;
            let failover_id = d.attrs.get("failover_id")?;
            let fault = by("amf.fault")
                .into_iter()
                .find(|s| s.attrs.get("fault_id") == Some(fault_id))?;
            let callback = by("amf.callback")
                .into_iter()
                .find(|s| s.attrs.get("failover_id") == Some(failover_id))?;
            let confirmed = by("amf.failover_confirmed")
                .into_iter()
                .find(|s| s.attrs.get("failover_id") == Some(failover_id))?;
            Some((fault, d.clone(), callback, confirmed))
        });
        if let Some(l) = linked {
            break l;
        }
        if Instant::now() >= deadline {
            let names: Vec<(String, BTreeMap<String, String>)> = spans
                .iter()
                .map(|s| (s.name.clone(), s.attrs.clone()))
                .collect();
            panic!("no linked failover spans within {LONG:?}; got {names:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "fault {fault:?}\ndecided {decided:?}\ncallback {callback:?}\nconfirmed {confirmed:?}"
    );
    let failed_comp = comp["name"].as_str().expect("component name");
    assert_eq!(
        fault.attrs.get("component").map(String::as_str),
        Some(failed_comp)
    );
    assert_eq!(decided.attrs.get("si").map(String::as_str), Some(SI));
    let new_epoch: u64 = decided.attrs["epoch"].parse().expect("epoch");
    assert!(new_epoch > epoch, "the decision carries the new epoch");
    assert_eq!(callback.attrs.get("epoch"), decided.attrs.get("epoch"));
    assert_eq!(
        callback.attrs.get("ha_state").map(String::as_str),
        Some("active")
    );
    assert_eq!(callback.attrs.get("ok").map(String::as_str), Some("true"));
    for s in [&fault, &decided, &callback, &confirmed] {
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("nines-agent"),
            "{s:?}"
        );
        assert!(s.resource.contains_key("nines.node.id"), "{s:?}");
    }
    // The fault was seen on the failed component's node, the callback ran on the new active's.
    let node_of = |su: &str| -> String {
        st["sus"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == su))
            .and_then(|s| s["node"].as_str())
            .expect("the SU's node")
            .to_string()
    };
    assert_eq!(fault.resource["nines.node.name"], node_of(&active));
    assert_eq!(callback.resource["nines.node.name"], node_of(&new_active));

    eprintln!("phase: SIGTERM an agent: its last span is flushed before it exits");
    let mut c = c;
    let code = c.terminate(3, LONG).expect("n3 stops on SIGTERM");
    assert_eq!(code, Some(0), "n3 exits cleanly");
    let stop = collector.spans().into_iter().find(|s| {
        s.name == "agent.stop" && s.resource.get("nines.node.id").map(String::as_str) == Some("3")
    });
    assert!(
        stop.is_some(),
        "n3's agent.stop span was not flushed at exit"
    );
}
