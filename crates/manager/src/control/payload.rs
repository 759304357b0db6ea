//! The control API of secrets and configs (see `payload.rs` for what they are): create, read
//! (a secret's payload never comes out), update (labels; a new payload becomes a new version and
//! the services that use it are updated to it, rolling their tasks by their update config) and
//! removal (refused while a service uses it). Also how a service spec's references are resolved.

use shoal_api::v1;
use tonic::Status;

use super::ControlService;
use crate::ids::new_id;
use crate::objects::{Object, ObjectError};
use crate::payload::{self, Payload, Reference};

impl ControlService {
    pub(super) async fn create_payload<P: Payload>(
        &self,
        annotations: Option<v1::Annotations>,
        data: Vec<u8>,
    ) -> Result<P, Status> {
        let annotations = annotations.unwrap_or_default();
        payload::validate_payload_name(P::KIND, &annotations.name).map_err(Status::invalid_argument)?;
        validate_labels(P::KIND, &annotations)?;
        payload::validate_payload_size::<P>(&annotations.name, &data).map_err(Status::invalid_argument)?;
        let name = annotations.name.clone();
        let object = self.objects.create(P::new(new_id(), annotations, data)).await?;
        tracing::info!(kind = P::KIND, id = %object.id(), name = %name, "created");
        Ok(payload::shown(object))
    }

    pub(super) async fn get_payload<P: Payload>(&self, reference: &str) -> Result<P, Status> {
        Ok(payload::shown(self.resolve::<P>(reference).await?))
    }

    pub(super) async fn list_payloads<P: Payload>(&self, names: &[String]) -> Result<Vec<P>, Status> {
        Ok(self
            .objects
            .list::<P>()
            .await?
            .into_iter()
            .filter(|o| names.is_empty() || o.name().is_some_and(|n| names.iter().any(|f| f == n)))
            .map(payload::shown)
            .collect())
    }

    /// Replaces the labels (when `annotations` are given) and, with a non-empty `data` that
    /// differs from the current payload, stores it as the next version and moves every service
    /// using the object to it. Returns the object and the names of the services moved.
    pub(super) async fn update_payload<P: Payload>(
        &self,
        reference: &str,
        version: u64,
        annotations: Option<v1::Annotations>,
        data: Vec<u8>,
    ) -> Result<(P, Vec<String>), Status> {
        let mut object = self.resolve::<P>(reference).await?;
        if version != 0 {
            Self::check_version(&object, version)?;
        }
        let name = object.name().unwrap_or_default().to_owned();
        if let Some(annotations) = annotations {
            if !annotations.name.is_empty() && annotations.name != name {
                return Err(Status::invalid_argument(format!(
                    "{kind} {name}: a {kind} cannot be renamed (asked: {:?}); create a new one",
                    annotations.name,
                    kind = P::KIND
                )));
            }
            validate_labels(P::KIND, &annotations)?;
            object.annotations_mut().labels = annotations.labels;
        }
        let rotated = if data.is_empty() {
            false
        } else {
            payload::validate_payload_size::<P>(&name, &data).map_err(Status::invalid_argument)?;
            payload::replace(&mut object, data, std::time::SystemTime::now())
        };
        let services = self.objects.list::<v1::Service>().await?;
        let tasks = self.objects.list::<v1::Task>().await?;
        let mut in_use = payload::versions_in_use::<P>(object.id(), &services, &tasks);
        in_use.insert(object.data_version());
        payload::prune(&mut object, &in_use);
        let object = self.objects.update(object).await?;
        if !rotated {
            return Ok((payload::shown(object), Vec::new()));
        }
        tracing::info!(kind = P::KIND, id = %object.id(), data_version = object.data_version(), "new payload version");
        let mut moved = Vec::new();
        for service in services {
            let Some(mut spec) = service.spec.clone() else { continue };
            let Some(container) = spec.task.as_mut().and_then(|t| t.container.as_mut()) else { continue };
            let mut changed = false;
            for r in P::refs_mut(container).iter_mut().filter(|r| r.id() == object.id()) {
                r.set_data_version(object.data_version());
                changed = true;
            }
            if !changed {
                continue;
            }
            let request = v1::UpdateServiceRequest {
                service: service.id.clone(),
                version: service.version(),
                spec: Some(spec),
                rollback: false,
                spec_version: service.spec_version,
            };
            let service_name = service.name().unwrap_or(&service.id).to_owned();
            self.apply_service_update(&request).await.map_err(|status| {
                Status::new(
                    status.code(),
                    format!(
                        "{kind} {name} has its new version {}, but service {service_name} could not be moved to it: \
                         {}; run shoal {kind} update again to retry",
                        object.data_version(),
                        status.message(),
                        kind = P::KIND
                    ),
                )
            })?;
            moved.push(service_name);
        }
        Ok((payload::shown(object), moved))
    }

    pub(super) async fn remove_payload<P: Payload>(&self, reference: &str) -> Result<(), Status> {
        let object = self.resolve::<P>(reference).await?;
        let name = object.name().unwrap_or_default().to_owned();
        let users = payload::users::<P>(object.id(), &self.objects.list::<v1::Service>().await?);
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{kind} {name} is in use by service{} {}; remove it from them first (shoal service update \
                 --{kind}-rm {name} SERVICE)",
                if users.len() == 1 { "" } else { "s" },
                users.join(", "),
                kind = P::KIND
            )));
        }
        self.objects.delete::<P>(object.id(), object.version()).await?;
        tracing::info!(kind = P::KIND, id = %object.id(), name = %name, "removed");
        Ok(())
    }

    /// Resolves the secrets and configs a service spec names (by ID or name) to their IDs and
    /// names, gives a reference without a version (or naming one that is gone) the current
    /// payload, and its default file target.
    pub(super) async fn resolve_service_payloads(&self, spec: &mut v1::ServiceSpec) -> Result<(), Status> {
        let service = spec.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        let Some(container) = spec.task.as_mut().and_then(|t| t.container.as_mut()) else { return Ok(()) };
        self.resolve_refs::<v1::Secret>(&service, container).await?;
        self.resolve_refs::<v1::Config>(&service, container).await
    }

    async fn resolve_refs<P: Payload>(&self, service: &str, container: &mut v1::ContainerSpec) -> Result<(), Status> {
        for r in P::refs_mut(container).iter_mut() {
            let wanted = if r.id().is_empty() { r.name().to_owned() } else { r.id().to_owned() };
            let object = match self.objects.get::<P>(&wanted).await {
                Ok(object) => object,
                Err(ObjectError::NotFound { .. }) => match self.resolve::<P>(&wanted).await {
                    Ok(object) => object,
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        return Err(Status::not_found(format!(
                            "service {service}: {kind} {wanted} not found; create it with shoal {kind} create \
                             {wanted} FILE",
                            kind = P::KIND
                        )));
                    }
                    Err(status) => return Err(status),
                },
                Err(err) => return Err(err.into()),
            };
            let name = object.name().unwrap_or_default().to_owned();
            r.set_object(object.id(), &name);
            if !payload::has_version(&object, r.data_version()) {
                r.set_data_version(object.data_version());
            }
            let file = r.file_mut().get_or_insert_with(|| v1::FileTarget { mode: 0o444, ..Default::default() });
            if file.name.is_empty() {
                file.name = name;
            }
        }
        Ok(())
    }
}

fn validate_labels(kind: &str, annotations: &v1::Annotations) -> Result<(), Status> {
    for key in annotations.labels.keys() {
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Status::invalid_argument(format!("invalid {kind} label key {key:?}: no spaces, not empty")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
