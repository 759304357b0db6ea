//! Shoal's control plane: the cluster state in raft-store, the orchestrators that turn services
//! into tasks, the scheduler driver, the dispatcher that hands tasks to nodes, and the CA, all
//! composed from the subsystem crates (raft-store, scheduler, ca-pki) and spoken over `api`.
//!
//! Built so far: the manager port ([`serve`]: control API, CA, dispatcher and Raft transport
//! behind role checks over mutual TLS), the control API ([`ControlService`]), the dispatcher
//! ([`Dispatcher`]), the CA service ([`CaService`]), the typed object store with optimistic
//! concurrency ([`ObjectStore`]), spec validation ([`validate_service_spec`], [`validate_name`]),
//! the replicated orchestrator's reconcile step ([`reconcile_replicated`]), the scheduler
//! driver's translation ([`place`]), the leader's control loops ([`Leader`]) and a manager's life
//! on disk ([`init`], [`join`], [`start`]). What comes next is in README.md.
#![warn(missing_docs)]

mod allocator;
mod autolock;
mod backup;
mod ca_service;
mod client;
mod control;
mod data_key;
mod dispatcher;
mod events;
mod ids;
mod images;
mod jobs;
mod leader;
mod lock;
mod logs;
mod metrics;
mod node;
mod objects;
mod orchestrator;
mod passes;
mod payload;
mod placement;
mod recovery;
mod renewal;
mod revocation;
mod root_ca;
mod server;
mod settings;
mod status;
#[cfg(test)]
mod testutil;
mod tls;
mod updater;
mod validate;

pub use allocator::holds_addresses;
pub use backup::{
    Backup, BackupError, BackupHeader, backup_is_sealed, backup_needs_unlock_key, open_backup, restore, take_backup,
    write_backup,
};
pub use ca_service::CaService;
pub use client::{ClientError, RotatedBundle, connect_with_bundle, read_unlock_key, rotate_admin_bundle, unlock};
pub use control::ControlService;
pub use dispatcher::Dispatcher;
pub use images::{ImageResolver, Resolving};
pub use jobs::{JobPlan, JobProgress, job_progress, reconcile_job};
pub use leader::{DEFAULT_TASK_HISTORY, Leader, PassReport};
pub use metrics::ManagerMetrics;
pub use node::{
    InitOutcome, Joined, ManagerConfig, RunningManager, StartError, forget_manager, holds_manager, init, join,
    join_node, promote, recorded_advertise_addr, release_node_key, start,
};
pub use objects::{BATCH, MODIFY_ATTEMPTS, Object, ObjectError, ObjectStore, Write};
pub use orchestrator::{GlobalPlan, ReplicatedPlan, reconcile_global, reconcile_replicated};
pub use placement::{PlacementResult, place};
pub use server::{Services, serve};
pub use settings::{
    DEFAULT_NETWORK_KEY_ROTATION, DEFAULT_SNAPSHOT_INTERVAL, HEARTBEAT_RANGE, MAX_CERT_EXPIRY, MAX_TASK_HISTORY,
    MIN_CERT_EXPIRY, NETWORK_KEY_ROTATION_RANGE, SNAPSHOT_INTERVAL_RANGE,
};
pub use tls::PeerInfo;
pub use updater::task_dirty;
pub use validate::{SpecError, ULIMITS, validate_name, validate_service_spec};
