//! The checkpoint service on three real agents: acknowledged writes survive a leader kill and a
//! whole-cluster kill -9; stale fencing epochs and bad input are refused with nothing changed.

use std::{collections::BTreeMap, process::Command, time::Duration};

use nines_cli::local::{LocalCluster, LocalOptions};
use nines_proto::ckpt::v1::{
    checkpoint_client::CheckpointClient, CreationAttributes, OpenRequest, ReadRequest, SectionRead,
    SectionWrite, StatusRequest, WriteKind, WriteRequest,
};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_nines");
const LONG: Duration = Duration::from_secs(30);

fn client(addr: &str) -> CheckpointClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy();
    CheckpointClient::new(ch)
}

async fn create(addr: &str, name: &str, attrs: CreationAttributes) {
    let req = OpenRequest {
        name: name.into(),
        create: true,
        attributes: Some(attrs),
        options: None,
    };
    client(addr).open(req).await.expect("create checkpoint");
}

fn upsert(section: &str, data: &[u8]) -> SectionWrite {
    SectionWrite {
        section: section.into(),
        kind: WriteKind::Upsert as i32,
        offset: 0,
        data: data.to_vec(),
    }
}

async fn write(
    addr: &str,
    name: &str,
    section: &str,
    data: &[u8],
    epoch: u64,
) -> Result<(), tonic::Status> {
    let req = WriteRequest {
        checkpoint: name.into(),
        writes: vec![upsert(section, data)],
        epoch,
        options: None,
    };
    client(addr).write(req).await.map(|_| ())
}

async fn read(addr: &str, name: &str, section: &str) -> Result<Vec<u8>, tonic::Status> {
    let req = ReadRequest {
        checkpoint: name.into(),
        reads: vec![SectionRead {
            section: section.into(),
            offset: 0,
            len: 0,
        }],
        stale: false,
        options: None,
    };
    let r = client(addr).read(req).await?.into_inner();
    Ok(r.sections
        .into_iter()
        .next()
        .map(|s| s.data)
        .unwrap_or_default())
}

/// Read with retries while the cluster recovers.
async fn read_eventually(endpoints: &[String], name: &str, section: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + LONG;
    let mut i = 0;
    loop {
        match read(&endpoints[i % endpoints.len()], name, section).await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("  read {section}: {}; retrying", e.message());
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("read {section} failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_kill_and_full_power_cycle() {
    let mut c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    let leader = c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints();
    create(&eps[0], "orders", CreationAttributes::default()).await;

    eprintln!("phase: one client writes continuously; leader {leader} is killed meanwhile");
    let writer_eps = eps.clone();
    let writer = tokio::spawn(async move {
        // section → last acknowledged value
        let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for i in 0..300u32 {
            let section = format!("s{}", i % 10);
            let value = format!("v{i}").into_bytes();
            let ep = &writer_eps[i as usize % writer_eps.len()];
            if write(ep, "orders", &section, &value, 0).await.is_ok() {
                acked.insert(section, value);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.kill(leader).expect("kill leader");
    let acked = writer.await.expect("writer");
    assert!(
        acked.len() == 10,
        "every section should have had an acknowledged write: {acked:?}"
    );
    c.spawn(leader).expect("restart");
    for (section, value) in &acked {
        assert_eq!(
            &read_eventually(&eps, "orders", section).await,
            value,
            "section {section} lost its last acknowledged value"
        );
    }

    eprintln!("phase: kill -9 all three agents at once, restart them");
    for id in 1..=3 {
        c.kill(id).expect("kill");
    }
    for id in 1..=3 {
        c.spawn(id).expect("restart");
    }
    c.wait_leader(LONG).await.expect("leader after power cycle");
    for (section, value) in &acked {
        assert_eq!(
            &read_eventually(&eps, "orders", section).await,
            value,
            "section {section} lost across the power cycle"
        );
    }
}

fn ais_code(e: &tonic::Status) -> Option<&str> {
    e.metadata()
        .get(nines_proto::AIS_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// Fencing epochs are tokens the AMF hands out (the counter's 2N group gets epochs 1 and 2 for
/// its first active and standby): a stale one is refused, one never issued is refused, and
/// neither changes anything or locks the legitimate writer out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_unissued_fencing_epochs_are_refused_and_change_nothing() {
    let opts = LocalOptions {
        amf_model_text: Some(nines_cli::bench_amf::COUNTER_MODEL.to_string()),
        ..Default::default()
    };
    let c = LocalCluster::start(BIN.as_ref(), 3, opts).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let ep = c.endpoints()[0].clone();
    create(&ep, "fenced", CreationAttributes::default()).await;
    // Epoch 2 exists once the AMF has assigned the counter's active and standby.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        match write(&ep, "fenced", "state", b"from-epoch-2", 2).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline && ais_code(&e) == Some("7") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("epoch 2 never became writable: {e:?}"),
        }
    }
    let e = write(&ep, "fenced", "state", b"zombie", 1)
        .await
        .expect_err("stale epoch refused");
    assert!(e.message().contains("epoch"), "{}", e.message());
    assert_eq!(ais_code(&e), Some("20"), "BAD_OPERATION expected: {e:?}");
    let e = write(&ep, "fenced", "state", b"forged", u64::MAX)
        .await
        .expect_err("an epoch never issued is refused");
    assert!(e.message().contains("never issued"), "{}", e.message());
    assert_eq!(ais_code(&e), Some("7"), "INVALID_PARAM expected: {e:?}");
    assert_eq!(
        read(&ep, "fenced", "state").await.expect("read"),
        b"from-epoch-2"
    );
    let st = client(&ep)
        .status(StatusRequest {
            name: "fenced".into(),
            stale: false,
            options: None,
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(st.max_epoch, 2, "the forged epoch did not raise the fence");
    write(&ep, "fenced", "state", b"still-writable", 2)
        .await
        .expect("the legitimate writer is not locked out");
}

fn nines(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run nines")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_and_changes_nothing() {
    let c = LocalCluster::start(BIN.as_ref(), 3, LocalOptions::default()).expect("start");
    c.wait_leader(LONG).await.expect("leader");
    let eps = c.endpoints().join(",");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--endpoints", &eps]);
        nines(&all)
    };
    let out = run(&[
        "ckpt",
        "create",
        "small",
        "--sections-max",
        "2",
        "--section-size-max",
        "8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let one_line_error = |out: &std::process::Output, needle: &str| {
        assert!(!out.status.success(), "should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.to_lowercase().contains(needle),
            "'{needle}' not in: {err}"
        );
    };
    one_line_error(
        &run(&["ckpt", "write", "small", "a", "--data", "123456789"]),
        "big",
    );
    one_line_error(&run(&["ckpt", "write", "nope", "a", "--data", "x"]), "not");
    assert!(run(&["ckpt", "write", "small", "a", "--data", "1"])
        .status
        .success());
    assert!(run(&["ckpt", "write", "small", "b", "--data", "2"])
        .status
        .success());
    one_line_error(
        &run(&["ckpt", "write", "small", "c", "--data", "3"]),
        "section",
    );
    let out = run(&["ckpt", "write", "small", "a"]);
    assert!(
        !out.status.success(),
        "write without --data or --file must fail"
    );
    let out = run(&["ckpt", "create", "x", "--sections-max", "lots"]);
    assert!(!out.status.success(), "malformed number must fail");

    let out = run(&["ckpt", "status", "small", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(st["sections_used"], 2, "{st}");
    assert_eq!(st["bytes_used"], 2, "{st}");
    let out = run(&["ckpt", "read", "small", "a"]);
    assert_eq!(out.stdout, b"1");
}
