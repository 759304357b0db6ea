//! Root CA rotation (`shoal cluster ca --rotate`), as Swarm does it.
//!
//! 1. **Start** (any manager, `RotateRootCa`): a new root (made here, or the operator's) is
//!    cross-signed by the current one, and the store's `RootCa` object (`/root-ca/root`) records
//!    both: the current root as `ca_cert`/`ca_key`, the new one and the cross-signed certificate
//!    as `rotation`. The cluster object's `root_ca_cert` becomes the bundle of both roots.
//! 2. **Transition**: every manager's [`Follower`] makes its CA files equal to the object (the new
//!    root signs, chains carry the cross-signed certificate, both roots are trusted), writes the
//!    bundle where its TLS configs read their trust (`DATA/certs`, `DATA/admin`: the configs are
//!    live, nothing restarts) and renews its own certificate and admin bundle from the new root.
//!    Agents hear the bundle's fingerprint in their heartbeat answers, fetch and trust it, renew
//!    their certificate, and report what they hold (`Node.tls_info`). A node still on the old
//!    root verifies a new-root certificate through the cross-signed one, so no connection or
//!    session is lost while nodes move one by one.
//! 3. **Completion** (the leader's follower): once every node in the store holds a certificate
//!    from the new root and trusts it, the new root replaces the old in the object, the cluster
//!    trusts it alone, and the join tokens (same secrets) pin its digest. Nodes then drop the old
//!    root from their trust the same way. A node that never reports (down, gone) holds the
//!    rotation until it comes back or is removed (`shoal node rm`), as in Swarm.
//!
//! Before the first rotation there is no object: each manager's CA files (copied at join) are
//! the CA, as they always were.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shoal_api::v1;
use shoal_ca_pki::{ClusterCa, JoinToken, JoinTokens, KeyEncryption, LiveCredentials, RootCa, TrustBundle};
use tonic::Status;

use crate::ca_service::CaService;
use crate::objects::{ObjectError, ObjectStore};

/// The ID of the one `RootCa` object.
pub(crate) const ROOT_CA_ID: &str = "root";
/// How often each manager looks at the object.
const PASS: Duration = Duration::from_secs(1);
/// Pending nodes named in a status answer.
const PENDING_SHOWN: usize = 20;

/// The stored root CA, if the cluster's root was ever rotated (linearizable read).
pub(crate) async fn stored(objects: &ObjectStore) -> Result<Option<v1::RootCa>, ObjectError> {
    match objects.get::<v1::RootCa>(ROOT_CA_ID).await {
        Ok(root) => Ok(Some(root)),
        Err(ObjectError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The stored root CA as this manager has applied it.
async fn stored_local(objects: &ObjectStore) -> Result<Option<v1::RootCa>, ObjectError> {
    match objects.get_local::<v1::RootCa>(ROOT_CA_ID).await {
        Ok(root) => Ok(Some(root)),
        Err(ObjectError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

fn root_of(cert: &[u8], key: &[u8], what: &str) -> Result<RootCa, String> {
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not PEM text"));
    RootCa::from_pem(&text(cert)?, &text(key)?).map_err(|e| format!("the {what}: {e}"))
}

/// The CA the stored object describes.
pub(crate) fn desired_ca(stored: &v1::RootCa) -> Result<ClusterCa, String> {
    let current = root_of(&stored.ca_cert, &stored.ca_key, "stored root CA")?;
    match &stored.rotation {
        None => Ok(ClusterCa::new(current)),
        Some(rotation) => {
            let new = root_of(&rotation.ca_cert, &rotation.ca_key, "stored new root CA")?;
            let cross = String::from_utf8(rotation.cross_signed_cert.clone())
                .map_err(|_| "the stored cross-signed certificate is not PEM text".to_owned())?;
            ClusterCa::in_transition(current, new, &cross).map_err(|e| e.to_string())
        }
    }
}

/// A copy of `root` (the CA keeps one; the object and a new transition need their own).
fn copy(root: &RootCa) -> Result<RootCa, Status> {
    RootCa::from_pem(root.cert_pem(), &root.key_pem()).map_err(|e| Status::internal(format!("copy the root CA: {e}")))
}

/// Starts a rotation to `given` (the operator's root) or to a new root; returns the new root's
/// fingerprint.
pub(crate) async fn start(
    objects: &ObjectStore,
    ca: &Arc<Mutex<ClusterCa>>,
    given: Option<RootCa>,
) -> Result<String, Status> {
    let existing = stored(objects).await?;
    if let Some(root) = &existing
        && root.rotation.is_some()
    {
        let desired = desired_ca(root).map_err(Status::data_loss)?;
        let nodes = objects.list::<v1::Node>().await?;
        let progress = Progress::of(&nodes, &desired);
        return Err(Status::failed_precondition(format!(
            "a root CA rotation is already under way ({} of {} nodes hold a certificate from the new root; waiting \
             for {}): let it finish (`shoal cluster ca` shows how far it is), and remove nodes that are gone for good \
             (`shoal node rm`)",
            progress.certificates,
            progress.nodes,
            progress.pending.join(", ")
        )));
    }
    let current = match &existing {
        Some(root) => root_of(&root.ca_cert, &root.ca_key, "stored root CA").map_err(Status::data_loss)?,
        None => copy(ca.lock().unwrap_or_else(PoisonError::into_inner).signing_root())?,
    };
    let now = time::OffsetDateTime::now_utc();
    let new_root = match given {
        Some(root) => {
            if root.cert_der() == current.cert_der() {
                return Err(Status::invalid_argument(
                    "the root CA given is the cluster's root already: give another one, or none to have a new one made",
                ));
            }
            root
        }
        None => RootCa::generate(now).map_err(|e| Status::internal(format!("make a new root CA: {e}")))?,
    };
    let new_fingerprint = new_root.fingerprint();
    let mut transition = ClusterCa::new(copy(&current)?);
    transition.start_rotation_to(copy(&new_root)?, now).map_err(|e| Status::internal(e.to_string()))?;
    let cross_signed = transition.cross_signed_pem().unwrap_or_default();
    let object = v1::RootCa {
        id: ROOT_CA_ID.into(),
        meta: existing.as_ref().and_then(|e| e.meta),
        ca_cert: current.cert_pem().as_bytes().to_vec(),
        ca_key: current.key_pem().into_bytes(),
        rotation: Some(v1::RootRotation {
            ca_cert: new_root.cert_pem().as_bytes().to_vec(),
            ca_key: new_root.key_pem().into_bytes(),
            cross_signed_cert: cross_signed.into_bytes(),
            started_at: Some(shoal_api::to_timestamp(std::time::SystemTime::now())),
        }),
    };
    match existing {
        Some(_) => objects.update(object).await?,
        None => objects.create(object).await?,
    };
    tracing::info!(desired_root = %new_fingerprint, "root CA rotation started");
    // The cluster object shows the bundle nodes trust now; the leader's follower keeps it so too.
    let bundle = transition.trust_bundle();
    if let Err(err) = sync_cluster(objects, &bundle, false).await {
        tracing::debug!(error = %err, "root CA rotation: the cluster object follows with the leader's next pass");
    }
    Ok(new_fingerprint)
}

/// Makes the cluster object show `bundle` as the roots nodes trust and, once no rotation is under
/// way (`pin_tokens`), pin the join tokens to it (their secrets stay).
async fn sync_cluster(objects: &ObjectStore, bundle: &TrustBundle, pin_tokens: bool) -> Result<(), String> {
    let Some(cluster) = crate::settings::cluster(objects).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let retokened = |cluster: &v1::Cluster| -> Result<Option<v1::JoinTokens>, String> {
        let Some(tokens) = cluster.join_tokens.as_ref().filter(|_| pin_tokens) else { return Ok(None) };
        let parse = |t: &str| t.parse::<JoinToken>().map_err(|e| format!("stored join token: {e}"));
        let mut registry = JoinTokens::from_tokens(&parse(&tokens.worker)?, &parse(&tokens.manager)?)
            .map_err(|e| format!("stored join tokens: {e}"))?;
        registry.set_root_ca(bundle);
        let repinned = v1::JoinTokens {
            worker: registry.token(shoal_ca_pki::Role::Worker).to_string(),
            manager: registry.token(shoal_ca_pki::Role::Manager).to_string(),
        };
        Ok((&repinned != tokens).then_some(repinned))
    };
    let mut failure = None;
    objects
        .modify(&cluster.id, |cluster: &mut v1::Cluster| {
            let mut changed = false;
            if cluster.root_ca_cert != bundle.pem().as_bytes() {
                cluster.root_ca_cert = bundle.pem().as_bytes().to_vec();
                changed = true;
            }
            match retokened(cluster) {
                Ok(Some(tokens)) => {
                    cluster.root_ca_digest = tokens.worker.split('-').nth(2).unwrap_or_default().to_owned();
                    cluster.join_tokens = Some(tokens);
                    changed = true;
                }
                Ok(None) => {}
                Err(err) => failure = Some(err),
            }
            changed
        })
        .await
        .map_err(|e| e.to_string())?;
    failure.map_or(Ok(()), Err)
}

/// How far the nodes are with the CA `ca` describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Nodes in the cluster.
    pub(crate) nodes: usize,
    /// Nodes whose certificate the signing root issued.
    pub(crate) certificates: usize,
    /// Of those, nodes that trust the signing root (so they verify peers once the old root goes).
    pub(crate) ready: usize,
    /// Nodes that trust the signing root alone: what every node trusts once a rotation is over.
    pub(crate) trust: usize,
    /// Nodes not ready yet (IDs, at most [`PENDING_SHOWN`]).
    pub(crate) pending: Vec<String>,
}

impl Progress {
    pub(crate) fn of(nodes: &[v1::Node], ca: &ClusterCa) -> Progress {
        let signer = ca.signing_root().fingerprint();
        let bundle = ca.trust_bundle().fingerprint();
        let alone = ca.signing_root().trust_bundle().fingerprint();
        let mut progress = Progress { nodes: nodes.len(), certificates: 0, ready: 0, trust: 0, pending: Vec::new() };
        for node in nodes {
            let info = node.tls_info.clone().unwrap_or_default();
            let issued = info.cert_issuer == signer;
            let trusts = info.trust_root == bundle || info.trust_root == alone;
            progress.certificates += usize::from(issued);
            progress.ready += usize::from(issued && trusts);
            progress.trust += usize::from(info.trust_root == alone);
            if !(issued && trusts) && progress.pending.len() < PENDING_SHOWN {
                progress.pending.push(node.id.clone());
            }
        }
        progress
    }
}

/// The answer to `GetRootCaStatus`.
pub(crate) async fn status(
    objects: &ObjectStore,
    ca: &Arc<Mutex<ClusterCa>>,
) -> Result<v1::GetRootCaStatusResponse, Status> {
    let desired = match stored(objects).await? {
        Some(root) => desired_ca(&root).map_err(Status::data_loss)?,
        None => {
            let local = ca.lock().unwrap_or_else(PoisonError::into_inner);
            ClusterCa::new(copy(local.signing_root())?)
        }
    };
    let nodes = objects.list::<v1::Node>().await?;
    let progress = Progress::of(&nodes, &desired);
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(v1::GetRootCaStatusResponse {
        trust_bundle: desired.trust_bundle().pem().as_bytes().to_vec(),
        signing_root: desired.signing_root().cert_pem().as_bytes().to_vec(),
        signing_root_fingerprint: desired.signing_root().fingerprint(),
        rotating: desired.old_root().is_some(),
        nodes: count(progress.nodes),
        certificates_rotated: count(progress.certificates),
        trust_rotated: count(progress.trust),
        pending_nodes: progress.pending,
    })
}

/// The fingerprint of the roots the stored root CA says nodes trust now, as this manager's
/// [`Follower`] last read it; empty before any rotation (nodes then keep what they have). Every
/// heartbeat answer carries it, so it is kept here rather than read from the store each time.
#[derive(Debug, Default, Clone)]
pub(crate) struct TrustRoot(Arc<Mutex<String>>);

impl TrustRoot {
    pub(crate) fn get(&self) -> String {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, fingerprint: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = fingerprint;
    }
}

/// One per manager: keeps its CA files, its trust and its certificates in line with the stored
/// root CA, records its own node's certificate issuer, and on the leader completes a rotation.
#[derive(Debug)]
pub(crate) struct Follower {
    pub(crate) data_dir: PathBuf,
    pub(crate) node_id: String,
    pub(crate) ca: Arc<Mutex<ClusterCa>>,
    pub(crate) objects: ObjectStore,
    pub(crate) renewer: CaService,
    /// The unlock key the CA's key file is written with (autolock).
    pub(crate) key_encryption: KeyEncryption,
    /// The node's credentials, and the admin bundle's if this manager keeps one.
    pub(crate) node: LiveCredentials,
    pub(crate) admin: Option<LiveCredentials>,
    /// Where the dispatcher finds the roots' fingerprint it tells nodes.
    pub(crate) trust_root: TrustRoot,
}

impl Follower {
    /// Runs until `stopped` resolves.
    pub(crate) async fn run(self, stopped: impl Future<Output = ()>) {
        let failing = "cannot bring this manager in line with the cluster's root";
        let this = &self;
        crate::passes::every(PASS, "root CA", failing, stopped, || this.pass()).await;
    }

    /// One look at the stored root CA.
    pub(crate) async fn pass(&self) -> Result<(), String> {
        let Some(stored) = stored_local(&self.objects).await.map_err(|e| e.to_string())? else {
            return self.record_own_tls().await;
        };
        let desired = desired_ca(&stored)?;
        let bundle = desired.trust_bundle();
        self.adopt(desired)?;
        self.trust_root.set(bundle.fingerprint());
        for (live, what) in std::iter::once((&self.node, "node")).chain(self.admin.iter().map(|a| (a, "admin bundle")))
        {
            if live.trust() != bundle {
                live.set_trust(&bundle)
                    .map_err(|e| format!("trust the cluster's roots in {}: {e}", live.dir().display()))?;
                tracing::info!(certificate = what, trust = %bundle.fingerprint(), "root CA: trusting the cluster's roots");
            }
            if !live.issued_by_newest_root() {
                let not_after = crate::renewal::renew_once(&self.renewer, live)
                    .await
                    .map_err(|f| format!("renew the {what}: {}", f.reason))?;
                tracing::info!(certificate = what, %not_after, "root CA: certificate renewed from the signing root");
            }
        }
        // The leader brings the cluster object in line before it records its own node as
        // trusting the new root: a rotation seen converged has its tokens pinned already.
        if self.objects.store().is_leader() {
            self.lead(stored, bundle).await?;
        }
        self.record_own_tls().await
    }

    /// Makes this manager's CA (in memory and in `DATA/ca`) the one `desired` is.
    fn adopt(&self, desired: ClusterCa) -> Result<(), String> {
        let mut ca = self.ca.lock().unwrap_or_else(PoisonError::into_inner);
        let same = ca.signing_root().cert_der() == desired.signing_root().cert_der()
            && ca.trust_bundle() == desired.trust_bundle();
        if same {
            return Ok(());
        }
        let dir = self.data_dir.join("ca");
        desired
            .save(&dir, self.key_encryption.get().as_ref())
            .map_err(|e| format!("save the cluster's root CA in {}: {e}", dir.display()))?;
        tracing::info!(
            signing_root = %desired.signing_root().fingerprint(),
            rotating = desired.old_root().is_some(),
            "root CA: this manager's CA follows the cluster's"
        );
        *ca = desired;
        Ok(())
    }

    /// Records this manager's own certificate issuer and trust in its node (its worker role, if
    /// it runs one, reports the same through its heartbeats).
    async fn record_own_tls(&self) -> Result<(), String> {
        let (cert_issuer, trust_root) = self.node.tls_fingerprints();
        let info = v1::NodeTlsInfo { cert_issuer, trust_root };
        match self.objects.get_local::<v1::Node>(&self.node_id).await {
            Ok(node) if node.tls_info.as_ref() == Some(&info) => return Ok(()),
            Ok(_) => {}
            Err(ObjectError::NotFound { .. }) => return Ok(()),
            Err(err) => return Err(err.to_string()),
        }
        self.objects
            .modify(&self.node_id, |node: &mut v1::Node| {
                let changed = node.tls_info.as_ref() != Some(&info);
                node.tls_info = Some(info.clone());
                changed
            })
            .await
            .map_err(|e| format!("record this manager's certificate issuer: {e}"))?;
        Ok(())
    }

    /// On the leader: completes a rotation every node has followed, and keeps the cluster
    /// object's bundle and join tokens in line with the stored root.
    async fn lead(&self, stored: v1::RootCa, bundle: TrustBundle) -> Result<(), String> {
        let Some(rotation) = stored.rotation.clone() else {
            return sync_cluster(&self.objects, &bundle, true).await;
        };
        sync_cluster(&self.objects, &bundle, false).await?;
        let nodes = self.objects.list::<v1::Node>().await.map_err(|e| e.to_string())?;
        let desired = desired_ca(&stored)?;
        let progress = Progress::of(&nodes, &desired);
        if progress.nodes == 0 || progress.ready < progress.nodes {
            return Ok(());
        }
        let completed = v1::RootCa { ca_cert: rotation.ca_cert, ca_key: rotation.ca_key, rotation: None, ..stored };
        self.objects.update(completed).await.map_err(|e| format!("complete the root CA rotation: {e}"))?;
        tracing::info!(
            nodes = progress.nodes,
            root = %desired.signing_root().fingerprint(),
            "root CA rotation completed: every node holds a certificate from the new root; the old root is no longer trusted"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
