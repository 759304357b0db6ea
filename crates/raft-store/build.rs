//! Build script: compiles `proto/shoal/v1/raft.proto` (the transport) and this crate's
//! `proto/etcd_bench.proto` (the etcd client of the benchmark example, and the server of the same
//! `KV.Put` that its members serve to the benchmark's clients) when the `grpc` feature is on, with
//! protox (a protobuf compiler in Rust: no `protoc` needed), and does nothing otherwise.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "grpc")]
    {
        let proto = "../../proto/shoal/v1/raft.proto";
        println!("cargo:rerun-if-changed={proto}");
        let descriptors = protox::compile([proto], ["../../proto"])?;
        tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
        let etcd = "proto/etcd_bench.proto";
        println!("cargo:rerun-if-changed={etcd}");
        let descriptors = protox::compile([etcd], ["proto"])?;
        tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    }
    Ok(())
}
