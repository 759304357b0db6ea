//! Data-driven placement tests: a fixture of nodes and tasks in, the placement rendered as text out.
//!
//! Fixture lines:
//! - `node ID [cpu=N] [mem=N[K|M|G]] [gpu=N] [label.K=V] [engine.K=V] [role=manager]
//!   [status=down] [avail=drain|pause] [platform=OS/ARCH] [ip=ADDR] [port=N/tcp]
//!   [tasks=SERVICE:N] [fail=SERVICE:N] [used-cpu=N] [used-mem=N]`
//! - `task SERVICE xCOUNT [cpu=N] [mem=N] [gpu=N] [constraint=C] [pref=LABEL] [max=N]
//!   [port=N/tcp] [platform=OS/ARCH] [on=NODE]`
//!
//! The rendering lists, per node in fixture order, the tasks newly placed there by service,
//! then each distinct explanation with the number of tasks it applies to.

use std::fmt::Write as _;
use std::sync::Arc;

use shoal_scheduler::{
    Availability, Constraint, HostPort, Node, NodeStatus, PlacementPreference, Platform, Protocol, Role, Task,
    TaskSpec, schedule,
};

fn parse_amount(v: &str) -> u64 {
    let (num, mult) = match v.chars().last() {
        Some('K') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().expect("amount") * mult
}

fn parse_cpu(v: &str) -> u64 {
    (v.parse::<f64>().expect("cpu") * 1e9).round() as u64
}

fn parse_port(v: &str) -> HostPort {
    let (port, proto) = v.split_once('/').expect("port N/proto");
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => panic!("protocol {other}"),
    };
    HostPort { protocol, port: port.parse().expect("port number") }
}

fn parse_platform(v: &str) -> Platform {
    let (os, arch) = v.split_once('/').expect("platform OS/ARCH");
    Platform::new(os, arch)
}

fn parse_count(v: &str) -> (String, u64) {
    let (service, n) = v.split_once(':').expect("SERVICE:N");
    (service.to_owned(), n.parse().expect("count"))
}

fn parse_node(words: &[&str]) -> Node {
    let mut node = Node::new(words[0]);
    node.platform = Platform::new("linux", "amd64");
    node.total.nano_cpus = parse_cpu("8");
    node.total.memory_bytes = parse_amount("16G");
    for word in &words[1..] {
        let (k, v) = word.split_once('=').expect("KEY=VALUE");
        match k {
            "cpu" => node.total.nano_cpus = parse_cpu(v),
            "mem" => node.total.memory_bytes = parse_amount(v),
            "gpu" => {
                node.total.generic.insert("gpu".into(), parse_amount(v));
            }
            "used-cpu" => node.reserved.nano_cpus = parse_cpu(v),
            "used-mem" => node.reserved.memory_bytes = parse_amount(v),
            "role" => {
                node.role = match v {
                    "manager" => Role::Manager,
                    _ => Role::Worker,
                }
            }
            "status" => {
                node.status = match v {
                    "down" => NodeStatus::Down,
                    "unknown" => NodeStatus::Unknown,
                    "disconnected" => NodeStatus::Disconnected,
                    _ => NodeStatus::Ready,
                }
            }
            "avail" => {
                node.availability = match v {
                    "drain" => Availability::Drain,
                    "pause" => Availability::Pause,
                    _ => Availability::Active,
                }
            }
            "platform" => node.platform = parse_platform(v),
            "ip" => node.addresses.push(v.parse().expect("ip")),
            "port" => node.host_ports.push(parse_port(v)),
            "tasks" => {
                let (s, n) = parse_count(v);
                node.tasks_by_service.insert(s, n);
            }
            "fail" => {
                let (s, n) = parse_count(v);
                node.recent_failures.insert(s, n as u32);
            }
            _ => {
                if let Some(label) = k.strip_prefix("label.") {
                    node.labels.insert(label.into(), v.into());
                } else if let Some(label) = k.strip_prefix("engine.") {
                    node.engine_labels.insert(label.into(), v.into());
                } else {
                    panic!("unknown node attribute {k}");
                }
            }
        }
    }
    node
}

fn parse_tasks(words: &[&str], tasks: &mut Vec<Task>) {
    let service = words[0];
    let count: usize = words[1].strip_prefix('x').expect("xCOUNT").parse().expect("count");
    let mut spec = TaskSpec::default();
    let mut on = None;
    for word in &words[2..] {
        let (k, v) = word.split_once('=').expect("KEY=VALUE");
        match k {
            "cpu" => spec.reservations.nano_cpus = parse_cpu(v),
            "mem" => spec.reservations.memory_bytes = parse_amount(v),
            "gpu" => {
                spec.reservations.generic.insert("gpu".into(), parse_amount(v));
            }
            "constraint" => spec.constraints.push(Constraint::parse(v).expect("fixture constraint")),
            "pref" => {
                spec.preferences.push(PlacementPreference::parse(&format!("spread={v}")).expect("fixture preference"))
            }
            "max" => spec.max_replicas = v.parse().expect("max"),
            "port" => spec.host_ports.push(parse_port(v)),
            "platform" => spec.platforms.push(parse_platform(v)),
            "on" => on = Some(v.to_owned()),
            _ => panic!("unknown task attribute {k}"),
        }
    }
    let spec = Arc::new(spec);
    let first = tasks.len();
    for i in 0..count {
        let id = format!("{service}.{}", first + i);
        let mut task = Task::new(id, service, spec.clone());
        task.node_id = on.clone();
        tasks.push(task);
    }
}

/// Parses the fixture, schedules with a fixed seed, and renders the result.
fn run(fixture: &str) -> String {
    let mut nodes = Vec::new();
    let mut tasks = Vec::new();
    for line in fixture.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "node" => nodes.push(parse_node(&words[1..])),
            "task" => parse_tasks(&words[1..], &mut tasks),
            other => panic!("unknown fixture line {other}"),
        }
    }
    let placement = schedule(&nodes, &tasks, 7);
    assert_eq!(
        placement.assignments.len() + placement.unplaced.len(),
        tasks.len(),
        "every task is either placed or explained"
    );

    let service_of = |task_id: &str| task_id.split('.').next().unwrap_or("").to_owned();
    let mut out = String::new();
    for node in &nodes {
        let mut per_service: Vec<(String, usize)> = Vec::new();
        for a in placement.assignments.iter().filter(|a| a.node_id == node.id) {
            let s = service_of(&a.task_id);
            match per_service.iter_mut().find(|(name, _)| *name == s) {
                Some((_, n)) => *n += 1,
                None => per_service.push((s, 1)),
            }
        }
        if !per_service.is_empty() {
            let list: Vec<String> = per_service.iter().map(|(s, n)| format!("{s}+{n}")).collect();
            writeln!(out, "{}: {}", node.id, list.join(" ")).expect("write");
        }
    }
    let mut explained: Vec<(String, usize)> = Vec::new();
    for u in &placement.unplaced {
        let text = format!("{}: {}", service_of(&u.task_id), u.explanation);
        match explained.iter_mut().find(|(t, _)| *t == text) {
            Some((_, n)) => *n += 1,
            None => explained.push((text, 1)),
        }
    }
    for (text, n) in explained {
        writeln!(out, "unplaced {n} {text}").expect("write");
    }
    out
}

fn check(fixture: &str, expected: &str) {
    let got = run(fixture);
    let expected: String =
        expected.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect();
    assert_eq!(got, expected, "fixture:\n{fixture}");
}

#[test]
fn exact_spread_on_equal_nodes() {
    check(
        "node n1
         node n2
         node n3
         node n4
         node n5
         task web x10",
        "n1: web+2
         n2: web+2
         n3: web+2
         n4: web+2
         n5: web+2",
    );
}

#[test]
fn uneven_service_fills_emptiest_nodes_first() {
    check(
        "node n1 tasks=web:3
         node n2 tasks=web:1
         node n3
         task web x3",
        "n2: web+1
         n3: web+2",
    );
}

#[test]
fn fewest_tasks_overall_breaks_service_ties() {
    check(
        "node n1 tasks=db:5
         node n2 tasks=db:2
         node n3 tasks=db:9
         task web x1",
        "n2: web+1",
    );
}

#[test]
fn recent_failures_send_a_node_last() {
    check(
        "node n1 fail=web:5
         node n2 tasks=web:3
         task web x1",
        "n2: web+1",
    );
    // Below the threshold, failures do not count.
    check(
        "node n1 fail=web:4
         node n2 tasks=web:3
         task web x1",
        "n1: web+1",
    );
    // Failures of another service do not count.
    check(
        "node n1 fail=db:9
         node n2 tasks=web:3
         task web x1",
        "n1: web+1",
    );
    // A failing node still takes tasks when no other node can.
    check(
        "node n1 fail=web:5
         task web x2",
        "n1: web+2",
    );
}

#[test]
fn only_ready_active_nodes_take_tasks() {
    check(
        "node n1 status=down
         node n2 avail=drain
         node n3 avail=pause
         node n4 status=disconnected
         node n5
         task web x2",
        "n5: web+2",
    );
    check(
        "node n1 status=down
         node n2 avail=drain
         task web x2",
        "unplaced 2 web: no suitable node (2 nodes not available for new tasks)",
    );
}

#[test]
fn explanation_counts_the_first_failing_filter_per_node() {
    check(
        "node n1 label.zone=b
         node n2 label.zone=b
         node n3 label.zone=c
         node n4 label.zone=a cpu=1
         node n5 label.zone=a cpu=1
         task web x1 cpu=2 constraint=node.labels.zone==a",
        "unplaced 1 web: no suitable node (scheduling constraints not satisfied on 3 nodes; insufficient resources on 2 nodes)",
    );
    // Resources come before constraints: a node failing both counts as resources.
    check(
        "node n1 cpu=1 label.zone=b
         node n2 status=down cpu=1 label.zone=b
         task web x1 cpu=2 constraint=node.labels.zone==a",
        "unplaced 1 web: no suitable node (1 node not available for new tasks; insufficient resources on 1 node)",
    );
}

#[test]
fn no_nodes_at_all() {
    check("task web x2", "unplaced 2 web: no suitable node");
}

#[test]
fn resources_run_out() {
    check(
        "node n1 cpu=2
         node n2 cpu=1
         task web x4 cpu=1",
        "n1: web+2
         n2: web+1
         unplaced 1 web: no suitable node (insufficient resources on 2 nodes)",
    );
    check(
        "node n1 mem=4G used-mem=3G
         node n2 mem=4G
         task web x4 mem=1G",
        "n1: web+1
         n2: web+3",
    );
    check(
        "node n1 cpu=4 used-cpu=3.5
         node n2 cpu=0.5
         task web x2 cpu=0.5",
        "n1: web+1
         n2: web+1",
    );
}

#[test]
fn generic_resources() {
    check(
        "node n1 gpu=1
         node n2
         task ml x2 gpu=1",
        "n1: ml+1
         unplaced 1 ml: no suitable node (insufficient resources on 2 nodes)",
    );
}

#[test]
fn host_ports_conflict() {
    check(
        "node n1 port=80/tcp
         node n2 port=80/udp
         node n3
         task web x3 port=80/tcp",
        "n2: web+1
         n3: web+1
         unplaced 1 web: no suitable node (host-mode port already in use on 3 nodes)",
    );
    // Port 0 lets the node choose: never a conflict.
    check(
        "node n1 port=0/tcp
         task web x2 port=0/tcp",
        "n1: web+2",
    );
}

#[test]
fn max_replicas_per_node() {
    check(
        "node n1
         node n2 tasks=web:1
         task web x4 max=2",
        "n1: web+2
         n2: web+1
         unplaced 1 web: no suitable node (max replicas per node limit reached on 2 nodes)",
    );
}

#[test]
fn platforms() {
    check(
        "node n1 platform=linux/amd64
         node n2 platform=linux/aarch64
         node n3 platform=windows/amd64
         task web x2 platform=linux/x86_64
         task arm x2 platform=linux/arm64
         task any x3",
        "n1: web+2 any+1
         n2: arm+2 any+1
         n3: any+1",
    );
    check(
        "node n1 platform=linux/amd64
         node n2 platform=linux/arm64
         task ppc x1 platform=linux/ppc64le platform=linux/s390x",
        "unplaced 1 ppc: no suitable node (unsupported platform on 2 nodes)",
    );
}

#[test]
fn constraints_all_apply() {
    check(
        "node n1 role=manager label.zone=a ip=192.0.2.1
         node n2 role=worker label.zone=a ip=192.0.2.2
         node n3 role=worker label.zone=b ip=198.51.100.3
         node n4 role=worker label.zone=a engine.ssd=true ip=192.0.2.4
         task web x4 constraint=node.role==worker constraint=node.labels.zone==A
         task db x2 constraint=engine.labels.ssd==true
         task edge x2 constraint=node.ip==192.0.2.0/24 constraint=node.hostname!=n2",
        "n1: edge+1
         n2: web+2
         n4: web+2 db+2 edge+1",
    );
}

#[test]
fn groups_share_node_state() {
    check(
        "node n1 cpu=2
         node n2 cpu=2
         task web x2 cpu=1
         task db x3 cpu=1",
        "n1: web+1 db+1
         n2: web+1 db+1
         unplaced 1 db: no suitable node (insufficient resources on 2 nodes)",
    );
}

#[test]
fn spread_over_a_label() {
    check(
        "node n1 label.dc=a
         node n2 label.dc=b
         node n3 label.dc=b
         task web x8 pref=node.labels.dc",
        "n1: web+4
         n2: web+2
         n3: web+2",
    );
}

#[test]
fn nested_spread_and_unlabelled_group() {
    check(
        "node n1 label.dc=a label.rack=1
         node n2 label.dc=a label.rack=2
         node n3 label.dc=a label.rack=2
         node n4 label.dc=b label.rack=1
         node n5
         task web x12 pref=node.labels.dc pref=node.labels.rack",
        "n1: web+2
         n2: web+1
         n3: web+1
         n4: web+4
         n5: web+4",
    );
}

#[test]
fn spread_counts_existing_tasks() {
    check(
        "node n1 label.dc=a tasks=web:4
         node n2 label.dc=b
         node n3 label.dc=b tasks=web:2
         task web x6 pref=node.labels.dc",
        "n1: web+2
         n2: web+3
         n3: web+1",
    );
}

#[test]
fn full_branch_overflows_to_others() {
    check(
        "node n1 label.dc=a cpu=1
         node n2 label.dc=b cpu=10
         task web x6 cpu=1 pref=node.labels.dc",
        "n1: web+1
         n2: web+5",
    );
    // A branch with no eligible node takes nothing.
    check(
        "node n1 label.dc=a status=down
         node n2 label.dc=b
         task web x3 pref=node.labels.dc",
        "n2: web+3",
    );
}

#[test]
fn engine_label_spread() {
    check(
        "node n1 engine.zone=x
         node n2 engine.zone=y
         node n3 engine.zone=y
         task web x4 pref=engine.labels.zone",
        "n1: web+2
         n2: web+1
         n3: web+1",
    );
}

#[test]
fn pinned_tasks_for_global_services() {
    check(
        "node n1
         node n2 status=down
         node n3 cpu=1
         task mon x1 on=n1
         task mon x1 on=n2
         task mon x1 on=ghost
         task mon x1 on=n3 cpu=2",
        "n1: mon+1
         unplaced 1 mon: no suitable node (1 node not available for new tasks)
         unplaced 1 mon: no suitable node
         unplaced 1 mon: no suitable node (insufficient resources on 1 node)",
    );
    // Pinned tasks go first, so they win resources over the others.
    check(
        "node n1 cpu=1
         task web x1 cpu=1
         task mon x1 on=n1 cpu=1",
        "n1: mon+1
         unplaced 1 web: no suitable node (insufficient resources on 1 node)",
    );
}

#[test]
fn groups_of_one_service_share_its_counts() {
    // Two specs of one service (a rolling update): the second sees the first's tasks.
    check(
        "node n1
         node n2
         task web x2 max=1
         task web x2 max=2 cpu=1",
        "n1: web+2
         n2: web+2",
    );
    // The pinned task goes first, so the first group finds n1 at its limit.
    check(
        "node n1
         node n2
         task web x2 max=1
         task web x2 max=1 cpu=1
         task web x1 on=n1 max=2",
        "n1: web+1
         n2: web+1
         unplaced 3 web: no suitable node (max replicas per node limit reached on 2 nodes)",
    );
}
