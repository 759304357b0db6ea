//! The node's plan from a view, local tasks and the ingress attachment, in Swarm's terms: one
//! fixture cluster (networks `front`, internal `back` and `ingress`; nodes n1 = this node at
//! 192.0.2.11 and n2 at 192.0.2.12) and named cases.

use super::*;
use crate::network::view::NetworkView;
use v1::network_change::Action;

const ME: &str = "n1";

fn net(id: &str, subnet: &str, vni: u32, internal: bool, ingress: bool) -> v1::Network {
    let gateway = subnet.replace(".0/24", ".1");
    v1::Network {
        id: id.into(),
        spec: Some(v1::NetworkSpec { internal, ingress, ..Default::default() }),
        allocation: Some(v1::NetworkAllocation { subnet: subnet.into(), gateway, vni, mtu: 0, ..Default::default() }),
        ..Default::default()
    }
}

fn front() -> v1::Network {
    net("front", "198.18.1.0/24", 4097, false, false)
}
fn back() -> v1::Network {
    net("back", "198.18.2.0/24", 4098, true, false)
}
fn ingress_net() -> v1::Network {
    net("ingress", "198.18.255.0/24", 4096, false, true)
}

fn peer(network: &str, id: &str, node: &str, addr: &str, service: &str, serving: bool) -> v1::NetworkPeer {
    let node_addr = if node == ME { "192.0.2.11" } else { "192.0.2.12" };
    v1::NetworkPeer {
        network_id: network.into(),
        id: id.into(),
        node_id: node.into(),
        node_addr: node_addr.into(),
        address: format!("{addr}/24"),
        service_id: service.into(),
        name: if service.is_empty() { String::new() } else { format!("{service}.{id}") },
        aliases: Vec::new(),
        serving,
    }
}

fn vip_service(network: &str, id: &str, vip: &str, ports: Vec<v1::PortConfig>) -> v1::NetworkService {
    v1::NetworkService {
        network_id: network.into(),
        service_id: id.into(),
        name: id.into(),
        aliases: Vec::new(),
        mode: v1::endpoint_spec::Mode::Vip as i32,
        vip: format!("{vip}/24"),
        ports,
    }
}

fn port(published: u32, target: u32, protocol: v1::port_config::Protocol, host: bool) -> v1::PortConfig {
    v1::PortConfig {
        name: String::new(),
        protocol: protocol as i32,
        target_port: target,
        published_port: published,
        publish_mode: if host { v1::port_config::PublishMode::Host } else { v1::port_config::PublishMode::Ingress }
            as i32,
    }
}

fn view(networks: Vec<v1::Network>, peers: Vec<v1::NetworkPeer>, services: Vec<v1::NetworkService>) -> NetworkView {
    let mut changes = Vec::new();
    changes.extend(networks.into_iter().map(|n| v1::NetworkChange { network: Some(n), ..Default::default() }));
    changes.extend(peers.into_iter().map(|p| v1::NetworkChange { peer: Some(p), ..Default::default() }));
    changes.extend(services.into_iter().map(|s| v1::NetworkChange { service: Some(s), ..Default::default() }));
    let mut view = NetworkView::default();
    view.set_complete(changes);
    view
}

fn task(id: &str, attachments: &[(v1::Network, &str)], host_ports: Vec<v1::PortConfig>) -> v1::Task {
    v1::Task {
        id: id.into(),
        service_id: "web".into(),
        networks: attachments
            .iter()
            .map(|(n, addr)| v1::NetworkAttachment {
                network: Some(n.clone()),
                addresses: vec![format!("{addr}/24")],
                aliases: Vec::new(),
            })
            .collect(),
        endpoint: Some(v1::Endpoint { ports: host_ports, ..Default::default() }),
        ..Default::default()
    }
}

fn local(tasks: Vec<(v1::Task, Option<&str>)>) -> BTreeMap<String, LocalTask> {
    tasks
        .into_iter()
        .map(|(task, egress)| {
            (task.id.clone(), LocalTask { task, egress: egress.map(|e| e.parse().expect("egress address")) })
        })
        .collect()
}

fn names() -> Names {
    Names { prefix: "shoaltest-x-".into(), netns_dir: "/run/netns".into() }
}

fn gateway() -> GatewayBridge {
    GatewayBridge {
        subnet: "198.19.0.0/24".parse().expect("cidr"),
        address: "198.19.0.1".parse().expect("ip"),
        mtu: 1500,
    }
}

fn ingress_attachment(addr: &str) -> v1::NetworkAttachment {
    v1::NetworkAttachment { network: Some(ingress_net()), addresses: vec![format!("{addr}/24")], aliases: Vec::new() }
}

/// The plan, printed one line per fact, so that a case reads as what the node gets.
fn check(
    view: &NetworkView,
    tasks: &BTreeMap<String, LocalTask>,
    ingress: Option<&v1::NetworkAttachment>,
    sandbox_egress: Option<&str>,
    expect: &[&str],
) {
    check_esp(view, tasks, ingress, sandbox_egress, true, expect);
}

/// [`check`] on a node whose kernel has ESP (`esp`) or not.
fn check_esp(
    view: &NetworkView,
    tasks: &BTreeMap<String, LocalTask>,
    ingress: Option<&v1::NetworkAttachment>,
    sandbox_egress: Option<&str>,
    esp: bool,
    expect: &[&str],
) {
    let names = names();
    let gateway = gateway();
    let plan = plan(PlanInput {
        node_id: ME,
        view,
        tasks,
        ingress,
        sandbox_egress: sandbox_egress.map(|a| a.parse().expect("ip")),
        gateway: &gateway,
        names: &names,
        esp,
        data_addr: None,
    });
    let short = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut lines = Vec::new();
    for n in &plan.overlay.networks {
        let internal = if n.internal { " internal" } else { "" };
        let encrypted = if n.encrypted { format!(" encrypted mtu {}", n.mtu) } else { String::new() };
        lines.push(format!("network {} vni {} {}{internal}{encrypted}", n.id, n.vni, n.subnets[0].cidr));
    }
    if let Some(e) = &plan.overlay.encryption {
        let tags: Vec<u64> = e.keys.iter().map(|k| k.tag).collect();
        lines.push(format!("encryption from {} with keys {tags:?}", e.local));
    }
    for c in &plan.overlay.containers {
        let eps: Vec<String> = c
            .endpoints
            .iter()
            .map(|e| {
                format!(
                    "{}:{}={}",
                    e.ifname,
                    e.network,
                    e.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        let egress = c.egress.as_ref().map(|e| format!(" egress {}={}", e.ifname, e.address)).unwrap_or_default();
        lines.push(format!("container {} in {} [{}]{egress}", c.id, short(&c.netns), eps.join(" ")));
    }
    for r in &plan.overlay.remotes {
        lines.push(format!("remote {} {} at {}", r.network, r.addresses[0], r.node));
    }
    for (path, services) in &plan.lb {
        for s in services {
            let backends: Vec<String> = s.backends.iter().map(|b| b.socket_addr().to_string()).collect();
            lines.push(format!("lb {} {} -> [{}]", short(path), s.key, backends.join(" ")));
        }
    }
    for p in &plan.publish {
        lines.push(format!("publish {}/{} -> {}", p.port, p.protocol, p.to));
    }
    for (path, r) in &plan.return_routes {
        let sandboxes: Vec<String> = r.sandboxes.iter().map(ToString::to_string).collect();
        lines.push(format!("return {} via {} [{}]", short(path), r.ifname, sandboxes.join(" ")));
    }
    if let Some(path) = &plan.forwarding {
        lines.push(format!("forwarding {}", short(path)));
    }
    for (owner, why) in &plan.problems {
        lines.push(format!("problem {owner}: {why}"));
    }
    let netns: Vec<String> = plan.netns.iter().map(|(p, o)| format!("{}={o}", short(p))).collect();
    lines.push(format!("netns [{}]", netns.join(" ")));
    assert_eq!(plan.overlay.gateway, Some(gateway));
    let expect: Vec<String> = expect.iter().map(|l| (*l).to_owned()).collect();
    assert_eq!(lines, expect, "\n--- got:\n{}\n", lines.join("\n"));
}

#[test]
fn a_node_with_nothing_hosts_nothing() {
    check(&NetworkView::default(), &BTreeMap::new(), None, None, &["netns []"]);
}

#[test]
fn two_tasks_of_a_service_on_two_nodes_see_each_other_and_the_vip() {
    // web.1 runs here, web.2 on n2; both serve. The VIP balances every port over both.
    let view = view(
        vec![front()],
        vec![peer("front", "t1", ME, "198.18.1.3", "web", true), peer("front", "t2", "n2", "198.18.1.4", "web", true)],
        vec![vip_service("front", "web", "198.18.1.2", vec![])],
    );
    let tasks = local(vec![(task("t1", &[(front(), "198.18.1.3")], vec![]), Some("198.19.0.2"))]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network front vni 4097 198.18.1.0/24",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3] egress eth1=198.19.0.2",
            "remote front 198.18.1.4 at 192.0.2.12",
            "lb shoaltest-x-tt1 198.18.1.2:*/tcp -> [198.18.1.3:0 198.18.1.4:0]",
            "lb shoaltest-x-tt1 198.18.1.2:*/udp -> [198.18.1.3:0 198.18.1.4:0]",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn a_task_that_does_not_serve_leaves_every_vip_but_stays_a_peer() {
    let view = view(
        vec![front()],
        vec![
            peer("front", "t1", ME, "198.18.1.3", "web", true),
            peer("front", "t2", "n2", "198.18.1.4", "web", false),
            peer("front", "t3", "n2", "198.18.1.5", "api", true),
        ],
        vec![vip_service("front", "web", "198.18.1.2", vec![]), vip_service("front", "api", "198.18.1.6", vec![])],
    );
    let tasks = local(vec![(task("t1", &[(front(), "198.18.1.3")], vec![]), Some("198.19.0.2"))]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network front vni 4097 198.18.1.0/24",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3] egress eth1=198.19.0.2",
            "remote front 198.18.1.4 at 192.0.2.12",
            "remote front 198.18.1.5 at 192.0.2.12",
            "lb shoaltest-x-tt1 198.18.1.2:*/tcp -> [198.18.1.3:0]",
            "lb shoaltest-x-tt1 198.18.1.2:*/udp -> [198.18.1.3:0]",
            "lb shoaltest-x-tt1 198.18.1.6:*/tcp -> [198.18.1.5:0]",
            "lb shoaltest-x-tt1 198.18.1.6:*/udp -> [198.18.1.5:0]",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn dnsrr_services_get_no_vip_and_other_networks_are_not_balanced() {
    let mut rr = vip_service("front", "db", "", vec![]);
    rr.mode = v1::endpoint_spec::Mode::Dnsrr as i32;
    let view = view(
        vec![front(), back()],
        vec![
            peer("front", "t5", "n2", "198.18.1.7", "db", true),
            peer("back", "t6", "n2", "198.18.2.7", "cache", true),
        ],
        vec![rr, vip_service("back", "cache", "198.18.2.2", vec![])],
    );
    // t1 is on front only: back's service is not its concern, nor back's peers.
    let tasks = local(vec![(task("t1", &[(front(), "198.18.1.3")], vec![]), Some("198.19.0.2"))]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network front vni 4097 198.18.1.0/24",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3] egress eth1=198.19.0.2",
            "remote front 198.18.1.7 at 192.0.2.12",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn a_task_on_two_networks_gets_an_interface_on_each_and_egress_last() {
    let view = view(vec![front(), back()], vec![], vec![]);
    let tasks =
        local(vec![(task("t1", &[(front(), "198.18.1.3"), (back(), "198.18.2.3")], vec![]), Some("198.19.0.2"))]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network back vni 4098 198.18.2.0/24 internal",
            "network front vni 4097 198.18.1.0/24",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3 eth1:back=198.18.2.3] egress eth2=198.19.0.2",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn a_network_is_taken_from_the_task_when_the_view_does_not_have_it_yet() {
    let tasks = local(vec![(task("t1", &[(back(), "198.18.2.3")], vec![]), None)]);
    check(
        &NetworkView::default(),
        &tasks,
        None,
        None,
        &[
            "network back vni 4098 198.18.2.0/24 internal",
            "container t1 in shoaltest-x-tt1 [eth0:back=198.18.2.3]",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn the_routing_mesh_balances_published_ports_from_the_ingress_sandbox() {
    // web publishes 8080 -> 80 (tcp) and 5353 -> 53 (udp) through ingress; its tasks t1 (here)
    // and t2 (n2) serve on ingress; n2 has a sandbox too.
    let ports = vec![
        port(8080, 80, v1::port_config::Protocol::Tcp, false),
        port(5353, 53, v1::port_config::Protocol::Udp, false),
    ];
    let view = view(
        vec![ingress_net(), front()],
        vec![
            peer("ingress", "t1", ME, "198.18.255.5", "web", true),
            peer("ingress", "t2", "n2", "198.18.255.6", "web", true),
            peer("ingress", "ingress-sbox.n1", ME, "198.18.255.2", "", false),
            peer("ingress", "ingress-sbox.n2", "n2", "198.18.255.3", "", false),
        ],
        vec![vip_service("ingress", "web", "198.18.255.4", ports)],
    );
    let tasks = local(vec![(
        task("t1", &[(front(), "198.18.1.3"), (ingress_net(), "198.18.255.5")], vec![]),
        Some("198.19.0.3"),
    )]);
    let attachment = ingress_attachment("198.18.255.2");
    check(
        &view,
        &tasks,
        Some(&attachment),
        Some("198.19.0.2"),
        &[
            "network front vni 4097 198.18.1.0/24",
            "network ingress vni 4096 198.18.255.0/24",
            "container ingress-sbox in shoaltest-x-ingress-sbox [eth0:ingress=198.18.255.2] egress eth1=198.19.0.2",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3 eth1:ingress=198.18.255.5] egress eth2=198.19.0.3",
            "remote ingress 198.18.255.3 at 192.0.2.12",
            "remote ingress 198.18.255.6 at 192.0.2.12",
            "lb shoaltest-x-ingress-sbox 198.19.0.2:5353/udp -> [198.18.255.5:53 198.18.255.6:53]",
            "lb shoaltest-x-ingress-sbox 198.19.0.2:8080/tcp -> [198.18.255.5:80 198.18.255.6:80]",
            "publish 8080/tcp -> 198.19.0.2:8080",
            "publish 5353/udp -> 198.19.0.2:5353",
            "return shoaltest-x-tt1 via eth1 [198.18.255.2 198.18.255.3]",
            "forwarding shoaltest-x-ingress-sbox",
            "netns [shoaltest-x-ingress-sbox=ingress-sbox shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn a_node_with_ingress_and_no_task_still_runs_the_sandbox() {
    let ports = vec![port(8080, 80, v1::port_config::Protocol::Tcp, false)];
    let view = view(
        vec![ingress_net()],
        vec![peer("ingress", "t2", "n2", "198.18.255.6", "web", true)],
        vec![vip_service("ingress", "web", "198.18.255.4", ports)],
    );
    let attachment = ingress_attachment("198.18.255.2");
    check(
        &view,
        &BTreeMap::new(),
        Some(&attachment),
        Some("198.19.0.2"),
        &[
            "network ingress vni 4096 198.18.255.0/24",
            "container ingress-sbox in shoaltest-x-ingress-sbox [eth0:ingress=198.18.255.2] egress eth1=198.19.0.2",
            "remote ingress 198.18.255.6 at 192.0.2.12",
            "lb shoaltest-x-ingress-sbox 198.19.0.2:8080/tcp -> [198.18.255.6:80]",
            "publish 8080/tcp -> 198.19.0.2:8080",
            "forwarding shoaltest-x-ingress-sbox",
            "netns [shoaltest-x-ingress-sbox=ingress-sbox]",
        ],
    );
}

#[test]
fn host_mode_ports_go_straight_to_the_local_task_and_conflicts_keep_the_first() {
    let view = view(vec![front()], vec![], vec![]);
    let tasks = local(vec![
        (
            task("t1", &[(front(), "198.18.1.3")], vec![port(8000, 80, v1::port_config::Protocol::Tcp, true)]),
            Some("198.19.0.2"),
        ),
        // Same published port on this node: left out (the scheduler keeps such tasks apart).
        (
            task("t2", &[(front(), "198.18.1.4")], vec![port(8000, 80, v1::port_config::Protocol::Tcp, true)]),
            Some("198.19.0.3"),
        ),
        // No egress (internal only): nothing to forward to.
        (task("t3", &[(back(), "198.18.2.4")], vec![port(9000, 90, v1::port_config::Protocol::Udp, true)]), None),
    ]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network back vni 4098 198.18.2.0/24 internal",
            "network front vni 4097 198.18.1.0/24",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3] egress eth1=198.19.0.2",
            "container t2 in shoaltest-x-tt2 [eth0:front=198.18.1.4] egress eth1=198.19.0.3",
            "container t3 in shoaltest-x-tt3 [eth0:back=198.18.2.4]",
            "publish 8000/tcp -> 198.19.0.2:80",
            "netns [shoaltest-x-tt1=t1 shoaltest-x-tt2=t2 shoaltest-x-tt3=t3]",
        ],
    );
}

#[test]
fn what_cannot_be_wired_is_a_problem_of_its_owner_only() {
    let mut unallocated = front();
    unallocated.id = "new".into();
    unallocated.allocation = None;
    let mut clash = back();
    clash.id = "clash".into();
    if let Some(a) = clash.allocation.as_mut() {
        a.vni = 4097;
    }
    let view = view(vec![front()], vec![], vec![]);
    let tasks = local(vec![
        (task("t1", &[(front(), "198.18.1.3")], vec![]), Some("198.19.0.2")),
        (task("t2", &[(unallocated, "198.18.1.9")], vec![]), Some("198.19.0.3")),
        (task("t3", &[(front(), "198.18.9.9")], vec![]), Some("198.19.0.4")),
        (task("t4", &[(clash, "198.18.2.9")], vec![]), None),
    ]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network front vni 4097 198.18.1.0/24",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3] egress eth1=198.19.0.2",
            "problem t2: network new is not allocated yet",
            "problem t3: task t3: address 198.18.9.9 is outside the subnets of network front",
            "problem t4: network clash: vni 4097 is used by network front",
            "netns [shoaltest-x-tt1=t1 shoaltest-x-tt2=t2 shoaltest-x-tt3=t3 shoaltest-x-tt4=t4]",
        ],
    );
}

#[test]
fn a_peer_seen_on_two_nodes_is_programmed_once() {
    // t2 moved from n2 to n3 and both records are in the view for a moment: one MAC, one node.
    let mut moved = peer("front", "t2b", "n3", "198.18.1.4", "web", true);
    moved.node_addr = "192.0.2.13".into();
    let view = view(vec![front()], vec![peer("front", "t2a", "n2", "198.18.1.4", "web", true), moved], vec![]);
    let tasks = local(vec![(task("t1", &[(front(), "198.18.1.3")], vec![]), None)]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network front vni 4097 198.18.1.0/24",
            "container t1 in shoaltest-x-tt1 [eth0:front=198.18.1.3]",
            "remote front 198.18.1.4 at 192.0.2.12",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn dns_records_follow_the_view_by_deltas() {
    let mut rr = vip_service("front", "db", "", vec![]);
    rr.mode = v1::endpoint_spec::Mode::Dnsrr as i32;
    let mut first = view(
        vec![front(), ingress_net()],
        vec![
            peer("front", "t1", ME, "198.18.1.3", "web", true),
            peer("front", "t2", "n2", "198.18.1.4", "web", false),
            peer("ingress", "t1", ME, "198.18.255.5", "web", true),
            peer("ingress", "ingress-sbox.n1", ME, "198.18.255.2", "", false),
        ],
        vec![
            vip_service("front", "web", "198.18.1.2", vec![]),
            rr,
            vip_service("ingress", "web", "198.18.255.4", vec![]),
        ],
    );
    let records = dns_records(&first);
    assert_eq!(records.keys().collect::<Vec<_>>(), ["front"], "ingress has no names");
    let front_records = &records["front"];
    assert_eq!(front_records.services["web"].endpoint, Endpoint::Vip(vec!["198.18.1.2".parse().expect("ip")]));
    assert_eq!(front_records.services["db"].endpoint, Endpoint::DnsRr);
    assert_eq!(front_records.tasks["t1"].name, "web.t1");
    assert!(front_records.tasks["t1"].healthy && !front_records.tasks["t2"].healthy);

    let deltas = dns_deltas(&BTreeMap::new(), &records);
    assert_eq!(deltas.len(), 1);
    assert_eq!(deltas[0].1.len(), 4, "two services and two tasks: {:?}", deltas[0].1);
    assert!(dns_deltas(&records, &records).is_empty(), "nothing changed");

    // t2 starts serving and t1 is killed: one upsert, one removal.
    first.apply(vec![
        v1::NetworkChange { peer: Some(peer("front", "t2", "n2", "198.18.1.4", "web", true)), ..Default::default() },
        v1::NetworkChange {
            action: Action::Remove as i32,
            peer: Some(v1::NetworkPeer { network_id: "front".into(), id: "t1".into(), ..Default::default() }),
            ..Default::default()
        },
    ]);
    let next = dns_records(&first);
    let deltas = dns_deltas(&records, &next);
    assert_eq!(
        deltas,
        vec![(
            "front".to_owned(),
            vec![
                Delta::RemoveTask { network: "front".into(), task_id: "t1".into() },
                Delta::UpsertTask { network: "front".into(), task: next["front"].tasks["t2"].clone() },
            ]
        )]
    );
    // The network goes: one removal of the network.
    first.apply(vec![v1::NetworkChange {
        action: Action::Remove as i32,
        network: Some(front()),
        ..Default::default()
    }]);
    let deltas = dns_deltas(&next, &dns_records(&first));
    assert_eq!(deltas, vec![("front".to_owned(), vec![Delta::RemoveNetwork { network: "front".into() }])]);
}

#[test]
fn hosts_files_name_the_task_at_its_addresses() {
    let t = task("t1", &[(front(), "198.18.1.3"), (back(), "198.18.2.3")], vec![]);
    assert_eq!(
        hosts_file(&t, "web-1"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n198.18.1.3\tweb-1\n198.18.2.3\tweb-1\n"
    );
    let bare = task("t2", &[], vec![]);
    assert!(hosts_file(&bare, "t2").ends_with("127.0.1.1\tt2\n"));
    assert_eq!(
        dns_networks(&task("t3", &[(front(), "198.18.1.5"), (ingress_net(), "198.18.255.9")], vec![])),
        ["front"]
    );
    assert!(needs_egress(&t) && !needs_egress(&task("t4", &[(back(), "198.18.2.4")], vec![])));
}

#[test]
fn task_namespaces_are_named_and_recognised_by_prefix() {
    let names = names();
    assert_eq!(names.task_netns("abc"), std::path::PathBuf::from("/run/netns/shoaltest-x-tabc"));
    assert_eq!(names.task_of("shoaltest-x-tabc").as_deref(), Some("abc"));
    assert_eq!(names.task_of("shoaltest-x-ingress-sbox"), None);
    assert_eq!(names.task_of("shoaltest-x-ov-front"), None);
    assert_eq!(names.task_of("shoaltest-x-t"), None);
    assert_eq!(names.task_of("other-tabc"), None);
    assert_eq!(names.overlay().sandbox("front"), "shoaltest-x-ov-front");
}

fn secure() -> v1::Network {
    let mut network = net("secure", "198.18.3.0/24", 4099, false, false);
    network.spec.as_mut().expect("spec").options.insert("encrypted".into(), String::new());
    network.allocation.as_mut().expect("allocation").mtu = 1416;
    network
}

fn with_keys(mut view: NetworkView, times: &[u64]) -> NetworkView {
    let keys = times.iter().map(|t| v1::NetworkKey { key: vec![7; 16], lamport_time: *t }).collect();
    view.apply(vec![v1::NetworkChange {
        keys: Some(v1::NetworkKeys { network_id: "secure".into(), keys }),
        ..Default::default()
    }]);
    view
}

#[test]
fn an_encrypted_network_gets_the_ring_and_the_nodes_own_underlay_address() {
    let view = with_keys(
        view(
            vec![secure()],
            vec![
                peer("secure", "t1", ME, "198.18.3.3", "web", true),
                peer("secure", "t2", "n2", "198.18.3.4", "web", true),
            ],
            vec![],
        ),
        &[5, 6, 7],
    );
    let tasks = local(vec![(task("t1", &[(secure(), "198.18.3.3")], vec![]), None)]);
    check(
        &view,
        &tasks,
        None,
        None,
        &[
            "network secure vni 4099 198.18.3.0/24 encrypted mtu 1416",
            "encryption from 192.0.2.11 with keys [5, 6, 7]",
            "container t1 in shoaltest-x-tt1 [eth0:secure=198.18.3.3]",
            "remote secure 198.18.3.4 at 192.0.2.12",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}

#[test]
fn a_task_on_an_encrypted_network_waits_for_the_keys_and_is_refused_without_esp() {
    let plain = view(vec![secure()], vec![peer("secure", "t1", ME, "198.18.3.3", "web", true)], vec![]);
    let tasks = local(vec![(task("t1", &[(secure(), "198.18.3.3")], vec![]), None)]);
    // No keys yet: not wired (the sandbox is made, fail closed), and the reason says it waits.
    check(
        &plain,
        &tasks,
        None,
        None,
        &[
            "network secure vni 4099 198.18.3.0/24 encrypted mtu 1416",
            "problem t1: waiting for the keys of encrypted network secure",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
    // A kernel without ESP: the keys do not help.
    check_esp(
        &with_keys(plain, &[5, 6, 7]),
        &tasks,
        None,
        None,
        false,
        &[
            "network secure vni 4099 198.18.3.0/24 encrypted mtu 1416",
            "problem t1: network secure is encrypted, and this node's kernel has no ESP (esp4) or no rfc4106(gcm(aes)): \
             its tasks cannot run here (load esp4, or constrain the service to nodes that have it)",
            "netns [shoaltest-x-tt1=t1]",
        ],
    );
}
