//! Certificate renewal on a manager: its own node certificate, and the admin bundle in its data
//! directory when it has one, are each renewed by the cluster CA this manager holds, at a random
//! point between 50 % and 80 % of their lifetime (as Swarm does), and swapped in without
//! restarting the manager port, the Raft transport or the worker role: they read the certificate
//! through a [`LiveCredentials`] at each handshake. A renewal that fails (no quorum to read the
//! node's role, say) is tried again after a wait that shrinks as the expiry nears; one refused
//! because the certificate was revoked is not tried again.

use std::future::Future;

use shoal_ca_pki::{LiveCredentials, NodeKey};
use time::OffsetDateTime;

use crate::ca_service::CaService;

/// How often a loop whose certificate was refused looks whether another took its place.
const REFUSED_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a renewal failed, and whether trying again can help.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) reason: String,
    /// The CA refused the identity itself (it was revoked): trying again cannot help.
    refused: bool,
}

/// Renews `live` once through `ca`: a new key, a CSR, a certificate for the same identity.
pub(crate) async fn renew_once(ca: &CaService, live: &LiveCredentials) -> Result<OffsetDateTime, Failed> {
    let failed = |reason: String| Failed { reason, refused: false };
    let current = live.current();
    let key = NodeKey::generate().map_err(|e| failed(e.to_string()))?;
    let csr = key.csr_pem().map_err(|e| failed(e.to_string()))?;
    let chain = ca
        .renewal_for(current.identity().clone(), csr.as_bytes())
        .await
        .map_err(|s| Failed { reason: s.message().to_owned(), refused: s.code() == tonic::Code::PermissionDenied })?;
    let renewed = live.renew(&chain, key).map_err(|e| failed(format!("save in {}: {e}", live.dir().display())))?;
    Ok(renewed.not_after())
}

/// Keeps `live` (`what`: "node" or "admin bundle") renewed until `stopped` resolves.
pub(crate) async fn keep_renewed(
    ca: CaService,
    live: LiveCredentials,
    what: &'static str,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut wait = live.until_renewal();
    // The ID the CA refused: not asked for again, but a new certificate written to the same
    // directory (`shoal cluster admin-cert rotate` on this manager's bundle) is renewed again.
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(wait) => {}
        }
        let node_id = live.current().identity().node_id.clone();
        if refused.as_ref() == Some(&node_id) {
            wait = REFUSED_RECHECK;
            continue;
        }
        if refused.take().is_some() {
            // Another certificate took the refused one's place: renewed at its own time.
            wait = live.until_renewal();
            continue;
        }
        match renew_once(&ca, &live).await {
            Ok(not_after) => {
                tracing::info!(certificate = what, node.id = %node_id, %not_after, "certificate renewed");
                wait = live.until_renewal();
            }
            Err(Failed { reason, refused: true }) => {
                tracing::warn!(
                    certificate = what,
                    node.id = %node_id,
                    %reason,
                    "certificate renewal refused; not asking again"
                );
                refused = Some(node_id);
                wait = REFUSED_RECHECK;
            }
            Err(Failed { reason, .. }) => {
                let not_after = live.current().not_after();
                wait = live.retry_wait();
                tracing::warn!(
                    certificate = what,
                    node.id = %node_id,
                    %not_after,
                    %reason,
                    retry_in_ms = wait.as_millis() as u64,
                    "certificate renewal failed"
                );
            }
        }
    }
}
