//! `shoal service logs` end to end: the binary against an in-process cluster (one manager, one
//! worker on the simulated runtime whose containers print a line on each stream and keep
//! running). Lines are prefixed as docker prints them, each on the stream it was written to; the
//! read ends; `--raw`, `--no-task-ids`, `--tail 0`; a task's logs by its ID; `--follow` keeps
//! the command running; an unknown name is one error line.

use std::process::Stdio;
use std::time::Duration;

use shoal_api::v1::{self, TaskState};
use shoal_local_cluster::{LocalCluster, LocalOptions, SimBehavior, eventually};
use tokio::process::Command;

struct Cli {
    host: String,
    bundle: std::path::PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
        command.args(args).env("SHOAL_HOST", &self.host).env("SHOAL_CERT_PATH", &self.bundle);
        command
    }

    /// Runs `shoal ARGS…` to its end: (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().await.expect("run shoal");
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
        (out.status.success(), text(out.stdout), text(out.stderr))
    }
}

/// The lines of `text`, sorted (tasks are read side by side: their lines interleave).
fn sorted(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_logs_as_docker_prints_them() {
    let mut images = LocalOptions::default().images;
    let server = SimBehavior::PrintAndRun { stdout: vec!["ready".into()], stderr: vec!["warming up".into()] };
    images.push(("shoal-test/server".to_owned(), server));
    let cluster =
        LocalCluster::start(LocalOptions { workers: 1, images, ..Default::default() }).await.expect("cluster");
    let mut control = cluster.control().await.expect("admin client");
    let spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 2 })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "shoal-test/server".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    control.create_service(v1::CreateServiceRequest { spec: Some(spec) }).await.expect("create");
    let tasks = eventually("2 running tasks", 15, async || {
        let request = v1::ListTasksRequest::default();
        let tasks = control.list_tasks(request).await.ok()?.into_inner().tasks;
        let running = |t: &v1::Task| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running as i32);
        (tasks.iter().filter(|t| running(t)).count() == 2).then_some(tasks)
    })
    .await
    .expect("converged");
    let cli = Cli { host: cluster.manager_addrs()[0].to_string(), bundle: cluster.admin_bundle().to_owned() };
    let prefix = |t: &v1::Task| format!("web.{}.{}@w1", t.slot, &t.id[..12]);

    let lines =
        |text: &str| sorted(&tasks.iter().map(|t| format!("{}    | {text}", prefix(t))).collect::<Vec<_>>().join("\n"));

    let (ok, out, err) = cli.run(&["service", "logs", "web"]).await;
    assert!(ok, "{err}");
    assert_eq!((sorted(&out), sorted(&err)), (lines("ready"), lines("warming up")), "each line on its own stream");

    let (ok, out, err) = cli.run(&["service", "logs", "--raw", "web"]).await;
    assert!(ok);
    assert_eq!((out.as_str(), err.as_str()), ("ready\nready\n", "warming up\nwarming up\n"));
    let (ok, out, _) = cli.run(&["service", "logs", "--no-task-ids", "--tail", "0", "web"]).await;
    assert!(ok);
    assert_eq!(out, "", "--tail 0: no lines");
    let (ok, out, _) = cli.run(&["service", "logs", "--no-task-ids", "web"]).await;
    assert!(ok);
    assert_eq!(sorted(&out), ["web.1@w1    | ready", "web.2@w1    | ready"]);

    // A task by its ID (a unique prefix will do).
    let task = &tasks[0];
    let (ok, out, _) = cli.run(&["service", "logs", &task.id[..10]]).await;
    assert!(ok);
    assert_eq!(out, format!("{}    | ready\n", prefix(task)));

    // Following does not end by itself: the command is still running after its lines came.
    let mut follow = cli.command(&["service", "logs", "-f", "--raw", "web"]);
    let mut follow = follow.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(follow.try_wait().expect("status").is_none(), "following keeps running");
    follow.start_kill().expect("kill");
    let out = follow.wait_with_output().await.expect("output");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\nready\n");

    let (ok, _, err) = cli.run(&["service", "logs", "nope"]).await;
    assert!(!ok);
    assert_eq!(err, "Error: no such task or service: nope\n");
    let (ok, _, err) = cli.run(&["service", "logs", "--tail", "-3", "web"]).await;
    assert!(!ok);
    assert!(err.contains("invalid --tail \"-3\""), "{err}");
    cluster.shutdown().await;
}
