//! The conformance suite every [`ContainerRuntime`] passes: the containerd runtime against a
//! private containerd and the test registry, the simulated runtime in memory. A fixture maps the
//! suite's abstract programs onto images its runtime can run.

// The suite narrates its steps on stderr, which nextest shows when a test fails.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use shoal_runtime::logs::Stream;
use shoal_runtime::{
    ContainerError, ContainerRuntime, ContainerSpec, ContainerState, ExecSpec, Healthcheck, ImageError, ImageSource,
    LogOptions, RuntimeEvent,
};

/// What a container of the suite does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Program {
    /// Runs until its stop signal, then exits 0.
    Sleeper,
    /// Exits with `code` after `after_ms`.
    Exit { code: i32, after_ms: u64 },
    /// Ignores SIGTERM; only SIGKILL ends it.
    IgnoresTerm,
    /// Prints these lines on stdout and stderr, then exits 0.
    Print { stdout: Vec<&'static str>, stderr: Vec<&'static str> },
}

/// How a runtime under test runs the suite's programs.
pub(crate) trait Fixture {
    /// The runtime under test.
    fn runtime(&self) -> Arc<dyn ContainerRuntime>;
    /// A fresh handle on the same daemon, as after an agent restart.
    async fn reconnect(&self) -> Arc<dyn ContainerRuntime>;
    /// Where the image of `program` comes from, and a spec (id and image unset) that runs it.
    fn program(&self, program: &Program) -> (ImageSource, ContainerSpec);
    /// Waits until container `id`, running [`Program::IgnoresTerm`], ignores SIGTERM.
    async fn until_ignoring_term(&self, id: &str);
    /// Waits until container `id`, running [`Program::Sleeper`], handles SIGTERM (the kernel
    /// drops a SIGTERM that a namespace's init does not handle yet).
    async fn until_handling_term(&self, id: &str);
    /// A reference no registry has.
    fn missing_image(&self) -> ImageSource;
    /// A command that prints `hello` and exits 3 inside a sleeper.
    fn exec_prints_hello_exits_3(&self) -> Vec<String>;
    /// A command that never ends inside a sleeper.
    fn exec_hangs(&self) -> Vec<String>;
    /// An image whose config has a health check, and that check.
    fn health_image(&self) -> (ImageSource, Healthcheck);
}

/// Makes the image present and builds the spec of a container running `program`.
async fn spec_for(f: &impl Fixture, id: &str, program: &Program) -> ContainerSpec {
    let (source, mut spec) = f.program(program);
    let image = f.runtime().ensure_image(&source).await.expect("ensure image");
    spec.id = id.to_owned();
    spec.image = image;
    spec
}

async fn run(f: &impl Fixture, id: &str, program: &Program) -> ContainerSpec {
    let spec = spec_for(f, id, program).await;
    f.runtime().create(&spec).await.expect("create");
    f.runtime().start(id).await.expect("start");
    spec
}

async fn state_of(rt: &dyn ContainerRuntime, id: &str) -> Option<ContainerState> {
    rt.list(&[]).await.expect("list").into_iter().find(|c| c.id == id).map(|c| c.state)
}

/// Runs every case in order, narrating.
pub(crate) async fn run_all(f: &impl Fixture) {
    eprintln!("--- conformance: missing image");
    missing_image(f).await;
    eprintln!("--- conformance: an image's health check");
    image_healthcheck(f).await;
    eprintln!("--- conformance: life cycle");
    life_cycle(f).await;
    eprintln!("--- conformance: exit code and events");
    exit_code_and_events(f).await;
    eprintln!("--- conformance: grace then SIGKILL");
    grace_then_kill(f).await;
    eprintln!("--- conformance: logs");
    logs(f).await;
    eprintln!("--- conformance: exec");
    exec(f).await;
    eprintln!("--- conformance: labels and adoption");
    labels_and_adoption(f).await;
}

async fn missing_image(f: &impl Fixture) {
    let rt = f.runtime();
    let source = f.missing_image();
    let err = rt.ensure_image(&source).await.expect_err("a missing image is an error");
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with("image not found: "), "{err}");
    // A spec naming an image that was never made present is refused at create.
    let spec = ContainerSpec {
        id: "never-pulled".into(),
        image: "example.invalid/never/pulled:1".into(),
        ..Default::default()
    };
    let err = rt.create(&spec).await.expect_err("create without the image");
    assert!(matches!(err, ContainerError::ImageNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "image not found: example.invalid/never/pulled:1 (for container never-pulled)");
}

async fn image_healthcheck(f: &impl Fixture) {
    let rt = f.runtime();
    let (source, expected) = f.health_image();
    let image = rt.ensure_image(&source).await.expect("ensure the health image");
    assert_eq!(rt.image_healthcheck(&image).await.expect("read its health check"), Some(expected));
    let (source, _) = f.program(&Program::Sleeper);
    let sleeper = rt.ensure_image(&source).await.expect("ensure the sleeper");
    assert_eq!(rt.image_healthcheck(&sleeper).await.expect("read the sleeper's"), None, "an image without one");
    let err = rt.image_healthcheck("example.invalid/never/pulled:1").await.expect_err("an image never made present");
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "image not found: example.invalid/never/pulled:1");
}

async fn life_cycle(f: &impl Fixture) {
    let rt = f.runtime();
    let spec = spec_for(f, "conf-life", &Program::Sleeper).await;
    // An ID that containerd would refuse, or that names a path outside the state directory.
    for bad in ["", "../conf-escape", "-conf", "conf life"] {
        let err = rt.create(&ContainerSpec { id: bad.into(), ..spec.clone() }).await.expect_err("invalid id");
        assert!(matches!(err, ContainerError::InvalidSpec { .. }), "{bad:?}: {err:?}");
    }
    rt.create(&spec).await.expect("create");
    assert_eq!(state_of(&*rt, "conf-life").await, Some(ContainerState::Created));
    let again = rt.create(&spec).await.expect_err("duplicate create");
    assert!(matches!(again, ContainerError::AlreadyExists { .. }), "{again:?}");
    let before = std::time::SystemTime::now();
    rt.start("conf-life").await.expect("start");
    assert_eq!(state_of(&*rt, "conf-life").await, Some(ContainerState::Running));
    f.until_handling_term("conf-life").await;
    let twice = rt.start("conf-life").await.expect_err("start twice");
    assert_eq!(twice.to_string(), "container conf-life: cannot start while running");
    let removing = rt.remove("conf-life").await.expect_err("remove while running");
    assert!(matches!(removing, ContainerError::WrongState { .. }), "{removing:?}");

    let status = rt.stop("conf-life", Duration::from_secs(10)).await.expect("stop");
    assert_eq!(status.code, 0, "the sleeper exits 0 on its stop signal");
    assert!(!status.oom_killed);
    assert!(status.started_at >= before - Duration::from_secs(1), "start time recorded");
    assert!(status.finished_at >= status.started_at);
    assert_eq!(rt.wait("conf-life").await.expect("wait after stop"), status, "wait reports the same exit");
    assert_eq!(rt.stop("conf-life", Duration::from_secs(1)).await.expect("stop again"), status, "stop is idempotent");
    let restart = rt.start("conf-life").await.expect_err("a container runs once");
    assert_eq!(restart.to_string(), "container conf-life: cannot start while exited (remove it and create it again)");
    assert_eq!(state_of(&*rt, "conf-life").await, Some(ContainerState::Stopped));

    rt.remove("conf-life").await.expect("remove");
    assert_eq!(state_of(&*rt, "conf-life").await, None);
    let gone = rt.start("conf-life").await.expect_err("start a removed container");
    assert!(matches!(gone, ContainerError::NotFound { .. }), "{gone:?}");
    assert_eq!(gone.to_string(), "no such container: conf-life");
}

async fn exit_code_and_events(f: &impl Fixture) {
    let rt = f.runtime();
    let mut events = rt.events().await.expect("subscribe");
    run(f, "conf-exit", &Program::Exit { code: 3, after_ms: 300 }).await;
    let status = rt.wait("conf-exit").await.expect("wait");
    assert_eq!(status.code, 3);
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(RuntimeEvent::Exited { id, status }) if id == "conf-exit" => return status,
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("exit event within 10 s");
    assert_eq!(event.code, 3);
    rt.stop("conf-exit", Duration::from_secs(1)).await.expect("stop an exited container");
    rt.remove("conf-exit").await.expect("remove");
}

async fn grace_then_kill(f: &impl Fixture) {
    let rt = f.runtime();
    run(f, "conf-stubborn", &Program::IgnoresTerm).await;
    f.until_ignoring_term("conf-stubborn").await;
    let started = Instant::now();
    let status = rt.stop("conf-stubborn", Duration::from_millis(500)).await.expect("stop");
    let took = started.elapsed();
    assert_eq!(status.code, 137, "SIGKILL after the grace period");
    assert!(took >= Duration::from_millis(500), "waited the grace period first ({took:?})");
    rt.remove("conf-stubborn").await.expect("remove");
}

async fn logs(f: &impl Fixture) {
    let rt = f.runtime();
    let program = Program::Print { stdout: vec!["one", "two", "three"], stderr: vec!["oops"] };
    run(f, "conf-logs", &program).await;
    assert_eq!(rt.wait("conf-logs").await.expect("wait").code, 0);
    // The logging process may flush just after the exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines = rt.logs("conf-logs", &LogOptions::default()).await.expect("logs").collect::<Vec<_>>().await;
        if lines.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out: Vec<&str> = lines.iter().filter(|l| l.stream == Stream::Stdout).map(|l| l.line.as_str()).collect();
    let err: Vec<&str> = lines.iter().filter(|l| l.stream == Stream::Stderr).map(|l| l.line.as_str()).collect();
    assert_eq!(out, ["one", "two", "three"]);
    assert_eq!(err, ["oops"]);
    let tail = rt.logs("conf-logs", &LogOptions { tail: Some(1), ..Default::default() }).await.expect("tail");
    assert_eq!(tail.collect::<Vec<_>>().await.len(), 1);
    let future = std::time::SystemTime::now() + Duration::from_secs(3600);
    let since = rt.logs("conf-logs", &LogOptions { since: Some(future), ..Default::default() }).await.expect("since");
    assert!(since.collect::<Vec<_>>().await.is_empty());
    // Following an exited container ends.
    let follow = rt.logs("conf-logs", &LogOptions { follow: true, ..Default::default() }).await.expect("follow");
    let followed =
        tokio::time::timeout(Duration::from_secs(10), follow.collect::<Vec<_>>()).await.expect("follow ends");
    assert_eq!(followed.len(), 4);
    rt.remove("conf-logs").await.expect("remove");
}

async fn exec(f: &impl Fixture) {
    let rt = f.runtime();
    run(f, "conf-exec", &Program::Sleeper).await;
    let out = rt
        .exec("conf-exec", &ExecSpec { cmd: f.exec_prints_hello_exits_3(), timeout: Duration::from_secs(10) })
        .await
        .expect("exec");
    assert_eq!((out.code, out.timed_out, out.stdout.trim()), (3, false, "hello"));
    let hang = ExecSpec { cmd: f.exec_hangs(), timeout: Duration::from_millis(400) };
    // Its own timeout ends it, long before an hour; this one only keeps a broken one from hanging.
    let hung = tokio::time::timeout(Duration::from_secs(60), rt.exec("conf-exec", &hang))
        .await
        .expect("the exec's timeout ended it")
        .expect("exec with timeout");
    assert!(hung.timed_out && hung.code == 137, "{hung:?}");
    rt.stop("conf-exec", Duration::from_secs(10)).await.expect("stop");
    let stopped = rt.exec("conf-exec", &ExecSpec { cmd: f.exec_hangs(), timeout: Duration::from_secs(1) }).await;
    assert!(matches!(stopped, Err(ContainerError::WrongState { .. })), "{stopped:?}");
    rt.remove("conf-exec").await.expect("remove");
}

async fn labels_and_adoption(f: &impl Fixture) {
    let rt = f.runtime();
    for (id, service) in [("conf-a1", "a"), ("conf-a2", "a"), ("conf-b1", "b")] {
        let mut spec = spec_for(f, id, &Program::Sleeper).await;
        spec.labels = BTreeMap::from([
            ("shoal.service".to_owned(), service.to_owned()),
            ("shoal.node".to_owned(), "n1".to_owned()),
        ]);
        rt.create(&spec).await.expect("create");
        rt.start(id).await.expect("start");
    }
    let by = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let a: Vec<String> = rt.list(&by("shoal.service", "a")).await.expect("list").into_iter().map(|c| c.id).collect();
    assert_eq!(a, ["conf-a1", "conf-a2"]);
    let both = [("shoal.service".to_owned(), "b".to_owned()), ("shoal.node".to_owned(), "n1".to_owned())];
    let b = rt.list(&both).await.expect("list");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].labels.get("shoal.service").map(String::as_str), Some("b"));

    tracing::info!("--- restart the agent: a new handle adopts running containers by label");
    let adopted = f.reconnect().await;
    let found = adopted.list(&by("shoal.node", "n1")).await.expect("list after reconnect");
    assert_eq!(found.len(), 3);
    assert!(found.iter().all(|c| c.state == ContainerState::Running), "{found:?}");
    for c in found {
        let status = adopted.stop(&c.id, Duration::from_secs(10)).await.expect("stop adopted");
        assert_eq!(status.code, 0);
        adopted.remove(&c.id).await.expect("remove adopted");
    }
    assert!(adopted.list(&by("shoal.node", "n1")).await.expect("list").is_empty());
}
