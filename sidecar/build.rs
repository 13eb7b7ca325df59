//! Compiles Envoy's external authorization API (`envoy.service.auth.v3`)
//! into a descriptor set, so the sidecar's reflection can describe the
//! ext_authz `Check` it serves and grpcurl can call it. The message types
//! themselves come from the `envoy-types` crate; its package ships the
//! `.proto` sources, which are read from where Cargo unpacked it (or from
//! `ENVOY_TYPES_PROTO_DIR`).

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=ENVOY_TYPES_PROTO_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let proto_dir = envoy_proto_dir()?;
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec",
    ]
    .iter()
    .map(|d| proto_dir.join(d))
    .collect();
    let fds = protox::compile(["envoy/service/auth/v3/external_auth.proto"], includes)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("envoy_auth_descriptor.bin");
    std::fs::write(out, prost::Message::encode_to_vec(&fds))?;
    Ok(())
}

/// `proto/` of the envoy-types package Cargo resolved (per Cargo.lock).
fn envoy_proto_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("ENVOY_TYPES_PROTO_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let lock = manifest
        .parent()
        .map(|root| root.join("Cargo.lock"))
        .ok_or("no workspace root")?;
    println!("cargo:rerun-if-changed={}", lock.display());
    let version = locked_version(&lock, "envoy-types")
        .ok_or_else(|| format!("envoy-types is not in {}", lock.display()))?;
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map_err(|_| "neither CARGO_HOME nor HOME is set")?;
    let registries = cargo_home.join("registry").join("src");
    let entries = std::fs::read_dir(&registries).map_err(|e| {
        format!(
            "cannot read {}: {e}; set ENVOY_TYPES_PROTO_DIR",
            registries.display()
        )
    })?;
    for entry in entries.flatten() {
        let candidate = entry
            .path()
            .join(format!("envoy-types-{version}"))
            .join("proto");
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "envoy-types {version} sources not found under {}; set ENVOY_TYPES_PROTO_DIR to its proto/ directory",
        registries.display()
    ))
}

fn locked_version(lock: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{package}\"") {
            let version = lines.next()?;
            return version
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_string);
        }
    }
    None
}
