//! `cargo xtask bench lb`: first-packet latency (connect + first byte) through a VIP against the
//! same backend reached directly, p50/p99, with 1, 1,000 and 10,000 services programmed; and the
//! time one service change takes among 10,000. nftables backend (this host has no IPVS). Needs
//! root; prints figures, asserts nothing.

// A benchmark program: its output is the figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use shoal_ipvs_lb::{Backend, LoadBalancer as _, NftBalancer, Service, ServiceKey};
use shoal_testkit::in_netns;
use support::{BULK_PORT, BULK_VIP, Env, TCP_PORT, VIP, backend_addr, tcp_hello};

const SAMPLES: usize = 2000;
const CHANGES: usize = 50;

fn services(count: usize) -> Vec<Service> {
    let main = Service::new(ServiceKey::tcp(VIP, 80), vec![Backend::new(backend_addr(0), TCP_PORT)]);
    let bulk = (1..count).map(|i| {
        let port = BULK_PORT + u16::try_from(i).unwrap_or(u16::MAX - BULK_PORT);
        Service::new(ServiceKey::tcp(BULK_VIP, port), vec![Backend::new(backend_addr(i % 3), TCP_PORT)])
    });
    std::iter::once(main).chain(bulk).collect()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted.get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Alternates connections through the VIP and direct to the backend; returns both samples.
fn first_packet(env: &Env) -> (Vec<Duration>, Vec<Duration>) {
    let via = SocketAddrV4::new(VIP, 80);
    let direct = SocketAddrV4::new(backend_addr(0), TCP_PORT);
    in_netns(&env.lb_netns, move || {
        let (mut through, mut straight) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
        for _ in 0..SAMPLES {
            for (to, out) in [(via, &mut through), (direct, &mut straight)] {
                let started = Instant::now();
                let answered = tcp_hello(to);
                out.push(started.elapsed());
                if let Err(err) = answered {
                    panic!("connect to {to}: {err}");
                }
            }
        }
        through.sort();
        straight.sort();
        (through, straight)
    })
    .unwrap_or_else(|e| panic!("enter balancer namespace: {e}"))
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        // A benchmark that cannot run fails: a skipped run must not read as a passed one.
        eprintln!("bench lb: needs root (network namespaces, nftables); run it as root");
        std::process::exit(1);
    }
    let env = Env::new();
    let mut lb = NftBalancer::open(&env.netns(), "shoal_lb").unwrap_or_else(|e| panic!("open: {e}"));
    println!("first packet (connect + first byte), {SAMPLES} samples each, nftables backend");
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>12} {:>11} {:>11}",
        "services", "vip p50", "vip p99", "direct p50", "direct p99", "added p50", "added p99"
    );
    for count in [1, 1_000, 10_000] {
        let started = Instant::now();
        lb.replace_all(&services(count)).unwrap_or_else(|e| panic!("set {count} services: {e}"));
        let programmed = started.elapsed();
        let (through, straight) = first_packet(&env);
        let (v50, v99, d50, d99) =
            (percentile(&through, 50), percentile(&through, 99), percentile(&straight, 50), percentile(&straight, 99));
        println!(
            "{count:>9} {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>9.1}µs {:>9.1}µs   (programmed in {programmed:.2?})",
            us(v50),
            us(v99),
            us(d50),
            us(d99),
            us(v50) - us(d50),
            us(v99) - us(d99),
        );
    }
    report_changes(&mut lb, 10_000, ServiceKey::tcp(BULK_VIP, BULK_PORT + 5000));
    println!("(the floor: one transaction in a table with a single service)");
    lb.replace_all(&services(1)).unwrap_or_else(|e| panic!("back to one service: {e}"));
    report_changes(&mut lb, 1, ServiceKey::tcp(VIP, 80));
}

/// Changes one service's backends `CHANGES` times and prints the latency of `set`.
fn report_changes(lb: &mut NftBalancer, count: usize, key: ServiceKey) {
    let mut times = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let backends = (0..=i % 3).map(|b| Backend::new(backend_addr(b), TCP_PORT)).collect();
        let started = Instant::now();
        lb.set(&[Service::new(key, backends)]).unwrap_or_else(|e| panic!("change {key}: {e}"));
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "one service change among {count} services ({CHANGES} changes, one transaction each): p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        percentile(&times, 50),
        percentile(&times, 99),
        times.last().copied().unwrap_or_default()
    );
}
