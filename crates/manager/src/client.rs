//! The client side of the manager port, for the CLI and tools: load a client bundle (a
//! certificate, its key and the cluster's roots, as `init` writes under `DATA/admin`) and open
//! a channel to a manager.

use std::path::{Path, PathBuf};

use shoal_ca_pki::{NodeCredentials, TrustBundle, client_config};
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
}

/// Opens a channel to the manager at `addr` with the client bundle in `bundle`.
pub async fn connect_with_bundle(addr: &str, bundle: &Path) -> Result<Channel, ClientError> {
    let bad = |reason: String| ClientError::Bundle { dir: bundle.to_owned(), reason };
    let credentials = NodeCredentials::load(bundle, None).map_err(|e| bad(e.to_string()))?;
    let trust = TrustBundle::load(bundle).map_err(|e| bad(e.to_string()))?;
    let tls = client_config(&credentials, &trust).map_err(|e| bad(e.to_string()))?;
    shoal_api::connect(addr, tls)
        .await
        .map_err(|e| ClientError::Unreachable { addr: addr.to_owned(), reason: source_chain(&e) })
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
