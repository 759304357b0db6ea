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

use shoal_ipvs_lb::{Backend, BackendKind, IpvsBalancer, LoadBalancer as _, Protocol, Service, ServiceKey};
use support::{CASES, Env, GATEWAY, SECOND_TCP_PORT, SECOND_UDP_PORT, TCP_PORT, VIP, backend_addr, narrate};

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
    for (name, check) in [
        ("reopen_adopts_source_nat", reopen_adopts_source_nat as fn()),
        ("reopen_adopts_any_port", reopen_adopts_any_port),
    ] {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(check) {
            Ok(()) => {
                println!("case {name}: ok");
                passed += 1;
            }
            Err(_) => {
                println!("case {name}: FAILED");
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

/// A balancer opened on a namespace that already has an any-port service (with source NAT) and
/// a specific-port service beside it reads both back from IPVS and its nftables table, the
/// marks keep working, and a new any-port service gets a mark of its own.
fn reopen_adopts_any_port() {
    let env = Env::new();
    let key = ServiceKey::any_port(VIP, Protocol::Tcp);
    let backends = vec![Backend::any_port(backend_addr(0)), Backend::any_port(backend_addr(1))];
    let service = Service { key, backends: backends.clone(), source_nat: true };
    let specific =
        Service::new(ServiceKey::tcp(VIP, SECOND_TCP_PORT), vec![Backend::new(backend_addr(2), SECOND_TCP_PORT)]);
    {
        let mut lb = IpvsBalancer::open(&env.netns()).unwrap_or_else(|e| panic!("open IPVS: {e}"));
        lb.set(&[service.clone(), specific.clone()]).unwrap_or_else(|e| panic!("set: {e}"));
    }
    narrate("reopen");
    let mut lb = IpvsBalancer::open(&env.netns()).unwrap_or_else(|e| panic!("reopen IPVS: {e}"));
    assert_eq!(lb.list().unwrap_or_else(|e| panic!("list: {e}")), vec![service.clone(), specific.clone()]);
    let (names, peers, ports) = env.tcp_tally_ports(&env.client_netns, SocketAddrV4::new(VIP, TCP_PORT), 6);
    assert_eq!(names.values().copied().collect::<Vec<_>>(), [3, 3], "b1 and b2: {names:?}");
    assert_eq!(ports.into_iter().collect::<Vec<_>>(), [TCP_PORT.to_string()]);
    assert!(peers.iter().all(|p| p == &GATEWAY.to_string()), "masqueraded after reopening: {peers:?}");
    let (names, _, _) = env.tcp_tally_ports(&env.lb_netns, SocketAddrV4::new(VIP, SECOND_TCP_PORT), 4);
    assert_eq!(names.keys().collect::<Vec<_>>(), ["b3"], "the specific-port service keeps its port: {names:?}");
    narrate("a new any-port service beside the adopted one");
    let udp = Service::new(ServiceKey::any_port(VIP, Protocol::Udp), backends);
    lb.set(std::slice::from_ref(&udp)).unwrap_or_else(|e| panic!("set udp: {e}"));
    let (names, _, ports) = env.udp_tally_ports(SocketAddrV4::new(VIP, SECOND_UDP_PORT), 6);
    assert_eq!(names.values().copied().collect::<Vec<_>>(), [3, 3], "b1 and b2: {names:?}");
    assert_eq!(ports.into_iter().collect::<Vec<_>>(), [SECOND_UDP_PORT.to_string()]);
    lb.replace_all(&[]).unwrap_or_else(|e| panic!("remove all: {e}"));
    assert!(lb.list().unwrap_or_else(|e| panic!("list: {e}")).is_empty());
}
