//! Build script: compiles Shoal's .proto files (objects and the control, dispatcher and CA
//! services) with tonic-prost-build; needs `protoc` (Debian's protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["objects", "control", "dispatcher", "ca"].map(|name| format!("../../proto/shoal/v1/{name}.proto"));
    let includes = ["../../proto".to_owned()];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().build_client(true).build_server(true).compile_protos(&protos, &includes)?;
    Ok(())
}
