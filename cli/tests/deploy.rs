//! What deploy/ ships, checked without a Kubernetes cluster or a systemd PID 1: the manifests are
//! parsed and cross-checked, every agent config and model in them is loaded by the agent's own
//! parser, the systemd unit passes `systemd-analyze verify`, and a real agent's gRPC health
//! service answers as the manifests' probes expect. (The compose cluster itself runs in
//! deploy/compose/smoke.sh, from .ci/run.)

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use nines_agent::{parse_model, AgentConfig, LIVENESS_SERVICE, READINESS_SERVICE};
use nines_cli::local::{LocalCluster, LocalOptions};
use serde_yaml::Value;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);
/// The agents' client (and peer) port in the compose and Kubernetes deployments.
const CLIENT_PORT: u64 = 7100;
/// The plaintext health port the probes use (the client port speaks mutual TLS).
const HEALTH_PORT: u64 = 7110;

fn deploy_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(sub)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every YAML document in deploy/k8s/*.yaml, by kind (then name).
fn k8s_objects() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir("k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        for doc in serde_yaml::Deserializer::from_str(&read(&f)) {
            let v = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", f.display()));
            let kind = v["kind"]
                .as_str()
                .expect("every object has a kind")
                .to_string();
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            assert!(
                out.insert((kind.clone(), name.clone()), v).is_none(),
                "{kind} {name} is defined twice"
            );
        }
    }
    out
}

fn one<'a>(objs: &'a BTreeMap<(String, String), Value>, kind: &str) -> &'a Value {
    let found: Vec<&Value> = objs
        .iter()
        .filter(|((k, _), _)| k == kind)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

/// Every key/value of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_mapping().expect("a selector mapping");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string: {v:?}"))
}

#[test]
fn k8s_manifests_have_a_statefulset_headless_service_grpc_probes_and_a_pdb() {
    let objs = k8s_objects();
    eprintln!(
        "phase: kinds present: {:?}",
        objs.keys().collect::<Vec<_>>()
    );
    let sts = one(&objs, "StatefulSet");
    let pdb = one(&objs, "PodDisruptionBudget");
    let cm = one(&objs, "ConfigMap");
    let kust = one(&objs, "Kustomization");
    let spec = &sts["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    let sts_name = str_of(&sts["metadata"]["name"], "StatefulSet name");

    eprintln!("phase: selectors match the pod labels");
    assert!(
        selects(&spec["selector"]["matchLabels"], labels),
        "{spec:?}"
    );
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
    let services: Vec<&Value> = objs
        .iter()
        .filter(|((k, _), _)| k == "Service")
        .map(|(_, v)| v)
        .collect();
    assert!(!services.is_empty(), "a Service");
    for s in &services {
        assert!(selects(&s["spec"]["selector"], labels), "{s:?}");
    }

    eprintln!("phase: the headless service names the pods, not-ready ones too");
    let svc_name = str_of(&spec["serviceName"], "serviceName");
    let headless = objs
        .get(&("Service".into(), svc_name.into()))
        .unwrap_or_else(|| panic!("serviceName {svc_name} is not a Service here"));
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "peers must find each other before a quorum makes them ready"
    );
    assert_eq!(
        spec["podManagementPolicy"].as_str(),
        Some("Parallel"),
        "OrderedReady would wait for a pod that needs a quorum to be ready"
    );

    eprintln!("phase: probes are gRPC health checks on the plaintext health port");
    let containers = spec["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    let agent = &containers[0];
    let port = agent["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("grpc"))
        .expect("a port named grpc");
    assert_eq!(port["containerPort"].as_u64(), Some(CLIENT_PORT));
    for (probe, service) in [
        ("readinessProbe", READINESS_SERVICE),
        ("livenessProbe", LIVENESS_SERVICE),
    ] {
        let g = &agent[probe]["grpc"];
        assert_eq!(g["port"].as_u64(), Some(HEALTH_PORT), "{probe}: {g:?}");
        assert_eq!(g["service"].as_str(), Some(service), "{probe}");
    }

    eprintln!("phase: persistent volumes hold the data dir");
    let claims = spec["volumeClaimTemplates"]
        .as_sequence()
        .expect("volumeClaimTemplates");
    assert!(!claims.is_empty());
    let claim = str_of(&claims[0]["metadata"]["name"], "claim name");
    let mounts = agent["volumeMounts"].as_sequence().expect("volumeMounts");
    let mount_of = |vol: &str| {
        mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(vol))
            .map(|m| str_of(&m["mountPath"], "mountPath").to_string())
            .unwrap_or_else(|| panic!("volume {vol} is not mounted"))
    };
    let data_mount = mount_of(claim);
    let config_mount = mount_of("config");

    eprintln!("phase: the PDB keeps a quorum");
    let replicas = spec["replicas"].as_u64().expect("replicas");
    assert_eq!(replicas, 3);
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(2));

    eprintln!("phase: each pod's config comes from the ConfigMap by pod name");
    let args: Vec<&str> = agent["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    assert!(
        args.contains(&format!("{config_mount}/$(POD_NAME).toml").as_str()),
        "{args:?}"
    );
    let env_pod = agent["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("POD_NAME"))
        .expect("POD_NAME in env");
    assert_eq!(
        env_pod["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    let data = &cm["data"];
    let pods: Vec<String> = (0..replicas).map(|i| format!("{sts_name}-{i}")).collect();
    for (i, pod) in pods.iter().enumerate() {
        let key = format!("{pod}.toml");
        let text = str_of(&data[key.as_str()], &key);
        let cfg = AgentConfig::parse(text, Path::new(&key)).expect("a valid agent config");
        assert_eq!(cfg.node_id, i as u64 + 1, "{key}: node id = ordinal + 1");
        assert_eq!(cfg.name, *pod);
        assert_eq!(
            cfg.advertise_addr(),
            format!("{pod}.{svc_name}:{CLIENT_PORT}")
        );
        assert_eq!(cfg.listen, format!("0.0.0.0:{CLIENT_PORT}"));
        assert_eq!(
            cfg.health_listen.as_deref(),
            Some(format!("0.0.0.0:{HEALTH_PORT}").as_str()),
            "{key}: the probes' port"
        );
        let tls = cfg.tls.as_ref().expect("mutual TLS");
        assert!(
            tls.cert.ends_with(format!("node-{}.pem", i + 1)),
            "{key}: {tls:?}"
        );
        assert_eq!(
            cfg.data_dir,
            Path::new(&data_mount),
            "{key}: data on the PVC"
        );
        let peers: Vec<String> = cfg.peers.iter().map(|p| p.addr.clone()).collect();
        let want: Vec<String> = pods
            .iter()
            .map(|p| format!("{p}.{svc_name}:{CLIENT_PORT}"))
            .collect();
        assert_eq!(peers, want, "{key}: every pod is an initial voter");
        let model = cfg.amf_model.expect("an AMF model");
        assert!(data[model.to_str().expect("utf8")].is_string(), "{key}");
    }
    let model = parse_model(str_of(&data["model.toml"], "model.toml"), "model.toml")
        .expect("the model parses");
    let model_dump = format!("{model:?}");
    for pod in &pods {
        assert!(model_dump.contains(pod.as_str()), "the model places {pod}");
    }

    eprintln!("phase: kustomization lists every manifest");
    let listed: Vec<&str> = kust["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    for f in [
        "configmap.yaml",
        "service.yaml",
        "statefulset.yaml",
        "pdb.yaml",
    ] {
        assert!(listed.contains(&f), "{f} in kustomization.yaml: {listed:?}");
    }
}

#[test]
fn compose_and_systemd_configs_load_with_the_agents_parser() {
    let compose = deploy_dir("compose");
    let file: Value = serde_yaml::from_str(&read(&compose.join("docker-compose.yml")))
        .expect("docker-compose.yml is YAML");
    let services = file["services"].as_mapping().expect("services");
    assert_eq!(services.len(), 3, "three nodes");
    for i in 1..=3u64 {
        let name = format!("n{i}");
        eprintln!("phase: compose {name}");
        let svc = &file["services"][name.as_str()];
        assert_eq!(svc["hostname"].as_str(), Some(name.as_str()));
        let cfg = AgentConfig::load(&compose.join(format!("{name}.toml"))).expect("valid");
        assert_eq!(cfg.node_id, i);
        assert!(cfg.tls.is_some(), "{name} runs with mutual TLS");
        assert_eq!(cfg.advertise_addr(), format!("{name}:{CLIENT_PORT}"));
        let model = cfg.amf_model.expect("a model");
        parse_model(&read(&model), "model.toml").expect("the compose model parses");
    }
    eprintln!("phase: the systemd example config");
    let cfg = AgentConfig::load(&deploy_dir("systemd").join("agent.toml")).expect("valid");
    assert_eq!(cfg.peers.len(), 3);
    assert!(
        cfg.tls.is_some(),
        "the systemd example runs with mutual TLS"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = read(&deploy_dir("systemd").join("nines-agent.service"));
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        "KillMode=mixed",
        "StateDirectory=nines",
        "RuntimeDirectory=nines",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit sets {line}"
        );
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (.ci/run installs systemd)");
        return;
    }
    // `verify` insists that ExecStart's binary exists: check a copy that runs the built one.
    let exec = "ExecStart=/usr/local/bin/nines ";
    assert!(unit.contains(exec), "ExecStart runs /usr/local/bin/nines");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("nines-agent.service");
    std::fs::write(&copy, unit.replace(exec, &format!("ExecStart={BIN} "))).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("systemd-analyze verify: {stderr}");
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(
        !stderr.contains("nines-agent.service"),
        "systemd-analyze complained about the unit: {stderr}"
    );
}

async fn check(addr: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let mut client = HealthClient::new(ep.connect_lazy());
    let req = HealthCheckRequest {
        service: service.into(),
    };
    let r = client.check(req).await?.into_inner();
    Ok(ServingStatus::try_from(r.status).expect("a known status"))
}

/// Poll (bounded) until `addr` answers `want` for `service`.
async fn wait_health(addr: &str, service: &str, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + LONG;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        match check(addr, service).await {
            Ok(s) if s == want => return,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} {service:?}: not {want:?} within {LONG:?}; last answer {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_once_a_leader_is_known_and_not_without_one() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    let leader = c.wait_leader(LONG).await.expect("leader");
    eprintln!("phase: leader is {leader}; every member becomes SERVING");
    for addr in c.endpoints() {
        wait_health(&addr, "", ServingStatus::Serving).await;
        wait_health(&addr, READINESS_SERVICE, ServingStatus::Serving).await;
        wait_health(&addr, LIVENESS_SERVICE, ServingStatus::Serving).await;
    }

    eprintln!("phase: a node waiting to be added is alive but not ready");
    let joining = c.start_joining_node().expect("start node 4");
    let addr4 = c.nodes[joining as usize - 1].addr.clone();
    wait_health(&addr4, LIVENESS_SERVICE, ServingStatus::Serving).await;
    assert_eq!(
        check(&addr4, "").await.expect("node 4 answers"),
        ServingStatus::NotServing,
        "not a member yet"
    );
    c.kill(joining).expect("kill node 4");

    eprintln!("phase: the leader loses its quorum: NOT_SERVING, yet still alive");
    let leader_addr = c.nodes[leader as usize - 1].addr.clone();
    for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        c.kill(id).expect("kill a follower");
    }
    wait_health(&leader_addr, "", ServingStatus::NotServing).await;
    // A quorum loss must not fail liveness (a fenced node is live again once its components are
    // stopped; this one runs none).
    wait_health(&leader_addr, LIVENESS_SERVICE, ServingStatus::Serving).await;
    assert!(matches!(
        check(&leader_addr, "no.such.Service").await,
        Err(s) if s.code() == tonic::Code::NotFound
    ));
}
