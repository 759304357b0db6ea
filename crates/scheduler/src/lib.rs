//! Shoal's scheduler: pure, deterministic task placement in the manner of Docker Swarm.
//!
//! Give [`schedule`] a snapshot of [`Node`]s and a batch of [`Task`]s; it returns a
//! [`Placement`]: where each task goes, and for each task no node can take, an
//! [`Explanation`] counting how many nodes each filter rejected. There is no I/O, no async and
//! no clock: the same input and seed always give the same output.
//!
//! - Filters, in Swarm's order: ready, resources, constraints, platform, host ports, max
//!   replicas per node ([`Filter`]).
//! - Ranking: nodes with [`FAILURE_THRESHOLD`] or more recent failures of the service go last,
//!   then fewest tasks of the service, then fewest tasks overall, then a seeded tie-break.
//!   Spread is exact: 10 tasks on 5 equal nodes give 2 each.
//! - [`PlacementPreference`]s (`spread=node.labels.dc`) nest in the order given.
//! - [`eligible_nodes`] tells a global service where it should run.
//! - [`Constraint::parse`] and [`PlacementPreference::parse`] validate user input with
//!   precise errors.
//!
//! ```
//! use std::sync::Arc;
//! use shoal_scheduler::{Node, Task, TaskSpec, schedule};
//!
//! let nodes: Vec<Node> = (1..=5).map(|i| Node::new(format!("node-{i}"))).collect();
//! let spec = Arc::new(TaskSpec::default());
//! let tasks: Vec<Task> = (0..10)
//!     .map(|i| Task::new(format!("web.{i}"), "web", spec.clone()))
//!     .collect();
//! let placement = schedule(&nodes, &tasks, 42);
//! assert_eq!(placement.assignments.len(), 10);
//! assert!(placement.unplaced.is_empty());
//! ```
#![warn(missing_docs)]

mod constraint;
mod filter;
mod model;
mod preference;
mod rng;
mod schedule;

pub use constraint::{Constraint, ConstraintError, ConstraintKey, Operator, parse_constraints};
pub use filter::{Explanation, Filter};
pub use model::{Availability, HostPort, Node, NodeStatus, Platform, Protocol, Resources, Role, Task, TaskSpec};
pub use preference::{LabelSource, PlacementPreference, PreferenceError};
/// The README's example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use schedule::{Assignment, FAILURE_THRESHOLD, Placement, Unplaced, eligible_nodes, schedule};
