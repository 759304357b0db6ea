//! What the in-process control-plane tests share (`shoal-local-cluster`): listing a service's
//! tasks, the ones running, and a replicated service spec with no restart delay.

#![allow(dead_code)]

use std::time::Duration;

use shoal_api::v1::{self, TaskState, control_client::ControlClient};
use tonic::transport::Channel;

pub(crate) async fn tasks(control: &mut ControlClient<Channel>, service: &str) -> Vec<v1::Task> {
    let request = v1::ListTasksRequest { service_ids: vec![service.to_owned()], ..Default::default() };
    control.list_tasks(request).await.map(|r| r.into_inner().tasks).unwrap_or_default()
}

pub(crate) fn running(tasks: &[v1::Task]) -> Vec<&v1::Task> {
    tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running as i32)
        .filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running as i32))
        .collect()
}

pub(crate) fn spec(name: &str, image: &str, replicas: u64) -> v1::ServiceSpec {
    v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: image.into(), ..Default::default() }),
            restart: Some(v1::RestartPolicy {
                delay: Some(shoal_api::to_duration(Duration::ZERO)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
