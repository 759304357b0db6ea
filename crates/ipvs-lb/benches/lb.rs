//! `cargo xtask bench lb`: first-packet latency through a VIP against direct, and the time of one
//! service change among 10,000 (being written).

fn main() {}
