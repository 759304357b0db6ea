//! `depends_on`: the order to start services in, and cycles named as `a -> b -> a`.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::DependencyError;
use crate::model::{Condition, Project};

/// One service in start-up order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// The service.
    pub service: &'a str,
    /// 0 for a service that depends on nothing, else one more than its deepest dependency:
    /// the services of one level can start together once the levels below are ready.
    pub level: usize,
    /// Each dependency and what to wait for, sorted by name.
    pub waits_for: Vec<(&'a str, Condition)>,
}

impl Project {
    /// The services in dependency order (dependencies first; among services that could go
    /// next, by name), with the condition to wait for on each edge.
    ///
    /// Dependencies marked `required: false` on services the project lacks are skipped (the
    /// loader already drops them).
    pub fn startup_order(&self) -> Result<Vec<Step<'_>>, DependencyError> {
        let mut graph: BTreeMap<&str, Vec<(&str, Condition)>> = BTreeMap::new();
        for (name, service) in &self.services {
            let mut edges = Vec::new();
            for (dependency, edge) in &service.depends_on {
                if self.services.contains_key(dependency) {
                    edges.push((dependency.as_str(), edge.condition));
                } else if edge.required {
                    return Err(DependencyError::Undefined { service: name.clone(), dependency: dependency.clone() });
                }
            }
            graph.insert(name, edges);
        }
        let plain: BTreeMap<&str, Vec<&str>> =
            graph.iter().map(|(name, edges)| (*name, edges.iter().map(|(d, _)| *d).collect())).collect();
        if let Some(cycle) = find_cycle(&plain) {
            return Err(DependencyError::Cycle { cycle });
        }
        let mut levels: BTreeMap<&str, usize> = BTreeMap::new();
        let mut order = Vec::with_capacity(graph.len());
        let mut pending: BTreeSet<&str> = graph.keys().copied().collect();
        while !pending.is_empty() {
            let next = pending.iter().copied().find(|name| plain[name].iter().all(|d| levels.contains_key(d)));
            // No cycle, so some pending service always has all its dependencies placed.
            let Some(next) = next else { break };
            pending.remove(next);
            let level = plain[next].iter().filter_map(|d| levels.get(d)).map(|l| l + 1).max().unwrap_or(0);
            levels.insert(next, level);
            order.push(Step { service: next, level, waits_for: graph[next].clone() });
        }
        Ok(order)
    }
}

/// A cycle in the graph, if any: the names along it with the first repeated at the end,
/// starting from the smallest name in the cycle so the same graph always gives the same report.
pub(crate) fn find_cycle(graph: &BTreeMap<&str, Vec<&str>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Open,
        Done,
    }
    let mut state: BTreeMap<&str, State> = BTreeMap::new();
    for &start in graph.keys() {
        if state.contains_key(start) {
            continue;
        }
        // Iterative depth-first search: (node, index of the next edge to follow).
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        state.insert(start, State::Open);
        while let Some((node, edge)) = stack.last_mut() {
            let edges = graph.get(node).map(Vec::as_slice).unwrap_or_default();
            if let Some(&next) = edges.get(*edge) {
                *edge += 1;
                match state.get(next) {
                    Some(State::Open) => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                        let smallest = cycle.iter().enumerate().min_by_key(|(_, n)| **n).map(|(i, _)| i).unwrap_or(0);
                        cycle.rotate_left(smallest);
                        cycle.push(cycle[0]);
                        return Some(cycle.into_iter().map(str::to_owned).collect());
                    }
                    Some(State::Done) => {}
                    None if graph.contains_key(next) => {
                        state.insert(next, State::Open);
                        stack.push((next, 0));
                    }
                    None => {}
                }
            } else {
                state.insert(node, State::Done);
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dependency, Service};

    fn project(edges: &[(&str, &[(&str, Condition)])]) -> Project {
        let mut project = Project::default();
        for (name, deps) in edges {
            let depends_on = deps
                .iter()
                .map(|(d, condition)| {
                    ((*d).to_owned(), Dependency { condition: *condition, restart: false, required: true })
                })
                .collect();
            project
                .services
                .insert((*name).to_owned(), Service { image: "busybox".to_owned(), depends_on, ..Service::default() });
        }
        project
    }

    fn order(project: &Project) -> Result<Vec<String>, String> {
        project.startup_order().map_err(|e| e.to_string()).map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let waits: Vec<String> = s.waits_for.iter().map(|(d, c)| format!("{d}:{}", c.as_str())).collect();
                    format!("{}@{}[{}]", s.service, s.level, waits.join(","))
                })
                .collect()
        })
    }

    /// A name, a project, and its order (`service@level[dependency:condition,…]`) or error.
    type Case = (&'static str, Project, Result<Vec<&'static str>, &'static str>);

    #[test]
    fn orders() {
        use Condition::*;
        let cases: &[Case] = &[
            ("independent services by name", project(&[("b", &[]), ("a", &[])]), Ok(vec!["a@0[]", "b@0[]"])),
            (
                "web after db and cache",
                project(&[("web", &[("db", Healthy), ("cache", Started)]), ("db", &[]), ("cache", &[])]),
                Ok(vec!["cache@0[]", "db@0[]", "web@1[cache:service_started,db:service_healthy]"]),
            ),
            (
                "a chain",
                project(&[("a", &[("b", Started)]), ("b", &[("c", CompletedSuccessfully)]), ("c", &[])]),
                Ok(vec!["c@0[]", "b@1[c:service_completed_successfully]", "a@2[b:service_started]"]),
            ),
            (
                "a diamond",
                project(&[
                    ("top", &[("l", Started), ("r", Started)]),
                    ("l", &[("base", Started)]),
                    ("r", &[("base", Started)]),
                    ("base", &[]),
                ]),
                Ok(vec![
                    "base@0[]",
                    "l@1[base:service_started]",
                    "r@1[base:service_started]",
                    "top@2[l:service_started,r:service_started]",
                ]),
            ),
            (
                "a two-cycle",
                project(&[("a", &[("b", Started)]), ("b", &[("a", Started)])]),
                Err("dependency cycle between services: a -> b -> a"),
            ),
            (
                "a cycle behind a tail, reported from its smallest name",
                project(&[
                    ("z", &[("y", Started)]),
                    ("y", &[("x", Started)]),
                    ("x", &[("w", Started)]),
                    ("w", &[("y", Started)]),
                ]),
                Err("dependency cycle between services: w -> y -> x -> w"),
            ),
            (
                "an undefined dependency",
                project(&[("a", &[("ghost", Started)])]),
                Err("service `a` depends on undefined service `ghost`"),
            ),
        ];
        for (name, project, want) in cases {
            let want = want.clone().map(|v| v.into_iter().map(str::to_owned).collect()).map_err(str::to_owned);
            assert_eq!(order(project), want, "{name}");
        }
    }
}
