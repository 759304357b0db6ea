//! Health checks on containerd, without a manager: the executor runs a task of
//! `shoal-test/health` (pulled from the test registry), which stays STARTING until its image's
//! `HEALTHCHECK` first passes (one interval, 1 s, after start) and is then RUNNING; after
//! `/cgi-bin/sicken` (an HTTP request inside the container) two failed probes in a row make it
//! unhealthy, and the executor stops it and reports FAILED `task: unhealthy container`.
//!
//! Privileged: root, containerd, runc, docker-registry (skipped with the reason otherwise,
//! failed under `CI=true`); `shoal-runtime-logger` must be built next to the test binaries'
//! directory.

// Tests narrate their steps on stderr, which the harness shows when one fails.
#![allow(clippy::print_stderr)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::testing::Standalone;
use shoal_api::v1::{self, TaskState};
use shoal_runtime::{ContainerRuntime, ContainerState, Containerd, ExecSpec};
use support::{OneNode, prerequisites};

fn narrate(step: &str) {
    eprintln!("--- {step}");
}

/// Waits (at most `within`) until `task_id` reports `state`; returns that report and every state
/// it reported on the way.
async fn until(
    executor: &mut Standalone,
    task_id: &str,
    state: TaskState,
    within: Duration,
) -> (v1::TaskStatus, Vec<TaskState>) {
    let mut seen = Vec::new();
    let wait = async {
        while let Some((id, status)) = executor.report().await {
            if id != task_id {
                continue;
            }
            seen.push(status.state());
            assert!(
                !status.state().is_terminal() || status.state() == state,
                "{task_id} ended {} ({}: {}) while waiting for {}",
                status.state().label(),
                status.err,
                status.message,
                state.label()
            );
            if status.state() == state {
                return status;
            }
        }
        panic!("reports ended before {task_id} was {}", state.label());
    };
    match tokio::time::timeout(within, wait).await {
        Ok(status) => (status, seen),
        Err(_) => panic!("{task_id} not {} within {within:?}", state.label()),
    }
}

#[test]
fn an_unhealthy_task_is_stopped_and_failed() {
    let Some(logger) = prerequisites("an_unhealthy_task_is_stopped_and_failed", &[]) else { return };
    let node = OneNode::start(&logger, "shoal-test/health");
    let (image, config, netns) = (node.image.clone(), node.config.clone(), node.netns());
    let volumes = node.cluster.dir().join("volumes");

    // In node1's namespace, so that the pull (done by this client) reaches 192.0.2.1:5000.
    shoal_testkit::in_netns(&netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        runtime.block_on(async move {
            let containerd_rt = Arc::new(Containerd::connect(config).await.expect("connect"));
            let dirs = shoal_agent::NodeDirs { volumes, task_files: None };
            let mut executor = Standalone::new(containerd_rt.clone(), "n1", &dirs);
            let task = v1::Task {
                id: "health1".into(),
                node_id: "n1".into(),
                desired_state: TaskState::Running as i32,
                spec: Some(v1::TaskSpec {
                    container: Some(v1::ContainerSpec {
                        image,
                        stop_grace_period: Some(shoal_api::to_duration(Duration::from_secs(2))),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };

            narrate("the task is STARTING until the image's health check passes, then RUNNING");
            executor.set_complete(vec![task]);
            let (status, _) = until(&mut executor, "health1", TaskState::Starting, Duration::from_secs(60)).await;
            assert_eq!(status.message, "starting");
            let (status, _) = until(&mut executor, "health1", TaskState::Starting, Duration::from_secs(30)).await;
            assert_eq!(status.message, "started; waiting for its health check");
            let started = Instant::now();
            let (status, seen) = until(&mut executor, "health1", TaskState::Running, Duration::from_secs(10)).await;
            let healthy_after = started.elapsed();
            assert_eq!(status.message, "started; healthy");
            assert_eq!(seen, [TaskState::Running]);
            assert!(
                healthy_after >= Duration::from_millis(900),
                "the first probe waits one interval (1 s): {healthy_after:?}"
            );

            narrate("GET /cgi-bin/sicken inside the container: two failed probes and it is stopped, FAILED");
            let sicken = ExecSpec {
                cmd: ["/bin/sh", "-c", "wget -qO- http://127.0.0.1:80/cgi-bin/sicken"].map(str::to_owned).to_vec(),
                timeout: Duration::from_secs(5),
            };
            let out = containerd_rt.exec("health1", &sicken).await.expect("sicken");
            assert_eq!((out.code, out.stdout.as_str()), (0, "sick health1\n"), "{out:?}");
            let sickened = Instant::now();
            let (status, seen) = until(&mut executor, "health1", TaskState::Failed, Duration::from_secs(15)).await;
            let failed_after = sickened.elapsed();
            assert_eq!(seen, [TaskState::Failed], "nothing between RUNNING and FAILED");
            assert_eq!(status.err, "task: unhealthy container");
            assert_eq!(status.message, "unhealthy: health check exited 1 with no output");
            assert!(failed_after >= Duration::from_secs(1), "two probes, one interval apart: {failed_after:?}");
            let found = containerd_rt.list(&[]).await.expect("list");
            let state = found.iter().find(|c| c.id == "health1").map(|c| c.state);
            assert_eq!(state, Some(ContainerState::Stopped), "the container was stopped and kept for its logs");
            eprintln!("RUNNING {healthy_after:?} after start; FAILED {failed_after:?} after sicken");
        });
    })
    .expect("enter node1");
    drop(node);
}
