//! Joining a cluster as a worker: fetch the root CA over an unverified connection and check it
//! against the token's digest before sending anything secret, then exchange the token and a CSR
//! for a certificate. The key never leaves the node.

use std::path::Path;

use shoal_api::v1::{self, ca_client::CaClient};
use shoal_ca_pki::{JoinToken, NodeCredentials, NodeKey, TrustBundle, bootstrap_client_config, join_client_config};

/// Joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token does not parse.
    #[error("invalid join token: {0}")]
    Token(String),
    /// The manager could not be reached or refused a step.
    #[error("join through {remote}: {reason}")]
    Remote {
        /// The manager asked.
        remote: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Keys, certificates or their files could not be made or written.
    #[error("certificates in {dir}: {reason}")]
    Certificates {
        /// The directory.
        dir: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Joins the cluster of the manager at `remote` with a worker `token`; saves the node's key,
/// certificate and the cluster's roots in `certs_dir` and returns them.
pub async fn join(remote: &str, token: &str, certs_dir: &Path) -> Result<(NodeCredentials, TrustBundle), JoinError> {
    let token: JoinToken = token.parse().map_err(|e: shoal_ca_pki::TokenError| JoinError::Token(e.to_string()))?;
    let failed = |reason: String| JoinError::Remote { remote: remote.to_owned(), reason };
    let certs =
        |e: &dyn std::fmt::Display| JoinError::Certificates { dir: certs_dir.to_owned(), reason: e.to_string() };
    let channel = |tls| async move {
        shoal_api::connect(remote, tls)
            .await
            .map_err(|e| failed(format!("cannot connect ({e}); check the address and port")))
    };

    let bootstrap = bootstrap_client_config().map_err(|e| certs(&e))?;
    let served = CaClient::new(channel(bootstrap).await?)
        .get_root_ca_certificate(v1::GetRootCaCertificateRequest {})
        .await
        .map_err(|s| failed(format!("fetch the root CA: {}", s.message())))?
        .into_inner();
    let served =
        String::from_utf8(served.certificate).map_err(|_| failed("the served root CA is not PEM text".into()))?;
    let trust = token.verify_root_ca(&served).map_err(|e| {
        failed(format!("the root CA it serves does not match the token ({e}); check the address and the token"))
    })?;

    let key = NodeKey::generate().map_err(|e| certs(&e))?;
    let request = v1::IssueNodeCertificateRequest {
        csr: key.csr_pem().map_err(|e| certs(&e))?.into_bytes(),
        token: token.to_string(),
        availability: v1::NodeAvailability::Active as i32,
        worker_only: true,
    };
    let issued = CaClient::new(channel(join_client_config(&trust).map_err(|e| certs(&e))?).await?)
        .issue_node_certificate(request)
        .await
        .map_err(|s| failed(s.message().to_owned()))?
        .into_inner();
    if issued.role != v1::NodeRole::Worker as i32 {
        return Err(failed(
            "that is a manager token: join managers with `shoal-manager join`, workers with the worker token".into(),
        ));
    }
    let chain =
        String::from_utf8(issued.certificate_chain).map_err(|_| failed("the certificate is not PEM text".into()))?;
    let credentials = NodeCredentials::new(&chain, key).map_err(|e| certs(&e))?;
    std::fs::create_dir_all(certs_dir).map_err(|e| certs(&e))?;
    credentials.save(certs_dir, None).map_err(|e| certs(&e))?;
    trust.save(certs_dir).map_err(|e| certs(&e))?;
    tracing::info!(node.id = %issued.node_id, "joined the cluster as a worker");
    Ok((credentials, trust))
}
