//! Generates the Rust code of `proto/skein/mesh/v1/mesh.proto` with protox (no system
//! `protoc`), as `proto/` does for the public API.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "skein/mesh/v1/mesh.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Bus frames are shared between the queues of several peers without copies.
        .bytes(".skein.mesh.v1.BusFrame")
        .compile_fds(fds)?;
    Ok(())
}
