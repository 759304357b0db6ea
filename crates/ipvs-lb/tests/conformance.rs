//! The conformance suite against the nftables backend in network namespaces on this host, and
//! the run-time choice of backend. (The IPVS backend runs the same suite in a VM: `cargo xtask
//! vm-test`, see `examples/vm_test.rs`.)

mod support;

use std::net::SocketAddrV4;

use shoal_ipvs_lb::{Backend, BackendKind, NftBalancer, Protocol, Service, ServiceKey};
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

cases!(distribution, drain, removal, udp, source_nat, replace_all_and_list, update_among_10000, any_port);

/// IPVS when the family resolves, nftables otherwise; an nftables table survives reopening,
/// any-port services (drained backends, source NAT) included.
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
    let service = Service::new(
        ServiceKey::tcp(support::VIP, 80),
        vec![Backend::new(support::backend_addr(0), support::TCP_PORT)],
    );
    let any_port = Service {
        key: ServiceKey::any_port(support::VIP, Protocol::Udp),
        backends: vec![
            Backend::any_port(support::backend_addr(1)),
            Backend { weight: 0, ..Backend::any_port(support::backend_addr(2)) },
        ],
        source_nat: true,
    };
    lb.set(&[service.clone(), any_port.clone()]).expect("set");
    drop(lb);
    let reopened = shoal_ipvs_lb::open(&env.netns(), "shoal_lb").expect("reopen");
    assert_eq!(reopened.list().expect("list"), vec![any_port, service]);
    let (names, peers, ports) = env.udp_tally_ports(SocketAddrV4::new(support::VIP, support::SECOND_UDP_PORT), 6);
    assert_eq!(names.keys().collect::<Vec<_>>(), ["b2"], "the adopted any-port service's one active backend");
    assert_eq!(ports.into_iter().collect::<Vec<_>>(), [support::SECOND_UDP_PORT.to_string()]);
    assert!(peers.iter().all(|p| p == &support::GATEWAY.to_string()), "still masqueraded: {peers:?}");
}

/// Errors name the namespace and the table.
#[test]
fn errors_name_the_namespace() {
    let err = NftBalancer::open(&shoal_ipvs_lb::Netns::named("shoaltest-does-not-exist"), "shoal_lb")
        .expect_err("no such namespace");
    let text = err.to_string();
    assert!(text.contains("/run/netns/shoaltest-does-not-exist"), "{text}");
}
