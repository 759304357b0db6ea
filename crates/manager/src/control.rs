//! The control API (`shoal.v1.Control`): what the CLI calls on any manager. Reads and writes go
//! through the object store, so a write on a follower reaches the leader (raft-store forwards it)
//! and, without a quorum, every call fails fast with the `no quorum` message.
//!
//! Nodes, services and tasks are named by full ID, by name, or by a unique ID prefix, as the
//! docker CLI allows.
//!
//! Removing a node and revoking an admin certificate write a revocation (`revocation.rs`) in the
//! same transaction, which every manager then refuses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::v1::{self, control_server::Control, update_status::UpdateState};
use shoal_ca_pki::{ClusterCa, JoinToken, JoinTokens, RemovedNodes, Role};
use tonic::{Request, Response, Status};

use crate::ids::new_id;
use crate::images::ImageResolver;
use crate::objects::{Object, ObjectError, ObjectStore, Write};
use crate::tls::{ADMIN_PREFIX, caller};
use crate::updater;
use crate::validate::validate_service_spec;

/// The control service of one manager.
#[derive(Debug, Clone)]
pub struct ControlService {
    objects: ObjectStore,
    removed: RemovedNodes,
    ca: Arc<Mutex<ClusterCa>>,
    validity: Duration,
    images: Option<Arc<dyn ImageResolver>>,
}

impl ControlService {
    /// Refuses a promotion of a node whose process cannot run a manager, and a demotion that
    /// would leave no manager or lose the Raft quorum (as Swarm's `node demote`).
    async fn check_role_change(&self, node: &v1::Node, desired_role: i32) -> Result<(), Status> {
        let name = node.name().unwrap_or(&node.id).to_owned();
        if desired_role == v1::NodeRole::Manager as i32 {
            if !node.description.as_ref().is_some_and(|d| d.can_manage) {
                return Err(Status::failed_precondition(format!(
                    "node {name} runs shoal-agent, which cannot run a manager; to make it promotable, run \
                     shoal-manager on it instead (shoal-manager join --token <worker token> …)"
                )));
            }
            return Ok(());
        }
        let managers: Vec<v1::Node> = self
            .objects
            .list::<v1::Node>()
            .await?
            .into_iter()
            .filter(|n| n.spec.as_ref().is_some_and(|s| s.desired_role == v1::NodeRole::Manager as i32))
            .collect();
        if managers.iter().all(|m| m.id == node.id) {
            return Err(Status::failed_precondition(format!(
                "node {name} is the last manager of the cluster; promote another node first"
            )));
        }
        let status = self.objects.store().status().await;
        let voter = |m: &&shoal_raft_store::MemberStatus| m.role == shoal_raft_store::Role::Voter;
        let voters = status.members.iter().filter(voter).count();
        let reachable_after = status
            .members
            .iter()
            .filter(voter)
            .filter(|m| m.reachability == shoal_raft_store::Reachability::Reachable)
            .filter(|m| node.manager_status.as_ref().is_none_or(|s| s.raft_id != m.id))
            .count();
        let remaining =
            if node.manager_status.as_ref().is_some_and(|s| status.members.iter().any(|m| m.id == s.raft_id)) {
                voters - 1
            } else {
                voters
            };
        if reachable_after < remaining / 2 + 1 {
            return Err(Status::failed_precondition(format!(
                "demoting node {name} would leave {reachable_after} reachable of {remaining} managers, less than a \
                 quorum; bring the unreachable managers back first"
            )));
        }
        Ok(())
    }
    /// Serves the objects in `objects`; node IDs removed through it are added to `removed`, which
    /// the manager's TLS configs consult at every handshake; `ca` is handed to joining managers.
    pub fn new(objects: ObjectStore, removed: RemovedNodes, ca: Arc<Mutex<ClusterCa>>) -> Self {
        Self { objects, removed, ca, validity: Duration::from_secs(90 * 24 * 3600), images: None }
    }

    /// How long the certificates this manager issues last (admin certificates; revocations are
    /// kept at least that long); 90 days unless told.
    pub fn with_cert_validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// Who answers `ResolveImage`; without one, it says that this manager cannot reach
    /// registries.
    pub fn with_image_resolver(mut self, images: Option<Arc<dyn ImageResolver>>) -> Self {
        self.images = images;
        self
    }

    /// The admin certificate `reference` names: a full `admin-` ID, or a unique prefix of a
    /// recorded one (with or without `admin-`). A full ID without a record is an admin bundle
    /// issued before records were kept and not renewed since: it may be revoked too.
    async fn resolve_admin(&self, reference: &str) -> Result<String, Status> {
        if reference.is_empty() {
            return Err(Status::invalid_argument("no admin certificate given"));
        }
        let listed = self.objects.list::<v1::AdminCertificate>().await?;
        let wanted = if reference.starts_with(ADMIN_PREFIX) {
            reference.to_owned()
        } else {
            format!("{ADMIN_PREFIX}{reference}")
        };
        let matching: Vec<&str> = listed.iter().map(|c| c.id.as_str()).filter(|id| id.starts_with(&wanted)).collect();
        match matching.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] if is_admin_id(&wanted) => Ok(wanted),
            [] => Err(Status::not_found(format!(
                "no such admin certificate: {reference} (`shoal cluster admin-cert ls` lists them)"
            ))),
            many => Err(Status::failed_precondition(format!(
                "admin certificate {reference:?} is ambiguous ({} match); use a longer ID",
                many.len()
            ))),
        }
    }

    /// The calling node's record, which must be a manager's (an admin bundle has no node record).
    async fn calling_manager<T>(&self, request: &Request<T>) -> Result<v1::Node, Status> {
        let identity = caller(request)?;
        match self.objects.get::<v1::Node>(&identity.node_id).await {
            Ok(node) if node.role == v1::NodeRole::Manager as i32 => Ok(node),
            Ok(_) | Err(ObjectError::NotFound { .. }) => {
                Err(Status::permission_denied(format!("{} is not a manager node of this cluster", identity.node_id)))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The object of kind `T` that `reference` names: full ID, then name, then unique ID prefix.
    async fn resolve<T: Object>(&self, reference: &str) -> Result<T, Status> {
        if reference.is_empty() {
            return Err(Status::invalid_argument(format!("no {} given", T::KIND)));
        }
        match self.objects.get::<T>(reference).await {
            Ok(object) => return Ok(object),
            Err(ObjectError::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let all = self.objects.list::<T>().await?;
        let by_name: Vec<&T> = all.iter().filter(|o| o.name() == Some(reference)).collect();
        let candidates =
            if by_name.is_empty() { all.iter().filter(|o| o.id().starts_with(reference)).collect() } else { by_name };
        match candidates.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Status::not_found(format!("no such {}: {reference}", T::KIND))),
            many => Err(Status::failed_precondition(format!(
                "{kind} {reference:?} is ambiguous ({} {kind}s match); use a longer ID",
                many.len(),
                kind = T::KIND
            ))),
        }
    }

    /// The service as `request` (an update or a rollback) leaves it, from `service` as just read:
    /// versions checked, the spec validated, the update status set.
    async fn next_service(
        &self,
        mut service: v1::Service,
        request: &v1::UpdateServiceRequest,
    ) -> Result<v1::Service, Status> {
        // A version made stale only by the cluster's own writes (the allocator's endpoint, a
        // job's status, a rolling update's progress) is no conflict when the caller says which
        // spec it read.
        let spec_unchanged = request.spec_version != 0 && request.spec_version == service.spec_version;
        if !spec_unchanged {
            Self::check_version(&service, request.version)?;
        }
        let current = service.spec.clone().unwrap_or_default();
        let mut next = if request.rollback {
            service.previous_spec.clone().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "service {} has no previous spec to roll back to",
                    service_name(&current)
                ))
            })?
        } else {
            request.spec.clone().ok_or_else(|| Status::invalid_argument("update service: no spec given"))?
        };
        self.resolve_service_payloads(&mut next).await?;
        validate_service_spec(&next)?;
        self.resolve_service_networks(&mut next, Some(&service.id)).await?;
        let mode = |s: &v1::ServiceSpec| s.mode.as_ref().map(std::mem::discriminant);
        if mode(&next) != mode(&current) {
            return Err(Status::invalid_argument(format!(
                "service {}: the mode (replicated, global, job) cannot change; create a new service",
                service_name(&current)
            )));
        }
        let now = std::time::SystemTime::now();
        let paused = service
            .update_status
            .as_ref()
            .is_some_and(|s| s.state == UpdateState::Paused as i32 || s.state == UpdateState::RollbackPaused as i32);
        if request.rollback {
            service.update_status =
                Some(updater::status(UpdateState::RollbackStarted, "manually requested rollback", now));
        } else if paused || updater::changes_tasks(&current, &next) {
            // A paused update goes on with any new update, as in Swarm.
            service.update_status = Some(updater::status(UpdateState::Updating, "update in progress", now));
        }
        service.previous_spec = Some(current);
        service.spec = Some(next);
        service.spec_version += 1;
        Ok(service)
    }

    /// Applies a service update (or rollback) to the service as stored, again when the
    /// cluster's own write of the service came between the read and the write.
    async fn apply_service_update(&self, request: &v1::UpdateServiceRequest) -> Result<v1::Service, Status> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let service = self.resolve::<v1::Service>(&request.service).await?;
            match self.objects.update(self.next_service(service, request).await?).await {
                Ok(service) => {
                    tracing::info!(service.id = %service.id, spec_version = service.spec_version, rollback = request.rollback, "service updated");
                    return Ok(service);
                }
                // Written between the read and this write. When the caller named the spec it
                // read, that was the cluster's own write (an allocation, a rolling update's
                // progress) unless the spec changed too: read again, and the check in
                // `next_service` refuses a changed spec.
                Err(ObjectError::Conflict { .. }) if request.spec_version != 0 && attempt < UPDATE_ATTEMPTS => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    fn check_version<T: Object>(current: &T, requested: u64) -> Result<(), Status> {
        if requested != current.version() {
            return Err(
                ObjectError::Conflict { kind: T::KIND, id: current.id().to_owned(), expected: requested }.into()
            );
        }
        Ok(())
    }
}

/// How many times a service update that names the spec it read is applied again after the
/// cluster's own writes of the service came between its read and its write (the leader writes a
/// service at most once a pass, so a few are plenty; the bound only stops a livelock).
const UPDATE_ATTEMPTS: u32 = 20;

/// Whether `id` is an admin certificate's ID: the prefix, then an ID as [`new_id`] makes them.
fn is_admin_id(id: &str) -> bool {
    id.strip_prefix(ADMIN_PREFIX).is_some_and(|rest| {
        rest.len() == crate::ids::ID_LEN && rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    })
}

mod autolock;
mod network;
mod payload;
mod volume;
pub(crate) use network::node_data_addr;

fn service_name(spec: &v1::ServiceSpec) -> &str {
    spec.annotations.as_ref().map(|a| a.name.as_str()).unwrap_or_default()
}

#[tonic::async_trait]
impl Control for ControlService {
    type BackupStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::BackupChunk, Status>> + Send>>;

    async fn backup(&self, _: Request<v1::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let chunks = crate::backup::chunks(self.objects.store()).await?;
        tracing::info!(chunks = chunks.len(), "state read for a backup");
        Ok(Response::new(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))))
    }

    async fn get_node(&self, request: Request<v1::GetNodeRequest>) -> Result<Response<v1::GetNodeResponse>, Status> {
        let node = self.resolve::<v1::Node>(&request.into_inner().node).await?;
        Ok(Response::new(v1::GetNodeResponse { node: Some(node) }))
    }

    async fn list_nodes(
        &self,
        request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let filter = request.into_inner();
        let nodes = self
            .objects
            .list::<v1::Node>()
            .await?
            .into_iter()
            .filter(|n| filter.names.is_empty() || n.name().is_some_and(|name| filter.names.iter().any(|f| f == name)))
            .filter(|n| filter.roles.is_empty() || filter.roles.contains(&n.role))
            .collect();
        Ok(Response::new(v1::ListNodesResponse { nodes }))
    }

    async fn update_node(
        &self,
        request: Request<v1::UpdateNodeRequest>,
    ) -> Result<Response<v1::UpdateNodeResponse>, Status> {
        let request = request.into_inner();
        let mut node = self.resolve::<v1::Node>(&request.node).await?;
        Self::check_version(&node, request.version)?;
        let spec = request.spec.ok_or_else(|| Status::invalid_argument("update node: no spec given"))?;
        for key in spec.annotations.iter().flat_map(|a| a.labels.keys()) {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(Status::invalid_argument(format!("invalid node label key {key:?}: no spaces, not empty")));
            }
        }
        let desired = |spec: Option<&v1::NodeSpec>| spec.map_or(v1::NodeRole::Worker as i32, |s| s.desired_role);
        if desired(Some(&spec)) != desired(node.spec.as_ref()) {
            self.check_role_change(&node, spec.desired_role).await?;
        }
        node.spec = Some(spec);
        let node = self.objects.update(node).await?;
        tracing::info!(node.id = %node.id, "node updated");
        Ok(Response::new(v1::UpdateNodeResponse { node: Some(node) }))
    }

    async fn remove_node(
        &self,
        request: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::RemoveNodeResponse>, Status> {
        let request = request.into_inner();
        // The request names no version: a write to the node in between (its status, its TLS
        // details) is no reason to refuse, so the checks run again on what is stored now.
        let mut attempts = 0;
        let node = loop {
            let node = self.resolve::<v1::Node>(&request.node).await?;
            let name = node.name().unwrap_or(&node.id).to_owned();
            if node.role == v1::NodeRole::Manager as i32 {
                return Err(Status::failed_precondition(format!(
                    "node {name} is a manager; demote it first (shoal node demote {name})"
                )));
            }
            let ready = node.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Ready as i32);
            if ready && !request.force {
                return Err(Status::failed_precondition(format!(
                    "node {name} is not down and can't be removed; stop its agent first, or use --force"
                )));
            }
            // The record goes and the revocation comes in one write: every manager refuses the
            // node's certificate from then on (this one at once, the others as their stores follow).
            match crate::revocation::remove_node(&self.objects, &node, self.validity).await {
                Ok(_) => break node,
                Err(ObjectError::Conflict { .. }) if attempts + 1 < crate::objects::MODIFY_ATTEMPTS => attempts += 1,
                Err(err) => return Err(err.into()),
            }
        };
        self.removed.insert(node.id.clone());
        tracing::info!(node.id = %node.id, forced = request.force, "node removed");
        Ok(Response::new(v1::RemoveNodeResponse {}))
    }

    async fn create_service(
        &self,
        request: Request<v1::CreateServiceRequest>,
    ) -> Result<Response<v1::CreateServiceResponse>, Status> {
        let mut spec =
            request.into_inner().spec.ok_or_else(|| Status::invalid_argument("create service: no spec given"))?;
        self.resolve_service_payloads(&mut spec).await?;
        validate_service_spec(&spec)?;
        self.resolve_service_networks(&mut spec, None).await?;
        let service = v1::Service { id: new_id(), spec: Some(spec), spec_version: 1, ..Default::default() };
        let service = self.objects.create(service).await?;
        tracing::info!(service.id = %service.id, service.name = %service.name().unwrap_or_default(), "service created");
        Ok(Response::new(v1::CreateServiceResponse { service: Some(service) }))
    }

    async fn get_service(
        &self,
        request: Request<v1::GetServiceRequest>,
    ) -> Result<Response<v1::GetServiceResponse>, Status> {
        let service = self.resolve::<v1::Service>(&request.into_inner().service).await?;
        Ok(Response::new(v1::GetServiceResponse { service: Some(service) }))
    }

    async fn list_services(
        &self,
        request: Request<v1::ListServicesRequest>,
    ) -> Result<Response<v1::ListServicesResponse>, Status> {
        let names = request.into_inner().names;
        let services = self
            .objects
            .list::<v1::Service>()
            .await?
            .into_iter()
            .filter(|s| names.is_empty() || s.name().is_some_and(|name| names.iter().any(|n| n == name)))
            .collect();
        Ok(Response::new(v1::ListServicesResponse { services }))
    }

    async fn update_service(
        &self,
        request: Request<v1::UpdateServiceRequest>,
    ) -> Result<Response<v1::UpdateServiceResponse>, Status> {
        let service = self.apply_service_update(&request.into_inner()).await?;
        Ok(Response::new(v1::UpdateServiceResponse { service: Some(service) }))
    }

    async fn remove_service(
        &self,
        request: Request<v1::RemoveServiceRequest>,
    ) -> Result<Response<v1::RemoveServiceResponse>, Status> {
        let service = self.resolve::<v1::Service>(&request.into_inner().service).await?;
        self.objects.delete::<v1::Service>(&service.id, service.version()).await?;
        // Its tasks are told to go, in batched writes; agents stop them and the reaper deletes
        // them. A task whose write lost to another (a status report) is left to the leader,
        // whose passes remove the tasks of services that are gone.
        let marked: Vec<Write<v1::Task>> = self
            .objects
            .list::<v1::Task>()
            .await?
            .into_iter()
            .filter(|t| t.service_id == service.id)
            .map(|mut task| {
                task.desired_state = v1::TaskState::Remove as i32;
                Write::Update(task)
            })
            .collect();
        // The service is gone already: whatever is not marked here, the leader marks.
        match self.objects.write_all(marked).await {
            Ok(outcomes) => {
                let left = outcomes.iter().filter(|o| o.is_err()).count();
                if left > 0 {
                    tracing::debug!(service.id = %service.id, left, "tasks not marked for removal here; the leader will");
                }
            }
            Err(err) => {
                tracing::warn!(service.id = %service.id, error = %err, "tasks not marked for removal here; the leader will")
            }
        }
        tracing::info!(service.id = %service.id, "service removed");
        Ok(Response::new(v1::RemoveServiceResponse {}))
    }

    async fn create_network(
        &self,
        request: Request<v1::CreateNetworkRequest>,
    ) -> Result<Response<v1::CreateNetworkResponse>, Status> {
        let network = self.create_network(request.into_inner().spec).await?;
        Ok(Response::new(v1::CreateNetworkResponse { network: Some(network) }))
    }

    async fn get_network(
        &self,
        request: Request<v1::GetNetworkRequest>,
    ) -> Result<Response<v1::GetNetworkResponse>, Status> {
        Ok(Response::new(self.get_network(&request.into_inner().network).await?))
    }

    async fn list_networks(
        &self,
        request: Request<v1::ListNetworksRequest>,
    ) -> Result<Response<v1::ListNetworksResponse>, Status> {
        let networks = self.list_networks(&request.into_inner().names).await?;
        Ok(Response::new(v1::ListNetworksResponse { networks }))
    }

    async fn remove_network(
        &self,
        request: Request<v1::RemoveNetworkRequest>,
    ) -> Result<Response<v1::RemoveNetworkResponse>, Status> {
        self.remove_network(&request.into_inner().network).await?;
        Ok(Response::new(v1::RemoveNetworkResponse {}))
    }

    async fn prune_networks(
        &self,
        _: Request<v1::PruneNetworksRequest>,
    ) -> Result<Response<v1::PruneNetworksResponse>, Status> {
        Ok(Response::new(v1::PruneNetworksResponse { removed: self.prune_networks().await? }))
    }

    async fn create_secret(
        &self,
        request: Request<v1::CreateSecretRequest>,
    ) -> Result<Response<v1::CreateSecretResponse>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        let secret = self.create_payload::<v1::Secret>(spec.annotations, spec.data).await?;
        Ok(Response::new(v1::CreateSecretResponse { secret: Some(secret) }))
    }

    async fn get_secret(
        &self,
        request: Request<v1::GetSecretRequest>,
    ) -> Result<Response<v1::GetSecretResponse>, Status> {
        let secret = self.get_payload::<v1::Secret>(&request.into_inner().secret).await?;
        Ok(Response::new(v1::GetSecretResponse { secret: Some(secret) }))
    }

    async fn list_secrets(
        &self,
        request: Request<v1::ListSecretsRequest>,
    ) -> Result<Response<v1::ListSecretsResponse>, Status> {
        let secrets = self.list_payloads::<v1::Secret>(&request.into_inner().names).await?;
        Ok(Response::new(v1::ListSecretsResponse { secrets }))
    }

    async fn update_secret(
        &self,
        request: Request<v1::UpdateSecretRequest>,
    ) -> Result<Response<v1::UpdateSecretResponse>, Status> {
        let request = request.into_inner();
        let spec = request.spec.unwrap_or_default();
        let (secret, services) =
            self.update_payload::<v1::Secret>(&request.secret, request.version, spec.annotations, spec.data).await?;
        Ok(Response::new(v1::UpdateSecretResponse { secret: Some(secret), services }))
    }

    async fn remove_secret(
        &self,
        request: Request<v1::RemoveSecretRequest>,
    ) -> Result<Response<v1::RemoveSecretResponse>, Status> {
        self.remove_payload::<v1::Secret>(&request.into_inner().secret).await?;
        Ok(Response::new(v1::RemoveSecretResponse {}))
    }

    async fn create_config(
        &self,
        request: Request<v1::CreateConfigRequest>,
    ) -> Result<Response<v1::CreateConfigResponse>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        let config = self.create_payload::<v1::Config>(spec.annotations, spec.data).await?;
        Ok(Response::new(v1::CreateConfigResponse { config: Some(config) }))
    }

    async fn get_config(
        &self,
        request: Request<v1::GetConfigRequest>,
    ) -> Result<Response<v1::GetConfigResponse>, Status> {
        let config = self.get_payload::<v1::Config>(&request.into_inner().config).await?;
        Ok(Response::new(v1::GetConfigResponse { config: Some(config) }))
    }

    async fn list_configs(
        &self,
        request: Request<v1::ListConfigsRequest>,
    ) -> Result<Response<v1::ListConfigsResponse>, Status> {
        let configs = self.list_payloads::<v1::Config>(&request.into_inner().names).await?;
        Ok(Response::new(v1::ListConfigsResponse { configs }))
    }

    async fn update_config(
        &self,
        request: Request<v1::UpdateConfigRequest>,
    ) -> Result<Response<v1::UpdateConfigResponse>, Status> {
        let request = request.into_inner();
        let spec = request.spec.unwrap_or_default();
        let (config, services) =
            self.update_payload::<v1::Config>(&request.config, request.version, spec.annotations, spec.data).await?;
        Ok(Response::new(v1::UpdateConfigResponse { config: Some(config), services }))
    }

    async fn remove_config(
        &self,
        request: Request<v1::RemoveConfigRequest>,
    ) -> Result<Response<v1::RemoveConfigResponse>, Status> {
        self.remove_payload::<v1::Config>(&request.into_inner().config).await?;
        Ok(Response::new(v1::RemoveConfigResponse {}))
    }

    async fn list_volumes(
        &self,
        request: Request<v1::ListVolumesRequest>,
    ) -> Result<Response<v1::ListVolumesResponse>, Status> {
        let nodes = self.list_volumes(&request.into_inner().node).await?;
        Ok(Response::new(v1::ListVolumesResponse { nodes }))
    }

    async fn remove_volumes(
        &self,
        request: Request<v1::RemoveVolumesRequest>,
    ) -> Result<Response<v1::RemoveVolumesResponse>, Status> {
        let request = request.into_inner();
        let removed = self.remove_volumes(&request.node, Some(&request.names)).await?;
        Ok(Response::new(v1::RemoveVolumesResponse { removed }))
    }

    async fn prune_volumes(
        &self,
        request: Request<v1::PruneVolumesRequest>,
    ) -> Result<Response<v1::PruneVolumesResponse>, Status> {
        let removed = self.remove_volumes(&request.into_inner().node, None).await?;
        Ok(Response::new(v1::PruneVolumesResponse { removed }))
    }

    async fn resolve_image(
        &self,
        request: Request<v1::ResolveImageRequest>,
    ) -> Result<Response<v1::ResolveImageResponse>, Status> {
        let image = request.into_inner().image;
        if image.trim().is_empty() {
            return Err(Status::invalid_argument("no image given"));
        }
        let Some(images) = &self.images else {
            return Err(Status::unimplemented(
                "this manager does not resolve image digests (it was started without a registry client)",
            ));
        };
        let digest = images.digest(&image).await.map_err(Status::unavailable)?;
        let image = crate::images::pinned(&image, &digest);
        Ok(Response::new(v1::ResolveImageResponse { digest, image }))
    }

    async fn get_task(&self, request: Request<v1::GetTaskRequest>) -> Result<Response<v1::GetTaskResponse>, Status> {
        let task = self.resolve::<v1::Task>(&request.into_inner().task).await?;
        Ok(Response::new(v1::GetTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let f = request.into_inner();
        let tasks = self
            .objects
            .list::<v1::Task>()
            .await?
            .into_iter()
            .filter(|t| f.service_ids.is_empty() || f.service_ids.contains(&t.service_id))
            .filter(|t| f.node_ids.is_empty() || f.node_ids.contains(&t.node_id))
            .filter(|t| f.desired_states.is_empty() || f.desired_states.contains(&t.desired_state))
            .collect();
        Ok(Response::new(v1::ListTasksResponse { tasks }))
    }

    async fn get_cluster(&self, _: Request<v1::GetClusterRequest>) -> Result<Response<v1::GetClusterResponse>, Status> {
        let cluster = self.objects.list::<v1::Cluster>().await?.into_iter().next();
        let cluster =
            cluster.ok_or_else(|| Status::failed_precondition("this node is not part of an initialised cluster"))?;
        Ok(Response::new(v1::GetClusterResponse { cluster: Some(cluster) }))
    }

    async fn update_cluster(
        &self,
        request: Request<v1::UpdateClusterRequest>,
    ) -> Result<Response<v1::UpdateClusterResponse>, Status> {
        let request = request.into_inner();
        let mut cluster = self
            .objects
            .list::<v1::Cluster>()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Status::failed_precondition("this node is not part of an initialised cluster"))?;
        Self::check_version(&cluster, request.version)?;
        if let Some(spec) = request.spec {
            crate::settings::validate(&spec)?;
            // Certificates issued with the old expiry may outlive the new one: revocations
            // must still cover them.
            let longest = crate::settings::longest_cert_validity(Some(&cluster), self.validity).max(
                crate::settings::cert_validity(
                    Some(&v1::Cluster { spec: Some(spec.clone()), ..Default::default() }),
                    self.validity,
                ),
            );
            cluster.longest_node_cert_expiry = Some(shoal_api::to_duration(longest));
            cluster.spec = Some(spec);
        }
        if request.rotate_worker_token || request.rotate_manager_token {
            let stored = cluster.join_tokens.clone().unwrap_or_default();
            let parse = |t: &str| {
                t.parse::<JoinToken>().map_err(|e| Status::data_loss(format!("stored join token does not parse: {e}")))
            };
            let mut tokens = JoinTokens::from_tokens(&parse(&stored.worker)?, &parse(&stored.manager)?)
                .map_err(|e| Status::data_loss(format!("stored join tokens: {e}")))?;
            let rotations = [
                (request.rotate_worker_token, Role::Worker, "worker"),
                (request.rotate_manager_token, Role::Manager, "manager"),
            ];
            for (rotate, role, label) in rotations {
                if rotate {
                    tokens.rotate(role).map_err(|e| Status::internal(format!("rotate the {label} join token: {e}")))?;
                    tracing::info!(role = label, "join token rotated");
                }
            }
            cluster.join_tokens = Some(v1::JoinTokens {
                worker: tokens.token(Role::Worker).to_string(),
                manager: tokens.token(Role::Manager).to_string(),
            });
        }
        let autolock = cluster.spec.as_ref().is_some_and(|s| s.autolock_managers);
        if request.rotate_unlock_key && !autolock {
            return Err(Status::failed_precondition(
                "autolock is off, so there is no unlock key to rotate: `shoal cluster update --autolock=true` turns it on",
            ));
        }
        let cluster = self.objects.update(cluster).await?;
        let unlock_key = self.follow_autolock(autolock, request.rotate_unlock_key).await?;
        Ok(Response::new(v1::UpdateClusterResponse { cluster: Some(cluster), unlock_key }))
    }

    async fn get_unlock_key(
        &self,
        _: Request<v1::GetUnlockKeyRequest>,
    ) -> Result<Response<v1::GetUnlockKeyResponse>, Status> {
        let keys = self.objects.get::<v1::UnlockKeys>(crate::autolock::UNLOCK_KEYS_ID).await.map_err(|e| match e {
            ObjectError::NotFound { .. } => Status::failed_precondition(
                "autolock is off, so the cluster has no unlock key: `shoal cluster update --autolock=true` turns it on",
            ),
            other => other.into(),
        })?;
        let key = crate::autolock::key_of(&keys)?;
        Ok(Response::new(v1::GetUnlockKeyResponse { unlock_key: key.to_string() }))
    }

    async fn list_admin_certificates(
        &self,
        request: Request<v1::ListAdminCertificatesRequest>,
    ) -> Result<Response<v1::ListAdminCertificatesResponse>, Status> {
        let caller = caller(&request)?.node_id;
        let certificates = self.objects.list::<v1::AdminCertificate>().await?;
        let revoked = self
            .objects
            .list::<v1::Revocation>()
            .await?
            .into_iter()
            .filter(|r| r.kind == v1::RevokedKind::Admin as i32)
            .collect();
        Ok(Response::new(v1::ListAdminCertificatesResponse { certificates, revoked, caller }))
    }

    async fn issue_admin_certificate(
        &self,
        request: Request<v1::IssueAdminCertificateRequest>,
    ) -> Result<Response<v1::IssueAdminCertificateResponse>, Status> {
        let caller = caller(&request)?;
        let csr = request.into_inner().csr;
        let csr = std::str::from_utf8(&csr).map_err(|_| Status::invalid_argument("the CSR is not PEM text"))?;
        let identity = shoal_ca_pki::NodeIdentity {
            node_id: format!("{ADMIN_PREFIX}{}", new_id()),
            role: Role::Manager,
            cluster_id: caller.cluster_id.clone(),
        };
        // Recorded first: a certificate the cluster does not list is never handed out.
        crate::revocation::record_admin(&self.objects, &identity, &caller.node_id).await?;
        let cluster = crate::settings::cluster(&self.objects).await?;
        let validity = crate::settings::cert_validity(cluster.as_ref(), self.validity);
        let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::MAX);
        let chain = self
            .ca
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .issue(csr, &identity, validity, time::OffsetDateTime::now_utc())
            .map_err(|e| Status::invalid_argument(format!("cannot sign the CSR: {e}")))?;
        tracing::info!(admin.id = %identity.node_id, issued_by = %caller.node_id, "admin certificate issued");
        Ok(Response::new(v1::IssueAdminCertificateResponse {
            id: identity.node_id,
            certificate_chain: chain.into_bytes(),
        }))
    }

    async fn revoke_admin_certificate(
        &self,
        request: Request<v1::RevokeAdminCertificateRequest>,
    ) -> Result<Response<v1::RevokeAdminCertificateResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = self.resolve_admin(&request.id).await?;
        if id == caller.node_id && !request.force {
            return Err(Status::failed_precondition(format!(
                "admin certificate {id} is the one this command runs with: revoking it locks you out (every manager \
                 refuses it from then on); rotate it instead (`shoal cluster admin-cert rotate`), or use --force"
            )));
        }
        let revocation = crate::revocation::revoke_admin(&self.objects, &id, self.validity).await?;
        self.removed.insert(id.clone());
        tracing::info!(admin.id = %id, revoked_by = %caller.node_id, "admin certificate revoked");
        Ok(Response::new(v1::RevokeAdminCertificateResponse { revocation: Some(revocation) }))
    }

    async fn get_cluster_ca(
        &self,
        request: Request<v1::GetClusterCaRequest>,
    ) -> Result<Response<v1::GetClusterCaResponse>, Status> {
        let node = self.calling_manager(&request).await?;
        let (ca_cert, ca_key) = {
            let ca = self.ca.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let root = ca.signing_root();
            (root.cert_pem().as_bytes().to_vec(), root.key_pem().into_bytes())
        };
        tracing::info!(node.id = %node.id, "handed the cluster CA to a joining manager");
        Ok(Response::new(v1::GetClusterCaResponse { ca_cert, ca_key }))
    }

    async fn rotate_root_ca(
        &self,
        request: Request<v1::RotateRootCaRequest>,
    ) -> Result<Response<v1::RotateRootCaResponse>, Status> {
        let request = request.into_inner();
        let given = match (request.ca_cert.is_empty(), request.ca_key.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let text = |bytes: Vec<u8>, what: &str| {
                    String::from_utf8(bytes)
                        .map_err(|_| Status::invalid_argument(format!("the root CA {what} is not PEM text")))
                };
                let (cert, key) = (text(request.ca_cert, "certificate")?, text(request.ca_key, "key")?);
                let root = shoal_ca_pki::RootCa::from_pem(&cert, &key).map_err(|e| {
                    Status::invalid_argument(format!(
                        "the root CA given cannot sign for the cluster: {e}; give a CA certificate (--ca-cert) and                          its own private key (--ca-key), both PEM"
                    ))
                })?;
                Some(root)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give both the root CA certificate (--ca-cert) and its key (--ca-key), or neither to have a new                      root made",
                ));
            }
        };
        let desired_root = crate::root_ca::start(&self.objects, &self.ca, given).await?;
        Ok(Response::new(v1::RotateRootCaResponse { desired_root }))
    }

    async fn get_root_ca_status(
        &self,
        _: Request<v1::GetRootCaStatusRequest>,
    ) -> Result<Response<v1::GetRootCaStatusResponse>, Status> {
        Ok(Response::new(crate::root_ca::status(&self.objects, &self.ca).await?))
    }

    async fn join_raft(&self, request: Request<v1::JoinRaftRequest>) -> Result<Response<v1::JoinRaftResponse>, Status> {
        let node = self.calling_manager(&request).await?;
        let v1::JoinRaftRequest { raft_id, addr } = request.into_inner();
        if raft_id == 0 || addr.is_empty() {
            return Err(Status::invalid_argument("join raft: a non-zero raft_id and an address are required"));
        }
        let store = self.objects.store();
        if !store.is_leader() {
            return Err(not_the_leader(store, "add members"));
        }
        let membership = |e: shoal_raft_store::MembershipError| Status::unavailable(format!("raft membership: {e}"));
        store.add_learner(raft_id, addr.clone()).await.map_err(membership)?;
        store.promote(raft_id).await.map_err(membership)?;
        // The node is a voter now; recording it must not fail over a concurrent write of its
        // record (its first session, for one), so read it again and retry on a conflict.
        let status = v1::ManagerStatus {
            raft_id,
            addr: addr.clone(),
            leader: false,
            reachability: v1::manager_status::Reachability::Reachable as i32,
        };
        self.objects
            .modify(&node.id, |current: &mut v1::Node| {
                current.manager_status = Some(status.clone());
                true
            })
            .await?;
        tracing::info!(node.id = %node.id, raft_id, %addr, "manager joined the Raft group");
        Ok(Response::new(v1::JoinRaftResponse {}))
    }

    async fn abandon_join(
        &self,
        request: Request<v1::AbandonJoinRequest>,
    ) -> Result<Response<v1::AbandonJoinResponse>, Status> {
        let identity = caller(&request)?;
        if crate::tls::is_admin(&identity) {
            return Err(Status::permission_denied("only the joining manager itself can abandon its join"));
        }
        let raft_id = request.into_inner().raft_id;
        let store = self.objects.store();
        if !store.is_leader() {
            return Err(not_the_leader(store, "remove members"));
        }
        let node = match self.objects.get::<v1::Node>(&identity.node_id).await {
            Ok(node) => Some(node),
            // Asked again after a lost answer: the record is gone already.
            Err(ObjectError::NotFound { .. }) => None,
            Err(err) => return Err(err.into()),
        };
        if let Some(node) = &node
            && node.role != v1::NodeRole::Manager as i32
        {
            return Err(Status::permission_denied(format!("{} is not a manager node of this cluster", node.id)));
        }
        // Only the caller's own member: one that no other node is recorded with, never the leader.
        let nodes = self.objects.list::<v1::Node>().await?;
        let owner = nodes.iter().find(|n| n.manager_status.as_ref().is_some_and(|m| m.raft_id == raft_id));
        if raft_id == 0 || raft_id == store.id() || owner.is_some_and(|n| n.id != identity.node_id) {
            return Err(Status::permission_denied(format!(
                "raft member {raft_id} is not the one {} asked to join with",
                identity.node_id
            )));
        }
        store.remove(raft_id).await.map_err(|e| Status::unavailable(format!("raft membership: {e}")))?;
        if let Some(node) = node {
            // As `shoal node rm`: the record goes and its revocation comes in one write, so every
            // manager refuses the certificate the failed join was issued.
            match crate::revocation::remove_node(&self.objects, &node, self.validity).await {
                Ok(_) | Err(ObjectError::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
            self.removed.insert(node.id.clone());
        }
        tracing::info!(node.id = %identity.node_id, raft_id, "a manager whose join failed was taken back out");
        Ok(Response::new(v1::AbandonJoinResponse {}))
    }
}

/// The refusal of a manager that is not the Raft leader to `what`, naming the leader (also in
/// the `shoal-leader` header, for the caller to ask it next).
fn not_the_leader(store: &shoal_raft_store::Store, what: &str) -> Status {
    let leader = crate::status::leader_addr(store);
    let mut status = Status::unavailable(format!(
        "manager {} is not the Raft leader and cannot {what}; {}",
        store.addr(),
        leader.as_deref().map_or_else(
            || "no leader is known (no quorum?)".to_owned(),
            |addr| format!("the leader is at {addr}: ask it")
        ),
    ));
    if let Some(value) = leader.and_then(|addr| addr.parse().ok()) {
        status.metadata_mut().insert(shoal_api::LEADER_METADATA, value);
    }
    status
}

#[cfg(test)]
pub(crate) mod tests;
