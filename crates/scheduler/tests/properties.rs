//! Property tests: no assignment breaks a filter, no task waits needlessly, spread is within one,
//! the seed decides.
//!
//! The filter check here is written independently of the library's pipeline: it replays the
//! assignments in the scheduler's documented order (pinned tasks first, then groups by first
//! appearance) against its own bookkeeping of resources, ports and counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use shoal_scheduler::{
    Availability, Constraint, Filter, HostPort, Node, NodeStatus, PlacementPreference, Platform, Resources, Role, Task,
    TaskSpec, schedule,
};

const SERVICES: [&str; 2] = ["web", "db"];
const CONSTRAINTS: [&str; 5] =
    ["node.labels.dc==a", "node.labels.dc!=b", "node.role==worker", "node.platform.arch==arm64", "node.hostname!=n0"];

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        (0u8..10, 0u8..10, any::<bool>()),
        (0u64..5, 0u64..8, 0u64..3),
        (
            prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
            prop::option::of(prop::sample::select(vec!["1", "2"])),
        ),
        (any::<bool>(), any::<bool>()),
        (0u64..4, 0u64..4, 0u32..7),
    )
        .prop_map(move |((status, avail, manager), (cpu, mem, gpu), (dc, rack), (arm, port), (web, db, fail))| {
            let mut node = Node::new(format!("n{i}"));
            node.status = if status == 0 { NodeStatus::Down } else { NodeStatus::Ready };
            node.availability = match avail {
                0 => Availability::Drain,
                1 => Availability::Pause,
                _ => Availability::Active,
            };
            node.role = if manager { Role::Manager } else { Role::Worker };
            node.platform = Platform::new("linux", if arm { "arm64" } else { "amd64" });
            node.total = Resources::new(cpu * 1_000_000_000, mem << 30).with_generic("gpu", gpu);
            if let Some(dc) = dc {
                node.labels.insert("dc".into(), dc.into());
            }
            if let Some(rack) = rack {
                node.labels.insert("rack".into(), rack.into());
            }
            if port {
                node.host_ports.push(HostPort::tcp(80));
            }
            node.tasks_by_service.insert("web".into(), web);
            node.tasks_by_service.insert("db".into(), db);
            node.recent_failures.insert("web".into(), fail);
            node
        })
}

fn arb_nodes(max: usize) -> impl Strategy<Value = Vec<Node>> {
    (0..=max).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

fn arb_spec() -> impl Strategy<Value = TaskSpec> {
    (
        (0u64..3, 0u64..3, 0u64..2),
        prop::collection::vec(0..CONSTRAINTS.len(), 0..3),
        0u8..4,
        0u64..3,
        any::<bool>(),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|((cpu, mem, gpu), constraints, prefs, max, port, platform)| {
            let mut spec = TaskSpec {
                reservations: Resources::new(cpu * 500_000_000, mem << 29),
                max_replicas: max,
                ..TaskSpec::default()
            };
            if gpu > 0 {
                spec.reservations.generic.insert("gpu".into(), gpu);
            }
            spec.constraints =
                constraints.into_iter().map(|c| Constraint::parse(CONSTRAINTS[c]).expect("valid constraint")).collect();
            if prefs & 1 != 0 {
                spec.preferences.push(PlacementPreference::spread_node_label("dc"));
            }
            if prefs & 2 != 0 {
                spec.preferences.push(PlacementPreference::spread_node_label("rack"));
            }
            if port {
                spec.host_ports.push(HostPort::tcp(80));
            }
            if let Some(arm) = platform {
                spec.platforms.push(Platform::new("linux", if arm { "aarch64" } else { "x86_64" }));
            }
            spec
        })
}

/// Tasks drawn from three specs, some pinned to a node (which may not exist).
fn arb_tasks() -> impl Strategy<Value = Vec<Task>> {
    (
        prop::collection::vec(arb_spec(), 3),
        prop::collection::vec((0usize..3, 0usize..2, prop::option::weighted(0.2, 0usize..12)), 0..40),
    )
        .prop_map(|(specs, picks)| {
            let specs: Vec<Arc<TaskSpec>> = specs.into_iter().map(Arc::new).collect();
            picks
                .into_iter()
                .enumerate()
                .map(|(i, (spec, service, pinned))| {
                    let mut task = Task::new(format!("t{i}"), SERVICES[service], specs[spec].clone());
                    task.node_id = pinned.map(|n| format!("n{n}"));
                    task
                })
                .collect()
        })
}

/// The checker's own bookkeeping for one node.
struct Book {
    cpu: u64,
    mem: u64,
    gpu: u64,
    ports: Vec<HostPort>,
    by_service: BTreeMap<String, u64>,
}

fn arch(a: &str) -> &str {
    match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Why `task` may not go to `node` now, as the checker sees it.
fn violation(node: &Node, book: &Book, task: &Task) -> Option<&'static str> {
    let spec = &task.spec;
    if node.status != NodeStatus::Ready || node.availability != Availability::Active {
        return Some("node not ready and active");
    }
    let gpu = spec.reservations.generic.get("gpu").copied().unwrap_or(0);
    if spec.reservations.nano_cpus > book.cpu || spec.reservations.memory_bytes > book.mem || gpu > book.gpu {
        return Some("resources exceeded");
    }
    if !spec.constraints.iter().all(|c| c.matches(node)) {
        return Some("constraint broken");
    }
    if !spec.platforms.is_empty()
        && !spec.platforms.iter().any(|p| p.os == node.platform.os && arch(&p.arch) == node.platform.arch)
    {
        return Some("platform unsupported");
    }
    if spec.host_ports.iter().any(|p| book.ports.contains(p)) {
        return Some("host port taken");
    }
    let count = book.by_service.get(&task.service_id).copied().unwrap_or(0);
    if spec.max_replicas != 0 && count >= spec.max_replicas {
        return Some("max replicas exceeded");
    }
    None
}

/// Replays the placement and returns the first broken filter, if any.
fn check_assignments(nodes: &[Node], tasks: &[Task], seed: u64) -> Result<(), String> {
    let placement = schedule(nodes, tasks, seed);
    let node_of: HashMap<&str, &str> =
        placement.assignments.iter().map(|a| (a.task_id.as_str(), a.node_id.as_str())).collect();
    if placement.assignments.len() + placement.unplaced.len() != tasks.len() {
        return Err("a task is neither placed nor explained".into());
    }
    for u in &placement.unplaced {
        let task = tasks.iter().find(|t| t.id == u.task_id).ok_or("unknown task")?;
        let expected = match &task.node_id {
            Some(id) => u32::from(nodes.iter().any(|n| &n.id == id)),
            None => nodes.len() as u32,
        };
        if u.explanation.nodes() != expected {
            return Err(format!(
                "explanation for {} counts {} nodes, expected {expected}",
                u.task_id,
                u.explanation.nodes()
            ));
        }
    }

    // The scheduler's order: pinned tasks, then groups by first appearance.
    let mut group_of: Vec<(&str, &TaskSpec)> = Vec::new();
    let mut order: Vec<(usize, usize)> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let rank = if t.node_id.is_some() {
            0
        } else {
            let key = (t.service_id.as_str(), &*t.spec);
            1 + match group_of.iter().position(|g| *g == key) {
                Some(g) => g,
                None => {
                    group_of.push(key);
                    group_of.len() - 1
                }
            }
        };
        order.push((rank, i));
    }
    order.sort();

    let mut books: HashMap<&str, Book> = nodes
        .iter()
        .map(|n| {
            let book = Book {
                cpu: n.total.nano_cpus - n.reserved.nano_cpus,
                mem: n.total.memory_bytes - n.reserved.memory_bytes,
                gpu: n.total.generic.get("gpu").copied().unwrap_or(0),
                ports: n.host_ports.clone(),
                by_service: n.tasks_by_service.clone(),
            };
            (n.id.as_str(), book)
        })
        .collect();
    for (_, i) in order {
        let task = &tasks[i];
        let Some(&node_id) = node_of.get(task.id.as_str()) else {
            continue;
        };
        if let Some(pinned) = &task.node_id
            && pinned != node_id
        {
            return Err(format!("{} pinned to {pinned} went to {node_id}", task.id));
        }
        let node = nodes.iter().find(|n| n.id == node_id).ok_or("unknown node")?;
        let book = books.get_mut(node_id).ok_or("unknown node")?;
        if let Some(why) = violation(node, book, task) {
            return Err(format!("{} on {node_id}: {why}", task.id));
        }
        let r = &task.spec.reservations;
        book.cpu -= r.nano_cpus;
        book.mem -= r.memory_bytes;
        book.gpu -= r.generic.get("gpu").copied().unwrap_or(0);
        book.ports.extend(task.spec.host_ports.iter().copied());
        *book.by_service.entry(task.service_id.clone()).or_insert(0) += 1;
    }

    // Nothing is left pending needlessly: filters only get stricter as tasks are placed, so a
    // task the scheduler gave up on must fit no node (or not its pinned node) at the end.
    for u in &placement.unplaced {
        let task = tasks.iter().find(|t| t.id == u.task_id).ok_or("unknown task")?;
        for node in nodes.iter().filter(|n| task.node_id.as_ref().is_none_or(|id| *id == n.id)) {
            let book = books.get(node.id.as_str()).ok_or("unknown node")?;
            if violation(node, book, task).is_none() {
                return Err(format!("{} left pending but fits {}: {}", task.id, node.id, u.explanation));
            }
        }
    }
    Ok(())
}

/// Equal, ready, unconstrained nodes with random spread labels.
fn arb_labelled_nodes() -> impl Strategy<Value = Vec<Node>> {
    prop::collection::vec((0u8..4, 0u8..3), 1..30).prop_map(|labels| {
        labels
            .into_iter()
            .enumerate()
            .map(|(i, (dc, rack))| {
                let mut node = Node::new(format!("n{i}"));
                if dc < 3 {
                    node.labels.insert("dc".into(), format!("dc{dc}"));
                }
                if rack < 2 {
                    node.labels.insert("rack".into(), format!("r{rack}"));
                }
                node
            })
            .collect()
    })
}

fn spread_within_one(counts: impl IntoIterator<Item = u64>) -> bool {
    let counts: Vec<u64> = counts.into_iter().collect();
    match (counts.iter().min(), counts.iter().max()) {
        (Some(min), Some(max)) => max - min <= 1,
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_assignment_breaks_a_filter(nodes in arb_nodes(12), tasks in arb_tasks(), seed in any::<u64>()) {
        if let Err(e) = check_assignments(&nodes, &tasks, seed) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn same_seed_same_result(nodes in arb_nodes(12), tasks in arb_tasks(), seed in any::<u64>()) {
        prop_assert_eq!(schedule(&nodes, &tasks, seed), schedule(&nodes, &tasks, seed));
    }

    #[test]
    fn snapshot_order_does_not_matter(nodes in arb_nodes(12), tasks in arb_tasks(), seed in any::<u64>()) {
        let mut reversed = nodes.clone();
        reversed.reverse();
        prop_assert_eq!(schedule(&nodes, &tasks, seed), schedule(&reversed, &tasks, seed));
    }

    #[test]
    fn plain_spread_differs_by_at_most_one(nodes in 1usize..40, tasks in 0usize..300, seed in any::<u64>()) {
        let nodes: Vec<Node> = (0..nodes).map(|i| Node::new(format!("n{i}"))).collect();
        let spec = Arc::new(TaskSpec::default());
        let tasks: Vec<Task> = (0..tasks).map(|i| Task::new(format!("t{i}"), "web", spec.clone())).collect();
        let placement = schedule(&nodes, &tasks, seed);
        prop_assert_eq!(placement.assignments.len(), tasks.len());
        let mut per_node: HashMap<&str, u64> = nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
        for a in &placement.assignments {
            *per_node.entry(a.node_id.as_str()).or_insert(0) += 1;
        }
        prop_assert!(spread_within_one(per_node.values().copied()), "{:?}", per_node);
    }

    #[test]
    fn nested_spread_differs_by_at_most_one_per_level(nodes in arb_labelled_nodes(), tasks in 0usize..200, seed in any::<u64>()) {
        let spec = Arc::new(TaskSpec {
            preferences: vec![
                PlacementPreference::spread_node_label("dc"),
                PlacementPreference::spread_node_label("rack"),
            ],
            ..TaskSpec::default()
        });
        let tasks: Vec<Task> = (0..tasks).map(|i| Task::new(format!("t{i}"), "web", spec.clone())).collect();
        let placement = schedule(&nodes, &tasks, seed);
        prop_assert_eq!(placement.assignments.len(), tasks.len());
        let node = |id: &str| nodes.iter().find(|n| n.id == id).expect("placed on a known node");
        // Counts per dc, per (dc, rack) and per node; missing labels are groups of their own.
        let mut dc: BTreeMap<Option<&str>, u64> = BTreeMap::new();
        let mut rack: BTreeMap<(Option<&str>, Option<&str>), u64> = BTreeMap::new();
        let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
        for n in &nodes {
            let d = n.labels.get("dc").map(String::as_str);
            let r = n.labels.get("rack").map(String::as_str);
            dc.entry(d).or_insert(0);
            rack.entry((d, r)).or_insert(0);
            per_node.insert(n.id.as_str(), 0);
        }
        for a in &placement.assignments {
            let n = node(&a.node_id);
            let d = n.labels.get("dc").map(String::as_str);
            let r = n.labels.get("rack").map(String::as_str);
            *dc.entry(d).or_insert(0) += 1;
            *rack.entry((d, r)).or_insert(0) += 1;
            *per_node.entry(n.id.as_str()).or_insert(0) += 1;
        }
        prop_assert!(spread_within_one(dc.values().copied()), "dcs {:?}", dc);
        for (&d, _) in dc.iter() {
            let racks = rack.iter().filter(|((rd, _), _)| *rd == d).map(|(_, &c)| c);
            prop_assert!(spread_within_one(racks), "racks in {:?}: {:?}", d, rack);
            for (&(rd, rr), _) in rack.iter().filter(|((rd, _), _)| *rd == d) {
                let in_rack = nodes.iter().filter(|n| {
                    n.labels.get("dc").map(String::as_str) == rd && n.labels.get("rack").map(String::as_str) == rr
                });
                let counts = in_rack.map(|n| per_node[n.id.as_str()]);
                prop_assert!(spread_within_one(counts), "nodes in {:?}/{:?}: {:?}", rd, rr, per_node);
            }
        }
    }

    #[test]
    fn explanations_count_what_each_filter_rejects(nodes in arb_nodes(12), tasks in arb_tasks(), seed in any::<u64>()) {
        let placement = schedule(&nodes, &tasks, seed);
        let ready = |n: &Node| n.status == NodeStatus::Ready && n.availability == Availability::Active;
        for u in &placement.unplaced {
            let task = tasks.iter().find(|t| t.id == u.task_id).expect("unplaced task is in the batch");
            if task.node_id.is_some() {
                continue; // one node or none; checked by no_assignment_breaks_a_filter
            }
            let e = &u.explanation;
            // Ready is first in the pipeline and does not change: it rejects exactly the nodes
            // that are not ready and active.
            prop_assert_eq!(e.count(Filter::Ready), nodes.iter().filter(|n| !ready(n)).count() as u32);
            // Constraints come after resources, so they reject at most the ready nodes they fail.
            let failing_constraints = nodes
                .iter()
                .filter(|n| ready(n) && !task.spec.constraints.iter().all(|c| c.matches(n)))
                .count() as u32;
            prop_assert!(e.count(Filter::Constraints) <= failing_constraints, "{} > {}", e, failing_constraints);
            // Each filter that rejected a node is named, the one that rejected most first.
            let text = e.to_string();
            prop_assert!(text.starts_with("no suitable node"));
            let named = Filter::ALL.iter().filter(|&&f| e.count(f) > 0).count();
            let listed = if named == 0 { 0 } else { text.matches("; ").count() + 1 };
            prop_assert_eq!(listed, named, "{}", text);
        }
    }
}
