//! The containerd runtime against a private containerd: the conformance suite, then what only a
//! real runtime can show (env, args, user, mounts, read-only root, memory limit and OOM kill,
//! network namespace, seccomp, archive loading, pulls from the test registry, crafted images
//! whose `/etc/passwd` attacks the host that reads it, the health image's check), and what
//! `docker service create` adds (capabilities, sysctls, ulimits, init, groups, bind propagation,
//! volumes filled from the image).
//!
//! Each test builds a one-node harness cluster with the test registry on its underlay and runs
//! its async body on a thread inside node1's network namespace, so registry pulls (done by this
//! client, as containerd 1.6 has no Transfer service) reach 192.0.2.1:5000.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

mod conformance;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conformance::{Fixture, Program};
use futures::StreamExt as _;
use nix::mount::{MntFlags, MsFlags};
use shoal_runtime::{
    ContainerRuntime, ContainerSpec, Containerd, ContainerdConfig, ExecSpec, Healthcheck, ImageSource, LocalVolumes,
    LogOptions, Mount, Propagation, Resources, Seccomp, Ulimit,
};
use shoal_testkit::images::{self, BuiltImage};
use shoal_testkit::{Cluster, Registry, privileged};

struct Env {
    cluster: Cluster,
    containerd: shoal_testkit::Containerd,
    registry: Registry,
    built: Vec<BuiltImage>,
    config: ContainerdConfig,
}

fn env(test: &str) -> Option<Env> {
    let mut needs = privileged::CONTAINERD.to_vec();
    needs.extend_from_slice(privileged::REGISTRY);
    if !privileged::require(test, &needs) {
        return None;
    }
    let cluster = Cluster::new(1).expect("cluster");
    let built = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("images");
    let containerd =
        shoal_testkit::Containerd::start(&cluster.dir().join("containerd"), "shoaltest-push").expect("containerd");
    let registry = Registry::start(&cluster).expect("registry");
    registry.push_all(&containerd, &built).expect("push");
    let mut config = ContainerdConfig::new(
        containerd.socket(),
        cluster.prefix(),
        cluster.dir().join("runtime"),
        env!("CARGO_BIN_EXE_shoal-runtime-logger"),
    );
    config.insecure_registries = vec![registry.addr().to_string()];
    Some(Env { cluster, containerd, registry, built, config })
}

impl Env {
    fn remote(&self, repository: &str) -> String {
        let image = self.built.iter().find(|i| i.def.repository == repository).expect("image");
        self.registry.reference(image)
    }

    fn built(&self, repository: &str) -> BuiltImage {
        self.built.iter().find(|i| i.def.repository == repository).expect("image").clone()
    }

    /// Runs `body` on a current-thread runtime inside node1's network namespace.
    fn block_on<F: std::future::Future<Output = ()> + 'static>(&self, body: impl FnOnce() -> F + Send + 'static) {
        let netns = self.cluster.node(1).expect("node1").netns.clone();
        shoal_testkit::in_netns(&netns, move || {
            let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio").block_on(body());
        })
        .expect("enter node1");
    }
}

struct CtrFixture {
    config: ContainerdConfig,
    runtime: Arc<Containerd>,
    sleeper: String,
    tools: String,
    crasher: String,
    health: String,
}

/// The health check the test image `def` has in its config, as the runtime reads it.
fn healthcheck_of(def: &images::ImageDef) -> Healthcheck {
    let check = def.healthcheck.expect("the image has a health check");
    Healthcheck {
        test: check.test.iter().map(|s| (*s).to_owned()).collect(),
        interval: check.interval,
        timeout: check.timeout,
        start_period: check.start_period,
        retries: check.retries,
    }
}

impl Fixture for CtrFixture {
    fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        self.runtime.clone()
    }

    async fn reconnect(&self) -> Arc<dyn ContainerRuntime> {
        Arc::new(Containerd::connect(self.config.clone()).await.expect("reconnect"))
    }

    fn program(&self, program: &Program) -> (ImageSource, ContainerSpec) {
        let shell = |script: String| ContainerSpec {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), script]),
            args: Some(vec![]),
            ..Default::default()
        };
        match program {
            Program::Sleeper => (ImageSource::registry(&self.sleeper), ContainerSpec::default()),
            Program::Exit { code, after_ms } => (
                ImageSource::registry(&self.crasher),
                ContainerSpec {
                    env: vec![format!("CRASH_CODE={code}"), format!("CRASH_AFTER={}", *after_ms as f64 / 1000.0)],
                    ..Default::default()
                },
            ),
            Program::IgnoresTerm => (
                ImageSource::registry(&self.tools),
                shell("trap '' TERM; echo ready; while :; do sleep 1; done".into()),
            ),
            Program::Print { stdout, stderr } => {
                let mut script: Vec<String> = stdout.iter().map(|l| format!("echo {l}")).collect();
                script.extend(stderr.iter().map(|l| format!("echo {l} >&2")));
                (ImageSource::registry(&self.tools), shell(script.join("; ")))
            }
        }
    }

    async fn until_ignoring_term(&self, id: &str) {
        wait_for_line(&self.runtime, id, "ready").await;
    }

    async fn until_handling_term(&self, id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let listed = std::process::Command::new("ctr")
                .arg("--address")
                .arg(&self.config.socket)
                .args(["--namespace", &self.config.namespace, "tasks", "list"])
                .output()
                .expect("ctr tasks list");
            let tasks = String::from_utf8_lossy(&listed.stdout).into_owned();
            if shoal_testkit::task_handles_sigterm(&tasks, id) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "container {id} has no SIGTERM handler after 20 s: {tasks}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn missing_image(&self) -> ImageSource {
        ImageSource::registry(self.sleeper.replace("shoal-test/sleeper", "shoal-test/nonexistent"))
    }

    fn exec_prints_hello_exits_3(&self) -> Vec<String> {
        ["/bin/sh", "-c", "echo hello; exit 3"].map(str::to_owned).to_vec()
    }

    fn exec_hangs(&self) -> Vec<String> {
        ["/bin/sleep", "3600"].map(str::to_owned).to_vec()
    }

    fn health_image(&self) -> (ImageSource, Healthcheck) {
        let def = images::ALL.iter().find(|d| d.repository == "shoal-test/health").expect("health image");
        (ImageSource::registry(&self.health), healthcheck_of(def))
    }
}

#[test]
fn conformance() {
    let Some(env) = env("containerd conformance") else { return };
    let (config, sleeper, tools, crasher, health) = (
        env.config.clone(),
        env.remote("shoal-test/sleeper"),
        env.remote("shoal-test/tools"),
        env.remote("shoal-test/crasher"),
        env.remote("shoal-test/health"),
    );
    env.block_on(move || async move {
        let runtime = Arc::new(Containerd::connect(config.clone()).await.expect("connect"));
        conformance::run_all(&CtrFixture { config, runtime, sleeper, tools, crasher, health }).await;
    });
    drop(env.containerd);
}

/// Runs a tools container with `spec` tweaks and the shell `script`; returns (exit code, stdout).
async fn run_script(
    rt: &Containerd,
    image: &str,
    id: &str,
    script: &str,
    tweak: impl FnOnce(&mut ContainerSpec),
) -> (i32, String) {
    let mut spec = ContainerSpec {
        id: id.to_owned(),
        image: image.to_owned(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), script.to_owned()]),
        args: Some(vec![]),
        ..Default::default()
    };
    tweak(&mut spec);
    rt.create(&spec).await.expect("create");
    rt.start(id).await.expect("start");
    let status = rt.wait(id).await.expect("wait");
    // Stopping deletes the task, which waits for the logging process to copy what is left in
    // its pipes and exit: only then is the log complete.
    rt.stop(id, Duration::from_secs(1)).await.expect("stop");
    let lines: Vec<String> = rt.logs(id, &LogOptions::default()).await.expect("logs").map(|l| l.line).collect().await;
    rt.remove(id).await.expect("remove");
    (status.code, lines.join("\n"))
}

#[test]
fn real_containers() {
    let Some(env) = env("containerd real_containers") else { return };
    let config = env.config.clone();
    let tools_remote = env.remote("shoal-test/tools");
    let web_v1_remote = env
        .built
        .iter()
        .find(|i| i.def.repository == "shoal-test/web" && i.def.tag == "v1")
        .map(|i| env.registry.reference(i))
        .expect("web v1");
    let web =
        env.built.iter().find(|i| i.def.repository == "shoal-test/web" && i.def.tag == "v2").expect("web").path.clone();
    let health_image = env.built("shoal-test/health");
    let data = env.cluster.dir().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("greeting"), "from the host\n").expect("write");
    let hostile = images::build(images::HOSTILE, Path::new(images::BUSYBOX), &env.cluster.dir().join("hostile"))
        .expect("crafted images");
    // What the escaping links point at: a host file that must never be read as the image's.
    let host_passwd = HostFile::new(images::HOST_PASSWD, "hostuser:x:4242:4242::/:/bin/sh\n");
    let task_netns = format!("{}-task", env.cluster.prefix());
    let netns_guard = NetnsGuard::new(&task_netns);
    let netns_path = PathBuf::from("/run/netns").join(&netns_guard.0);
    env.block_on(move || async move {
        let rt = Containerd::connect(config.clone()).await.expect("connect");

        eprintln!("--- four tasks pulling the same image at once all get it (blob writes race)");
        let rt = std::sync::Arc::new(rt);
        let pulls: Vec<_> = (0..4)
            .map(|_| {
                let (rt, reference) = (rt.clone(), web_v1_remote.clone());
                tokio::spawn(async move { rt.ensure_image(&ImageSource::registry(&reference)).await })
            })
            .collect();
        for pull in pulls {
            let name = pull.await.expect("join").expect("concurrent pull");
            assert_eq!(name, "192.0.2.1:5000/shoal-test/web:v1");
        }
        let rt = std::sync::Arc::try_unwrap(rt).expect("only handle");

        eprintln!("--- pull from the test registry, load from an archive");
        let tools = rt.ensure_image(&ImageSource::registry(&tools_remote)).await.expect("pull tools");
        assert_eq!(tools, "192.0.2.1:5000/shoal-test/tools:latest");
        let again = rt.ensure_image(&ImageSource::registry(&tools_remote)).await.expect("pull again (cached)");
        assert_eq!(again, tools);
        let web = rt.ensure_image(&ImageSource::Archive { path: web, reference: None }).await.expect("load archive");
        assert_eq!(web, "docker.io/shoal-test/web:v2");

        eprintln!("--- the health image: its HEALTHCHECK from the config; /cgi-bin/sicken makes the check fail");
        let source = ImageSource::Archive { path: health_image.path.clone(), reference: None };
        let health = rt.ensure_image(&source).await.expect("load the health image");
        assert_eq!(health, "docker.io/shoal-test/health:latest");
        let check = rt.image_healthcheck(&health).await.expect("read its health check");
        assert_eq!(check, Some(healthcheck_of(&health_image.def)));
        let spec = ContainerSpec { id: "health".into(), image: health.clone(), ..Default::default() };
        rt.create(&spec).await.expect("create");
        rt.start("health").await.expect("start");
        let sh = |script: &str| ExecSpec {
            cmd: vec!["/bin/sh".into(), "-c".into(), script.to_owned()],
            timeout: Duration::from_secs(5),
        };
        let probe = sh("test ! -e /tmp/unhealthy");
        assert_eq!(rt.exec("health", &probe).await.expect("probe").code, 0, "healthy at first");
        // The server may take a moment to listen.
        let fetch = |path: &str| sh(&format!("wget -qO- http://127.0.0.1:80{path}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let page = loop {
            let out = rt.exec("health", &fetch("/")).await.expect("fetch the page");
            if out.code == 0 {
                break out.stdout;
            }
            assert!(std::time::Instant::now() < deadline, "the page never answered: {out:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(page, "health health\n", "version and hostname (the ID's first 12 characters)");
        let sick = rt.exec("health", &fetch("/cgi-bin/sicken")).await.expect("sicken");
        assert_eq!((sick.code, sick.stdout.as_str()), (0, "sick health\n"), "{sick:?}");
        assert_eq!(rt.exec("health", &probe).await.expect("probe").code, 1, "unhealthy after sicken");
        rt.stop("health", Duration::from_secs(5)).await.expect("stop");
        rt.remove("health").await.expect("remove");

        eprintln!("--- args, env, workdir, user, hostname");
        let (code, out) =
            run_script(&rt, &tools, "env-args", "echo $GREETING $0 $(pwd) $(id -u):$(id -g) $(hostname)", |s| {
                s.env = vec!["GREETING=hi".into()];
                s.workdir = Some("/tmp".into());
                s.user = Some("nobody".into());
                s.hostname = Some("task-host".into());
            })
            .await;
        assert_eq!((code, out.as_str()), (0, "hi /bin/sh /tmp 65534:65534 task-host"));

        eprintln!("--- bind mount (read-only), tmpfs, read-only root, hosts and resolv.conf");
        let script = "cat /data/greeting; touch /data/x 2>/dev/null && echo data-writable; \
                      touch /scratch/y && echo scratch-ok; touch /z 2>/dev/null || echo root-ro; \
                      grep -c nameserver /etc/resolv.conf; grep -q db.internal /etc/hosts && echo hosts-ok";
        let (code, out) = run_script(&rt, &tools, "mounts", script, |s| {
            s.mounts = vec![
                Mount::Bind {
                    source: data.clone(),
                    target: "/data".into(),
                    read_only: true,
                    propagation: Propagation::Rprivate,
                },
                Mount::Tmpfs { target: "/scratch".into(), size_bytes: 1 << 20, mode: 0o1777 },
            ];
            s.read_only_rootfs = true;
            s.resolv_conf = Some("nameserver 198.51.100.53\n".into());
            s.hosts = Some("127.0.0.1 localhost\n198.18.0.9 db.internal\n".into());
        })
        .await;
        assert_eq!((code, out.as_str()), (0, "from the host\nscratch-ok\nroot-ro\n1\nhosts-ok"));

        eprintln!("--- the network namespace the caller gives");
        let (code, out) =
            run_script(&rt, &tools, "netns", "ip -o link show | wc -l; cat /sys/class/net/lo/operstate", |s| {
                s.netns = Some(netns_path.clone());
            })
            .await;
        assert_eq!(code, 0);
        assert!(out.starts_with("1\n"), "only lo in the task's netns: {out}");

        eprintln!("--- seccomp: Docker's default profile refuses a user namespace; unconfined has no filter");
        // `Seccomp:` in /proc/self/status is the process's seccomp mode: 2 under a filter, 0 without.
        let script = "sed -n 's/^Seccomp:[[:space:]]*//p' /proc/self/status; unshare -Ur true 2>&1; echo unshare=$?";
        let (code, out) = run_script(&rt, &tools, "seccomp-default", script, |_| {}).await;
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first().copied(), Some("2"), "a seccomp filter under the default profile: {out}");
        let unshare = lines.last().and_then(|l| l.strip_prefix("unshare=")).and_then(|c| c.parse::<i32>().ok());
        assert!(unshare.is_some_and(|c| c != 0), "unshare -Ur fails under the default profile: {out}");
        assert!(out.contains("Operation not permitted"), "refused with EPERM: {out}");
        // Unconfined, unshare -Ur may still fail for reasons of the host (user namespaces off, an
        // LSM); the seccomp mode shows that the filter is gone.
        let (code, out) =
            run_script(&rt, &tools, "seccomp-unconfined", script, |s| s.seccomp = Seccomp::Unconfined).await;
        assert_eq!(code, 0, "{out}");
        assert_eq!(out.lines().next(), Some("0"), "no seccomp filter when unconfined: {out}");

        eprintln!("--- memory limit: a process over it is OOM-killed and reported so");
        let mut spec = ContainerSpec {
            id: "oom".into(),
            image: tools.clone(),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), "dd if=/dev/zero of=/dev/null bs=64M count=1".into()]),
            args: Some(vec![]),
            resources: Resources { memory_bytes: Some(16 << 20), pids: Some(64), ..Default::default() },
            ..Default::default()
        };
        rt.create(&spec).await.expect("create");
        rt.start("oom").await.expect("start");
        let status = rt.wait("oom").await.expect("wait");
        assert!(status.oom_killed, "reported as OOM-killed: {status:?}");
        assert_eq!(status.code, 137);
        rt.remove("oom").await.expect("remove");

        eprintln!("--- follow logs while the container writes");
        spec = ContainerSpec {
            id: "follow".into(),
            image: tools.clone(),
            entrypoint: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "for i in 1 2 3; do echo line$i; sleep 0.2; done".into(),
            ]),
            args: Some(vec![]),
            ..Default::default()
        };
        rt.create(&spec).await.expect("create");
        rt.start("follow").await.expect("start");
        let followed: Vec<String> = tokio::time::timeout(
            Duration::from_secs(10),
            rt.logs("follow", &LogOptions { follow: true, ..Default::default() })
                .await
                .expect("logs")
                .map(|l| l.line)
                .collect::<Vec<_>>(),
        )
        .await
        .expect("follow ends when the container exits");
        assert_eq!(followed, ["line1", "line2", "line3"]);
        rt.remove("follow").await.expect("remove");

        eprintln!("--- a task created but never started (an agent that died between the two calls)");
        spec = ContainerSpec {
            id: "half".into(),
            image: tools.clone(),
            entrypoint: Some(vec!["/bin/sleep".into(), "600".into()]),
            args: Some(vec![]),
            ..Default::default()
        };
        rt.create(&spec).await.expect("create");
        create_task_only(&config, "half").await;
        let stopped = tokio::time::timeout(Duration::from_secs(10), rt.stop("half", Duration::from_secs(1)))
            .await
            .expect("stop does not wait for a process that never ran");
        let err = stopped.expect_err("never started");
        assert_eq!(err.to_string(), "container half: cannot stop while created (never started)");
        create_task_only(&config, "half").await;
        rt.start("half").await.expect("start clears the stale task and starts");
        rt.stop("half", Duration::from_secs(1)).await.expect("stop");
        rt.remove("half").await.expect("remove");

        eprintln!("--- crafted images: /etc/passwd a link to /dev/zero or to a host file, a FIFO, 2 MiB");
        for image in &hostile {
            let tag = image.def.tag;
            let name = rt
                .ensure_image(&ImageSource::Archive { path: image.path.clone(), reference: None })
                .await
                .expect("load crafted image");
            let expected = match tag {
                "passwd-fifo" => "the image's /etc/passwd is a FIFO, not a regular file",
                "passwd-huge" => "the image's /etc/passwd is larger than 1048576 bytes",
                "passwd-host-link" | "passwd-dotdot" => "user \"hostuser\" is not in the image's /etc/passwd",
                // The link resolves inside the image, to its own device node, which the peek mount
                // (nodev) will not open.
                "passwd-dev-zero" => "the image's /etc/passwd cannot be opened",
                other => panic!("no expectation for crafted image {other}"),
            };
            let spec = ContainerSpec {
                id: format!("hostile-{tag}"),
                image: name,
                user: Some("hostuser".into()),
                ..Default::default()
            };
            for attempt in ["first", "second (nothing left behind)"] {
                let created = tokio::time::timeout(Duration::from_secs(60), rt.create(&spec))
                    .await
                    .unwrap_or_else(|_| panic!("{tag}: create hangs on the crafted image"));
                let err = created.expect_err("a crafted /etc/passwd is refused");
                assert!(err.to_string().contains(expected), "{tag}, {attempt} attempt: {err}");
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains("rootfs-peek"), "the peek mount is gone after a refusal");
        drop(host_passwd);

        eprintln!("--- errors name the container and the image");
        let err = rt.start("nope").await.expect_err("unknown container");
        assert_eq!(err.to_string(), "no such container: nope");
        let bad = ContainerSpec { id: "bad id".into(), image: tools.clone(), ..Default::default() };
        let err = rt.create(&bad).await.expect_err("invalid id");
        assert!(err.to_string().starts_with("container bad id: invalid spec: id \"bad id\""), "{err}");
    });
    drop(env.containerd);
}

/// What `docker service create` adds to a container, as the container sees it: capabilities,
/// sysctls, ulimits, an init as PID 1, supplementary groups, bind propagation, and volumes filled
/// from the image.
#[test]
fn docker_options() {
    if !privileged::require("containerd docker_options", &[privileged::Need::File("/usr/bin/tini-static")]) {
        return;
    }
    let Some(env) = env("containerd docker_options") else { return };
    let config = env.config.clone();
    assert_eq!(config.init_binary.as_deref(), Some(Path::new("/usr/bin/tini-static")), "found by default");
    let tools_remote = env.remote("shoal-test/tools");
    let volumes = LocalVolumes::new(env.cluster.dir().join("volumes"));
    let shared = BindMountGuard::new(&env.cluster.dir().join("shared"), MsFlags::MS_SHARED);
    let private = BindMountGuard::new(&env.cluster.dir().join("private"), MsFlags::MS_PRIVATE);
    let (shared_dir, private_dir) = (shared.0.clone(), private.0.clone());
    env.block_on(move || async move {
        let rt = Containerd::connect(config.clone()).await.expect("connect");
        let tools = rt.ensure_image(&ImageSource::registry(&tools_remote)).await.expect("pull tools");
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cap_eff = "sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status";

        eprintln!("--- capabilities: NET_ADMIN added, CHOWN dropped, only NET_BIND_SERVICE");
        let (code, out) = run_script(&rt, &tools, "cap-add", cap_eff, |s| {
            s.capability_add = strings(&["net_admin"]);
        })
        .await;
        // Docker's default set (0xa80425fb) and bit 12, CAP_NET_ADMIN.
        assert_eq!((code, out.as_str()), (0, "00000000a80435fb"));
        let script = "touch /tmp/f; chown 65534 /tmp/f 2>&1; echo chown=$?";
        let (code, out) = run_script(&rt, &tools, "cap-drop", script, |s| {
            s.capability_drop = strings(&["CAP_CHOWN"]);
        })
        .await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Operation not permitted") && out.ends_with("chown=1"), "chown fails without CAP_CHOWN: {out}");
        let (code, out) = run_script(&rt, &tools, "cap-only", cap_eff, |s| {
            s.capability_drop = strings(&["ALL"]);
            s.capability_add = strings(&["NET_BIND_SERVICE"]);
        })
        .await;
        assert_eq!((code, out.as_str()), (0, "0000000000000400"));
        let bad = ContainerSpec {
            id: "cap-bad".into(),
            image: tools.clone(),
            capability_add: strings(&["NET_FLY"]),
            ..Default::default()
        };
        let err = rt.create(&bad).await.expect_err("unknown capability");
        assert!(err.to_string().starts_with("container cap-bad: invalid spec: unknown capability \"NET_FLY\""), "{err}");

        eprintln!("--- sysctls set in the container's namespaces; a host-wide one refused");
        let (code, out) = run_script(&rt, &tools, "sysctl", "cat /proc/sys/net/ipv4/ip_unprivileged_port_start", |s| {
            s.sysctls = [("net.ipv4.ip_unprivileged_port_start".to_owned(), "80".to_owned())].into();
        })
        .await;
        assert_eq!((code, out.as_str()), (0, "80"));
        let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or_default();
        assert_ne!(host.trim(), "80", "the host's value is untouched");
        let bad = ContainerSpec {
            id: "sysctl-bad".into(),
            image: tools.clone(),
            sysctls: [("vm.swappiness".to_owned(), "0".to_owned())].into(),
            ..Default::default()
        };
        let err = rt.create(&bad).await.expect_err("not namespaced");
        assert!(err.to_string().contains("sysctl \"vm.swappiness\" is not allowed"), "{err}");

        eprintln!("--- ulimits");
        let (code, out) = run_script(&rt, &tools, "ulimit", "ulimit -S -n; ulimit -H -n", |s| {
            s.ulimits = vec![Ulimit { name: "nofile".into(), soft: 1500, hard: 3000 }];
        })
        .await;
        assert_eq!((code, out.as_str()), (0, "1500\n3000"));

        eprintln!("--- supplementary groups: a name from the image's /etc/group and a number");
        let (code, out) = run_script(&rt, &tools, "groups", "id -G", |s| {
            s.groups = strings(&["nogroup", "1234"]);
        })
        .await;
        // The kernel keeps supplementary groups sorted.
        assert_eq!((code, out.as_str()), (0, "0 1234 65534"));
        let bad = ContainerSpec {
            id: "groups-bad".into(),
            image: tools.clone(),
            groups: strings(&["wheel"]),
            ..Default::default()
        };
        let err = rt.create(&bad).await.expect_err("unknown group");
        assert!(err.to_string().contains("supplementary group \"wheel\" is not in the image's /etc/group"), "{err}");

        eprintln!("--- init: docker-init is PID 1, the command its child, and the stop signal reaches it");
        let script = "cat /proc/1/comm; sed -n 's/^PPid:[[:space:]]*//p' /proc/$$/status; \
                      trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done";
        let spec = ContainerSpec {
            id: "init".into(),
            image: tools.clone(),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
            args: Some(vec![]),
            init: true,
            ..Default::default()
        };
        rt.create(&spec).await.expect("create");
        rt.start("init").await.expect("start");
        wait_for_line(&rt, "init", "ready").await;
        let status = rt.stop("init", Duration::from_secs(20)).await.expect("stop");
        // The SIGKILL after the grace period would have made it 137.
        assert_eq!(status.code, 0, "the command trapped TERM and exited 0: {status:?}");
        let lines = log_lines(&rt, "init").await;
        assert_eq!(lines, ["docker-init", "1", "ready", "got-term"]);
        rt.remove("init").await.expect("remove");

        eprintln!("--- volumes: an empty one gets the image's content, unless asked not to; a filled one is kept");
        let none = std::collections::BTreeMap::new();
        let fresh = volumes.ensure("fresh", &none, &none).expect("volume");
        let nocopy = volumes.ensure("nocopy", &none, &none).expect("volume");
        let filled = volumes.ensure("filled", &none, &none).expect("volume");
        std::fs::write(filled.mountpoint.join("mine"), "kept\n").expect("write");
        let volume = |v: &shoal_runtime::LocalVolume, copy: bool| Mount::Volume {
            source: v.mountpoint.clone(),
            target: "/usr".into(),
            read_only: false,
            copy_image_content: copy,
        };
        let script = "ls -A /usr/local/bin; readlink /usr/bin/env; cat /usr/mine 2>/dev/null; true";
        let (code, out) = run_script(&rt, &tools, "vol-fresh", script, |s| s.mounts = vec![volume(&fresh, true)]).await;
        assert_eq!((code, out.as_str()), (0, "idle\n/bin/busybox"));
        use std::os::unix::fs::PermissionsExt as _;
        let idle = std::fs::metadata(fresh.mountpoint.join("local/bin/idle")).expect("copied on the host");
        assert_eq!(idle.permissions().mode() & 0o7777, 0o755);
        let (code, out) = run_script(&rt, &tools, "vol-nocopy", "ls -A /usr | wc -l", |s| {
            s.mounts = vec![volume(&nocopy, false)];
        })
        .await;
        assert_eq!((code, out.as_str()), (0, "0"), "without copy the volume stays empty");
        let (code, out) = run_script(&rt, &tools, "vol-filled", "ls -A /usr; cat /usr/mine", |s| {
            s.mounts = vec![volume(&filled, true)];
        })
        .await;
        assert_eq!((code, out.as_str()), (0, "mine\nkept"), "a volume with content is not overwritten");
        for name in ["fresh", "nocopy", "filled"] {
            volumes.remove(name).expect("remove volume");
        }

        eprintln!("--- bind propagation: rshared carries the container's mounts to the host, rprivate does not");
        let script = "mount -t tmpfs tmpfs /shared/sub && touch /shared/sub/from-container && echo mounted; \
                      while :; do sleep 1; done";
        for (id, propagation, reaches_host) in
            [("prop-rshared", Propagation::Rshared, true), ("prop-rprivate", Propagation::Rprivate, false)]
        {
            std::fs::create_dir_all(shared_dir.join("sub")).expect("mkdir");
            let spec = ContainerSpec {
                id: id.into(),
                image: tools.clone(),
                entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
                args: Some(vec![]),
                capability_add: strings(&["SYS_ADMIN"]),
                mounts: vec![Mount::Bind {
                    source: shared_dir.clone(),
                    target: "/shared".into(),
                    read_only: false,
                    propagation,
                }],
                ..Default::default()
            };
            rt.create(&spec).await.expect("create");
            rt.start(id).await.expect("start");
            wait_for_line(&rt, id, "mounted").await;
            let seen = shared_dir.join("sub/from-container").exists();
            rt.stop(id, Duration::from_secs(1)).await.expect("stop");
            rt.remove(id).await.expect("remove");
            // What propagated to the host stays mounted there after the container is gone.
            let _ = nix::mount::umount2(&shared_dir.join("sub"), MntFlags::MNT_DETACH);
            assert_eq!(seen, reaches_host, "{id}: the container's mount seen on the host");
        }
        let spec = ContainerSpec {
            id: "prop-private-source".into(),
            image: tools.clone(),
            mounts: vec![Mount::Bind {
                source: private_dir.clone(),
                target: "/private".into(),
                read_only: false,
                propagation: Propagation::Rshared,
            }],
            ..Default::default()
        };
        let err = rt.create(&spec).await.expect_err("a private source cannot be shared");
        assert!(
            err.to_string().contains(&format!("which is not a shared mount, so rshared propagation cannot work: make it shared (mount --make-rshared {})", private_dir.display())),
            "{err}"
        );
    });
    drop((shared, private));
    drop(env.containerd);
}

/// Waits (up to 10 s) until container `id` has logged `line`.
async fn wait_for_line(rt: &Containerd, id: &str, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_lines(rt, id).await;
        if lines.iter().any(|l| l == line) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{id} never logged {line:?}: {lines:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_lines(rt: &Containerd, id: &str) -> Vec<String> {
    rt.logs(id, &LogOptions::default()).await.expect("logs").map(|l| l.line).collect().await
}

/// A directory bind-mounted on itself with the propagation `flag`, unmounted on drop.
struct BindMountGuard(PathBuf);

impl BindMountGuard {
    fn new(dir: &Path, flag: MsFlags) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        nix::mount::mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind mount");
        let guard = Self(dir.to_owned());
        nix::mount::mount(None::<&str>, dir, None::<&str>, flag, None::<&str>).expect("set propagation");
        guard
    }
}

impl Drop for BindMountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0.join("sub"), MntFlags::MNT_DETACH);
        let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// A file on the host for the length of a test.
struct HostFile(PathBuf);

impl HostFile {
    fn new(path: &str, content: &str) -> Self {
        std::fs::write(path, content).expect("write host file");
        Self(PathBuf::from(path))
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates the task of container `id` without starting it, straight through containerd's API.
async fn create_task_only(config: &ContainerdConfig, id: &str) {
    use containerd_client::services::v1::CreateTaskRequest;
    use containerd_client::services::v1::snapshots::MountsRequest;
    use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
    use containerd_client::services::v1::tasks_client::TasksClient;

    let channel = containerd_client::connect(&config.socket).await.expect("connect to containerd");
    fn namespaced<T>(config: &ContainerdConfig, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("containerd-namespace", config.namespace.parse().expect("namespace"));
        request
    }
    let rootfs = SnapshotsClient::new(channel.clone())
        .mounts(namespaced(config, MountsRequest { snapshotter: config.snapshotter.clone(), key: id.to_owned() }))
        .await
        .expect("snapshot mounts")
        .into_inner()
        .mounts;
    let request = CreateTaskRequest { container_id: id.to_owned(), rootfs, ..Default::default() };
    TasksClient::new(channel).create(namespaced(config, request)).await.expect("create task");
}

/// A network namespace for a task, deleted on drop.
struct NetnsGuard(String);

impl NetnsGuard {
    fn new(name: &str) -> Self {
        let status = std::process::Command::new("ip").args(["netns", "add", name]).status().expect("ip netns add");
        assert!(status.success(), "ip netns add {name}");
        Self(name.to_owned())
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}
