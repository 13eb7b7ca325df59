//! Compiles `demo/v1/customers.proto` with protox (pure Rust, so no
//! system `protoc` is needed) and generates the tonic client and server.
//! The encoded descriptor set is written beside the generated code so the
//! server can offer reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "demo/v1/customers.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("demo_descriptor.bin");

    let fds = protox::compile([proto], ["proto"])?;
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
