//! `cargo xtask bench runtime`: create and start 100 sleeper containers 4 at a time, then stop and
//! remove them, through shoal-runtime and, in the same run against the same private containerd,
//! through `ctr run -d`; prints both and the ratio. Figures, not a timed test.

// A benchmark program: printing its figures is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use shoal_runtime::{ContainerRuntime, ContainerSpec, Containerd, ContainerdConfig, ImageSource};
use shoal_testkit::{images, privileged};

const COUNT: usize = 100;
const PARALLEL: usize = 4;

fn main() {
    if !privileged::require("bench runtime", privileged::CONTAINERD) {
        eprintln!("bench runtime needs root and containerd (run `cargo xtask test` once to install them)");
        std::process::exit(1);
    }
    let dir =
        std::env::temp_dir().join(format!("{}bench-runtime-{}", shoal_testkit::RUN_PREFIX_ROOT, std::process::id()));
    // Declared before the containerd guard, so dropped after it: the directory goes also on panic.
    let _remove_dir = RemoveOnDrop(dir.clone());
    let built = images::build_all(Path::new(images::BUSYBOX), &dir.join("images")).expect("build test images");
    let sleeper = built.iter().find(|i| i.def.repository == "shoal-test/sleeper").expect("sleeper image").clone();
    let ctr_ns = format!("{}bench-ctr", shoal_testkit::RUN_PREFIX_ROOT);
    let containerd = shoal_testkit::Containerd::start(&dir.join("containerd"), &ctr_ns).expect("start containerd");
    containerd.import(&sleeper.path).expect("import for ctr");
    let version = containerd.run_ctr(&["version"]).unwrap_or_default();
    let server =
        version.lines().skip_while(|l| !l.starts_with("Server")).find_map(|l| l.trim().strip_prefix("Version:"));

    println!(
        "runtime bench: {COUNT} sleeper containers, {PARALLEL} at a time, containerd {}",
        server.unwrap_or("?").trim()
    );
    let ours = tokio::runtime::Runtime::new().expect("tokio").block_on(shoal(&dir, &containerd, &sleeper.path));
    let peer = ctr(&containerd, &sleeper.def.reference());
    println!("{:<22}{:>16}{:>16}{:>12}", "", "create+start", "stop+remove", "total");
    for (name, (up, down)) in [("shoal-runtime", ours), ("ctr run -d", peer)] {
        println!(
            "{name:<22}{:>14.2} s{:>14.2} s{:>10.2} s",
            up.as_secs_f64(),
            down.as_secs_f64(),
            (up + down).as_secs_f64()
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "{:<22}{:>15.2}x{:>15.2}x{:>11.2}x   (shoal / ctr; target <= 1.0)",
        "ratio",
        ratio(ours.0, peer.0),
        ratio(ours.1, peer.1),
        ratio(ours.0 + ours.1, peer.0 + peer.1)
    );
}

/// Removes the bench's directory when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn shoal(dir: &Path, containerd: &shoal_testkit::Containerd, archive: &Path) -> (Duration, Duration) {
    let config = ContainerdConfig::new(
        containerd.socket(),
        &format!("{}bench-shoal", shoal_testkit::RUN_PREFIX_ROOT),
        dir.join("runtime"),
        env!("CARGO_BIN_EXE_shoal-runtime-logger"),
    );
    let rt = Arc::new(Containerd::connect(config).await.expect("connect"));
    let image =
        rt.ensure_image(&ImageSource::Archive { path: archive.to_owned(), reference: None }).await.expect("load");
    let ids: Vec<String> = (0..COUNT).map(|i| format!("bench-{i}")).collect();
    let started = Instant::now();
    futures::stream::iter(ids.iter().cloned())
        .for_each_concurrent(PARALLEL, |id| {
            let (rt, image) = (rt.clone(), image.clone());
            async move {
                let spec = ContainerSpec { id: id.clone(), image, ..ContainerSpec::default() };
                rt.create(&spec).await.expect("create");
                rt.start(&id).await.expect("start");
            }
        })
        .await;
    let up = started.elapsed();
    let stopping = Instant::now();
    futures::stream::iter(ids)
        .for_each_concurrent(PARALLEL, |id| {
            let rt = rt.clone();
            async move {
                let status = rt.stop(&id, Duration::from_secs(10)).await.expect("stop");
                assert_eq!(status.code, 0, "sleeper {id} exits 0 on SIGTERM");
                rt.remove(&id).await.expect("remove");
            }
        })
        .await;
    (up, stopping.elapsed())
}

/// The same work with `ctr`: `run -d` up, then `task kill` (SIGTERM) + `task rm` + `container rm`.
fn ctr(containerd: &shoal_testkit::Containerd, image: &str) -> (Duration, Duration) {
    let ids: Vec<String> = (0..COUNT).map(|i| format!("ctr-{i}")).collect();
    let run = |args: Vec<String>| {
        let out = containerd.ctr().args(&args).output().expect("run ctr");
        assert!(out.status.success(), "ctr {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    };
    let parallel = |work: &(dyn Fn(&str) + Sync)| {
        std::thread::scope(|scope| {
            for chunk in ids.chunks(COUNT.div_ceil(PARALLEL)) {
                scope.spawn(move || chunk.iter().for_each(|id| work(id)));
            }
        });
    };
    let started = Instant::now();
    parallel(&|id| run(vec!["run".into(), "-d".into(), image.to_owned(), id.to_owned()]));
    let up = started.elapsed();
    let stopping = Instant::now();
    // `ctr task rm` refuses a running task, and ctr has no wait: one watcher lists the tasks
    // every 50 ms for everyone (as a script stopping many containers would), instead of each
    // container polling on its own, whose extra `ctr` processes would slow the peer down.
    let stopped = std::sync::Mutex::new(std::collections::HashSet::<String>::new());
    let changed = std::sync::Condvar::new();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let out = containerd.ctr().args(["task", "ls"]).output().expect("ctr task ls");
                let listing = String::from_utf8_lossy(&out.stdout);
                let now: std::collections::HashSet<String> = listing
                    .lines()
                    .filter(|l| l.contains("STOPPED"))
                    .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                    .collect();
                *stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
                changed.notify_all();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        parallel(&|id| {
            run(vec!["task".into(), "kill".into(), "--signal".into(), "SIGTERM".into(), id.to_owned()]);
            let mut seen = stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while !seen.contains(id) {
                let (next, timeout) = changed
                    .wait_timeout(seen, Duration::from_secs(10))
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                assert!(!timeout.timed_out(), "ctr task {id} did not stop within 10 s of SIGTERM");
                seen = next;
            }
            drop(seen);
            run(vec!["task".into(), "rm".into(), id.to_owned()]);
            run(vec!["container".into(), "rm".into(), id.to_owned()]);
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    (up, stopping.elapsed())
}
