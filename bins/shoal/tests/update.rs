//! `shoal service update` and `rollback` followed to their end, the binary against an in-process
//! cluster (one manager, one worker on the simulated runtime): progress as docker prints it, an
//! update that fails rolled back by itself (the command fails with docker's words), a paused
//! update that fails the command and goes on with the next update.

use std::time::Duration;

use shoal_local_cluster::{LocalCluster, LocalOptions, SimBehavior};
use tokio::process::Command;

struct Cli {
    host: String,
    bundle: std::path::PathBuf,
}

impl Cli {
    /// Runs `shoal ARGS…` to its end: (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let run = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("SHOAL_HOST", &self.host)
            .env("SHOAL_CERT_PATH", &self.bundle)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("ends in time").expect("run shoal");
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
        (out.status.success(), text(out.stdout), text(out.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_followed_as_docker_prints_them() {
    let crash = SimBehavior::ExitAfter { code: 1, after: Duration::from_millis(100) };
    let images = vec![
        ("shoal-test/v1".to_owned(), SimBehavior::RunUntilStopped),
        ("shoal-test/v2".to_owned(), SimBehavior::RunUntilStopped),
        ("shoal-test/crasher".to_owned(), crash),
    ];
    let cluster =
        LocalCluster::start(LocalOptions { workers: 1, images, ..Default::default() }).await.expect("cluster");
    let cli = Cli { host: cluster.manager_addrs()[0].to_string(), bundle: cluster.admin_bundle().to_owned() };

    // --- create, waiting for it
    let create = ["service", "create", "--name", "web", "--replicas", "2", "--update-monitor", "1s"];
    let (ok, out, err) = cli.run(&[&create[..], &["shoal-test/v1"]].concat()).await;
    assert!(ok && out.ends_with("verify: Service converged\n"), "{out}{err}");

    // --- an update to v2, followed to its end
    let (ok, out, err) = cli.run(&["service", "update", "--image", "shoal-test/v2", "web"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("web\noverall progress: 0 out of 2 tasks\n"), "{out}");
    assert!(out.contains("overall progress: 2 out of 2 tasks\n1/2: running"), "{out}");
    assert!(out.ends_with("verify: Service converged\n"), "{out}");

    // --- an update to a crashing image rolls back by itself and fails the command
    let update = ["service", "update", "--image", "shoal-test/crasher", "--update-failure-action", "rollback", "web"];
    let (ok, out, err) = cli.run(&update).await;
    assert!(!ok, "{out}");
    // Announced when a look at the cluster falls between the start and the end of the rollback.
    let announced = "rollback: update rolled back due to failure or early termination of task ";
    assert!(out.contains(announced) || !out.contains("rollback: "), "{out}");
    assert!(out.contains("overall progress: rolling back update: "), "{out}");
    assert_eq!(err, "Error: service rolled back: rollback completed\n");

    // --- an update that changes nothing waits for the rolled-back tasks to run
    let (ok, out, err) = cli.run(&["service", "update", "web"]).await;
    assert!(ok && out.ends_with("verify: Service converged\n"), "{out}{err}");

    // --- with the default failure action the update pauses, and the next update goes on
    let (ok, out, err) = cli.run(&["service", "update", "--image", "shoal-test/crasher", "web"]).await;
    assert!(!ok, "{out}");
    assert!(
        err.starts_with("Error: service update paused: update paused due to failure or early termination of task "),
        "{err}"
    );
    let (ok, out, err) = cli.run(&["service", "update", "--image", "shoal-test/v2", "web"]).await;
    assert!(ok && out.ends_with("verify: Service converged\n"), "{out}{err}");

    // --- a scale replaces no task: converge's progress
    let (ok, out, err) = cli.run(&["service", "update", "--replicas", "3", "web"]).await;
    assert!(
        ok && out.contains("overall progress: 3 out of 3 tasks") && out.ends_with("verify: Service converged\n"),
        "{out}{err}"
    );
    cluster.shutdown().await;
}
