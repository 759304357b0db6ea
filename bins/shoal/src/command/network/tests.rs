//! `shoal network`'s pure parts: flags to a spec, filters, prune's prompt and report, and
//! inspect's JSON in docker's shape.

use std::time::{Duration, SystemTime};

use clap::Parser as _;

use super::*;

/// Parses `shoal network create ARGS…` as clap does.
fn create(args: &[&str]) -> CreateArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        create: CreateArgs,
    }
    Cli::try_parse_from(std::iter::once("create").chain(args.iter().copied())).expect("valid flags").create
}

#[test]
fn create_flags_make_the_spec() {
    let spec = network_spec(&create(&[
        "--subnet",
        "10.0.9.0/24",
        "--gateway",
        "10.0.9.1",
        "--ip-range",
        "10.0.9.128/25",
        "--attachable",
        "--internal",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--label",
        "team=web",
        "--label",
        "edge",
        "backend",
    ]))
    .expect("valid");
    assert_eq!(spec.driver, "overlay", "the default driver");
    assert_eq!(
        spec.ipam,
        Some(v1::IpamConfig {
            subnet: "10.0.9.0/24".into(),
            gateway: "10.0.9.1".into(),
            ip_range: "10.0.9.128/25".into()
        })
    );
    assert!(spec.attachable && spec.internal && !spec.ingress);
    assert_eq!(spec.options.get("mtu").map(String::as_str), Some("1400"), "docker's MTU option is Shoal's mtu");
    let annotations = spec.annotations.expect("annotations");
    assert_eq!(annotations.name, "backend");
    assert_eq!(annotations.labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(annotations.labels.get("edge").map(String::as_str), Some(""), "a bare label key, as docker");

    let ingress = network_spec(&create(&["-d", "overlay", "--ingress", "-o", "mtu=1450", "ingress"])).expect("valid");
    assert!(ingress.ingress && ingress.options.get("mtu").is_some_and(|m| m == "1450"));

    assert_eq!(
        network_spec(&create(&["-o", "mtu", "x"])),
        Err("invalid --opt \"mtu\": expected KEY=VALUE, e.g. --opt mtu=1400".to_owned())
    );
    assert_eq!(
        network_spec(&create(&["--label", "=v", "x"])),
        Err("invalid --label \"=v\": the key is empty".to_owned())
    );
}

fn network(id: &str, name: &str, labels: &[(&str, &str)]) -> v1::Network {
    v1::Network {
        id: id.into(),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations {
                name: name.into(),
                labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            }),
            driver: "overlay".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn filters_as_docker() {
    let networks = [
        network("aaa111", "ingress", &[]),
        network("bbb222", "backend", &[("team", "web")]),
        network("ccc333", "frontend", &[("team", "ops"), ("edge", "")]),
    ];
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["ingress", "backend", "frontend"]),
        (&["name=end"], &["backend", "frontend"]),
        (&["name=backend", "name=ingress"], &["ingress", "backend"]),
        (&["id=bbb"], &["backend"]),
        (&["driver=overlay", "name=front"], &["frontend"]),
        (&["driver=bridge"], &[]),
        (&["label=team"], &["backend", "frontend"]),
        (&["label=team=ops"], &["frontend"]),
        (&["label=edge"], &["frontend"]),
        (&["scope=swarm"], &["ingress", "backend", "frontend"]),
        (&["scope=local"], &[]),
    ];
    for (filters, expected) in cases {
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let parsed = Filters::parse(&filters, NETWORK_KEYS).expect("valid filters");
        let names: Vec<&str> = networks.iter().filter(|n| network_matches(n, &parsed)).map(render_name).collect();
        assert_eq!(names, *expected, "{filters:?}");
    }
    assert_eq!(
        Filters::parse(&["type=custom".to_owned()], NETWORK_KEYS),
        Err("invalid filter \"type=custom\": \"type\" is not one of name, id, driver, label or scope".to_owned())
    );
    assert!(Filters::parse(&["backend".to_owned()], NETWORK_KEYS).is_err());
}

fn render_name(network: &v1::Network) -> &str {
    network.spec.as_ref().and_then(|s| s.annotations.as_ref()).map(|a| a.name.as_str()).unwrap_or_default()
}

#[test]
fn prune_asks_and_reports_as_docker() {
    for (answer, yes) in [("y\n", true), ("Y", true), ("yes\n", true), ("\n", false), ("n", false), ("", false)] {
        assert_eq!(confirmed(answer), yes, "{answer:?}");
    }
    assert_eq!(pruned(&[]), "");
    assert_eq!(pruned(&["backend".into(), "frontend".into()]), "Deleted Networks:\nbackend\nfrontend\n");
}

#[test]
fn inspect_in_dockers_shape() {
    let mut net = network("4bqd3v9xnv2yqa6zwpl2zrw1b", "backend", &[("team", "web")]);
    net.meta = Some(v1::Meta {
        created_at: Some(shoal_api::to_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_250))),
        ..Default::default()
    });
    if let Some(spec) = net.spec.as_mut() {
        spec.attachable = true;
        spec.options.insert("mtu".into(), "1400".into());
    }
    net.allocation = Some(v1::NetworkAllocation {
        subnet: "10.0.1.0/24".into(),
        gateway: "10.0.1.1".into(),
        ip_range: String::new(),
        vni: 4097,
        mtu: 1400,
    });
    let peers = [v1::NetworkPeerSummary {
        node_id: "n1".into(),
        hostname: "w1".into(),
        node_addr: "192.0.2.14".into(),
        endpoints: vec!["web.1 10.0.1.3/24".into()],
    }];
    let json = network_json(&net, &peers);
    assert_eq!(
        json,
        serde_json::json!({
            "Name": "backend",
            "Id": "4bqd3v9xnv2yqa6zwpl2zrw1b",
            "Created": "2027-01-15T08:00:00.25Z",
            "Scope": "swarm",
            "Driver": "overlay",
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
            "Internal": false,
            "Attachable": true,
            "Ingress": false,
            "Options": {
                "com.docker.network.driver.mtu": "1400",
                "com.docker.network.driver.overlay.vxlanid_list": "4097",
            },
            "Labels": {"team": "web"},
            "Peers": [{"Name": "w1", "IP": "192.0.2.14", "NodeID": "n1", "Endpoints": ["web.1 10.0.1.3/24"]}],
        })
    );

    // Not allocated yet: what was asked for, and why it is not allocated.
    let mut pending = network("x", "big", &[]);
    pending.allocation_error = "the default address pools are exhausted".into();
    let json = network_json(&pending, &[]);
    assert_eq!(json["IPAM"]["Config"], serde_json::json!([]));
    assert_eq!(json["AllocationError"], "the default address pools are exhausted");
    assert_eq!(json["Created"], "");
}
