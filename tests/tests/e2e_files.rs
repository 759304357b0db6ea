//! Secrets, configs, volumes and mounts end to end (SCENARIOS.md 14, 18) on a manager and a
//! worker, real containerd, driven by the `shoal` CLI: a web task serves a secret and a config it
//! reads from its files, with the owner and mode asked; `secret update` rolls the service and
//! the new value is served; the secret's bytes are nowhere on disk (not in the worker's or the
//! manager's data directory, not in containerd's snapshots); a named volume keeps a file across a
//! task replacement on its node; tmpfs and bind mounts work; a secret in use cannot be removed;
//! a volume is listed and removed through the manager.

#![allow(clippy::print_stderr)]

mod support;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Stdio;

use shoal_testkit::Node;
use shoal_testkit::shoal::Cli;
use support::{env, get, ok, until, wait_for};

/// `shoal ARGS…` with `input` on its standard input, which must succeed.
fn ok_with_input(shoal: &Cli, args: &[&str], input: &[u8]) -> String {
    let mut child = shoal
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    let out = child.wait_with_output().expect("shoal");
    assert!(out.status.success(), "shoal {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files under `root` that contain `needle`, without crossing into other filesystems (the
/// tmpfs mounts that hold the tasks' secrets, the containers' root filesystem mounts, /proc):
/// what is on the disk under `root`.
fn on_disk(root: &Path, needle: &[u8]) -> Vec<String> {
    let device = std::fs::metadata(root).expect("root").dev();
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.dev() != device {
                continue;
            }
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                let mut bytes = Vec::new();
                if std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).is_ok()
                    && bytes.windows(needle.len()).any(|w| w == needle)
                {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// What the web task serves at /cgi-bin/show: the secret and the config it reads, the secret
/// file's mode and owner, the volume's files, the tmpfs's type and the bind mount's file.
const SHOW: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
printf 'secret=%s\n' "$(cat /run/secrets/db-password)"
printf 'config=%s\n' "$(cat /etc/app/site.conf)"
printf 'mode=%s\n' "$(stat -c '%a %u:%g' /run/secrets/db-password)"
printf 'volume=%s\n' "$(ls /data | tr '\n' ' ')"
printf 'scratch=%s\n' "$(stat -f -c %T /scratch)"
printf 'bind=%s\n' "$(cat /host/marker)"
"#;

#[test]
fn secrets_configs_volumes_and_mounts() {
    let Some(env) = env("e2e secrets_configs_volumes_and_mounts", 2) else { return };
    let (m1, w1): (Node, Node) = (env.cluster.node(1).expect("m1").clone(), env.cluster.node(2).expect("w1").clone());
    let sc = env.shoal();

    eprintln!("--- a manager and a worker");
    let (m1_process, worker_token) = sc.init(&m1).expect("init");
    let shoal = sc.cli(&m1, &m1);
    let w1_process = sc.join_worker(&w1, &worker_token, &m1).expect("join w1");
    until(&shoal, "2 Ready", 30, &["node", "ls"], |out| out.matches(" Ready ").count() == 2);

    // Random bytes, so that a match on disk is this secret and nothing else.
    let nonce = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
    );
    let first = format!("pw-first-{nonce}");
    let second = format!("pw-second-{nonce}");

    eprintln!("--- secret and config from stdin");
    ok_with_input(&shoal, &["secret", "create", "db-password", "-"], first.as_bytes());
    ok_with_input(&shoal, &["config", "create", "site", "-"], b"greeting=hello");
    let listed = ok(&shoal, &["secret", "ls"]);
    assert!(listed.contains("db-password"), "{listed}");
    let inspect = ok(&shoal, &["secret", "inspect", "db-password"]);
    assert!(!inspect.contains(&first), "secret inspect shows the payload:\n{inspect}");

    let bind_dir = env.cluster.dir().join("bind-source");
    std::fs::create_dir_all(&bind_dir).expect("bind dir");
    std::fs::write(bind_dir.join("marker"), "from-the-host").expect("marker");
    let bind = format!("type=bind,source={},target=/host,readonly", bind_dir.display());
    let script = format!(
        "mkdir -p /tmp/www/cgi-bin && cat > /tmp/www/cgi-bin/show <<'EOF'\n{SHOW}EOF\nchmod 755 /tmp/www/cgi-bin/show\n\
         touch \"/data/written-by-$(hostname)\"\nexec httpd -f -p 80 -h /tmp/www"
    );
    let image = format!("{}/shoal-test/web:v1", env.registry_addr);
    eprintln!("--- web: reads them, with a volume, a tmpfs and a bind mount, on the worker");
    let created = ok(
        &shoal,
        &[
            "service",
            "create",
            "--name",
            "web",
            "-p",
            "8080:80",
            "--constraint",
            &format!("node.hostname=={}", w1.name),
            "--secret",
            "source=db-password,mode=0400,uid=0,gid=0",
            "--config",
            "source=site,target=/etc/app/site.conf",
            "--mount",
            "type=volume,source=appdata,target=/data",
            "--mount",
            "type=tmpfs,target=/scratch",
            "--mount",
            &bind,
            "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}",
            "--update-order",
            "stop-first",
            "--update-monitor",
            "1s",
            "--detach",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            &script,
        ],
    );
    eprintln!("{created}");
    until(&shoal, "web running", 60, &["service", "ps", "--no-trunc", "web"], |ps| {
        ps.lines().skip(1).any(|l| l.contains(" Running ") && !l.contains(r"\_"))
    });
    let underlay = env.cluster.underlay_netns().to_owned();
    let addr = m1.addr.to_string();
    let show = || get(&underlay, &addr, "/cgi-bin/show");
    let mut last = Err(String::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        last = show();
        if last.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if let Err(err) = &last {
        let ps = shoal.run(&["service", "ps", "--no-trunc", "web"]).map(|(_, out, err)| out + &err);
        let logs = shoal.run(&["service", "logs", "web"]).map(|(_, out, err)| out + &err);
        panic!("web does not serve /cgi-bin/show: {err}\n{ps:?}\n{logs:?}");
    }
    let page = show().expect("show");
    eprintln!("{page}");
    assert!(page.contains(&format!("secret={first}\n")), "{page}");
    assert!(page.contains("config=greeting=hello\n"), "{page}");
    assert!(page.contains("mode=400 0:0\n"), "{page}");
    assert!(page.contains("volume=written-by-web-1 \n"), "the hostname template and the volume: {page}");
    assert!(page.contains("scratch=tmpfs\n"), "{page}");
    assert!(page.contains("bind=from-the-host"), "{page}");

    eprintln!("--- a secret in use cannot be removed");
    let (removed, _, err) = shoal.run(&["secret", "rm", "db-password"]).expect("run shoal");
    assert!(!removed, "secret rm of a secret in use succeeded");
    assert!(err.contains("secret db-password is in use by service web"), "{err}");

    eprintln!("--- secret update: the service rolls and serves the new value; the volume keeps its file");
    let moved = ok_with_input(&shoal, &["secret", "update", "db-password", "-"], second.as_bytes());
    assert!(moved.contains("web"), "secret update names the services it moved: {moved}");
    wait_for("the new secret is served", 60, || show().is_ok_and(|p| p.contains(&format!("secret={second}\n"))));
    until(&shoal, "web converged", 30, &["service", "ps", "web"], |ps| {
        ps.lines().skip(1).filter(|l| l.contains(" Running ")).count() == 1
    });
    let tasks = ok(&shoal, &["service", "ps", "-q", "web"]);
    assert!(tasks.lines().count() >= 2, "the update replaced the task:\n{tasks}");
    let page = show().expect("show");
    assert!(page.contains("volume=written-by-web-1 \n"), "the replacement sees the same volume: {page}");

    eprintln!("--- the secrets' bytes are nowhere on disk");
    for needle in [&first, &second] {
        let found = on_disk(env.cluster.dir(), needle.as_bytes());
        assert!(found.is_empty(), "the secret {needle} is on disk in {found:?}");
    }
    // The search does find what is on disk: the bind mount's marker, and the config (configs
    // are no secret: they sit in the manager's log, which is encrypted, so look for the file
    // the test wrote itself).
    assert!(!on_disk(env.cluster.dir(), b"from-the-host").is_empty(), "the disk search finds nothing at all");

    eprintln!("--- volumes through the manager");
    let volumes = ok(&shoal, &["volume", "ls", "--node", &w1.name]);
    assert!(volumes.contains("appdata"), "{volumes}");
    let (removed, _, err) = shoal.run(&["volume", "rm", "--node", &w1.name, "appdata"]).expect("run shoal");
    assert!(!removed && err.contains("in use"), "a volume in use was removed: {err}");
    ok(&shoal, &["service", "rm", "web"]);
    wait_for("the volume is removed", 30, || {
        shoal.run(&["volume", "rm", "--node", &w1.name, "appdata"]).is_ok_and(|(ok, _, _)| ok)
    });
    let volumes = ok(&shoal, &["volume", "ls", "--node", &w1.name]);
    assert!(!volumes.contains("appdata"), "{volumes}");
    ok(&shoal, &["secret", "rm", "db-password"]);
    ok(&shoal, &["config", "rm", "site"]);

    drop((w1_process, m1_process));
}
