//! Build script: compiles Shoal's .proto files (objects and the control, dispatcher, CA, logs
//! and events services) with protox, a protobuf compiler in Rust that carries the well-known
//! types, and generates the code with tonic-prost-build. Nothing from the system is needed (no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["objects", "control", "dispatcher", "ca", "logs", "events"]
        .map(|name| format!("../../proto/shoal/v1/{name}.proto"));
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(&protos, ["../../proto"])?;
    // Payloads of secrets (and configs, alike) and unlock keys must never reach a log: these types get a Debug
    // that shows their size, not their bytes (src/redact.rs).
    tonic_prost_build::configure()
        .skip_debug([
            "shoal.v1.SecretSpec",
            "shoal.v1.ConfigSpec",
            "shoal.v1.PayloadVersion",
            "shoal.v1.UnlockKeys",
            "shoal.v1.RootCa",
            "shoal.v1.RootRotation",
        ])
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
