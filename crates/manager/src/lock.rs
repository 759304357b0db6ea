//! A locked manager: restarted with its keys encrypted by the unlock key (autolock), it cannot
//! read its certificate's key, its CA or its Raft log. It serves only the `Lock` service on its
//! port, with its locked certificate (ca-pki's `LockedCertificate`, named `shoal-locked`, so no
//! node mistakes it for a manager), until an admin gives it the key (`shoal cluster unlock`).
//!
//! A key that opens none of its files is refused and counted, and changes nothing. A key that is
//! the cluster's current one although the files were locked with an earlier one (the key was
//! rotated while this manager was down) opens them through the earlier keys the other managers
//! keep sealed by their successors (`GetPreviousUnlockKeys`); the files are then rewritten with
//! the key given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_api::v1::{self, lock_server::Lock};
use shoal_ca_pki::{KeyError, LockedCertificate, RemovedNodes, Role, TrustBundle, UnlockKey};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::node::StartError;
use crate::tls::{caller, incoming};

/// How long a locked manager waits for one other manager's earlier keys.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// The `Lock` service of a locked manager.
#[derive(Debug)]
struct LockService {
    data_dir: PathBuf,
    node_id: String,
    trust: TrustBundle,
    /// Refused keys so far.
    refused: AtomicU64,
    /// Where the opening key goes (taken by the first success).
    unlocked: Mutex<Option<oneshot::Sender<UnlockKey>>>,
    /// One `Unlock` at a time: two could rewrite the files with two different keys.
    unlocking: tokio::sync::Mutex<()>,
}

impl LockService {
    /// Opens the files with `key` or, failing that, with the earlier keys it recovers from the
    /// other managers; nothing is written unless every file opens. A refusal comes with what the
    /// other managers said, when none could be asked.
    async fn open(&self, key: &UnlockKey) -> Result<(), (KeyError, Option<String>)> {
        let first = crate::autolock::unlock_files(&self.data_dir, std::slice::from_ref(key));
        let Err(KeyError::WrongUnlockKey { what }) = first else { return first.map_err(|e| (e, None)) };
        let previous = match self.previous_keys().await {
            Ok(previous) => previous,
            Err(unasked) => return Err((KeyError::WrongUnlockKey { what }, Some(unasked))),
        };
        // The chain: each sealed key is opened by the one after it, starting with the given key.
        let mut candidates = vec![key.clone()];
        for sealed in &previous {
            let Some(last) = candidates.last() else { break };
            match last.open_previous(sealed) {
                Ok(earlier) => candidates.push(earlier),
                // The given key is not the cluster's current one: the chain does not start here.
                Err(_) => break,
            }
        }
        if candidates.len() == 1 {
            return Err((KeyError::WrongUnlockKey { what }, None));
        }
        crate::autolock::unlock_files(&self.data_dir, &candidates).map_err(|e| (e, None))
    }

    /// The earlier unlock keys, sealed, from the first other manager that answers; the error
    /// says why none did.
    async fn previous_keys(&self) -> Result<Vec<Vec<u8>>, String> {
        use shoal_api::v1::ca_client::CaClient;
        let tls = shoal_ca_pki::join_client_config(&self.trust).map_err(|e| e.to_string())?;
        let peers = crate::autolock::recorded_peers(&self.data_dir);
        if peers.is_empty() {
            return Err("this manager knows no other manager".into());
        }
        let mut reasons = Vec::new();
        for peer in peers {
            let asked = async {
                let channel = shoal_api::connect(&peer, tls.clone()).await.map_err(|e| e.to_string())?;
                let answer = CaClient::new(channel)
                    .get_previous_unlock_keys(v1::GetPreviousUnlockKeysRequest {})
                    .await
                    .map_err(|s| s.message().to_owned())?;
                Ok::<_, String>(answer.into_inner().previous)
            };
            match tokio::time::timeout(PEER_TIMEOUT, asked).await {
                Ok(Ok(previous)) => return Ok(previous),
                Ok(Err(reason)) => reasons.push(format!("{peer}: {reason}")),
                Err(_) => reasons.push(format!("{peer}: no answer within {} s", PEER_TIMEOUT.as_secs())),
            }
        }
        Err(format!("no other manager answered ({})", reasons.join("; ")))
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn unlock(&self, request: Request<v1::UnlockRequest>) -> Result<Response<v1::UnlockResponse>, Status> {
        let identity = caller(&request)?;
        if identity.role != Role::Manager {
            return Err(Status::permission_denied(format!(
                "node {} is a worker: unlock a manager with an admin bundle (`shoal cluster unlock`)",
                identity.node_id
            )));
        }
        let key: UnlockKey = request
            .into_inner()
            .unlock_key
            .trim()
            .parse()
            .map_err(|e: KeyError| Status::invalid_argument(e.to_string()))?;
        let _one_at_a_time = self.unlocking.lock().await;
        if self.unlocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none() {
            return Err(Status::failed_precondition("this manager is already unlocked and starting"));
        }
        match self.open(&key).await {
            Ok(()) => {}
            Err((KeyError::WrongUnlockKey { .. }, unasked)) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    caller = %identity.node_id,
                    refused,
                    "a wrong unlock key was given; this manager stays locked"
                );
                let hint = match unasked {
                    Some(reason) => format!(
                        " If the key was rotated while this manager was down, give the key from before the \
                         rotation, or start another manager first ({reason})."
                    ),
                    None => String::new(),
                };
                return Err(Status::permission_denied(format!(
                    "that is not the unlock key of this manager: it opens none of its keys (refused {refused} \
                     time(s) since it started; nothing was changed). Run `shoal cluster unlock-key` on an unlocked \
                     manager to see the current key.{hint}"
                )));
            }
            Err((other, _)) => return Err(Status::internal(format!("cannot open this manager's keys: {other}"))),
        }
        let sender = self.unlocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match sender {
            Some(sender) => {
                let _ = sender.send(key);
                tracing::info!(caller = %identity.node_id, "unlocked: starting the manager");
                Ok(Response::new(v1::UnlockResponse { node_id: self.node_id.clone() }))
            }
            None => Err(Status::failed_precondition("this manager is already unlocked and starting")),
        }
    }
}

/// Serves `Lock` on `listen_addr` until a good unlock key arrives; returns it and the port's
/// socket, for the manager to serve on (so no other process can take the port in between). The
/// files of `data_dir` all open with the key by then.
pub(crate) async fn wait_for_unlock(
    data_dir: &Path,
    listen_addr: SocketAddr,
    node_id: &str,
) -> Result<(UnlockKey, std::net::TcpListener), StartError> {
    let pki = |e: &dyn std::fmt::Display| StartError::Pki(e.to_string());
    let trust = TrustBundle::load(&data_dir.join("certs")).map_err(|e| pki(&e))?;
    let locked_dir = data_dir.join(crate::autolock::LOCKED_DIR);
    let locked = LockedCertificate::load(&locked_dir).map_err(|e| StartError::DataDir {
        path: locked_dir.clone(),
        reason: format!(
            "this manager's keys are encrypted (autolock) but its locked certificate cannot be read ({e}), so it \
             cannot serve `shoal cluster unlock`: restore the data directory from a backup, or remove this manager \
             (`shoal node demote` and `shoal node rm` on another) and join it again"
        ),
    })?;
    let tls = locked.server_config(&trust, &RemovedNodes::new()).map_err(|e| pki(&e))?;
    let listen = |source| StartError::Listen { addr: listen_addr, source };
    let kept = TcpListener::bind(listen_addr).await.map_err(listen)?.into_std().map_err(listen)?;
    let listener = TcpListener::from_std(kept.try_clone().map_err(listen)?).map_err(listen)?;
    let (unlocked, key) = oneshot::channel();
    let service = LockService {
        data_dir: data_dir.to_owned(),
        node_id: node_id.to_owned(),
        trust,
        refused: AtomicU64::new(0),
        unlocked: Mutex::new(Some(unlocked)),
        unlocking: tokio::sync::Mutex::new(()),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::lock_server::LockServer::new(service))
            .serve_with_incoming_shutdown(incoming(listener, tls), async move {
                let _ = stopped.await;
            }),
    );
    tracing::warn!(
        addr = %listen_addr,
        "this manager is locked (autolock): it serves nothing until it is given the unlock key with \
         `shoal cluster unlock`"
    );
    let key = key.await.map_err(|_| StartError::Pki("the locked manager's port stopped".into()))?;
    let _ = stop.send(());
    // The answer to `Unlock` goes out before the server stops (a graceful stop waits for calls);
    // the socket stays open in `kept`.
    let abort = server.abort_handle();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "the locked manager's port stopped with an error"),
        Ok(Err(err)) => tracing::warn!(error = %err, "the locked manager's port failed"),
        Err(_) => {
            tracing::warn!("the locked manager's port did not stop within 5 s; closing it");
            abort.abort();
        }
    }
    Ok((key, kept))
}

#[cfg(test)]
mod tests;
