//! The simulated runtime passes the conformance suite, and its scale-test knobs work.

mod conformance;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::{Fixture, Program};
use futures::StreamExt as _;
use shoal_runtime::{
    ContainerRuntime, ContainerSpec, Healthcheck, ImageError, ImageSource, LogOptions, SimBehavior, Simulated,
};

struct SimFixture {
    sim: Simulated,
}

impl Fixture for SimFixture {
    fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        Arc::new(self.sim.clone())
    }

    async fn reconnect(&self) -> Arc<dyn ContainerRuntime> {
        Arc::new(self.sim.clone())
    }

    fn program(&self, program: &Program) -> (ImageSource, ContainerSpec) {
        let (name, behavior) = match program {
            Program::Sleeper => ("sim/sleeper".to_owned(), SimBehavior::RunUntilStopped),
            Program::Exit { code, after_ms } => (
                format!("sim/exit:{code}-{after_ms}"),
                SimBehavior::ExitAfter { code: *code, after: Duration::from_millis(*after_ms) },
            ),
            Program::IgnoresTerm => ("sim/stubborn".to_owned(), SimBehavior::IgnoreStopSignal),
            Program::Print { stdout, stderr } => (
                "sim/print".to_owned(),
                SimBehavior::Print {
                    stdout: stdout.iter().map(|s| (*s).to_owned()).collect(),
                    stderr: stderr.iter().map(|s| (*s).to_owned()).collect(),
                },
            ),
        };
        self.sim.add_image(&name, behavior);
        (ImageSource::registry(name), ContainerSpec::default())
    }

    async fn until_ignoring_term(&self, _id: &str) {
        // A simulated container ignores its stop signal from the start.
    }

    async fn until_handling_term(&self, _id: &str) {
        // A simulated sleeper handles its stop signal from the start.
    }

    fn missing_image(&self) -> ImageSource {
        ImageSource::registry("sim/not-there:1")
    }

    fn exec_prints_hello_exits_3(&self) -> Vec<String> {
        let cmd = ["sh", "-c", "echo hello; exit 3"];
        self.sim.set_exec_result(&cmd, 3, "hello\n");
        cmd.iter().map(|s| (*s).to_owned()).collect()
    }

    fn exec_hangs(&self) -> Vec<String> {
        self.sim.set_exec_hangs(&["sleep", "3600"]);
        vec!["sleep".to_owned(), "3600".to_owned()]
    }

    fn health_image(&self) -> (ImageSource, Healthcheck) {
        let check = Healthcheck {
            test: vec!["CMD-SHELL".into(), "test ! -e /tmp/unhealthy".into()],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            start_period: Duration::ZERO,
            retries: 2,
        };
        self.sim.add_image("sim/health", SimBehavior::RunUntilStopped);
        self.sim.set_image_healthcheck("sim/health", Some(check.clone()));
        (ImageSource::registry("sim/health"), check)
    }
}

#[tokio::test]
async fn conformance() {
    conformance::run_all(&SimFixture { sim: Simulated::new() }).await;
}

#[tokio::test]
async fn injected_failures_and_latency() {
    let sim = Simulated::new();
    sim.add_image("sim/app:1", SimBehavior::RunUntilStopped);
    sim.fail_pull("sim/app:1", "registry on fire");
    let err = sim.ensure_image(&ImageSource::registry("sim/app:1")).await.expect_err("injected pull failure");
    assert!(matches!(err, ImageError::Registry { .. }));
    assert_eq!(err.to_string(), "pull docker.io/sim/app:1 from simulated: registry on fire");
    sim.clear_failures();
    let image = sim.ensure_image(&ImageSource::registry("sim/app:1")).await.expect("pull");

    sim.set_start_latency(Duration::from_millis(200));
    let spec = ContainerSpec { id: "slow".into(), image: image.clone(), ..Default::default() };
    sim.create(&spec).await.expect("create");
    let started = Instant::now();
    sim.start("slow").await.expect("start");
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Two starts racing through the latency: one runs the container, the other is refused.
    let spec = ContainerSpec { id: "raced".into(), image: image.clone(), ..Default::default() };
    sim.create(&spec).await.expect("create");
    let (a, b) = tokio::join!(sim.start("raced"), sim.start("raced"));
    assert!(a.is_ok() != b.is_ok(), "exactly one start succeeds: {a:?} {b:?}");
    sim.stop("raced", Duration::from_secs(1)).await.expect("stop");

    sim.fail_start("doomed", "no space left on device");
    sim.create(&ContainerSpec { id: "doomed".into(), image, ..Default::default() }).await.expect("create");
    let err = sim.start("doomed").await.expect_err("injected start failure");
    assert_eq!(err.to_string(), "container doomed: injected failure: no space left on device");

    sim.kill_externally("slow", 137, true).expect("kill");
    let status = sim.wait("slow").await.expect("wait");
    assert_eq!((status.code, status.oom_killed), (137, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_thousands_of_containers() {
    let sim = Simulated::new();
    sim.add_image("sim/sleeper", SimBehavior::RunUntilStopped);
    let image = sim.ensure_image(&ImageSource::registry("sim/sleeper")).await.expect("pull");
    for i in 0..5_000 {
        let spec = ContainerSpec { id: format!("c{i}"), image: image.clone(), ..Default::default() };
        sim.create(&spec).await.expect("create");
        sim.start(&spec.id).await.expect("start");
    }
    assert_eq!(sim.container_count(), 5_000);
    assert_eq!(sim.list(&[]).await.expect("list").len(), 5_000);
}

#[tokio::test]
async fn a_server_prints_then_runs_until_stopped() {
    let sim = Simulated::new();
    let behavior = SimBehavior::PrintAndRun { stdout: vec!["listening".into()], stderr: vec!["warming up".into()] };
    sim.add_image("sim/server", behavior);
    let image = sim.ensure_image(&ImageSource::registry("sim/server")).await.expect("pull");
    sim.create(&ContainerSpec { id: "srv".into(), image, ..Default::default() }).await.expect("create");
    sim.start("srv").await.expect("start");
    let options = LogOptions { follow: true, ..Default::default() };
    let mut follow = sim.logs("srv", &options).await.expect("logs");
    let first: Vec<String> =
        vec![follow.next().await, follow.next().await].into_iter().flatten().map(|l| l.line).collect();
    assert_eq!(first, ["listening", "warming up"]);
    // Still running: following waits for its exit, which the stop brings.
    let pending = tokio::time::timeout(Duration::from_millis(100), follow.next()).await;
    assert!(pending.is_err(), "the log is followed while the server runs");
    sim.stop("srv", Duration::from_secs(1)).await.expect("stop");
    assert!(follow.next().await.is_none(), "following ends with the container");
}
