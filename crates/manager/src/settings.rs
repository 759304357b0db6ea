//! The cluster-wide settings `shoal cluster update` changes (the cluster object's spec), read
//! where they act: the task history the leader keeps per slot, the heartbeat period its
//! dispatcher asks of nodes, how long the certificates the CA issues last, and how often each
//! manager snapshots its Raft log. A manager's own configuration (`--heartbeat-period`,
//! `--cert-expiry` at init) is what `init` stores and what applies while no cluster object can
//! be read.

use std::time::Duration;

use shoal_api::v1;
use tonic::Status;

use crate::objects::{ObjectError, ObjectStore};

/// The shortest certificate lifetime `--cert-expiry` takes (Swarm's minimum).
pub const MIN_CERT_EXPIRY: Duration = Duration::from_secs(3600);
/// The longest (certificates are renewed long before they expire; beyond this a revocation
/// would have to be kept for ever).
pub const MAX_CERT_EXPIRY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The range of the dispatcher's heartbeat period.
pub const HEARTBEAT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));
/// The most terminated tasks kept per slot (`-1`: no limit, as swarmkit's negative limit).
pub const MAX_TASK_HISTORY: i64 = 1000;
/// Raft log entries between two snapshots unless `--snapshot-interval` says otherwise (Swarm's).
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 10_000;
/// The range `--snapshot-interval` takes: a snapshot at least every few entries is all
/// compaction and no log; beyond ten million the log outgrows any disk it fits on.
pub const SNAPSHOT_INTERVAL_RANGE: (u64, u64) = (10, 10_000_000);

/// How often the keys of encrypted overlays are rotated unless the cluster says otherwise
/// (Swarm's fixed interval).
pub const DEFAULT_NETWORK_KEY_ROTATION: Duration = Duration::from_secs(12 * 3600);
/// The range `--network-key-rotation` takes: every node must apply a rotation before the next
/// one prunes the key it may still be sending with, so not faster than a few heartbeats; and at
/// least once a year.
pub const NETWORK_KEY_ROTATION_RANGE: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(365 * 24 * 3600));

/// The cluster object, if this manager can read one.
pub(crate) async fn cluster(objects: &ObjectStore) -> Result<Option<v1::Cluster>, ObjectError> {
    Ok(objects.list::<v1::Cluster>().await?.into_iter().next())
}

fn spec(cluster: Option<&v1::Cluster>) -> Option<&v1::ClusterSpec> {
    cluster.and_then(|c| c.spec.as_ref())
}

/// How long certificates issued now last.
pub(crate) fn cert_validity(cluster: Option<&v1::Cluster>, fallback: Duration) -> Duration {
    spec(cluster).and_then(|s| shoal_api::from_duration(s.node_cert_expiry.as_ref())).unwrap_or(fallback)
}

/// The longest lifetime any certificate of the cluster may have been issued with: what a
/// revocation must outlast.
pub(crate) fn longest_cert_validity(cluster: Option<&v1::Cluster>, fallback: Duration) -> Duration {
    let recorded = cluster.and_then(|c| shoal_api::from_duration(c.longest_node_cert_expiry.as_ref()));
    cert_validity(cluster, fallback).max(recorded.unwrap_or_default()).max(fallback)
}

/// Terminated tasks kept per slot.
pub(crate) fn task_history(cluster: Option<&v1::Cluster>, fallback: usize) -> usize {
    match spec(cluster).map(|s| s.task_history_retention_limit) {
        Some(limit) if limit < 0 => usize::MAX,
        Some(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        None => fallback,
    }
}

/// Raft log entries between two snapshots.
pub(crate) fn snapshot_interval(cluster: Option<&v1::Cluster>) -> u64 {
    match spec(cluster).map(|s| s.snapshot_interval) {
        Some(0) | None => DEFAULT_SNAPSHOT_INTERVAL,
        Some(n) => n,
    }
}

/// Keeps this manager's Raft snapshot interval at the cluster's setting (each member compacts
/// its own log), looking at its replica of the cluster object `cluster_id` once a second.
pub(crate) async fn follow_snapshot_interval(
    objects: ObjectStore,
    cluster_id: String,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        if let Ok(cluster) = objects.get_local::<v1::Cluster>(&cluster_id).await {
            objects.store().set_snapshot_interval(snapshot_interval(Some(&cluster)));
        }
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// How often nodes send heartbeats.
pub(crate) fn heartbeat_period(cluster: Option<&v1::Cluster>, fallback: Duration) -> Duration {
    spec(cluster)
        .and_then(|s| shoal_api::from_duration(s.heartbeat_period.as_ref()))
        .filter(|p| (HEARTBEAT_RANGE.0..=HEARTBEAT_RANGE.1).contains(p))
        .unwrap_or(fallback)
}

/// How often the keys of encrypted overlays are rotated.
pub(crate) fn network_key_rotation(cluster: Option<&v1::Cluster>) -> Duration {
    spec(cluster)
        .and_then(|s| shoal_api::from_duration(s.network_key_rotation.as_ref()))
        .filter(|p| (NETWORK_KEY_ROTATION_RANGE.0..=NETWORK_KEY_ROTATION_RANGE.1).contains(p))
        .unwrap_or(DEFAULT_NETWORK_KEY_ROTATION)
}

/// Refuses a cluster spec whose settings cannot work, naming the setting, the value and the
/// range.
pub(crate) fn validate(spec: &v1::ClusterSpec) -> Result<(), Status> {
    if let Some(expiry) = spec.node_cert_expiry.as_ref() {
        let expiry = shoal_api::from_duration(Some(expiry))
            .ok_or_else(|| Status::invalid_argument("--cert-expiry must not be negative"))?;
        if !(MIN_CERT_EXPIRY..=MAX_CERT_EXPIRY).contains(&expiry) {
            return Err(Status::invalid_argument(format!(
                "--cert-expiry {} is out of range: certificates must last between {} and {}",
                human(expiry),
                human(MIN_CERT_EXPIRY),
                human(MAX_CERT_EXPIRY)
            )));
        }
    }
    if let Some(period) = spec.heartbeat_period.as_ref() {
        let period = shoal_api::from_duration(Some(period))
            .ok_or_else(|| Status::invalid_argument("--dispatcher-heartbeat must not be negative"))?;
        if !(HEARTBEAT_RANGE.0..=HEARTBEAT_RANGE.1).contains(&period) {
            return Err(Status::invalid_argument(format!(
                "--dispatcher-heartbeat {} is out of range: between {} and {}",
                human(period),
                human(HEARTBEAT_RANGE.0),
                human(HEARTBEAT_RANGE.1)
            )));
        }
    }
    if let Some(rotation) = spec.network_key_rotation.as_ref() {
        let rotation = shoal_api::from_duration(Some(rotation))
            .ok_or_else(|| Status::invalid_argument("--network-key-rotation must not be negative"))?;
        let (min, max) = NETWORK_KEY_ROTATION_RANGE;
        if !(min..=max).contains(&rotation) {
            return Err(Status::invalid_argument(format!(
                "--network-key-rotation {} is out of range: between {} and {}",
                human(rotation),
                human(min),
                human(max)
            )));
        }
    }
    let interval = spec.snapshot_interval;
    if interval != 0 && !(SNAPSHOT_INTERVAL_RANGE.0..=SNAPSHOT_INTERVAL_RANGE.1).contains(&interval) {
        return Err(Status::invalid_argument(format!(
            "--snapshot-interval {interval} is out of range: between {} and {} log entries",
            SNAPSHOT_INTERVAL_RANGE.0, SNAPSHOT_INTERVAL_RANGE.1
        )));
    }
    let limit = spec.task_history_retention_limit;
    if !(-1..=MAX_TASK_HISTORY).contains(&limit) {
        return Err(Status::invalid_argument(format!(
            "--task-history-limit {limit} is out of range: between 0 and {MAX_TASK_HISTORY}, or -1 to keep every task"
        )));
    }
    Ok(())
}

/// A duration as docker's flags take it: `2160h`, `1h30m`, `500ms`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let mut out = String::new();
    for (value, unit) in [(secs / 3600, "h"), (secs % 3600 / 60, "m"), (secs % 60, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: v1::ClusterSpec, longest: Option<Duration>) -> v1::Cluster {
        v1::Cluster {
            spec: Some(spec),
            longest_node_cert_expiry: longest.map(shoal_api::to_duration),
            ..Default::default()
        }
    }

    #[test]
    fn settings_come_from_the_spec_or_the_fallback() {
        let hour = Duration::from_secs(3600);
        let spec = v1::ClusterSpec {
            task_history_retention_limit: 2,
            heartbeat_period: Some(shoal_api::to_duration(Duration::from_secs(3))),
            node_cert_expiry: Some(shoal_api::to_duration(hour)),
            ..Default::default()
        };
        let c = cluster(spec, Some(hour * 48));
        assert_eq!(task_history(Some(&c), 5), 2);
        assert_eq!(heartbeat_period(Some(&c), Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(cert_validity(Some(&c), hour * 24), hour);
        assert_eq!(longest_cert_validity(Some(&c), hour * 24), hour * 48, "a longer expiry was used before");
        assert_eq!(longest_cert_validity(Some(&c), hour * 72), hour * 72, "this manager's own is longer");
        assert_eq!((task_history(None, 5), cert_validity(None, hour)), (5, hour));
        let unlimited = cluster(v1::ClusterSpec { task_history_retention_limit: -1, ..Default::default() }, None);
        assert_eq!(task_history(Some(&unlimited), 5), usize::MAX);
        // A period nobody could have stored through validation falls back.
        let odd = cluster(
            v1::ClusterSpec { heartbeat_period: Some(shoal_api::to_duration(Duration::ZERO)), ..Default::default() },
            None,
        );
        assert_eq!(heartbeat_period(Some(&odd), Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn out_of_range_settings_are_refused_by_name() {
        let with = |f: fn(&mut v1::ClusterSpec)| {
            let mut spec = v1::ClusterSpec { task_history_retention_limit: 5, ..Default::default() };
            f(&mut spec);
            validate(&spec).err().map(|s| s.message().to_owned())
        };
        assert_eq!(with(|_| {}), None);
        assert_eq!(
            with(|s| s.node_cert_expiry = Some(shoal_api::to_duration(Duration::from_secs(1800)))),
            Some("--cert-expiry 30m is out of range: certificates must last between 1h and 87600h".to_owned())
        );
        assert_eq!(with(|s| s.node_cert_expiry = Some(shoal_api::to_duration(Duration::from_secs(3600)))), None);
        assert_eq!(
            with(|s| s.heartbeat_period = Some(shoal_api::to_duration(Duration::from_millis(10)))),
            Some("--dispatcher-heartbeat 10ms is out of range: between 100ms and 1h".to_owned())
        );
        assert_eq!(
            with(|s| s.task_history_retention_limit = -2),
            Some("--task-history-limit -2 is out of range: between 0 and 1000, or -1 to keep every task".to_owned())
        );
        assert_eq!(with(|s| s.task_history_retention_limit = -1), None);
        assert_eq!(
            with(|s| s.network_key_rotation = Some(shoal_api::to_duration(Duration::from_secs(5)))),
            Some("--network-key-rotation 5s is out of range: between 10s and 8760h".to_owned())
        );
        assert_eq!(with(|s| s.network_key_rotation = Some(shoal_api::to_duration(Duration::from_secs(10)))), None);
    }

    #[test]
    fn the_network_key_rotation_is_twelve_hours_unless_set() {
        assert_eq!(network_key_rotation(None), Duration::from_secs(12 * 3600));
        let every = |secs| {
            cluster(
                v1::ClusterSpec {
                    network_key_rotation: Some(shoal_api::to_duration(Duration::from_secs(secs))),
                    ..Default::default()
                },
                None,
            )
        };
        assert_eq!(network_key_rotation(Some(&every(30))), Duration::from_secs(30));
        assert_eq!(network_key_rotation(Some(&every(1))), Duration::from_secs(12 * 3600), "out of range: the default");
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(90 * 86_400)), "2160h");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }
}
