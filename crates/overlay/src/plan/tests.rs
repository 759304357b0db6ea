//! Table tests of the planner, and convergence through the fake dataplane.
