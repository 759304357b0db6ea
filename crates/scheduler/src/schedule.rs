//! The placement algorithm: group equal tasks, then place each group through a decision tree.
//!
//! Tasks of one service with one spec form a group. For a group, the static filters (ready,
//! constraints, platform) are evaluated once per node; the nodes that pass go into a tree with
//! one level per spread preference and a min-heap of nodes at each leaf, keyed by
//! (failing, service tasks, total tasks, seeded tie-break) packed into a `u128`. Each inner
//! branch keeps a min-heap of its children keyed by (service tasks below, tie-break). Placing
//! a task walks from the root to the emptiest leaf and takes its best node: O(depth·log n) per
//! task, no sorting. Within a group the dynamic filters (resources, host ports, max replicas)
//! only get stricter, so a node that fails one is dropped from the heap for good.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::collections::binary_heap::PeekMut;

use crate::constraint::Constraint;
use crate::filter::{Explanation, NodeState, first_failure, passes_dynamic, passes_static};
use crate::model::{Node, Platform, Task, TaskSpec};
use crate::preference::PlacementPreference;
use crate::rng::{hash_str, splitmix64};

/// Failures of a service on a node, within the window, at which the node goes last.
pub const FAILURE_THRESHOLD: u32 = 5;

/// One task placed on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The task.
    pub task_id: String,
    /// The node it goes to.
    pub node_id: String,
}

/// One task that no node can take now, and why.
///
/// A task pinned to a node the snapshot does not have gets an explanation that counts no node
/// (`no suitable node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The task.
    pub task_id: String,
    /// Per filter, how many nodes it rejected.
    pub explanation: Explanation,
}

/// The result of [`schedule`]: both lists follow the order of the input batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Tasks placed.
    pub assignments: Vec<Assignment>,
    /// Tasks left pending, with explanations.
    pub unplaced: Vec<Unplaced>,
}

/// Places a batch of tasks onto a snapshot of nodes.
///
/// Deterministic: the same nodes, tasks and `seed` give the same placement. Tasks pinned to a
/// node (global services) are placed first, then the other tasks group by group in the order
/// each (service, spec) first appears in the batch. Every placement updates the node's free
/// resources, ports and task counts before the next task is considered.
pub fn schedule(nodes: &[Node], tasks: &[Task], seed: u64) -> Placement {
    let mut pass = Pass::new(nodes, seed);
    let mut outcome: Vec<Outcome> = vec![Outcome::Pending; tasks.len()];

    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut index: HashMap<(&str, &TaskSpec), usize> = HashMap::new();
    let mut pinned = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if task.node_id.is_some() {
            pinned.push(i);
            continue;
        }
        // Batches usually list a service's tasks together: try the last group before hashing.
        let same_as_last = groups.last().is_some_and(|g: &Group<'_>| {
            g.service == task.service_id && (std::ptr::eq(g.spec, &*task.spec) || *g.spec == *task.spec)
        });
        let g = if same_as_last {
            groups.len() - 1
        } else {
            *index.entry((task.service_id.as_str(), &*task.spec)).or_insert_with(|| {
                groups.push(Group { service: &task.service_id, spec: &task.spec, tasks: Vec::new() });
                groups.len() - 1
            })
        };
        groups[g].tasks.push(i);
    }

    if !pinned.is_empty() {
        let by_id: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
        for &t in &pinned {
            let task = &tasks[t];
            let node = task.node_id.as_deref().and_then(|id| by_id.get(id).copied());
            outcome[t] = match node {
                Some(n) => pass.place_pinned(&task.service_id, &task.spec, n),
                None => Outcome::Unplaced(Explanation::default()),
            };
        }
    }
    for group in &groups {
        pass.place_group(group, &mut outcome);
    }

    let mut placement = Placement::default();
    for (task, outcome) in tasks.iter().zip(outcome) {
        match outcome {
            Outcome::Placed(n) => placement
                .assignments
                .push(Assignment { task_id: task.id.clone(), node_id: nodes[n as usize].id.clone() }),
            Outcome::Unplaced(explanation) => {
                placement.unplaced.push(Unplaced { task_id: task.id.clone(), explanation })
            }
            // Every task belongs to a group or is pinned, so none is left pending.
            Outcome::Pending => {
                placement.unplaced.push(Unplaced { task_id: task.id.clone(), explanation: Explanation::default() })
            }
        }
    }
    placement
}

/// The nodes where a global service with `spec` should start a task now: those that are ready
/// and active and meet the constraints and platforms.
///
/// Resources, host ports and max replicas are left out on purpose: a global task on a node
/// short of memory should exist and stay pending with an explanation, as in Swarm, and
/// [`schedule`] with [`Task::pinned`] checks them. A node missing from the list does not by
/// itself mean its existing task must go: Swarm keeps tasks on paused nodes and removes them
/// from drained nodes or when the constraints stop matching; that policy is the caller's.
pub fn eligible_nodes<'a>(nodes: &'a [Node], spec: &TaskSpec) -> Vec<&'a str> {
    nodes.iter().filter(|n| passes_static(n, spec)).map(|n| n.id.as_str()).collect()
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Pending,
    Placed(u32),
    Unplaced(Explanation),
}

#[derive(Debug)]
struct Group<'a> {
    service: &'a str,
    spec: &'a TaskSpec,
    tasks: Vec<usize>,
}

/// State shared by all groups of one call.
///
/// Per-service counts are kept sparse (what the snapshot says plus what this pass placed) and
/// expanded into one reused buffer per group, so a batch of many services costs memory in
/// proportion to its tasks, not to services × nodes.
#[derive(Debug)]
struct Pass<'a> {
    nodes: &'a [Node],
    states: Vec<NodeState>,
    /// Per service, (node, tasks) for the nodes the snapshot gives tasks of it.
    snapshot_tasks: HashMap<&'a str, Vec<(u32, u64)>>,
    /// Per service, tasks placed on each node during this pass.
    placed: HashMap<&'a str, HashMap<u32, u64>>,
    /// Per service, the nodes with at least [`FAILURE_THRESHOLD`] recent failures (ascending).
    failing: HashMap<&'a str, Vec<u32>>,
    /// Static filter results (ready, constraints, platform), per distinct constraints and
    /// platforms: services often share them.
    static_ok: HashMap<(&'a [Constraint], &'a [Platform]), Vec<bool>>,
    /// The current group's per-node task counts of its service.
    counts: Vec<u64>,
    /// `counts` as the group started, to find what it placed.
    counts_before: Vec<u64>,
    node_hash: Vec<u64>,
    seed: u64,
}

impl<'a> Pass<'a> {
    fn new(nodes: &'a [Node], seed: u64) -> Self {
        let mut snapshot_tasks: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
        let mut failing: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for (service, &n) in &node.tasks_by_service {
                if n > 0 {
                    snapshot_tasks.entry(service).or_default().push((i as u32, n));
                }
            }
            for (service, &f) in &node.recent_failures {
                if f >= FAILURE_THRESHOLD {
                    failing.entry(service).or_default().push(i as u32);
                }
            }
        }
        Pass {
            nodes,
            states: nodes.iter().map(NodeState::new).collect(),
            snapshot_tasks,
            placed: HashMap::new(),
            failing,
            static_ok: HashMap::new(),
            counts: Vec::new(),
            counts_before: Vec::new(),
            node_hash: nodes.iter().map(|n| hash_str(&n.id)).collect(),
            seed: splitmix64(seed),
        }
    }

    /// The service's tasks on node `n`, including those placed in this pass.
    fn count_on(&self, service: &str, n: u32) -> u64 {
        let snapshot = self.nodes[n as usize].tasks_by_service.get(service).copied().unwrap_or(0);
        let placed = self.placed.get(service).and_then(|p| p.get(&n)).copied().unwrap_or(0);
        snapshot + placed
    }

    /// Fills `self.counts` with the service's tasks on every node.
    fn load_counts(&mut self, service: &str) {
        self.counts.clear();
        self.counts.resize(self.nodes.len(), 0);
        for &(n, c) in self.snapshot_tasks.get(service).into_iter().flatten() {
            self.counts[n as usize] += c;
        }
        for (&n, &c) in self.placed.get(service).into_iter().flatten() {
            self.counts[n as usize] += c;
        }
    }

    fn record(&mut self, service: &'a str, n: u32) {
        *self.placed.entry(service).or_default().entry(n).or_insert(0) += 1;
    }

    fn place_pinned(&mut self, service: &'a str, spec: &TaskSpec, n: usize) -> Outcome {
        let node = &self.nodes[n];
        let count = self.count_on(service, n as u32);
        match first_failure(node, &self.states[n], count, spec) {
            None => {
                self.states[n].take(spec);
                self.record(service, n as u32);
                Outcome::Placed(n as u32)
            }
            Some(filter) => {
                let mut e = Explanation::default();
                e.add(filter);
                Outcome::Unplaced(e)
            }
        }
    }

    fn place_group(&mut self, group: &Group<'a>, outcome: &mut [Outcome]) {
        let nodes = self.nodes;
        let spec = group.spec;
        let service_hash = hash_str(group.service) ^ self.seed;
        self.load_counts(group.service);
        self.counts_before.clone_from(&self.counts);
        let static_ok = self
            .static_ok
            .entry((&spec.constraints, &spec.platforms))
            .or_insert_with(|| nodes.iter().map(|n| passes_static(n, spec)).collect());

        let failing_nodes = self.failing.get(group.service).map_or(&[][..], Vec::as_slice);
        let failing = |i: usize| failing_nodes.binary_search(&(i as u32)).is_ok();
        let node_hash = &self.node_hash;
        let tiebreak = |i: usize| splitmix64(node_hash[i] ^ service_hash);
        let (states, counts) = (&self.states, &self.counts);
        let candidate = |i: usize| static_ok[i] && passes_dynamic(&states[i], counts[i], spec);
        let key = |i: usize| node_key(failing(i), counts[i], states[i].total_tasks, tiebreak(i));
        let mut tree = Tree::build(nodes, &spec.preferences, counts, service_hash, candidate, key);
        let mut ctx = Ctx { states: &mut self.states, counts: &mut self.counts, spec };
        let mut placed = 0;
        for &t in &group.tasks {
            match tree.pick(0, &mut ctx) {
                Some(n) => outcome[t] = Outcome::Placed(n),
                None => break,
            }
            placed += 1;
        }
        // Remember what this group added, as a sparse per-node delta.
        if placed > 0 {
            let added = self.placed.entry(group.service).or_default();
            for (i, (&now, &before)) in self.counts.iter().zip(&self.counts_before).enumerate() {
                if now != before {
                    *added.entry(i as u32).or_insert(0) += now - before;
                }
            }
        }
        let pending = &group.tasks[placed..];
        if !pending.is_empty() {
            // Nothing more fits: explain once, with the state after the last placement.
            let mut e = Explanation::default();
            for (i, node) in nodes.iter().enumerate() {
                if let Some(f) = first_failure(node, &self.states[i], self.counts[i], spec) {
                    e.add(f);
                }
            }
            for &t in pending {
                outcome[t] = Outcome::Unplaced(e);
            }
        }
    }
}

/// What the tree needs to test and update nodes while placing one group.
struct Ctx<'s> {
    states: &'s mut [NodeState],
    counts: &'s mut [u64],
    spec: &'s TaskSpec,
}

impl Ctx<'_> {
    fn fits(&self, n: usize) -> bool {
        passes_dynamic(&self.states[n], self.counts[n], self.spec)
    }

    fn take(&mut self, n: usize) {
        self.states[n].take(self.spec);
        self.counts[n] += 1;
    }
}

const FAILING_BIT: u128 = 1 << 127;
const TIEBREAK_MASK: u128 = u64::MAX as u128;

/// A node's rank: lower is better. Counts saturate far beyond any real cluster.
fn node_key(failing: bool, service_tasks: u64, total_tasks: u64, tiebreak: u64) -> u128 {
    let service = service_tasks.min((1 << 31) - 1) as u128;
    let total = total_tasks.min(u32::MAX as u64) as u128;
    (if failing { FAILING_BIT } else { 0 }) | service << 96 | total << 64 | tiebreak as u128
}

enum Branch {
    /// Children keyed by (service tasks below, tie-break, index).
    Inner(BinaryHeap<Reverse<(u64, u64, u32)>>),
    /// Nodes keyed by [`node_key`].
    Leaf(BinaryHeap<Reverse<(u128, u32)>>),
}

/// Branches of the spread tree; index 0 is the root.
struct Tree {
    branches: Vec<Branch>,
}

impl Tree {
    /// Builds the tree for one group. `counts` are the service's tasks per node, `candidate`
    /// says whether a node passes every filter now, and `key` ranks a candidate.
    fn build(
        nodes: &[Node],
        preferences: &[PlacementPreference],
        counts: &[u64],
        service_hash: u64,
        candidate: impl Fn(usize) -> bool,
        key: impl Fn(usize) -> u128,
    ) -> Tree {
        let leaf_entry = |i: usize| Reverse((key(i), i as u32));

        if preferences.is_empty() {
            let heap = (0..nodes.len()).filter(|&i| candidate(i)).map(leaf_entry).collect();
            return Tree { branches: vec![Branch::Leaf(heap)] };
        }

        // First pass: give every branch its service task count (all nodes count, eligible or
        // not, since tasks already there are part of the spread) and collect leaf nodes.
        struct Building {
            count: u64,
            tiebreak: u64,
            children: Vec<u32>,
            nodes: Vec<u32>,
        }
        let mut building = vec![Building { count: 0, tiebreak: 0, children: Vec::new(), nodes: Vec::new() }];
        let mut child_of: HashMap<(u32, Option<&str>), u32> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let mut b = 0u32;
            building[0].count += counts[i];
            for (level, pref) in preferences.iter().enumerate() {
                let value = pref.value_of(node);
                let next = match child_of.get(&(b, value)) {
                    Some(&c) => c,
                    None => {
                        let c = building.len() as u32;
                        let value_hash = value.map_or(0, hash_str);
                        building.push(Building {
                            count: 0,
                            tiebreak: splitmix64(value_hash ^ service_hash ^ level as u64),
                            children: Vec::new(),
                            nodes: Vec::new(),
                        });
                        building[b as usize].children.push(c);
                        child_of.insert((b, value), c);
                        c
                    }
                };
                b = next;
                building[b as usize].count += counts[i];
            }
            if candidate(i) {
                building[b as usize].nodes.push(i as u32);
            }
        }
        let branches = building
            .iter()
            .map(|bl| {
                if bl.children.is_empty() {
                    Branch::Leaf(bl.nodes.iter().map(|&i| leaf_entry(i as usize)).collect())
                } else {
                    Branch::Inner(
                        bl.children
                            .iter()
                            .map(|&c| {
                                let child = &building[c as usize];
                                Reverse((child.count, child.tiebreak, c))
                            })
                            .collect(),
                    )
                }
            })
            .collect();
        Tree { branches }
    }

    /// Places one task below branch `b`; `None` when no node below can take it.
    fn pick(&mut self, b: usize, ctx: &mut Ctx<'_>) -> Option<u32> {
        match &mut self.branches[b] {
            Branch::Leaf(heap) => loop {
                let mut top = heap.peek_mut()?;
                let Reverse((key, n)) = *top;
                let node = n as usize;
                if !ctx.fits(node) {
                    PeekMut::pop(top);
                    continue;
                }
                ctx.take(node);
                let failing = key & FAILING_BIT != 0;
                let tiebreak = (key & TIEBREAK_MASK) as u64;
                *top = Reverse((node_key(failing, ctx.counts[node], ctx.states[node].total_tasks, tiebreak), n));
                return Some(n);
            },
            Branch::Inner(_) => loop {
                let Branch::Inner(heap) = &mut self.branches[b] else {
                    return None;
                };
                let Reverse((count, tiebreak, child)) = heap.pop()?;
                if let Some(n) = self.pick(child as usize, ctx) {
                    if let Branch::Inner(heap) = &mut self.branches[b] {
                        heap.push(Reverse((count + 1, tiebreak, child)));
                    }
                    return Some(n);
                }
                // The child has no room left: it stays out of the heap.
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn node_key_orders_failing_then_service_then_total_then_tiebreak() {
        // Each row must rank strictly before the next.
        let ranked = [
            node_key(false, 0, 0, u64::MAX),
            node_key(false, 0, 1, 0),
            node_key(false, 1, 0, 0),
            node_key(false, 1, u64::MAX, 0),
            node_key(false, u64::MAX, u64::MAX, u64::MAX),
            node_key(true, 0, 0, 0),
        ];
        for pair in ranked.windows(2) {
            assert!(pair[0] < pair[1], "{:x} should rank before {:x}", pair[0], pair[1]);
        }
    }

    #[test]
    fn the_seed_decides_ties() {
        let nodes: Vec<Node> = (0..10).map(|i| Node::new(format!("n{i}"))).collect();
        let tasks = [Task::new("t", "web", Arc::new(TaskSpec::default()))];
        let chosen: std::collections::BTreeSet<String> =
            (0..32).map(|seed| schedule(&nodes, &tasks, seed).assignments[0].node_id.clone()).collect();
        assert!(chosen.len() > 3, "seeds should spread first picks, got {chosen:?}");
    }

    #[test]
    fn output_follows_input_order() {
        let nodes = [Node::new("n1")];
        let a = Arc::new(TaskSpec::default());
        let b = Arc::new(TaskSpec { max_replicas: 1, ..TaskSpec::default() });
        let tasks = [
            Task::new("b1", "svc-b", b.clone()),
            Task::new("a1", "svc-a", a.clone()),
            Task::new("b2", "svc-b", b),
            Task::pinned("a2", "svc-a", a, "n1"),
        ];
        let placement = schedule(&nodes, &tasks, 0);
        let placed: Vec<&str> = placement.assignments.iter().map(|a| a.task_id.as_str()).collect();
        assert_eq!(placed, ["b1", "a1", "a2"]);
        assert_eq!(placement.unplaced[0].task_id, "b2");
    }

    #[test]
    fn eligible_nodes_for_a_global_service() {
        let mut nodes: Vec<Node> = (1..=4).map(|i| Node::new(format!("n{i}"))).collect();
        nodes[0].availability = crate::Availability::Drain;
        nodes[1].labels.insert("gpu".into(), "no".into());
        nodes[2].total = crate::Resources::new(0, 0);
        let spec = TaskSpec {
            constraints: vec![crate::Constraint::parse("node.labels.gpu!=no").expect("valid")],
            reservations: crate::Resources::new(1, 1),
            ..TaskSpec::default()
        };
        // n3 lacks resources but is still eligible: its task waits with an explanation.
        assert_eq!(eligible_nodes(&nodes, &spec), ["n3", "n4"]);
    }
}
