//! Generates the gRPC code with the protoc that `protoc-bin-vendored` ships (no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let protos = [
        "proto/nines/raft/v1/raft.proto",
        "proto/nines/raftwire/v1/eraftpb.proto",
        "proto/nines/cluster/v1/cluster.proto",
        "proto/nines/ckpt/v1/ckpt.proto",
        "proto/nines/membership/v1/membership.proto",
        "proto/nines/amf/v1/session.proto",
        "proto/nines/amf/v1/amf.proto",
        "proto/nines/evt/v1/evt.proto",
        "proto/nines/drill/v1/drill.proto",
    ];
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
