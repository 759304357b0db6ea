//! Build script: compiles `proto/shoal/v1/raft.proto` (the transport) and this crate's
//! `proto/etcd_bench.proto` (the etcd client of the benchmark example) with tonic-prost-build
//! when the `grpc` feature is on (needs `protoc`), and does nothing otherwise.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "grpc")]
    {
        let proto = "../../proto/shoal/v1/raft.proto";
        println!("cargo:rerun-if-changed={proto}");
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_protos(&[proto], &["../../proto"])?;
        let etcd = "proto/etcd_bench.proto";
        println!("cargo:rerun-if-changed={etcd}");
        tonic_prost_build::configure().build_client(true).build_server(false).compile_protos(&[etcd], &["proto"])?;
    }
    Ok(())
}
