//! The control API of named volumes. Volumes live on nodes (docker's local driver): each agent
//! reports its own with its heartbeats, into its node record, so any manager can list them.
//! Removing one is asked of its node through the node record (`volume_removals`, handed to the
//! agent in its heartbeat answers); the call answers once the node reports the volume gone.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_api::v1;
use tonic::Status;

use super::ControlService;
use crate::objects::Object;

/// How long `volume rm|prune` waits for the node to report its volumes gone: a few heartbeats.
const REMOVAL_WAIT: Duration = Duration::from_secs(15);

/// How often the node record is read meanwhile.
const REMOVAL_POLL: Duration = Duration::from_millis(100);

impl ControlService {
    pub(super) async fn list_volumes(&self, node: &str) -> Result<Vec<v1::NodeVolumes>, Status> {
        let nodes = if node.is_empty() {
            self.objects.list::<v1::Node>().await?
        } else {
            vec![self.resolve::<v1::Node>(node).await?]
        };
        Ok(nodes
            .into_iter()
            .map(|n| v1::NodeVolumes {
                hostname: n.name().unwrap_or_default().to_owned(),
                node_id: n.id,
                volumes: n.volumes,
            })
            .collect())
    }

    /// Removes `names` from `node` (every unused volume when `names` is `None`: a prune) and
    /// returns the names removed. A volume a task on the node uses, or may use (its task is
    /// meant to run there), is refused with the tasks named.
    pub(super) async fn remove_volumes(&self, node: &str, names: Option<&[String]>) -> Result<Vec<String>, Status> {
        if node.is_empty() {
            return Err(Status::invalid_argument("volumes live on nodes: name the node (--node NODE)"));
        }
        let node = self.resolve::<v1::Node>(node).await?;
        let hostname = node.name().unwrap_or(&node.id).to_owned();
        let tasks: Vec<v1::Task> =
            self.objects.list::<v1::Task>().await?.into_iter().filter(|t| t.node_id == node.id).collect();
        let users = |volume: &v1::NodeVolume| -> Vec<String> {
            let mut users: BTreeSet<String> = volume.task_ids.iter().cloned().collect();
            for task in &tasks {
                let live =
                    !task.observed_state().is_terminal() && task.desired() as i32 <= v1::TaskState::Running as i32;
                let mounts = task.spec.as_ref().and_then(|s| s.container.as_ref()).map(|c| c.mounts.as_slice());
                let uses = mounts
                    .unwrap_or_default()
                    .iter()
                    .any(|m| m.r#type == v1::mount::Type::Volume as i32 && m.source == volume.name);
                if live && uses {
                    users.insert(task.id.clone());
                }
            }
            users.into_iter().map(|id| task_label(&tasks, &id)).collect()
        };
        let wanted: Vec<String> = match names {
            Some(names) => {
                if names.is_empty() {
                    return Err(Status::invalid_argument("no volume named; give the volumes to remove"));
                }
                for name in names {
                    let Some(volume) = node.volumes.iter().find(|v| &v.name == name) else {
                        return Err(Status::not_found(format!(
                            "no such volume {name} on node {hostname} (shoal volume ls --node {hostname} lists them)"
                        )));
                    };
                    let users = users(volume);
                    if !users.is_empty() {
                        return Err(Status::failed_precondition(format!(
                            "volume {name} on node {hostname} is in use by task{} {}; remove or update the service \
                             first",
                            if users.len() == 1 { "" } else { "s" },
                            users.join(", ")
                        )));
                    }
                }
                names.to_vec()
            }
            None => node.volumes.iter().filter(|v| users(v).is_empty()).map(|v| v.name.clone()).collect(),
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let ready = node.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Ready as i32);
        if !ready {
            return Err(Status::failed_precondition(format!(
                "node {hostname} is not ready, so it cannot remove its volumes now; try again when it is back"
            )));
        }
        self.objects
            .modify(&node.id, |n: &mut v1::Node| {
                let before = n.volume_removals.len();
                for name in &wanted {
                    if !n.volume_removals.contains(name) {
                        n.volume_removals.push(name.clone());
                    }
                }
                n.volume_removals.len() != before
            })
            .await?;
        let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
        loop {
            let current = self.objects.get_local::<v1::Node>(&node.id).await?;
            let left: Vec<&String> = wanted.iter().filter(|w| current.volumes.iter().any(|v| &v.name == *w)).collect();
            if left.is_empty() {
                tracing::info!(node.id = %node.id, volumes = ?wanted, "volumes removed");
                return Ok(wanted);
            }
            if tokio::time::Instant::now() >= deadline {
                let left: Vec<&str> = left.iter().map(|s| s.as_str()).collect();
                return Err(Status::deadline_exceeded(format!(
                    "node {hostname} has not removed volume{} {} after {}s (a container there may still use it); \
                     the removal stays asked and happens when the node can",
                    if left.len() == 1 { "" } else { "s" },
                    left.join(", "),
                    REMOVAL_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(REMOVAL_POLL).await;
        }
    }
}

/// `web.1 (ID)` for a task of the list, or the ID.
fn task_label(tasks: &[v1::Task], id: &str) -> String {
    match tasks.iter().find(|t| t.id == id).and_then(|t| t.name()) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_owned(),
    }
}
