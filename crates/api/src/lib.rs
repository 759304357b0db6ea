//! Shoal's protobuf API: the cluster objects (nodes, services, tasks, the cluster) and the
//! control, dispatcher, CA, logs and events gRPC services, generated from `proto/shoal/v1/` with
//! tonic-prost-build, plus the few helpers every user of the types needs (task-state order,
//! durations and timestamps) and the TLS channel every client of the manager port opens. No logic: `manager` and `agent` translate between these messages
//! and the subsystem crates' own types.
#![warn(missing_docs)]

mod channel;
mod convert;
mod redact;
mod state;

pub use channel::{connect, connect_named};
pub use convert::{from_duration, from_timestamp, parse_duration, to_duration, to_timestamp};

/// The generated messages and services of package `shoal.v1`.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

/// The gRPC metadata key with which a manager that is not the Raft leader names the leader's
/// address (HOST:PORT) when it refuses a dispatcher call, so that the node can go there.
pub const LEADER_METADATA: &str = "shoal-leader";
