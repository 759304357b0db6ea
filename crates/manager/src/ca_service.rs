//! The CA as a service (`shoal.v1.CA`): the root certificate for joining nodes to check against
//! their token's digest, certificate issuance in exchange for a valid join token (which decides
//! the role; the CSR's subject is ignored), and renewal for nodes and admin bundles that have a
//! certificate and are not revoked (the RPC, and the manager's own renewal loop, `renewal.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::v1::{self, ca_server::Ca};
use shoal_ca_pki::{ClusterCa, JoinToken, JoinTokens, NodeIdentity, Role};
use tonic::{Request, Response, Status};

use crate::ids::new_id;
use crate::objects::ObjectStore;
use crate::tls::{caller, is_admin, role_word};

/// The CA service of a manager that holds the cluster CA.
#[derive(Debug, Clone)]
pub struct CaService {
    objects: ObjectStore,
    ca: Arc<Mutex<ClusterCa>>,
    cluster_id: String,
    validity: Duration,
}

impl CaService {
    /// Issues certificates valid for `validity` from `ca` for cluster `cluster_id`.
    pub fn new(objects: ObjectStore, ca: Arc<Mutex<ClusterCa>>, cluster_id: String, validity: Duration) -> Self {
        Self { objects, ca, cluster_id, validity }
    }

    /// Signs `csr` for `identity`, valid for the cluster's `--cert-expiry` as stored now (this
    /// manager's own validity while no cluster object can be read).
    pub(crate) async fn issue(&self, csr: &[u8], identity: &NodeIdentity) -> Result<String, Status> {
        let csr = std::str::from_utf8(csr).map_err(|_| Status::invalid_argument("the CSR is not PEM text"))?;
        let cluster = crate::settings::cluster(&self.objects).await?;
        let validity = crate::settings::cert_validity(cluster.as_ref(), self.validity);
        let now = time::OffsetDateTime::now_utc();
        let ca = self.ca.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A validity beyond time's range (hundreds of billions of years) is clamped, not refused.
        let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::MAX);
        ca.issue(csr, identity, validity, now)
            .map_err(|e| Status::invalid_argument(format!("cannot sign the CSR: {e}")))
    }

    /// A new certificate for the holder of `identity`, for the key of `csr`; refused for a
    /// revoked identity (a removed node, a revoked admin bundle), as the cluster has it now. A
    /// node keeps its ID and gets the role its record has now; an admin bundle (no node record)
    /// stays an admin bundle, and is recorded if it was issued before such records were kept.
    pub(crate) async fn renewal_for(&self, identity: NodeIdentity, csr: &[u8]) -> Result<String, Status> {
        let identity = if is_admin(&identity) {
            crate::revocation::record_admin(&self.objects, &identity, "renewal").await?;
            identity
        } else {
            crate::revocation::check(&self.objects, &identity).await?;
            let node = self.objects.get::<v1::Node>(&identity.node_id).await?;
            let role = if node.role == v1::NodeRole::Manager as i32 { Role::Manager } else { Role::Worker };
            NodeIdentity { role, ..identity }
        };
        let chain = self.issue(csr, &identity).await?;
        tracing::info!(node.id = %identity.node_id, role = role_word(identity.role), "renewed a certificate");
        Ok(chain)
    }

    async fn tokens(&self) -> Result<JoinTokens, Status> {
        let cluster = self.objects.list::<v1::Cluster>().await?.into_iter().next();
        let tokens = cluster
            .and_then(|c| c.join_tokens)
            .ok_or_else(|| Status::unavailable("the cluster has no join tokens yet"))?;
        let parse = |t: &str| t.parse::<JoinToken>().map_err(|e| Status::data_loss(format!("stored join token: {e}")));
        JoinTokens::from_tokens(&parse(&tokens.worker)?, &parse(&tokens.manager)?)
            .map_err(|e| Status::data_loss(format!("stored join tokens: {e}")))
    }
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn get_previous_unlock_keys(
        &self,
        _: Request<v1::GetPreviousUnlockKeysRequest>,
    ) -> Result<Response<v1::GetPreviousUnlockKeysResponse>, Status> {
        // Sealed, each by the key that replaced it: they open only for whoever has the current
        // key, which a locked manager is being given.
        let previous = crate::autolock::stored(&self.objects).await?.map(|keys| keys.previous).unwrap_or_default();
        Ok(Response::new(v1::GetPreviousUnlockKeysResponse { previous }))
    }

    async fn get_root_ca_certificate(
        &self,
        _: Request<v1::GetRootCaCertificateRequest>,
    ) -> Result<Response<v1::GetRootCaCertificateResponse>, Status> {
        let pem = self.ca.lock().unwrap_or_else(std::sync::PoisonError::into_inner).trust_bundle().pem().to_owned();
        Ok(Response::new(v1::GetRootCaCertificateResponse { certificate: pem.into_bytes() }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<v1::IssueNodeCertificateRequest>,
    ) -> Result<Response<v1::IssueNodeCertificateResponse>, Status> {
        let request = request.into_inner();
        let token: JoinToken =
            request.token.parse().map_err(|e| Status::invalid_argument(format!("invalid join token: {e}")))?;
        let role = self.tokens().await?.role_for(&token).map_err(|e| {
            Status::permission_denied(format!(
                "join token refused: {e} (get a current one with `shoal join-token worker|manager`)"
            ))
        })?;
        if request.worker_only && role == Role::Manager {
            return Err(Status::failed_precondition(
                "that is a manager token: join managers with `shoal-manager join`, workers with the worker token",
            ));
        }
        let identity = NodeIdentity { node_id: new_id(), role, cluster_id: self.cluster_id.clone() };
        let chain = self.issue(&request.csr, &identity).await?;
        let node_role = if role == Role::Manager { v1::NodeRole::Manager } else { v1::NodeRole::Worker };
        let availability = v1::NodeAvailability::try_from(request.availability).unwrap_or(v1::NodeAvailability::Active);
        let node = v1::Node {
            id: identity.node_id.clone(),
            role: node_role as i32,
            spec: Some(v1::NodeSpec {
                desired_role: node_role as i32,
                availability: availability as i32,
                ..Default::default()
            }),
            status: Some(v1::NodeStatus { state: v1::node_status::State::Unknown as i32, ..Default::default() }),
            ..Default::default()
        };
        self.objects.create(node).await?;
        tracing::info!(node.id = %identity.node_id, role = role_word(role), "issued a certificate to a joining node");
        Ok(Response::new(v1::IssueNodeCertificateResponse {
            node_id: identity.node_id,
            role: node_role as i32,
            certificate_chain: chain.into_bytes(),
            cluster_id: self.cluster_id.clone(),
        }))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<v1::RenewNodeCertificateRequest>,
    ) -> Result<Response<v1::RenewNodeCertificateResponse>, Status> {
        let identity = caller(&request)?;
        let chain = self.renewal_for(identity, &request.into_inner().csr).await?;
        Ok(Response::new(v1::RenewNodeCertificateResponse { certificate_chain: chain.into_bytes() }))
    }
}
