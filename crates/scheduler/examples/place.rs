//! Example: place a replicated service spread over datacenters, explain what did not fit, and
//! list where a global service runs. Run with `cargo run -p shoal-scheduler --example place`.
// An example shows its result on standard output.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_scheduler::{
    Constraint, ConstraintError, NodeStatus, PlacementPreference, Resources, Role, Task, TaskSpec, eligible_nodes,
    schedule,
};
use shoal_scheduler::{Node, Platform};

fn node(id: &str, dc: &str, cpus: u64, role: Role) -> Node {
    let mut node = Node::new(id);
    node.role = role;
    node.platform = Platform::new("linux", "amd64");
    node.total = Resources::new(cpus * 1_000_000_000, 8 << 30);
    node.labels.insert("dc".into(), dc.into());
    node
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut nodes = vec![
        node("mgr-1", "east", 2, Role::Manager),
        node("east-1", "east", 4, Role::Worker),
        node("east-2", "east", 4, Role::Worker),
        node("west-1", "west", 4, Role::Worker),
        node("west-2", "west", 4, Role::Worker),
    ];
    nodes[4].status = NodeStatus::Down;

    // User input is validated by the same parser the scheduler uses.
    let constraints =
        ["node.role==worker"].iter().map(|c| c.parse::<Constraint>()).collect::<Result<Vec<_>, ConstraintError>>()?;
    let web = Arc::new(TaskSpec {
        reservations: Resources::new(1_000_000_000, 512 << 20),
        constraints,
        preferences: vec!["spread=node.labels.dc".parse::<PlacementPreference>()?],
        ..TaskSpec::default()
    });
    let tasks: Vec<Task> = (1..=13).map(|i| Task::new(format!("web.{i}"), "web", web.clone())).collect();

    let placement = schedule(&nodes, &tasks, 2026);
    let mut per_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in &placement.assignments {
        per_node.entry(&a.node_id).or_default().push(&a.task_id);
    }
    for (node, tasks) in &per_node {
        println!("{node}: {}", tasks.join(", "));
    }
    for u in &placement.unplaced {
        println!("{} pending: {}", u.task_id, u.explanation);
    }

    // A global service: one task per eligible node.
    let agent = TaskSpec::default();
    println!("global service runs on: {}", eligible_nodes(&nodes, &agent).join(", "));

    match Constraint::parse("node.labels.dc=east") {
        Ok(_) => {}
        Err(e) => println!("rejected: {e}"),
    }
    Ok(())
}
