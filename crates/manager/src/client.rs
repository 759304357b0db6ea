//! The client side of the manager port, for the CLI and tools: load a client bundle (a
//! certificate, its key and the cluster's roots, as `init` writes under `DATA/admin`), open a
//! channel to a manager (telling a revoked bundle or a locked manager from a broken network),
//! rotate an admin bundle, unlock a locked manager.

use std::path::{Path, PathBuf};

use shoal_ca_pki::{KeyError, LiveCredentials, NodeKey, TrustBundle, UnlockKey, live_client_config};
use tonic::transport::Channel;

/// A client bundle could not be used or the manager could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bundle directory is missing or incomplete.
    #[error(
        "cannot load the client bundle in {dir}: {reason} (point --cert-path or SHOAL_CERT_PATH at the directory `shoal-manager init` printed, or run on a manager host as root)"
    )]
    Bundle {
        /// The bundle directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No manager answered at the address.
    #[error("cannot reach a manager at {addr}: {reason} (check --host or SHOAL_HOST, and that shoal-manager runs)")]
    Unreachable {
        /// The address.
        addr: String,
        /// The transport's error.
        reason: String,
    },
    /// The managers refuse the bundle's certificate: it was revoked.
    #[error(
        "the managers refuse the client bundle in {dir}: its certificate was revoked; use another admin bundle (each \
         manager keeps a current one in its DATA/admin)"
    )]
    Revoked {
        /// The bundle directory.
        dir: PathBuf,
    },
    /// The bundle and the manager share no root: the cluster's root CA was rotated since the
    /// bundle was last used.
    #[error(
        "the client bundle in {dir} and the manager at {addr} trust different root CAs: the cluster's root CA was \
         rotated (`shoal cluster ca --rotate`) since this bundle was last used; copy a current bundle from a \
         manager's data directory (DATA/admin)"
    )]
    OtherRoot {
        /// The bundle directory.
        dir: PathBuf,
        /// The manager's address.
        addr: String,
    },
    /// The manager is locked (autolock): it serves nothing until it is given the unlock key.
    #[error(
        "this manager ({addr}) is locked: its keys are encrypted with the cluster's unlock key since it restarted; \
         run `shoal cluster unlock` (with --host {addr}) and give the key"
    )]
    Locked {
        /// The manager's address.
        addr: String,
    },
    /// `shoal cluster unlock` against a manager that is not locked.
    #[error("this manager ({addr}) is not locked: there is nothing to unlock")]
    NotLocked {
        /// The manager's address.
        addr: String,
    },
    /// The unlock key could not be read or was refused.
    #[error("{0}")]
    Unlock(String),
    /// The manager refused a step of a bundle's rotation.
    #[error("{step}: {reason}")]
    Rotation {
        /// What was being done.
        step: String,
        /// Why it failed, and what to do.
        reason: String,
    },
}

/// What [`rotate_admin_bundle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedBundle {
    /// The ID of the certificate the bundle held, now revoked.
    pub old_id: String,
    /// The ID of the certificate it holds now.
    pub new_id: String,
}

/// Replaces the admin certificate in `bundle` by a new one (a new key, a new ID, issued through
/// the manager behind `channel`), written in its place, then revokes the old one. A manager that
/// keeps this bundle (its `DATA/admin`) renews the new certificate from then on.
pub async fn rotate_admin_bundle(channel: Channel, bundle: &Path) -> Result<RotatedBundle, ClientError> {
    use shoal_api::v1::{IssueAdminCertificateRequest, RevokeAdminCertificateRequest, control_client::ControlClient};
    let bad = |reason: String| ClientError::Bundle { dir: bundle.to_owned(), reason };
    let refused = |step: &str| {
        let step = step.to_owned();
        move |s: tonic::Status| ClientError::Rotation { step: step.clone(), reason: s.message().to_owned() }
    };
    let live = LiveCredentials::load(bundle).map_err(|e| bad(e.to_string()))?;
    let old_id = live.current().identity().node_id.clone();
    if !crate::tls::is_admin(live.current().identity()) {
        return Err(bad(format!(
            "it holds the certificate of node {old_id}, not an admin bundle; only admin bundles are rotated"
        )));
    }
    let key = NodeKey::generate().map_err(|e| bad(e.to_string()))?;
    let csr = key.csr_pem().map_err(|e| bad(e.to_string()))?.into_bytes();
    let mut control = ControlClient::new(channel);
    let issued = control
        .issue_admin_certificate(IssueAdminCertificateRequest { csr })
        .await
        .map_err(refused("issue a new admin certificate"))?
        .into_inner();
    let chain =
        String::from_utf8(issued.certificate_chain).map_err(|_| bad("the new certificate is not PEM text".into()))?;
    live.renew(&chain, key).map_err(|e| {
        bad(format!(
            "cannot write the new certificate ({e}); the old one ({old_id}) stays valid, and {} was issued unused: \
             revoke it",
            issued.id
        ))
    })?;
    control.revoke_admin_certificate(RevokeAdminCertificateRequest { id: old_id.clone(), force: true }).await.map_err(
        |s| ClientError::Rotation {
            step: format!("revoke the old admin certificate {old_id}"),
            reason: format!(
                "{}; {} holds the new certificate {} now: revoke the old one with \
                 `shoal cluster admin-cert revoke {old_id}`",
                s.message(),
                bundle.display(),
                issued.id
            ),
        },
    )?;
    Ok(RotatedBundle { old_id, new_id: issued.id })
}

/// Opens a channel to the manager at `addr` with the client bundle in `bundle`.
///
/// A bundle past its renewal point (50–80 % of its lifetime) is renewed through the manager and
/// rewritten in place, so a bundle in use never expires; one that cannot be rewritten (a
/// read-only copy) is used as it is. An expired bundle is refused with what to do.
pub async fn connect_with_bundle(addr: &str, bundle: &Path) -> Result<Channel, ClientError> {
    let bad = |reason: String| ClientError::Bundle { dir: bundle.to_owned(), reason };
    let live = LiveCredentials::load(bundle).map_err(|e| bad(e.to_string()))?;
    let not_after = live.current().not_after();
    if not_after <= time::OffsetDateTime::now_utc() {
        return Err(bad(format!(
            "its certificate expired at {not_after}; copy a current bundle from a manager's data directory \
             (DATA/admin, which the manager that wrote it keeps renewed)"
        )));
    }
    let tls = live_client_config(&live).map_err(|e| bad(e.to_string()))?;
    let channel = match shoal_api::connect(addr, tls.clone()).await {
        Ok(channel) => channel,
        Err(e) if shoal_ca_pki::refused_as_revoked(&e) => return Err(ClientError::Revoked { dir: bundle.to_owned() }),
        Err(e) if shoal_ca_pki::refused_for_unknown_root(&e) => {
            return Err(ClientError::OtherRoot { dir: bundle.to_owned(), addr: addr.to_owned() });
        }
        // A certificate for another name: a locked manager, if it proves to be one.
        Err(e) if shoal_ca_pki::named_otherwise(&e) => {
            return Err(match shoal_api::connect_named(addr, tls, shoal_ca_pki::LOCKED_SERVER_NAME).await {
                Ok(_) => ClientError::Locked { addr: addr.to_owned() },
                Err(_) => ClientError::Unreachable { addr: addr.to_owned(), reason: source_chain(&e) },
            });
        }
        Err(e) => return Err(ClientError::Unreachable { addr: addr.to_owned(), reason: source_chain(&e) }),
    };
    // During a root CA rotation the bundle takes up the cluster's roots and a certificate from
    // the new root, so that it still works once the old root is dropped.
    if let Err(reason) = follow_roots(&live, channel.clone()).await {
        tracing::warn!(bundle = %bundle.display(), %reason, "could not bring the client bundle's roots up to date");
    }
    if (live.until_renewal().is_zero() || !live.issued_by_newest_root())
        && let Err(reason) = renew_bundle(&live, channel.clone()).await
    {
        tracing::warn!(bundle = %bundle.display(), %reason, "could not renew the client bundle; using it as it is");
    }
    Ok(channel)
}

/// Gives the locked manager at `addr` the unlock `key` (`shoal cluster unlock`), with the client
/// bundle in `bundle`; returns its node ID once it accepted the key and started.
pub async fn unlock(addr: &str, bundle: &Path, key: &UnlockKey) -> Result<String, ClientError> {
    use shoal_api::v1::{UnlockRequest, lock_client::LockClient};
    let bad = |reason: String| ClientError::Bundle { dir: bundle.to_owned(), reason };
    let live = LiveCredentials::load(bundle).map_err(|e| bad(e.to_string()))?;
    let tls = live_client_config(&live).map_err(|e| bad(e.to_string()))?;
    let channel = match shoal_api::connect_named(addr, tls.clone(), shoal_ca_pki::LOCKED_SERVER_NAME).await {
        Ok(channel) => channel,
        Err(e) if shoal_ca_pki::named_otherwise(&e) => {
            return Err(match shoal_api::connect(addr, tls).await {
                Ok(_) => ClientError::NotLocked { addr: addr.to_owned() },
                Err(e) => ClientError::Unreachable { addr: addr.to_owned(), reason: source_chain(&e) },
            });
        }
        Err(e) if shoal_ca_pki::refused_as_revoked(&e) => return Err(ClientError::Revoked { dir: bundle.to_owned() }),
        Err(e) => return Err(ClientError::Unreachable { addr: addr.to_owned(), reason: source_chain(&e) }),
    };
    let answer = LockClient::new(channel)
        .unlock(UnlockRequest { unlock_key: key.to_string() })
        .await
        .map_err(|s| ClientError::Unlock(s.message().to_owned()))?;
    Ok(answer.into_inner().node_id)
}

/// Reads an unlock key from standard input: at a terminal after `prompt` (on standard error),
/// without echoing what is typed; else its first line (`shoal cluster unlock < key-file`).
pub fn read_unlock_key(prompt: &str) -> Result<UnlockKey, ClientError> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    use std::os::fd::AsFd as _;
    let stdin = std::io::stdin();
    let mut line = String::new();
    let failed =
        |e: std::io::Error| ClientError::Unlock(format!("cannot read the unlock key from standard input: {e}"));
    if stdin.is_terminal() {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        // The prompt is this function's purpose: it goes to the terminal, not to a log.
        let mut terminal = std::io::stderr();
        let _ = write!(terminal, "{prompt}");
        let _ = terminal.flush();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut quiet = saved.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet);
        }
        let read = stdin.lock().read_line(&mut line);
        if let Some(saved) = &saved {
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, saved);
        }
        let _ = writeln!(terminal);
        read.map_err(failed)?;
    } else {
        stdin.lock().read_line(&mut line).map_err(failed)?;
    }
    let line = line.trim();
    if line.is_empty() {
        return Err(ClientError::Unlock(
            "no unlock key given: type it, or pipe it in (`shoal cluster unlock-key -q` on an unlocked manager \
             prints it)"
                .into(),
        ));
    }
    line.parse().map_err(|e: KeyError| ClientError::Unlock(e.to_string()))
}

/// Renews the bundle's certificate through the manager behind `channel` and rewrites it.
/// Makes the bundle trust the roots the manager behind `channel` serves (verified: the channel
/// was opened with the roots trusted until now), when they differ and still hold the newest root
/// trusted until now: a rotation moves from one root to both and from both to the new one, and a
/// manager that has not taken up a rotation yet must not take the bundle back to the old root.
async fn follow_roots(live: &LiveCredentials, channel: Channel) -> Result<(), String> {
    use shoal_api::v1::{GetRootCaCertificateRequest, ca_client::CaClient};
    let served = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        CaClient::new(channel).get_root_ca_certificate(GetRootCaCertificateRequest {}),
    )
    .await
    .map_err(|_| "no answer within 10 s".to_owned())?
    .map_err(|s| s.message().to_owned())?
    .into_inner();
    let pem = String::from_utf8(served.certificate).map_err(|_| "the root CA bundle is not PEM text".to_owned())?;
    let roots = TrustBundle::from_pem(&pem).map_err(|e| e.to_string())?;
    let trusted = live.trust();
    if roots == trusted || !roots.has_root(&trusted.newest_root_fingerprint()) {
        return Ok(());
    }
    live.set_trust(&roots).map_err(|e| e.to_string())
}

async fn renew_bundle(live: &LiveCredentials, channel: Channel) -> Result<(), String> {
    use shoal_api::v1::{RenewNodeCertificateRequest, ca_client::CaClient};
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let csr = key.csr_pem().map_err(|e| e.to_string())?.into_bytes();
    let mut ca = CaClient::new(channel);
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        ca.renew_node_certificate(RenewNodeCertificateRequest { csr }),
    )
    .await
    .map_err(|_| "no answer within 10 s".to_owned())?
    .map_err(|s| s.message().to_owned())?
    .into_inner();
    let chain =
        String::from_utf8(answer.certificate_chain).map_err(|_| "the certificate is not PEM text".to_owned())?;
    live.renew(&chain, key).map(drop).map_err(|e| e.to_string())
}

/// An error and its sources on one line (tonic's transport errors say little at the top).
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}
