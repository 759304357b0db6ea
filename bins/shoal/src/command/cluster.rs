//! `shoal cluster …`: the admin client bundles (`admin-cert ls|rotate|revoke`).

use std::path::Path;
use std::time::SystemTime;

use clap::Subcommand;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::{ListArgs, api};
use crate::format::Output;
use crate::render;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Manage admin client bundles (the certificates the CLI uses).
    #[command(subcommand, name = "admin-cert")]
    AdminCert(AdminCertCommand),
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
