//! The conformance suite against the nftables backend in network namespaces on this host, and
//! the run-time choice of backend. (The IPVS backend runs the same suite in a VM: `cargo xtask
//! vm-test`, see `examples/vm_test.rs`.)

mod support;

use shoal_ipvs_lb::{BackendKind, NftBalancer};
use shoal_testkit::privileged;
use support::{CASES, Env};

fn run(case: &str) {
    if !privileged::require(case, privileged::NETNS) {
        return;
    }
    let Some((_, check)) = CASES.iter().find(|(name, _)| *name == case) else { panic!("no case {case}") };
    let env = Env::new();
    let mut lb = NftBalancer::open(&env.netns(), "shoal_lb").expect("open nftables balancer");
    check(&env, &mut lb);
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*
        /// Every case of the suite has a test here.
        #[test]
        fn every_case_is_run() {
            let here = [$(stringify!($name)),*];
            for (name, _) in CASES {
                assert!(here.contains(name), "conformance case {name} has no test");
            }
        }
    };
}

cases!(distribution, drain, removal, udp, source_nat, replace_all_and_list, update_among_10000);

/// IPVS when the family resolves, nftables otherwise; an nftables table survives reopening.
#[test]
fn open_picks_what_the_kernel_has_and_adopts_existing_state() {
    if !privileged::require("open_picks_what_the_kernel_has_and_adopts_existing_state", privileged::NETNS) {
        return;
    }
    let env = Env::new();
    let has_ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
    let mut lb = shoal_ipvs_lb::open(&env.netns(), "shoal_lb").expect("open");
    let expected = if has_ipvs { BackendKind::Ipvs } else { BackendKind::Nftables };
    assert_eq!(lb.kind(), expected);
    let service = shoal_ipvs_lb::Service::new(
        shoal_ipvs_lb::ServiceKey::tcp(support::VIP, 80),
        vec![shoal_ipvs_lb::Backend::new(support::backend_addr(0), support::TCP_PORT)],
    );
    lb.set(std::slice::from_ref(&service)).expect("set");
    drop(lb);
    let reopened = shoal_ipvs_lb::open(&env.netns(), "shoal_lb").expect("reopen");
    assert_eq!(reopened.list().expect("list"), vec![service]);
}

/// Errors name the namespace and the table.
#[test]
fn errors_name_the_namespace() {
    let err = NftBalancer::open(&shoal_ipvs_lb::Netns::named("shoaltest-does-not-exist"), "shoal_lb")
        .expect_err("no such namespace");
    let text = err.to_string();
    assert!(text.contains("/run/netns/shoaltest-does-not-exist"), "{text}");
}
