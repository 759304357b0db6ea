//! Table tests of the allocator: subnets, VNIs, addresses, VIPs and published ports, what is
//! refused and why, and what is free again once its holder is gone.

use super::*;

fn network(id: &str, subnet: &str) -> v1::Network {
    v1::Network {
        id: id.into(),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations { name: format!("net-{id}"), ..Default::default() }),
            driver: "overlay".into(),
            ipam: Some(v1::IpamConfig { subnet: subnet.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ingress(id: &str) -> v1::Network {
    let mut n = network(id, "");
    if let Some(spec) = n.spec.as_mut() {
        spec.ingress = true;
        spec.annotations = Some(v1::Annotations { name: "ingress".into(), ..Default::default() });
    }
    n
}

/// Allocates each network in turn against the ones before, as passes do.
fn allocated(pools: &[&str], size: u32, networks: Vec<v1::Network>) -> Vec<v1::Network> {
    let pools: Vec<String> = pools.iter().map(|p| (*p).to_owned()).collect();
    let mut done: Vec<v1::Network> = Vec::new();
    for mut n in networks {
        let mut cursors = Cursors::new();
        let mut a = Allocator::new(&pools, size, &done, &[], &[], &[], &mut cursors);
        n.allocation = Some(a.allocate_network(&n).expect("allocates"));
        done.push(n);
    }
    done
}

fn service(id: &str, networks: &[&str], ports: &[(u32, u32, bool)], dnsrr: bool) -> v1::Service {
    v1::Service {
        id: id.into(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: format!("svc-{id}"), ..Default::default() }),
            networks: networks
                .iter()
                .map(|n| v1::NetworkAttachmentConfig { target: (*n).into(), aliases: vec![format!("{id}-alias")] })
                .collect(),
            endpoint: Some(v1::EndpointSpec {
                mode: if dnsrr { v1::endpoint_spec::Mode::Dnsrr } else { v1::endpoint_spec::Mode::Vip } as i32,
                ports: ports
                    .iter()
                    .map(|(published, target, host)| v1::PortConfig {
                        published_port: *published,
                        target_port: *target,
                        publish_mode: if *host {
                            v1::port_config::PublishMode::Host
                        } else {
                            v1::port_config::PublishMode::Ingress
                        } as i32,
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn cidrs_parse_and_refuse_host_bits_with_a_suggestion() {
    assert_eq!("10.0.1.0/24".parse::<Cidr>().expect("parses").to_string(), "10.0.1.0/24");
    let err = "10.0.1.5/24".parse::<Cidr>().expect_err("host bits");
    assert_eq!(err.to_string(), "\"10.0.1.5/24\" has host bits set; did you mean 10.0.1.0/24?");
    for bad in ["10.0.1.0", "10.0.1.0/33", "10.0.1/24", "fd00::/64", ""] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
    let (a, b): (Cidr, Cidr) = ("10.0.0.0/16".parse().expect("a"), "10.0.3.0/24".parse().expect("b"));
    assert!(a.overlaps(&b) && b.overlaps(&a) && a.covers(&b) && !b.covers(&a));
    assert!(!b.overlaps(&"10.0.4.0/24".parse().expect("c")));
}

#[test]
fn subnets_come_from_the_pools_in_order_and_skip_taken_ones() {
    // (pools, size, networks' own subnets ("" = from the pool), expected subnets)
    type Case<'a> = (&'a [&'a str], u32, &'a [&'a str], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (&[], 0, &["", ""], &["10.0.0.0/24", "10.0.1.0/24"]),
        (&["198.18.0.0/16"], 24, &["198.18.0.0/24", ""], &["198.18.0.0/24", "198.18.1.0/24"]),
        // A user subnet larger than one pool subnet is skipped past as a whole.
        (&["198.18.0.0/16"], 24, &["198.18.0.0/22", ""], &["198.18.0.0/22", "198.18.4.0/24"]),
        // Two pools: the second is used when the first is full.
        (&["198.18.0.0/23", "198.19.0.0/16"], 24, &["", "", ""], &["198.18.0.0/24", "198.18.1.0/24", "198.19.0.0/24"]),
        (&["198.18.0.0/16"], 26, &["", ""], &["198.18.0.0/26", "198.18.0.64/26"]),
    ];
    for (pools, size, asked, expected) in cases {
        let networks = asked.iter().enumerate().map(|(i, s)| network(&format!("n{i}"), s)).collect();
        let done = allocated(pools, *size, networks);
        let got: Vec<&str> = done.iter().map(|n| n.allocation.as_ref().map_or("", |a| a.subnet.as_str())).collect();
        assert_eq!(&got, expected, "pools {pools:?} size {size}");
    }
}

#[test]
fn vnis_start_at_4096_and_a_freed_one_is_reused() {
    let done = allocated(&["198.18.0.0/16"], 24, vec![network("a", ""), network("b", ""), network("c", "")]);
    let vnis: Vec<u32> = done.iter().map(|n| n.allocation.as_ref().map_or(0, |a| a.vni)).collect();
    assert_eq!(vnis, [4096, 4097, 4098]);
    // b is removed: its VNI and subnet are free for the next network.
    let left = vec![done[0].clone(), done[2].clone()];
    let mut cursors = Cursors::new();
    let mut a = Allocator::new(&["198.18.0.0/16".into()], 24, &left, &[], &[], &[], &mut cursors);
    let next = a.allocate_network(&network("d", "")).expect("allocates");
    assert_eq!(
        (next.vni, next.subnet.as_str(), next.gateway.as_str(), next.mtu),
        (4097, "198.18.1.0/24", "198.18.1.1", 1450)
    );
}

#[test]
fn bad_network_requests_are_refused_with_what_to_do() {
    let existing = allocated(&[], 0, vec![network("a", "198.18.0.0/24")]);
    let with = |f: &dyn Fn(&mut v1::NetworkSpec)| {
        let mut n = network("x", "198.18.8.0/24");
        if let Some(spec) = n.spec.as_mut() {
            f(spec);
        }
        n
    };
    let ipam = |subnet: &str, gateway: &str, range: &str| {
        let (subnet, gateway, range) = (subnet.to_owned(), gateway.to_owned(), range.to_owned());
        move |s: &mut v1::NetworkSpec| {
            s.ipam = Some(v1::IpamConfig { subnet: subnet.clone(), gateway: gateway.clone(), ip_range: range.clone() })
        }
    };
    let cases: Vec<(v1::Network, &str)> = vec![
        (
            with(&ipam("198.18.0.128/25", "", "")),
            "subnet 198.18.0.128/25 overlaps network net-a's subnet 198.18.0.0/24; choose another --subnet",
        ),
        (
            with(&ipam("198.18.8.0/24", "198.18.9.1", "")),
            "network net-x: --gateway 198.18.9.1 is not a host address of the subnet 198.18.8.0/24",
        ),
        (
            with(&ipam("198.18.8.0/24", "198.18.8.255", "")),
            "network net-x: --gateway 198.18.8.255 is not a host address of the subnet 198.18.8.0/24",
        ),
        (
            with(&ipam("198.18.8.0/24", "", "198.18.9.0/25")),
            "network net-x: --ip-range 198.18.9.0/25 is not inside the subnet 198.18.8.0/24",
        ),
        (
            with(&ipam("198.18.8.1/24", "", "")),
            "network net-x: --subnet: \"198.18.8.1/24\" has host bits set; did you mean 198.18.8.0/24?",
        ),
        (
            with(&ipam("198.18.8.0/31", "", "")),
            "network net-x: subnet 198.18.8.0/31 is too small for a gateway and tasks (at most /30)",
        ),
        (
            with(&|s: &mut v1::NetworkSpec| {
                s.options.insert("mtu".into(), "99999".into());
            }),
            "network net-x: --opt mtu=99999 is not a number in 576–9000",
        ),
    ];
    for (n, expected) in cases {
        let mut cursors = Cursors::new();
        let mut a = Allocator::new(&[], 0, &existing, &[], &[], &[], &mut cursors);
        assert_eq!(a.allocate_network(&n).expect_err("refused").to_string(), expected);
    }
    let mut cursors = Cursors::new();
    let mut a = Allocator::new(&["198.18.0.0/24".into()], 24, &existing, &[], &[], &[], &mut cursors);
    assert_eq!(
        a.allocate_network(&network("y", "")).expect_err("exhausted").to_string(),
        "no free subnet of size /24 is left in the default address pools (198.18.0.0/24); remove unused networks (shoal network prune) or give --subnet"
    );
}

#[test]
fn addresses_are_handed_out_in_turn_skipping_the_gateway_and_the_edges() {
    let networks = allocated(&[], 0, vec![network("a", "198.18.0.0/29")]);
    let mut cursors = Cursors::new();
    let svc = service("s", &["a"], &[], true);
    let mut got = Vec::new();
    {
        let mut a = Allocator::new(&[], 0, &networks, &[], &[], &[], &mut cursors);
        for _ in 0..5 {
            got.push(a.allocate_task(&svc).expect("address")[0].addresses[0].clone());
        }
        // .0 network, .1 gateway, .7 broadcast: five usable.
        assert_eq!(got, ["198.18.0.2/29", "198.18.0.3/29", "198.18.0.4/29", "198.18.0.5/29", "198.18.0.6/29"]);
        assert_eq!(
            a.allocate_task(&svc).expect_err("full").to_string(),
            "network net-a has no free address left in 198.18.0.0/29; remove tasks or services from it, or create a larger network"
        );
    }
    // The tasks holding .2 and .3 ended; .4–.6 still run. The next address comes after the last
    // one handed out (.6), wrapping around: .2, not a fresh reuse of the lowest by accident.
    let tasks: Vec<v1::Task> = got
        .iter()
        .enumerate()
        .map(|(i, addr)| v1::Task {
            id: format!("t{i}"),
            networks: vec![v1::NetworkAttachment {
                network: Some(networks[0].clone()),
                addresses: vec![addr.clone()],
                aliases: vec![],
            }],
            status: Some(v1::TaskStatus {
                state: if i < 2 { TaskState::Failed } else { TaskState::Running } as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let mut a = Allocator::new(&[], 0, &networks, &[], &tasks, &[], &mut cursors);
    assert_eq!(a.allocate_task(&svc).expect("address")[0].addresses, ["198.18.0.2/29"]);
    assert_eq!(a.allocate_task(&svc).expect("address")[0].addresses, ["198.18.0.3/29"]);
    assert!(a.allocate_task(&svc).is_err(), "running tasks keep theirs");
}

#[test]
fn a_task_on_a_down_node_keeps_its_address_until_it_is_known_to_have_ended() {
    let networks = allocated(&[], 0, vec![network("a", "198.18.0.0/30")]);
    let svc = service("s", &["a"], &[], true);
    let holder = |state: TaskState| v1::Task {
        id: "t".into(),
        node_id: "n1".into(),
        desired_state: TaskState::Shutdown as i32,
        networks: vec![v1::NetworkAttachment {
            network: Some(networks[0].clone()),
            addresses: vec!["198.18.0.2/30".into()],
            aliases: vec![],
        }],
        status: Some(v1::TaskStatus { state: state as i32, ..Default::default() }),
        ..Default::default()
    };
    let mut cursors = Cursors::new();
    let mut a = Allocator::new(&[], 0, &networks, &[], &[holder(TaskState::Running)], &[], &mut cursors);
    assert!(a.allocate_task(&svc).is_err(), "still held: it may still run");
    let mut a = Allocator::new(&[], 0, &networks, &[], &[holder(TaskState::Shutdown)], &[], &mut cursors);
    assert_eq!(a.allocate_task(&svc).expect("free")[0].addresses, ["198.18.0.2/30"]);
    // A task never scheduled and told to stop will never run: its address is free at once.
    let mut unscheduled = holder(TaskState::Pending);
    unscheduled.node_id.clear();
    let mut a = Allocator::new(&[], 0, &networks, &[], &[unscheduled], &[], &mut cursors);
    assert_eq!(a.allocate_task(&svc).expect("free")[0].addresses, ["198.18.0.2/30"]);
}

#[test]
fn services_get_a_vip_per_network_and_routing_mesh_ports() {
    let networks = allocated(&["198.18.0.0/16"], 24, vec![ingress("ing"), network("a", "")]);
    let mut cursors = Cursors::new();
    let mut a = Allocator::new(&[], 0, &networks, &[], &[], &[], &mut cursors);
    let web = service("web", &["a"], &[(8080, 80, false), (0, 443, false), (9000, 90, true)], false);
    let endpoint = a.allocate_service(&web).expect("allocates");
    let vips: Vec<(&str, &str)> =
        endpoint.virtual_ips.iter().map(|v| (v.network_id.as_str(), v.addr.as_str())).collect();
    assert_eq!(vips, [("a", "198.18.1.2/24"), ("ing", "198.18.0.2/24")]);
    let ports: Vec<u32> = endpoint.ports.iter().map(|p| p.published_port).collect();
    assert_eq!(ports, [8080, 30000, 9000], "host-mode ports are not the mesh's");
    // Its tasks are on both networks, with its aliases on its own.
    let attachments = a.allocate_task(&web).expect("task");
    let got: Vec<(&str, &str, Vec<String>)> = attachments
        .iter()
        .map(|x| (x.network.as_ref().map_or("", |n| n.id.as_str()), x.addresses[0].as_str(), x.aliases.clone()))
        .collect();
    assert_eq!(got, [("a", "198.18.1.3/24", vec!["web-alias".to_owned()]), ("ing", "198.18.0.3/24", vec![])]);

    let mut web = web;
    web.endpoint = Some(endpoint);
    assert!(a.service_allocated(&web));
    // Another service: the explicit port is refused naming the holder; an automatic one comes next.
    let api = service("api", &[], &[(8080, 80, false)], false);
    assert_eq!(
        a.allocate_service(&api).expect_err("taken").to_string(),
        "port 8080/tcp is already published by service svc-web; choose another --publish port"
    );
    let api = service("api", &[], &[(0, 80, false)], false);
    assert_eq!(a.allocate_service(&api).expect("next").ports[0].published_port, 30001);
    // A dnsrr service has no VIP.
    let db = service("db", &["a"], &[], true);
    assert!(a.allocate_service(&db).expect("dnsrr").virtual_ips.is_empty());
}

#[test]
fn a_service_keeps_its_vip_and_ports_across_updates_and_frees_them_when_gone() {
    let networks = allocated(&["198.18.0.0/16"], 24, vec![ingress("ing"), network("a", "")]);
    let mut cursors = Cursors::new();
    let mut web = service("web", &["a"], &[(0, 80, false)], false);
    let first = {
        let mut a = Allocator::new(&[], 0, &networks, &[], &[], &[], &mut cursors);
        a.allocate_service(&web).expect("allocates")
    };
    web.endpoint = Some(first.clone());
    // An update adds a port: the VIPs and the first port stay.
    if let Some(e) = web.spec.as_mut().and_then(|s| s.endpoint.as_mut()) {
        e.ports.push(v1::PortConfig { target_port: 81, ..Default::default() });
    }
    let mut a = Allocator::new(&[], 0, &networks, std::slice::from_ref(&web), &[], &[], &mut cursors);
    assert!(!a.service_allocated(&web));
    let second = a.allocate_service(&web).expect("reallocates");
    assert_eq!(second.virtual_ips, first.virtual_ips);
    assert_eq!(second.ports.iter().map(|p| p.published_port).collect::<Vec<_>>(), [30000, 30001]);
    // Gone: its port and VIP are free at once for another service.
    let mut a = Allocator::new(&[], 0, &networks, &[], &[], &[], &mut cursors);
    let other = a.allocate_service(&service("other", &[], &[(30000, 80, false)], false)).expect("free");
    assert_eq!(other.ports[0].published_port, 30000);
}

#[test]
fn publishing_without_an_ingress_network_says_how_to_make_one() {
    let networks = allocated(&[], 0, vec![network("a", "198.18.0.0/24")]);
    let mut cursors = Cursors::new();
    let mut a = Allocator::new(&[], 0, &networks, &[], &[], &[], &mut cursors);
    let err = a.allocate_service(&service("web", &[], &[(8080, 80, false)], false)).expect_err("no ingress");
    assert_eq!(err, AllocError::NoIngress);
    // Host mode needs none.
    assert!(a.allocate_service(&service("web", &[], &[(8080, 80, true)], false)).is_ok());
}

#[test]
fn nodes_get_one_ingress_address_and_keep_it() {
    let networks = allocated(&["198.18.0.0/16"], 24, vec![ingress("ing")]);
    let mut cursors = Cursors::new();
    let mut a = Allocator::new(&[], 0, &networks, &[], &[], &[], &mut cursors);
    let mut node = v1::Node { id: "n1".into(), ..Default::default() };
    let first = a.allocate_node(&node).expect("allocates").expect("ingress exists");
    assert_eq!(first.addresses, ["198.18.0.2/24"]);
    node.ingress = Some(first.clone());
    let mut a = Allocator::new(&[], 0, &networks, &[], &[], std::slice::from_ref(&node), &mut cursors);
    assert_eq!(a.allocate_node(&node).expect("kept"), Some(first));
    let other = v1::Node { id: "n2".into(), ..Default::default() };
    assert_eq!(a.allocate_node(&other).expect("next").expect("ingress").addresses, ["198.18.0.3/24"]);
    // Without an ingress network, no node has one.
    let mut a = Allocator::new(&[], 0, &[], &[], &[], std::slice::from_ref(&node), &mut cursors);
    assert_eq!(a.allocate_node(&node).expect("none"), None);
}
