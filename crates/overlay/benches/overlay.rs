//! Overlay benchmark.
fn main() {}
