//! An embeddable, replicated, durable key-value store on openraft — a small etcd as a library.
//!
//! Each member opens a [`Store`] over a data directory and a [`Transport`]. Writes (`put`,
//! `delete`, `txn` with compares on mod revision or existence) go through the Raft log; reads are
//! linearizable by default (read index) or stale on request; [`Store::watch`] streams changes
//! under a prefix from a revision. The log is this crate's own segment-file store (CRC-framed
//! records, group-committed fsync, torn-tail repair), snapshots are written atomically, and both
//! can be encrypted at rest.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_raft_store::{InProcessRouter, Store, StoreConfig};
//! let router = InProcessRouter::new(1);
//! let store = Store::open(StoreConfig::new(1, "n1", "/tmp/n1"), router.transport()).await?;
//! router.register(&store);
//! store.bootstrap().await?;
//! store.put("/nodes/1", "ready").await?;
//! let kv = store.get("/nodes/1").await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod codec;
mod crypto;
mod error;
// For the fuzz tests only (`tests/fuzz.rs`): hidden, and not part of the API.
#[doc(hidden)]
pub mod fuzz;
#[cfg(feature = "grpc")]
pub mod grpc;
mod log_store;
mod network;
mod router;
mod state_machine;
mod store;
mod types;

pub use crate::crypto::EncryptionKey;
pub use crate::error::HandleError;
pub use crate::error::MembershipError;
pub use crate::error::OpenError;
pub use crate::error::ReadError;
pub use crate::error::TransportError;
pub use crate::error::WatchError;
pub use crate::error::WriteError;
pub use crate::network::MessageKind;
pub use crate::network::Transport;
pub use crate::router::InProcessRouter;
pub use crate::state_machine::WatchStream;
pub use crate::store::ClusterStatus;
pub use crate::store::MemberStatus;
pub use crate::store::Reachability;
pub use crate::store::Role;
pub use crate::store::Store;
pub use crate::store::StoreConfig;
pub use crate::store::StoreMetrics;
pub use crate::store::WriteObserver;
pub use crate::types::Compare;
pub use crate::types::Consistency;
pub use crate::types::Event;
pub use crate::types::EventKind;
pub use crate::types::KeyValue;
pub use crate::types::NodeId;
pub use crate::types::Op;
pub use crate::types::RangeResult;
pub use crate::types::Txn;
pub use crate::types::TxnOutcome;
