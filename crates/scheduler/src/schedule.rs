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

use crate::filter::{Explanation, NodeState, first_failure, passes_dynamic, passes_static};
use crate::model::{Node, Task, TaskSpec};
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
            g.service == task.service_id
                && (std::ptr::eq(g.spec, &*task.spec) || *g.spec == *task.spec)
        });
        let g = if same_as_last {
            groups.len() - 1
        } else {
            *index
                .entry((task.service_id.as_str(), &*task.spec))
                .or_insert_with(|| {
                    groups.push(Group {
                        service: &task.service_id,
                        spec: &task.spec,
                        tasks: Vec::new(),
                    });
                    groups.len() - 1
                })
        };
        groups[g].tasks.push(i);
    }

    if !pinned.is_empty() {
        let by_id: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        for &t in &pinned {
            let task = &tasks[t];
            let node = task
                .node_id
                .as_deref()
                .and_then(|id| by_id.get(id).copied());
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
            Outcome::Placed(n) => placement.assignments.push(Assignment {
                task_id: task.id.clone(),
                node_id: nodes[n as usize].id.clone(),
            }),
            Outcome::Unplaced(explanation) => placement.unplaced.push(Unplaced {
                task_id: task.id.clone(),
                explanation,
            }),
            // Every task belongs to a group or is pinned, so none is left pending.
            Outcome::Pending => placement.unplaced.push(Unplaced {
                task_id: task.id.clone(),
                explanation: Explanation::default(),
            }),
        }
    }
    placement
}

/// The nodes where a global service with `spec` should run a task: those that are ready and
/// active and meet the constraints and platforms.
///
/// Resources, host ports and max replicas are left out on purpose: a global task on a node
/// short of memory should exist and stay pending with an explanation, as in Swarm, and
/// [`schedule`] with [`Task::pinned`] checks them.
pub fn eligible_nodes<'a>(nodes: &'a [Node], spec: &TaskSpec) -> Vec<&'a str> {
    nodes
        .iter()
        .filter(|n| passes_static(n, spec))
        .map(|n| n.id.as_str())
        .collect()
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
#[derive(Debug)]
struct Pass<'a> {
    nodes: &'a [Node],
    states: Vec<NodeState>,
    /// Per service, its task count on each node, created on first use.
    service_tasks: HashMap<&'a str, Vec<u64>>,
    node_hash: Vec<u64>,
    seed: u64,
}

impl<'a> Pass<'a> {
    fn new(nodes: &'a [Node], seed: u64) -> Self {
        Pass {
            nodes,
            states: nodes.iter().map(NodeState::new).collect(),
            service_tasks: HashMap::new(),
            node_hash: nodes.iter().map(|n| hash_str(&n.id)).collect(),
            seed: splitmix64(seed),
        }
    }

    fn counts(&mut self, service: &'a str) -> &mut Vec<u64> {
        let nodes = self.nodes;
        self.service_tasks.entry(service).or_insert_with(|| {
            nodes
                .iter()
                .map(|n| n.tasks_by_service.get(service).copied().unwrap_or(0))
                .collect()
        })
    }

    fn place_pinned(&mut self, service: &'a str, spec: &TaskSpec, n: usize) -> Outcome {
        let node = &self.nodes[n];
        let count = self.counts(service)[n];
        match first_failure(node, &self.states[n], count, spec) {
            None => {
                self.states[n].take(spec);
                self.counts(service)[n] += 1;
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
        let mut counts = std::mem::take(self.counts(group.service));

        let failing = |i: usize| {
            nodes[i]
                .recent_failures
                .get(group.service)
                .is_some_and(|&f| f >= FAILURE_THRESHOLD)
        };
        let node_hash = &self.node_hash;
        let tiebreak = |i: usize| splitmix64(node_hash[i] ^ service_hash);
        let mut tree = Tree::build(
            nodes,
            spec,
            &self.states,
            &counts,
            service_hash,
            failing,
            tiebreak,
        );
        let mut ctx = Ctx {
            states: &mut self.states,
            counts: &mut counts,
            spec,
        };
        let mut placed = 0;
        for &t in &group.tasks {
            match tree.pick(0, &mut ctx) {
                Some(n) => outcome[t] = Outcome::Placed(n),
                None => break,
            }
            placed += 1;
        }
        let pending = &group.tasks[placed..];
        if !pending.is_empty() {
            // Nothing more fits: explain once, with the state after the last placement.
            let mut e = Explanation::default();
            for (i, node) in nodes.iter().enumerate() {
                if let Some(f) = first_failure(node, &self.states[i], counts[i], spec) {
                    e.add(f);
                }
            }
            for &t in pending {
                outcome[t] = Outcome::Unplaced(e);
            }
        }
        *self.counts(group.service) = counts;
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
    fn build(
        nodes: &[Node],
        spec: &TaskSpec,
        states: &[NodeState],
        counts: &[u64],
        service_hash: u64,
        failing: impl Fn(usize) -> bool,
        tiebreak: impl Fn(usize) -> u64,
    ) -> Tree {
        let candidate = |i: usize| {
            passes_static(&nodes[i], spec) && passes_dynamic(&states[i], counts[i], spec)
        };
        let leaf_entry = |i: usize| {
            Reverse((
                node_key(failing(i), counts[i], states[i].total_tasks, tiebreak(i)),
                i as u32,
            ))
        };

        if spec.preferences.is_empty() {
            let heap = (0..nodes.len())
                .filter(|&i| candidate(i))
                .map(leaf_entry)
                .collect();
            return Tree {
                branches: vec![Branch::Leaf(heap)],
            };
        }

        // First pass: give every branch its service task count (all nodes count, eligible or
        // not, since tasks already there are part of the spread) and collect leaf nodes.
        struct Building {
            count: u64,
            tiebreak: u64,
            children: Vec<u32>,
            nodes: Vec<u32>,
        }
        let mut building = vec![Building {
            count: 0,
            tiebreak: 0,
            children: Vec::new(),
            nodes: Vec::new(),
        }];
        let mut child_of: HashMap<(u32, Option<&str>), u32> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let mut b = 0u32;
            building[0].count += counts[i];
            for (level, pref) in spec.preferences.iter().enumerate() {
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
                *top = Reverse((
                    node_key(
                        failing,
                        ctx.counts[node],
                        ctx.states[node].total_tasks,
                        tiebreak,
                    ),
                    n,
                ));
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
