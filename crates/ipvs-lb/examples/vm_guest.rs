//! The IPVS half of the conformance suite, as a program: `cargo xtask vm-test` packs it into the
//! initramfs of a VM whose kernel has IPVS and runs it there as PID 1's child. It prints one line
//! per case and `ipvs-conformance: N passed, M failed`, and exits non-zero on any failure.
//!
//! Run by hand only inside such a kernel: it opens the IPVS family and fails where there is none.

// A test program: it reports on standard output/error like a test harness does.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use std::net::SocketAddrV4;

use shoal_ipvs_lb::{Backend, BackendKind, IpvsBalancer, LoadBalancer as _, Service, ServiceKey};
use support::{CASES, Env, GATEWAY, TCP_PORT, VIP, backend_addr, narrate};

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).collect();
    let (mut passed, mut failed) = (0, 0);
    let started = Instant::now();
    {
        let env = Env::new();
        match shoal_ipvs_lb::open(&env.netns(), "shoal_lb") {
            Ok(lb) if lb.kind() == BackendKind::Ipvs => {
                println!("case open_picks_ipvs: ok");
                passed += 1;
            }
            Ok(lb) => {
                println!("case open_picks_ipvs: FAILED: picked {}", lb.kind());
                failed += 1;
            }
            Err(err) => {
                println!("case open_picks_ipvs: FAILED: {err}");
                failed += 1;
            }
        }
    }
    if filter.is_empty() || filter.iter().any(|f| "reopen_adopts_source_nat".contains(f.as_str())) {
        match std::panic::catch_unwind(reopen_adopts_source_nat) {
            Ok(()) => {
                println!("case reopen_adopts_source_nat: ok");
                passed += 1;
            }
            Err(_) => {
                println!("case reopen_adopts_source_nat: FAILED");
                failed += 1;
            }
        }
    }
    for (name, check) in CASES {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let case_started = Instant::now();
        let outcome = std::panic::catch_unwind(|| {
            let env = Env::new();
            let mut lb = IpvsBalancer::open(&env.netns()).unwrap_or_else(|e| panic!("open IPVS: {e}"));
            check(&env, &mut lb);
        });
        let took = case_started.elapsed();
        match outcome {
            Ok(()) => {
                println!("case {name}: ok ({took:.1?})");
                passed += 1;
            }
            Err(_) => {
                println!("case {name}: FAILED ({took:.1?})");
                failed += 1;
            }
        }
    }
    println!("ipvs-conformance: {passed} passed, {failed} failed in {:.1?}", started.elapsed());
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// A balancer opened on a namespace that already has a source-NAT service reads the option back
/// from the kernel, and the service's connections are still masqueraded.
fn reopen_adopts_source_nat() {
    let env = Env::new();
    let key = ServiceKey::tcp(VIP, 81);
    let service = Service { key, backends: vec![Backend::new(backend_addr(0), TCP_PORT)], source_nat: true };
    {
        let mut lb = IpvsBalancer::open(&env.netns()).unwrap_or_else(|e| panic!("open IPVS: {e}"));
        lb.set(std::slice::from_ref(&service)).unwrap_or_else(|e| panic!("set: {e}"));
    }
    narrate("reopen");
    let mut lb = IpvsBalancer::open(&env.netns()).unwrap_or_else(|e| panic!("reopen IPVS: {e}"));
    assert_eq!(lb.list().unwrap_or_else(|e| panic!("list: {e}")), vec![service]);
    let (names, peers) = env.tcp_tally(SocketAddrV4::new(VIP, 81), 5);
    assert_eq!(names.keys().collect::<Vec<_>>(), ["b1"], "{names:?}");
    assert!(peers.iter().all(|p| p == &GATEWAY.to_string()), "masqueraded after reopening: {peers:?}");
    narrate("turned off by the new balancer");
    lb.set(&[Service::new(key, vec![Backend::new(backend_addr(0), TCP_PORT)])])
        .unwrap_or_else(|e| panic!("turn source NAT off: {e}"));
    let (_, peers) = env.tcp_tally(SocketAddrV4::new(VIP, 81), 5);
    assert!(peers.iter().all(|p| p == &VIP.to_string()), "the client's address: {peers:?}");
}
