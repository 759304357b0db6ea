//! The filter pipeline in Swarm's order, the mutable per-node state it reads, and explanations.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{Availability, HostPort, Node, NodeStatus, Platform, TaskSpec};

/// One filter of the pipeline, in the order Swarm applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filter {
    /// The node is ready and active.
    Ready,
    /// The node has the CPU, memory and generic resources the task reserves.
    Resources,
    /// The task's constraints hold on the node.
    Constraints,
    /// The node's platform is one the task runs on.
    Platform,
    /// None of the task's host-mode ports is already bound on the node.
    HostPorts,
    /// The node has fewer than the service's max replicas per node.
    MaxReplicas,
}

impl Filter {
    /// All filters in pipeline order.
    pub const ALL: [Filter; 6] = [
        Filter::Ready,
        Filter::Resources,
        Filter::Constraints,
        Filter::Platform,
        Filter::HostPorts,
        Filter::MaxReplicas,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn explain(self, nodes: u32) -> String {
        let n = if nodes == 1 { "1 node".to_owned() } else { format!("{nodes} nodes") };
        match self {
            Filter::Ready => format!("{n} not available for new tasks"),
            Filter::Resources => format!("insufficient resources on {n}"),
            Filter::Constraints => format!("scheduling constraints not satisfied on {n}"),
            Filter::Platform => format!("unsupported platform on {n}"),
            Filter::HostPorts => format!("host-mode port already in use on {n}"),
            Filter::MaxReplicas => format!("max replicas per node limit reached on {n}"),
        }
    }
}

/// Why a task could not be placed: for each filter, how many nodes it was the first to reject.
///
/// Displays like Swarm: `no suitable node (scheduling constraints not satisfied on 3 nodes;
/// insufficient resources on 2 nodes)`, the filter that rejected most nodes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Explanation {
    counts: [u32; 6],
}

impl Explanation {
    /// How many nodes `filter` was the first to reject.
    pub fn count(&self, filter: Filter) -> u32 {
        self.counts[filter.index()]
    }

    /// The number of nodes considered (each rejected by exactly one filter).
    pub fn nodes(&self) -> u32 {
        self.counts.iter().sum()
    }

    pub(crate) fn add(&mut self, filter: Filter) {
        self.counts[filter.index()] += 1;
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no suitable node")?;
        let mut filters: Vec<Filter> = Filter::ALL.into_iter().filter(|&fl| self.count(fl) > 0).collect();
        if filters.is_empty() {
            return Ok(());
        }
        // Stable: filters rejecting as many nodes keep pipeline order.
        filters.sort_by_key(|&fl| std::cmp::Reverse(self.count(fl)));
        f.write_str(" (")?;
        for (i, fl) in filters.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&fl.explain(self.count(*fl)))?;
        }
        f.write_str(")")
    }
}

/// What changes on a node as tasks are placed during one scheduling pass.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub(crate) nano_cpus: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) generic: BTreeMap<String, u64>,
    pub(crate) ports: Vec<HostPort>,
    pub(crate) total_tasks: u64,
}

impl NodeState {
    pub(crate) fn new(node: &Node) -> Self {
        let mut generic = BTreeMap::new();
        for (kind, &total) in &node.total.generic {
            let held = node.reserved.generic.get(kind).copied().unwrap_or(0);
            generic.insert(kind.clone(), total.saturating_sub(held));
        }
        NodeState {
            nano_cpus: node.total.nano_cpus.saturating_sub(node.reserved.nano_cpus),
            memory_bytes: node.total.memory_bytes.saturating_sub(node.reserved.memory_bytes),
            generic,
            ports: node.host_ports.clone(),
            total_tasks: node.total_tasks(),
        }
    }

    pub(crate) fn has_resources(&self, spec: &TaskSpec) -> bool {
        let r = &spec.reservations;
        r.nano_cpus <= self.nano_cpus
            && r.memory_bytes <= self.memory_bytes
            && r.generic.iter().all(|(kind, &n)| n == 0 || self.generic.get(kind).is_some_and(|&have| have >= n))
    }

    pub(crate) fn ports_free(&self, spec: &TaskSpec) -> bool {
        spec.host_ports.iter().all(|p| p.port == 0 || !self.ports.contains(p))
    }

    /// Takes what one task of `spec` holds; the caller has checked that it fits.
    pub(crate) fn take(&mut self, spec: &TaskSpec) {
        let r = &spec.reservations;
        self.nano_cpus = self.nano_cpus.saturating_sub(r.nano_cpus);
        self.memory_bytes = self.memory_bytes.saturating_sub(r.memory_bytes);
        for (kind, &n) in &r.generic {
            if let Some(have) = self.generic.get_mut(kind) {
                *have = have.saturating_sub(n);
            }
        }
        self.ports.extend(spec.host_ports.iter().filter(|p| p.port != 0).copied());
        self.total_tasks += 1;
    }
}

pub(crate) fn is_ready(node: &Node) -> bool {
    node.status == NodeStatus::Ready && node.availability == Availability::Active
}

pub(crate) fn meets_constraints(node: &Node, spec: &TaskSpec) -> bool {
    spec.constraints.iter().all(|c| c.matches(node))
}

pub(crate) fn supports_platform(node: &Node, spec: &TaskSpec) -> bool {
    spec.platforms.is_empty() || spec.platforms.iter().any(|p| platform_matches(p, &node.platform))
}

fn platform_matches(wanted: &Platform, node: &Platform) -> bool {
    let arch_ok =
        wanted.arch.is_empty() || normalize_arch(&wanted.arch).eq_ignore_ascii_case(normalize_arch(&node.arch));
    let os_ok = wanted.os.is_empty() || wanted.os.eq_ignore_ascii_case(&node.os);
    arch_ok && os_ok
}

fn normalize_arch(arch: &str) -> &str {
    if arch.eq_ignore_ascii_case("x86_64") {
        "amd64"
    } else if arch.eq_ignore_ascii_case("aarch64") {
        "arm64"
    } else {
        arch
    }
}

/// Whether a filter that does not change during a pass (ready, constraints, platform) passes.
pub(crate) fn passes_static(node: &Node, spec: &TaskSpec) -> bool {
    is_ready(node) && meets_constraints(node, spec) && supports_platform(node, spec)
}

/// Whether the filters that change as tasks are placed (resources, ports, replicas) pass.
pub(crate) fn passes_dynamic(state: &NodeState, service_tasks: u64, spec: &TaskSpec) -> bool {
    state.has_resources(spec) && state.ports_free(spec) && (spec.max_replicas == 0 || service_tasks < spec.max_replicas)
}

/// The first filter, in pipeline order, that rejects the node; `None` if the task fits.
pub(crate) fn first_failure(node: &Node, state: &NodeState, service_tasks: u64, spec: &TaskSpec) -> Option<Filter> {
    if !is_ready(node) {
        Some(Filter::Ready)
    } else if !state.has_resources(spec) {
        Some(Filter::Resources)
    } else if !meets_constraints(node, spec) {
        Some(Filter::Constraints)
    } else if !supports_platform(node, spec) {
        Some(Filter::Platform)
    } else if !state.ports_free(spec) {
        Some(Filter::HostPorts)
    } else if spec.max_replicas != 0 && service_tasks >= spec.max_replicas {
        Some(Filter::MaxReplicas)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explanation(counts: &[(Filter, u32)]) -> Explanation {
        let mut e = Explanation::default();
        for &(f, n) in counts {
            for _ in 0..n {
                e.add(f);
            }
        }
        e
    }

    #[test]
    fn explanation_table() {
        let cases: &[(&[(Filter, u32)], &str)] = &[
            (&[], "no suitable node"),
            (
                &[(Filter::Resources, 2), (Filter::Constraints, 3)],
                "no suitable node (scheduling constraints not satisfied on 3 nodes; insufficient resources on 2 nodes)",
            ),
            (&[(Filter::Ready, 1)], "no suitable node (1 node not available for new tasks)"),
            (
                &[(Filter::MaxReplicas, 2), (Filter::HostPorts, 2), (Filter::Platform, 1)],
                "no suitable node (host-mode port already in use on 2 nodes; max replicas per node limit reached on 2 nodes; unsupported platform on 1 node)",
            ),
        ];
        for (counts, expected) in cases {
            assert_eq!(explanation(counts).to_string(), *expected);
        }
    }

    #[test]
    fn platform_table() {
        let cases: &[(&str, &str, &str, &str, bool)] = &[
            ("", "", "linux", "amd64", true),
            ("linux", "", "linux", "arm64", true),
            ("linux", "x86_64", "Linux", "amd64", true),
            ("linux", "arm64", "linux", "aarch64", true),
            ("windows", "amd64", "linux", "amd64", false),
            ("linux", "arm64", "linux", "amd64", false),
        ];
        for &(os, arch, node_os, node_arch, expected) in cases {
            assert_eq!(
                platform_matches(&Platform::new(os, arch), &Platform::new(node_os, node_arch)),
                expected,
                "{os}/{arch} on {node_os}/{node_arch}"
            );
        }
    }
}
