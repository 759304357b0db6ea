//! The task spec reaching the container, on containerd without a manager: the executor runs a
//! task whose spec sets nearly everything `docker service create` can, and the test looks from
//! inside the container (exec) at what it got: command and args, env, working directory,
//! hostname from a template, extra hosts, DNS settings, secret and config files with their owner
//! and mode (on a tmpfs, gone with the task), capabilities added and dropped, a sysctl, a ulimit,
//! supplementary groups, an init as PID 1, a read-only root with a tmpfs, and a named volume
//! filled from the image.
//!
//! Privileged: root, containerd, runc, docker-registry, tini (skipped with the reason otherwise,
//! failed under `CI=true`); `shoal-runtime-logger` must be built next to the test binaries.

#![allow(clippy::print_stderr)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use shoal_agent::NodeDirs;
use shoal_agent::testing::Standalone;
use shoal_api::v1::{self, TaskState};
use shoal_runtime::{ContainerRuntime, Containerd, ExecSpec};
use shoal_testkit::privileged::Need;
use support::{OneNode, prerequisites};

/// Waits until `task_id` reports `state`; panics on another end.
async fn until(executor: &mut Standalone, task_id: &str, state: TaskState) -> v1::TaskStatus {
    let wait = async {
        while let Some((id, status)) = executor.report().await {
            if id != task_id {
                continue;
            }
            assert!(
                !status.state().is_terminal() || status.state() == state,
                "{task_id} ended {}: {} ({})",
                status.state().label(),
                status.err,
                status.message
            );
            if status.state() == state {
                return status;
            }
        }
        panic!("reports ended before {task_id} was {}", state.label());
    };
    tokio::time::timeout(Duration::from_secs(60), wait).await.expect("in time")
}

fn payload_change(secret: bool, id: &str, data: &[u8]) -> v1::AssignmentChange {
    if secret {
        v1::AssignmentChange {
            secret: Some(v1::Secret {
                id: id.into(),
                data_version: 1,
                spec: Some(v1::SecretSpec { annotations: None, data: data.to_vec() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    } else {
        v1::AssignmentChange {
            config: Some(v1::Config {
                id: id.into(),
                data_version: 1,
                spec: Some(v1::ConfigSpec { annotations: None, data: data.to_vec() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn task(image: String) -> v1::Task {
    let container = v1::ContainerSpec {
        image,
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["echo started > /scratch/log; exec sleep 300".into()],
        env: vec!["GREETING=hello world".into()],
        dir: "/tmp".into(),
        hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
        read_only: true,
        mounts: vec![
            v1::Mount { r#type: v1::mount::Type::Tmpfs as i32, target: "/scratch".into(), ..Default::default() },
            v1::Mount {
                r#type: v1::mount::Type::Volume as i32,
                source: "webroot".into(),
                // Where the image has busybox's links: a new volume gets them (docker's copy
                // on first use).
                target: "/usr/sbin".into(),
                ..Default::default()
            },
        ],
        secrets: vec![v1::SecretReference {
            secret_id: "s1".into(),
            secret_name: "db-password".into(),
            file: Some(v1::FileTarget { name: "db".into(), uid: 1000, gid: 1001, mode: 0o440 }),
            data_version: 1,
        }],
        configs: vec![v1::ConfigReference {
            config_id: "c1".into(),
            config_name: "site".into(),
            file: Some(v1::FileTarget { name: "/etc/app.conf".into(), uid: 0, gid: 0, mode: 0o444 }),
            data_version: 1,
        }],
        init: true,
        capability_add: vec!["NET_ADMIN".into()],
        capability_drop: vec!["CAP_CHOWN".into()],
        sysctls: [("net.ipv4.ip_unprivileged_port_start".to_owned(), "80".to_owned())].into(),
        ulimits: vec![v1::Ulimit { name: "nofile".into(), soft: 1234, hard: 2345 }],
        dns_config: Some(v1::DnsConfig {
            nameservers: vec!["192.0.2.53".into()],
            search: vec!["corp.example".into()],
            options: vec!["ndots:2".into()],
        }),
        hosts: vec!["192.0.2.50 db.example db".into()],
        groups: vec!["2000".into()],
        ..Default::default()
    };
    v1::Task {
        id: "spec1".into(),
        service_id: "svc1".into(),
        service_name: "web".into(),
        slot: 3,
        node_id: "n1".into(),
        desired_state: TaskState::Running as i32,
        spec: Some(v1::TaskSpec { container: Some(container), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn the_task_spec_reaches_the_container() {
    let needs = [Need::File("/usr/bin/tini-static")];
    let Some(logger) = prerequisites("the_task_spec_reaches_the_container", &needs) else { return };
    let node = OneNode::start(&logger, "shoal-test/web");
    let (image, config, netns) = (node.image.clone(), node.config.clone(), node.netns());
    let dirs = NodeDirs::under(&node.cluster.dir().join("node"));
    let tasks_dir = dirs.task_files.clone().expect("task files dir");
    let volume_dir = dirs.volumes.clone();

    shoal_testkit::in_netns(&netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        runtime.block_on(async move {
            let containerd_rt = Arc::new(Containerd::connect(config).await.expect("connect"));
            let mut executor = Standalone::new(containerd_rt.clone(), "n1", &dirs);
            executor.payload(&payload_change(true, "s1", b"hunter2-secret"));
            executor.payload(&payload_change(false, "c1", b"listen=80"));
            let mut task = task(image);
            executor.set_complete(vec![task.clone()]);
            until(&mut executor, "spec1", TaskState::Running).await;

            let exec = |script: &str| {
                let rt = containerd_rt.clone();
                let script = script.to_owned();
                async move {
                    let spec = ExecSpec {
                        cmd: vec!["/bin/sh".to_owned(), "-c".to_owned(), script.clone()],
                        timeout: Duration::from_secs(10),
                    };
                    let out = rt.exec("spec1", &spec).await.expect("exec");
                    assert_eq!(out.code, 0, "{script}: {out:?}");
                    out.stdout
                }
            };
            let checks: &[(&str, &str)] = &[
                ("hostname", "web-3\n"),
                ("cat /proc/1/cmdline | tr '\\0' ' '", "/sbin/docker-init -- /bin/sh -c"),
                ("tr '\\0' '\\n' < /proc/1/environ | grep GREETING", "GREETING=hello world\n"),
                ("readlink /proc/1/cwd", "/tmp\n"),
                ("cat /scratch/log", "started\n"),
                ("grep db.example /etc/hosts", "192.0.2.50\tdb.example db\n"),
                ("cat /etc/resolv.conf", "nameserver 192.0.2.53\nsearch corp.example\noptions ndots:2\n"),
                ("cat /run/secrets/db", "hunter2-secret"),
                ("stat -c '%a %u:%g' /run/secrets/db", "440 1000:1001\n"),
                ("cat /etc/app.conf", "listen=80"),
                ("cat /proc/sys/net/ipv4/ip_unprivileged_port_start", "80\n"),
                ("grep 'Max open files' /proc/1/limits | tr -s ' '", "Max open files 1234 2345 files \n"),
                ("grep Groups /proc/1/status", "2000"),
                ("touch /rootfs-write 2>&1 || echo refused", "refused"),
            ];
            let mut failures = Vec::new();
            for (script, want) in checks {
                let got = exec(script).await;
                eprintln!("{script} -> {got:?}");
                if !got.contains(want) {
                    failures.push(format!("{script}: got {got:?}, want {want:?}"));
                }
            }
            // NET_ADMIN (bit 12) added, CHOWN (bit 0) dropped from the default set.
            let caps = exec("grep CapEff /proc/1/status | cut -f2").await;
            let caps = u64::from_str_radix(caps.trim(), 16).expect("CapEff");
            if caps & (1 << 12) == 0 || caps & 1 != 0 {
                failures.push(format!("capabilities {caps:#x}: NET_ADMIN should be in, CHOWN out"));
            }
            let seeded: usize = exec("ls /usr/sbin | wc -l").await.trim().parse().unwrap_or(0);
            let on_node = std::fs::read_dir(volume_dir.join("webroot/_data")).map(|d| d.count()).unwrap_or(0);
            if seeded == 0 || on_node != seeded {
                failures.push(format!(
                    "the new volume at /usr/sbin did not get the image's content: {seeded} entries inside, \
                     {on_node} in the volume on the node"
                ));
            }
            assert!(failures.is_empty(), "what the container sees differs:\n{}", failures.join("\n"));

            eprintln!("--- removed: the secrets' tmpfs goes with the task");
            assert!(tasks_dir.join("spec1/files").exists());
            task.desired_state = TaskState::Remove as i32;
            executor.update(task);
            until(&mut executor, "spec1", TaskState::Shutdown).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while tasks_dir.join("spec1").exists() {
                assert!(tokio::time::Instant::now() < deadline, "the task's files are still there");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    })
    .expect("enter node1");
    drop(node);
}
