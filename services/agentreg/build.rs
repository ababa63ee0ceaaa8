//! Compiles `proto/agentreg/v1/*.proto` with protox, a pure-Rust protobuf compiler, so that a
//! fresh clone builds without a system `protoc`, and writes the descriptor set for reflection.

use protox::prost::Message as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["common", "identity", "agents", "internal", "audit"]
        .map(|name| root.join(format!("agentreg/v1/{name}.proto")));
    let descriptors = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("agentreg_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
