//! Each OCI test image, imported into a private containerd and run, does what its description says.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::images::{self, BuiltImage};
use shoal_testkit::privileged;
use shoal_testkit::{Cluster, Containerd};

struct Fixture {
    cluster: Cluster,
    containerd: Containerd,
    built: Vec<BuiltImage>,
}

fn fixture(test: &str) -> Option<Fixture> {
    if !privileged::require(test, privileged::CONTAINERD) {
        return None;
    }
    let cluster = Cluster::new(1).expect("build cluster");
    let built = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("build");
    let containerd = Containerd::start(&cluster.dir().join("containerd"), cluster.prefix()).expect("containerd");
    for image in &built {
        containerd.import(&image.path).expect("import");
    }
    Some(Fixture { cluster, containerd, built })
}

impl Fixture {
    fn reference(&self, repository: &str, tag: &str) -> String {
        let image = self.built.iter().find(|i| i.def.repository == repository && i.def.tag == tag);
        image.expect("image built").def.reference()
    }

    /// `ctr run --rm` in node1's network namespace, in the background.
    fn run(&self, image: &str, id: &str, env: &[&str], args: &[&str]) -> Child {
        let node = self.cluster.node(1).expect("node1");
        let mut ctr = self.containerd.ctr();
        ctr.args(["run", "--rm", "--with-ns", &format!("network:/run/netns/{}", node.netns)]);
        for e in env {
            ctr.args(["--env", e]);
        }
        ctr.args([image, id]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        ctr.spawn().expect("spawn ctr run")
    }

    fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let tasks = self.containerd.run_ctr(&["tasks", "list"]).unwrap_or_default();
            if tasks.lines().any(|l| l.starts_with(id) && l.contains("RUNNING")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("container {id} is not running after 20 s");
    }

    /// Waits (up to 20 s) until the process of container `id` has a SIGTERM handler. As PID 1 of
    /// its namespace it would never see a SIGTERM sent before: the kernel drops signals that the
    /// init of a namespace does not handle.
    fn wait_handling_sigterm(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let tasks = self.containerd.run_ctr(&["tasks", "list"]).unwrap_or_default();
            if shoal_testkit::task_handles_sigterm(&tasks, id) {
                return;
            }
            assert!(Instant::now() < deadline, "container {id} has no SIGTERM handler after 20 s: {tasks}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The exit code of `ctr run`, which ends with its container; fails (rather than hangs) when the
/// container runs for more than a minute.
fn exit_code(mut child: Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait ctr").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the container still runs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait ctr");
    if !out.status.success() {
        eprintln!("ctr stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.code()
}

#[test]
fn web_serves_its_version_and_hostname() {
    let Some(f) = fixture("web_serves_its_version_and_hostname") else { return };
    for tag in ["v1", "v2"] {
        let id = format!("web-{tag}");
        let child = f.run(&f.reference("shoal-test/web", tag), &id, &[], &[]);
        f.wait_running(&id);
        let node = f.cluster.node(1).expect("node1");
        let mut body = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut wget = Cluster::command_in(&node.netns, "timeout");
            wget.args(["2", "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:80/"]);
            let out = wget.output().expect("wget");
            body = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(body, format!("{tag} {}\n", hostname.trim()), "page of {tag}");
        f.wait_handling_sigterm(&id);
        f.containerd.run_ctr(&["tasks", "kill", "--signal", "SIGTERM", &id]).expect("kill");
        assert_eq!(exit_code(child), Some(0), "web exits 0 on SIGTERM");
    }
}

#[test]
fn sleeper_exits_zero_on_sigterm() {
    let Some(f) = fixture("sleeper_exits_zero_on_sigterm") else { return };
    let child = f.run(&f.reference("shoal-test/sleeper", "latest"), "sleeper", &[], &[]);
    f.wait_running("sleeper");
    f.wait_handling_sigterm("sleeper");
    f.containerd.run_ctr(&["tasks", "kill", "--signal", "SIGTERM", "sleeper"]).expect("kill");
    // Nothing else would end it: `ctr tasks kill` sends no SIGKILL after the SIGTERM.
    assert_eq!(exit_code(child), Some(0));
}

#[test]
fn crasher_exits_one_after_its_delay() {
    let Some(f) = fixture("crasher_exits_one_after_its_delay") else { return };
    let image = f.reference("shoal-test/crasher", "latest");
    let started = std::time::Instant::now();
    let child = f.run(&image, "crasher", &["CRASH_AFTER=2"], &[]);
    f.wait_running("crasher");
    assert_eq!(exit_code(child), Some(1));
    // A lower bound only: the script cannot end before its `sleep 2` has.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "exited after {:?}, before its delay",
        started.elapsed()
    );
    let child = f.run(&image, "crasher-code", &["CRASH_AFTER=0", "CRASH_CODE=7"], &[]);
    assert_eq!(exit_code(child), Some(7), "CRASH_CODE sets the exit code");
}

#[test]
fn tools_has_the_network_applets() {
    let Some(f) = fixture("tools_has_the_network_applets") else { return };
    let script = "for a in sh wget nslookup ping ip nc; do command -v $a || exit 3; done; \
                  ip -o link show lo >/dev/null && ping -c 1 -W 1 127.0.0.1 >/dev/null";
    let child = f.run(&f.reference("shoal-test/tools", "latest"), "tools", &[], &["sh", "-c", script]);
    assert_eq!(exit_code(child), Some(0));
    // By default it idles like the sleeper.
    let child = f.run(&f.reference("shoal-test/tools", "latest"), "tools-idle", &[], &[]);
    f.wait_running("tools-idle");
    f.wait_handling_sigterm("tools-idle");
    f.containerd.run_ctr(&["tasks", "kill", "--signal", "SIGTERM", "tools-idle"]).expect("kill");
    assert_eq!(exit_code(child), Some(0));
}
