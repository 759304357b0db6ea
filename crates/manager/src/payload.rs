//! Secrets and configs: named payloads that tasks read from files on a tmpfs. One trait,
//! [`Payload`], lets the control API, the validation and the dispatcher treat both alike; they
//! differ in their size limit, where their file goes by default, and whether the control API
//! shows the payload (a config's, never a secret's).
//!
//! **Versions.** A payload can be replaced without renaming it (`shoal secret update`, beyond
//! Swarm, whose secrets are immutable): the object keeps its ID and name, `data_version` grows,
//! and the payloads still named by a service's spec or previous spec or by a task that may run
//! stay in `previous`, so that a rolling update, a rollback and a task restarting on an older
//! spec all find theirs. A task names the version it was made with (in its
//! [`v1::SecretReference`]), so a new version reaches the containers through the services'
//! update config, like any other change of their spec.

use std::collections::HashSet;

use ring::digest;
use shoal_api::v1;

use crate::objects::Object;

/// A task's reference to a secret or config.
pub(crate) trait Reference {
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn set_object(&mut self, id: &str, name: &str);
    fn data_version(&self) -> u64;
    fn set_data_version(&mut self, version: u64);
    fn file(&self) -> Option<&v1::FileTarget>;
    fn file_mut(&mut self) -> &mut Option<v1::FileTarget>;
}

macro_rules! reference {
    ($ty:ty, $id:ident, $name:ident) => {
        impl Reference for $ty {
            fn id(&self) -> &str {
                &self.$id
            }
            fn name(&self) -> &str {
                &self.$name
            }
            fn set_object(&mut self, id: &str, name: &str) {
                self.$id = id.to_owned();
                self.$name = name.to_owned();
            }
            fn data_version(&self) -> u64 {
                self.data_version
            }
            fn set_data_version(&mut self, version: u64) {
                self.data_version = version;
            }
            fn file(&self) -> Option<&v1::FileTarget> {
                self.file.as_ref()
            }
            fn file_mut(&mut self) -> &mut Option<v1::FileTarget> {
                &mut self.file
            }
        }
    };
}

reference!(v1::SecretReference, secret_id, secret_name);
reference!(v1::ConfigReference, config_id, config_name);

/// A secret or a config.
pub(crate) trait Payload: Object {
    type Ref: Reference + Clone;
    /// The largest payload accepted, in bytes (Swarm's limits).
    const MAX_BYTES: usize;
    /// Whether the control API returns the payload (configs) or never does (secrets).
    const SHOWN: bool;
    /// Where a file target that is not an absolute path goes.
    const DEFAULT_DIR: &'static str;

    fn new(id: String, annotations: v1::Annotations, data: Vec<u8>) -> Self;
    fn annotations_mut(&mut self) -> &mut v1::Annotations;
    fn data(&self) -> &[u8];
    fn set_data(&mut self, data: Vec<u8>);
    fn data_version(&self) -> u64;
    fn set_data_version(&mut self, version: u64);
    fn previous(&self) -> &[v1::PayloadVersion];
    fn previous_mut(&mut self) -> &mut Vec<v1::PayloadVersion>;
    fn set_digest(&mut self, digest: String);
    fn refs(container: &v1::ContainerSpec) -> &[Self::Ref];
    fn refs_mut(container: &mut v1::ContainerSpec) -> &mut Vec<Self::Ref>;
    /// The object as one assignment change carries it.
    fn into_change(self) -> v1::AssignmentChange;
}

macro_rules! payload {
    ($ty:ty, $spec:ident, $reft:ty, $refs:ident, $max:expr, $shown:expr, $dir:expr, $change:ident) => {
        impl Payload for $ty {
            type Ref = $reft;
            const MAX_BYTES: usize = $max;
            const SHOWN: bool = $shown;
            const DEFAULT_DIR: &'static str = $dir;

            fn new(id: String, annotations: v1::Annotations, data: Vec<u8>) -> Self {
                let mut object = Self {
                    id,
                    spec: Some(v1::$spec { annotations: Some(annotations), data: Vec::new() }),
                    data_version: 1,
                    ..Default::default()
                };
                object.set_data(data);
                object
            }
            fn annotations_mut(&mut self) -> &mut v1::Annotations {
                self.spec.get_or_insert_with(Default::default).annotations.get_or_insert_with(Default::default)
            }
            fn data(&self) -> &[u8] {
                self.spec.as_ref().map(|s| s.data.as_slice()).unwrap_or_default()
            }
            fn set_data(&mut self, data: Vec<u8>) {
                self.digest = digest_hex(&data);
                self.spec.get_or_insert_with(Default::default).data = data;
            }
            fn data_version(&self) -> u64 {
                self.data_version
            }
            fn set_data_version(&mut self, version: u64) {
                self.data_version = version;
            }
            fn previous(&self) -> &[v1::PayloadVersion] {
                &self.previous
            }
            fn previous_mut(&mut self) -> &mut Vec<v1::PayloadVersion> {
                &mut self.previous
            }
            fn set_digest(&mut self, digest: String) {
                self.digest = digest;
            }
            fn refs(container: &v1::ContainerSpec) -> &[Self::Ref] {
                &container.$refs
            }
            fn refs_mut(container: &mut v1::ContainerSpec) -> &mut Vec<Self::Ref> {
                &mut container.$refs
            }
            fn into_change(self) -> v1::AssignmentChange {
                v1::AssignmentChange { $change: Some(self), ..Default::default() }
            }
        }
    };
}

/// Swarm's limit: secrets are smaller than 500 KiB.
pub(crate) const MAX_SECRET_BYTES: usize = 500 * 1024 - 1;
/// Swarm's limit: configs are smaller than 1000 KiB.
pub(crate) const MAX_CONFIG_BYTES: usize = 1000 * 1024 - 1;

payload!(v1::Secret, SecretSpec, v1::SecretReference, secrets, MAX_SECRET_BYTES, false, "/run/secrets", secret);
payload!(v1::Config, ConfigSpec, v1::ConfigReference, configs, MAX_CONFIG_BYTES, true, "/", config);

/// SHA-256 of `data`, hex.
pub(crate) fn digest_hex(data: &[u8]) -> String {
    digest::digest(&digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The payload of `version`, if the object still has it.
pub(crate) fn payload_of<P: Payload>(object: &P, version: u64) -> Option<&[u8]> {
    if version == object.data_version() {
        return Some(object.data());
    }
    object.previous().iter().find(|p| p.data_version == version).map(|p| p.data.as_slice())
}

/// Whether the object still has the payload of `version`.
pub(crate) fn has_version<P: Payload>(object: &P, version: u64) -> bool {
    payload_of(object, version).is_some()
}

/// The object as it goes to a node for a task made with `version`: that version's payload in
/// the spec, no other. `None` when the version is gone.
pub(crate) fn for_node<P: Payload>(object: &P, version: u64) -> Option<P> {
    let data = payload_of(object, version)?.to_vec();
    let mut copy = object.clone();
    copy.previous_mut().clear();
    copy.set_data(data);
    copy.set_data_version(version);
    Some(copy)
}

/// The object as the control API shows it: no earlier payloads, and no payload at all for a
/// secret.
pub(crate) fn shown<P: Payload>(mut object: P) -> P {
    object.previous_mut().clear();
    if !P::SHOWN {
        let digest = digest_hex(object.data());
        object.set_data(Vec::new());
        object.set_digest(digest);
    }
    object
}

/// Makes `data` the current payload, keeping the one it replaces in `previous` (taken out again
/// by [`prune`] when nothing names it). Returns whether anything changed: the same bytes again
/// make no new version.
pub(crate) fn replace<P: Payload>(object: &mut P, data: Vec<u8>, now: std::time::SystemTime) -> bool {
    if data == object.data() {
        return false;
    }
    let old = v1::PayloadVersion {
        data_version: object.data_version(),
        data: object.data().to_vec(),
        replaced_at: Some(shoal_api::to_timestamp(now)),
    };
    let next = object.data_version() + 1;
    object.previous_mut().push(old);
    object.set_data(data);
    object.set_data_version(next);
    true
}

/// The versions of payload `id` that services (spec and previous spec) and tasks that may still
/// run name.
pub(crate) fn versions_in_use<P: Payload>(id: &str, services: &[v1::Service], tasks: &[v1::Task]) -> HashSet<u64> {
    let mut used = HashSet::new();
    let mut note = |container: Option<&v1::ContainerSpec>| {
        for r in container.map(P::refs).unwrap_or_default() {
            if r.id() == id {
                used.insert(r.data_version());
            }
        }
    };
    for service in services {
        for spec in [&service.spec, &service.previous_spec].into_iter().flatten() {
            note(spec.task.as_ref().and_then(|t| t.container.as_ref()));
        }
    }
    for task in tasks.iter().filter(|t| may_run(t)) {
        note(task.spec.as_ref().and_then(|s| s.container.as_ref()));
    }
    used
}

/// Whether a task may still start or run (not finished, not told to stop).
fn may_run(task: &v1::Task) -> bool {
    !task.observed_state().is_terminal() && task.desired() as i32 <= v1::TaskState::Running as i32
}

/// Drops the earlier payloads nothing names any more.
pub(crate) fn prune<P: Payload>(object: &mut P, in_use: &HashSet<u64>) {
    object.previous_mut().retain(|p| in_use.contains(&p.data_version));
}

/// The names of the services whose spec uses payload `id`.
pub(crate) fn users<P: Payload>(id: &str, services: &[v1::Service]) -> Vec<String> {
    let mut names: Vec<String> = services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.task.as_ref())
                .and_then(|t| t.container.as_ref())
                .is_some_and(|c| P::refs(c).iter().any(|r| r.id() == id))
        })
        .map(|s| s.name().unwrap_or(&s.id).to_owned())
        .collect();
    names.sort();
    names
}

/// The path a reference's file gets in the container: absolute targets as they are, others
/// under the kind's directory.
pub(crate) fn target_path<P: Payload>(r: &P::Ref) -> String {
    let name = r.file().map(|f| f.name.as_str()).filter(|n| !n.is_empty()).unwrap_or(r.name());
    if name.starts_with('/') { name.to_owned() } else { format!("{}/{name}", P::DEFAULT_DIR.trim_end_matches('/')) }
}

/// Checks a payload's name as Swarm does: 1–64 letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit.
pub(crate) fn validate_payload_name(kind: &str, name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let valid = (1..=64).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// Checks a payload's size: not empty, under the kind's limit.
pub(crate) fn validate_payload_size<P: Payload>(name: &str, data: &[u8]) -> Result<(), String> {
    if data.is_empty() {
        return Err(format!("{} {name}: the payload is empty; give the file (or stdin) with its content", P::KIND));
    }
    if data.len() > P::MAX_BYTES {
        return Err(format!(
            "{} {name}: the payload is {} bytes, the limit is {} (under {} KiB)",
            P::KIND,
            data.len(),
            P::MAX_BYTES,
            (P::MAX_BYTES + 1) / 1024
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
