//! `shoal cluster …`: the cluster's settings (`inspect`, `update`, as `docker swarm
//! inspect|update`), autolock (`unlock-key`, `unlock`, as `docker swarm unlock-key|unlock`) and
//! the admin client bundles (`admin-cert ls|rotate|revoke`) and the root CA (`ca [--rotate]`,
//! as `docker swarm ca`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::service::go_duration;
use super::{ListArgs, api};
use crate::format::Output;
use crate::render;

pub(crate) mod ca;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Show the cluster's settings, root CA and address pools (JSON unless --pretty).
    Inspect {
        /// Print them for people instead of JSON.
        #[arg(long)]
        pretty: bool,
    },
    /// Change the cluster's settings; each takes effect at once on every manager.
    Update(UpdateArgs),
    /// Manage admin client bundles (the certificates the CLI uses).
    #[command(subcommand, name = "admin-cert")]
    AdminCert(AdminCertCommand),
    /// Print (or rotate) the unlock key of an autolocked cluster.
    #[command(name = "unlock-key")]
    UnlockKey {
        /// Replace the key; every manager re-encrypts its keys with the new one.
        #[arg(long)]
        rotate: bool,
        /// Print only the key.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Give a restarted, locked manager (--host) the unlock key: typed at the prompt, or piped
    /// in on standard input.
    Unlock,
    /// Print the cluster's root CA certificate, or rotate it (--rotate) and follow the nodes.
    Ca(ca::CaArgs),
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// Terminated tasks kept per slot (0 to 1000; -1 keeps them all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    task_history_limit: Option<i64>,
    /// How often nodes send heartbeats (100ms to 1h), e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    dispatcher_heartbeat: Option<Duration>,
    /// How long node certificates issued from now on last (1h to 3650d), e.g. 720h; nodes
    /// get them at their next renewal.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    cert_expiry: Option<Duration>,
    /// Encrypt the managers' keys at rest with an unlock key (true), or stop (false); turning it
    /// on prints the key.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    autolock: Option<bool>,
    /// Raft log entries between two snapshots on each manager (10 to 10000000; default 10000).
    #[arg(long, value_name = "N")]
    snapshot_interval: Option<u64>,
    /// How often the keys of encrypted overlay networks are rotated (10s to 8760h; default
    /// 12h), e.g. 1h.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    network_key_rotation: Option<Duration>,
}

async fn get_cluster(control: &mut ControlClient<Channel>) -> anyhow::Result<v1::Cluster> {
    let cluster = control.get_cluster(v1::GetClusterRequest {}).await.map_err(api)?.into_inner().cluster;
    cluster.ok_or_else(|| anyhow::anyhow!("the manager answered without a cluster"))
}

/// `shoal cluster inspect [--pretty]`.
pub(crate) async fn inspect(control: &mut ControlClient<Channel>, pretty_output: bool) -> anyhow::Result<()> {
    let cluster = get_cluster(control).await?;
    if pretty_output {
        print!("{}", pretty(&cluster));
    } else {
        println!("{}", serde_json::to_string_pretty(&cluster_json(&cluster))?);
    }
    Ok(())
}

/// `shoal cluster update …`: the flags given change the stored spec (read, changed, written at
/// the version read).
pub(crate) async fn update(control: &mut ControlClient<Channel>, args: UpdateArgs) -> anyhow::Result<()> {
    let UpdateArgs {
        task_history_limit,
        dispatcher_heartbeat,
        cert_expiry,
        autolock,
        snapshot_interval,
        network_key_rotation,
    } = args;
    anyhow::ensure!(
        task_history_limit.is_some()
            || dispatcher_heartbeat.is_some()
            || cert_expiry.is_some()
            || autolock.is_some()
            || snapshot_interval.is_some()
            || network_key_rotation.is_some(),
        "nothing to update: give --task-history-limit, --dispatcher-heartbeat, --cert-expiry, --autolock, \
         --snapshot-interval or --network-key-rotation"
    );
    let cluster = get_cluster(control).await?;
    let mut spec = cluster.spec.clone().unwrap_or_default();
    if let Some(limit) = task_history_limit {
        spec.task_history_retention_limit = limit;
    }
    if let Some(period) = dispatcher_heartbeat {
        spec.heartbeat_period = Some(shoal_api::to_duration(period));
    }
    if let Some(expiry) = cert_expiry {
        spec.node_cert_expiry = Some(shoal_api::to_duration(expiry));
    }
    if let Some(autolock) = autolock {
        spec.autolock_managers = autolock;
    }
    if let Some(interval) = snapshot_interval {
        spec.snapshot_interval = interval;
    }
    if let Some(rotation) = network_key_rotation {
        spec.network_key_rotation = Some(shoal_api::to_duration(rotation));
    }
    let version = cluster.meta.as_ref().map_or(0, |m| m.version);
    let request = v1::UpdateClusterRequest { version, spec: Some(spec), ..Default::default() };
    let updated = control.update_cluster(request).await.map_err(api)?.into_inner();
    println!("Cluster updated.");
    if !updated.unlock_key.is_empty() {
        print!("{}", unlock_key_text(&updated.unlock_key));
    }
    Ok(())
}

/// How docker shows an unlock key.
fn unlock_key_text(key: &str) -> String {
    format!(
        "To unlock a manager after it restarts, run `shoal cluster unlock` and give it this key:\n\n    {key}\n\n\
         Keep it in a password manager: without it, a restarted manager cannot be unlocked.\n"
    )
}

/// `shoal cluster unlock-key [--rotate] [-q]`.
pub(crate) async fn unlock_key(control: &mut ControlClient<Channel>, rotate: bool, quiet: bool) -> anyhow::Result<()> {
    let key = if rotate {
        let cluster = get_cluster(control).await?;
        let version = cluster.meta.as_ref().map_or(0, |m| m.version);
        let request =
            v1::UpdateClusterRequest { version, spec: cluster.spec, rotate_unlock_key: true, ..Default::default() };
        let key = control.update_cluster(request).await.map_err(api)?.into_inner().unlock_key;
        if !quiet {
            println!("Successfully rotated the unlock key.\n");
        }
        key
    } else {
        control.get_unlock_key(v1::GetUnlockKeyRequest {}).await.map_err(api)?.into_inner().unlock_key
    };
    match quiet {
        true => println!("{key}"),
        false => print!("{}", unlock_key_text(&key)),
    }
    Ok(())
}

/// `shoal cluster unlock`: reads the key, gives it to the locked manager at `host`.
pub(crate) async fn unlock(host: &str, cert_path: &Path) -> anyhow::Result<()> {
    let key = shoal_manager::read_unlock_key("Unlock key: ")?;
    let node_id = shoal_manager::unlock(host, cert_path, &key).await?;
    println!("Manager {node_id} unlocked: it is starting.");
    Ok(())
}

/// The cluster as docker's `/swarm` JSON: `Spec` with `Orchestration`, `Dispatcher`,
/// `CAConfig` and `EncryptionConfig` (durations in nanoseconds), `TLSInfo`, the pools.
pub(crate) fn cluster_json(cluster: &v1::Cluster) -> serde_json::Value {
    let spec = cluster.spec.clone().unwrap_or_default();
    let meta = cluster.meta.unwrap_or_default();
    let nanos = |d: Option<Duration>| u64::try_from(d.unwrap_or_default().as_nanos()).unwrap_or(u64::MAX);
    let heartbeat = shoal_api::from_duration(spec.heartbeat_period.as_ref());
    let expiry = shoal_api::from_duration(spec.node_cert_expiry.as_ref());
    let annotations = spec.annotations.clone().unwrap_or_default();
    serde_json::json!({
        "ID": cluster.id,
        "Version": { "Index": meta.version },
        "CreatedAt": shoal_api::from_timestamp(meta.created_at.as_ref()).map(render::rfc3339),
        "UpdatedAt": shoal_api::from_timestamp(meta.updated_at.as_ref()).map(render::rfc3339),
        "Spec": {
            "Name": annotations.name,
            "Labels": annotations.labels,
            "Orchestration": { "TaskHistoryRetentionLimit": spec.task_history_retention_limit },
            "Dispatcher": { "HeartbeatPeriod": nanos(heartbeat) },
            "CAConfig": { "NodeCertExpiry": nanos(expiry) },
            "EncryptionConfig": {
                "AutoLockManagers": spec.autolock_managers,
                "NetworkKeyRotation": nanos(Some(network_key_rotation(&spec))),
            },
            "Raft": { "SnapshotInterval": snapshot_interval(&spec) },
        },
        "TLSInfo": {
            "TrustRoot": String::from_utf8_lossy(&cluster.root_ca_cert),
            "RootCADigest": cluster.root_ca_digest,
        },
        "RootRotationInProgress": rotation_in_progress(cluster),
        "DefaultAddrPool": cluster.default_addr_pool,
        "SubnetSize": cluster.subnet_size,
        "JoinTokens": cluster.join_tokens.as_ref().map(|t| serde_json::json!({ "Worker": t.worker, "Manager": t.manager })),
    })
}

/// `cluster inspect --pretty`, as the Swarm section of `docker info`.
pub(crate) fn pretty(cluster: &v1::Cluster) -> String {
    let spec = cluster.spec.clone().unwrap_or_default();
    let meta = cluster.meta.unwrap_or_default();
    let created = shoal_api::from_timestamp(meta.created_at.as_ref()).map(render::rfc3339).unwrap_or_default();
    let limit = match spec.task_history_retention_limit {
        -1 => "unlimited".to_owned(),
        n => n.to_string(),
    };
    let pools = if cluster.default_addr_pool.is_empty() {
        "10.0.0.0/8".to_owned()
    } else {
        cluster.default_addr_pool.join(", ")
    };
    let subnet = if cluster.subnet_size == 0 { 24 } else { cluster.subnet_size };
    format!(
        "ID:\t\t\t{}\nName:\t\t\t{}\nCreated:\t\t{created}\nOrchestration:\n Task History Retention Limit:\t{limit}\n\
         Dispatcher:\n Heartbeat Period:\t{}\nCA Configuration:\n Expiry Duration:\t{}\n Root CA digest:\t{}\n\
         Autolock Managers:\t{}\nNetwork Key Rotation:\t{}\nRaft:\n Snapshot Interval:\t{}\nRoot Rotation In Progress:\t{}\n\
         Default Address Pool:\t{pools}\n SubnetSize:\t{subnet}\n",
        cluster.id,
        spec.annotations.as_ref().map(|a| a.name.as_str()).unwrap_or_default(),
        go_duration(shoal_api::from_duration(spec.heartbeat_period.as_ref()).unwrap_or_default()),
        go_duration(shoal_api::from_duration(spec.node_cert_expiry.as_ref()).unwrap_or_default()),
        cluster.root_ca_digest,
        spec.autolock_managers,
        go_duration(network_key_rotation(&spec)),
        snapshot_interval(&spec),
        rotation_in_progress(cluster),
    )
}

/// The snapshot interval in effect (0 stored: the default).
fn snapshot_interval(spec: &v1::ClusterSpec) -> u64 {
    if spec.snapshot_interval == 0 { shoal_manager::DEFAULT_SNAPSHOT_INTERVAL } else { spec.snapshot_interval }
}

/// The network key rotation in effect (unset: the default).
fn network_key_rotation(spec: &v1::ClusterSpec) -> Duration {
    shoal_api::from_duration(spec.network_key_rotation.as_ref()).unwrap_or(shoal_manager::DEFAULT_NETWORK_KEY_ROTATION)
}

/// Whether a root CA rotation is under way: the cluster trusts two roots exactly then.
fn rotation_in_progress(cluster: &v1::Cluster) -> bool {
    String::from_utf8_lossy(&cluster.root_ca_cert).matches("-----BEGIN CERTIFICATE-----").count() > 1
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCertCommand {
    /// List the admin certificates the cluster issued and the revoked ones (`*`: this one).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Replace the bundle this command runs with (--cert-path) by a new certificate, and revoke
    /// the old one.
    Rotate,
    /// Revoke admin certificates: every manager refuses them from then on.
    Revoke {
        /// Revoke even the certificate this command runs with (locks you out).
        #[arg(long, short)]
        force: bool,
        /// Full IDs (`admin-…`) or unique prefixes.
        ids: Vec<String>,
    },
}

pub(crate) async fn admin_cert(
    control: &mut ControlClient<Channel>,
    channel: Channel,
    cert_path: &Path,
    command: AdminCertCommand,
) -> anyhow::Result<()> {
    match command {
        AdminCertCommand::Ls(list) => {
            let request = v1::ListAdminCertificatesRequest {};
            let listed = control.list_admin_certificates(request).await.map_err(api)?.into_inner();
            match (list.quiet, list.table_or_json("cluster admin-cert ls")?) {
                (true, _) => listed.certificates.iter().for_each(|c| println!("{}", c.id)),
                (false, Output::Json) => println!("{}", admin_certs_json(&listed)),
                (false, _) => print!("{}", render::admin_certs(&listed, SystemTime::now())),
            }
        }
        AdminCertCommand::Rotate => {
            let rotated = shoal_manager::rotate_admin_bundle(channel, cert_path).await?;
            println!(
                "{} now holds admin certificate {}; {} is revoked.",
                cert_path.display(),
                rotated.new_id,
                rotated.old_id
            );
        }
        AdminCertCommand::Revoke { force, ids } => {
            anyhow::ensure!(!ids.is_empty(), "name at least one admin certificate");
            for id in ids {
                let request = v1::RevokeAdminCertificateRequest { id, force };
                let revoked = control.revoke_admin_certificate(request).await.map_err(api)?.into_inner();
                println!("{}", revoked.revocation.map(|r| r.id).unwrap_or_default());
            }
        }
    }
    Ok(())
}

pub(crate) fn admin_certs_json(listed: &v1::ListAdminCertificatesResponse) -> serde_json::Value {
    // Seconds since the Unix epoch.
    let at = |meta: Option<&v1::Meta>| {
        shoal_api::from_timestamp(meta.and_then(|m| m.created_at.as_ref()))
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let certificates = listed.certificates.iter().map(|c| {
        serde_json::json!({
            "ID": c.id, "Status": "active", "IssuedBy": c.issued_by,
            "CreatedAt": at(c.meta.as_ref()), "Current": c.id == listed.caller,
        })
    });
    let revoked = listed.revoked.iter().map(|r| {
        serde_json::json!({
            "ID": r.id, "Status": "revoked",
            "RevokedAt": at(r.meta.as_ref()), "Current": r.id == listed.caller,
        })
    });
    serde_json::Value::Array(certificates.chain(revoked).collect())
}
