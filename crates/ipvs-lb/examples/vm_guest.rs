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

use shoal_ipvs_lb::{BackendKind, IpvsBalancer};
use support::{CASES, Env};

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
