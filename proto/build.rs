//! Compiles herd's own protocol (`herd/v1/fleet.proto`) with protox, so no system
//! `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not `env!`: the compiled build script is shared by
    // every checkout that builds into the same target dir.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let file = root.join("herd/v1/fleet.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
