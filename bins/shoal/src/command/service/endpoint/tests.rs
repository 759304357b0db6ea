//! The networking flags as tables: values to the spec's objects, bad values to their
//! messages, and `service update`'s edits of a spec.

use super::*;

const TCP: port_config::Protocol = port_config::Protocol::Tcp;
const UDP: port_config::Protocol = port_config::Protocol::Udp;
const SCTP: port_config::Protocol = port_config::Protocol::Sctp;
const INGRESS: port_config::PublishMode = port_config::PublishMode::Ingress;
const HOST: port_config::PublishMode = port_config::PublishMode::Host;

fn port(
    published: u32,
    target: u32,
    protocol: port_config::Protocol,
    mode: port_config::PublishMode,
) -> v1::PortConfig {
    v1::PortConfig {
        protocol: protocol as i32,
        target_port: target,
        published_port: published,
        publish_mode: mode as i32,
        ..Default::default()
    }
}

#[test]
fn publish_values() {
    let cases: &[(&str, &[v1::PortConfig])] = &[
        ("8080:80", &[port(8080, 80, TCP, INGRESS)]),
        ("8080:80/udp", &[port(8080, 80, UDP, INGRESS)]),
        ("8080:80/SCTP", &[port(8080, 80, SCTP, INGRESS)]),
        ("80", &[port(0, 80, TCP, INGRESS)]),
        ("53/udp", &[port(0, 53, UDP, INGRESS)]),
        (":80", &[port(0, 80, TCP, INGRESS)]),
        ("8080-8081:80-81", &[port(8080, 80, TCP, INGRESS), port(8081, 81, TCP, INGRESS)]),
        ("published=8080,target=80", &[port(8080, 80, TCP, INGRESS)]),
        ("target=80", &[port(0, 80, TCP, INGRESS)]),
        ("published=53,target=53,protocol=udp,mode=host", &[port(53, 53, UDP, HOST)]),
        ("mode=host,target=80,published=8080,protocol=TCP", &[port(8080, 80, TCP, HOST)]),
    ];
    for (value, expected) in cases {
        assert_eq!(parse_publish(value).as_deref(), Ok(*expected), "{value}");
    }
}

#[test]
fn bad_publish_values_say_what_and_give_an_example() {
    let example = "; e.g. 8080:80, 8080:80/udp, 80, or published=8080,target=80,protocol=udp,mode=host";
    let cases = [
        ("x", "invalid publish \"x\": target port \"x\" is not a port number (1-65535)"),
        ("", "invalid publish \"\": the target port is missing"),
        ("8080:", "invalid publish \"8080:\": the target port is missing"),
        ("8080:0", "invalid publish \"8080:0\": target port \"0\" is not a port number (1-65535)"),
        ("70000:80", "invalid publish \"70000:80\": published port \"70000\" is not a port number (1-65535)"),
        ("8080:80/icmp", "invalid publish \"8080:80/icmp\": protocol \"icmp\" is not tcp, udp or sctp"),
        (
            "127.0.0.1:8080:80",
            "invalid publish \"127.0.0.1:8080:80\": a host IP is not supported: ports are published on every node",
        ),
        ("8080-8082:80-81", "invalid publish \"8080-8082:80-81\": the published and target ranges differ in length"),
        ("90-80", "invalid publish \"90-80\": target range \"90-80\" ends before it starts"),
        ("published=8080", "invalid publish \"published=8080\": the target port is missing"),
        ("target=80,mode=local", "invalid publish \"target=80,mode=local\": mode \"local\" is not ingress or host"),
        (
            "target=80,host_ip=1.2.3.4",
            "invalid publish \"target=80,host_ip=1.2.3.4\": unknown field \"host_ip\" (fields: published, target, protocol, mode)",
        ),
        ("target=80,udp", "invalid publish \"target=80,udp\": field \"udp\" is not KEY=VALUE"),
    ];
    for (value, expected) in cases {
        assert_eq!(parse_publish(value), Err(format!("{expected}{example}")), "{value}");
    }
}

#[test]
fn network_values() {
    let attachment = |target: &str, aliases: &[&str]| v1::NetworkAttachmentConfig {
        target: target.into(),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
    };
    let cases = [
        ("backend", attachment("backend", &[])),
        ("name=backend", attachment("backend", &[])),
        ("name=backend,alias=db,alias=primary", attachment("backend", &["db", "primary"])),
        ("alias=db,name=backend", attachment("backend", &["db"])),
    ];
    for (value, expected) in cases {
        assert_eq!(parse_network(value), Ok(expected), "{value}");
    }
    let example = "; e.g. backend, or name=backend,alias=db";
    let bad = [
        ("", "invalid network \"\": the name is empty"),
        ("alias=db", "invalid network \"alias=db\": the name is missing"),
        ("name=", "invalid network \"name=\": name is empty"),
        (
            "name=backend,driver-opt=x=y",
            "invalid network \"name=backend,driver-opt=x=y\": unknown field \"driver-opt\" (fields: name, alias)",
        ),
        ("name=backend,db", "invalid network \"name=backend,db\": field \"db\" is not KEY=VALUE"),
    ];
    for (value, expected) in bad {
        assert_eq!(parse_network(value), Err(format!("{expected}{example}")), "{value}");
    }
}

#[test]
fn create_sends_an_endpoint_only_when_asked() {
    let args = |network: &[&str], mode: Option<EndpointMode>, publish: &[&str]| EndpointArgs {
        network: network.iter().map(|s| (*s).to_owned()).collect(),
        endpoint_mode: mode,
        publish: publish.iter().map(|s| (*s).to_owned()).collect(),
    };
    assert_eq!(endpoint_spec(&args(&[], None, &[])), Ok((vec![], None)));
    let (networks, endpoint) =
        endpoint_spec(&args(&["a", "name=b,alias=x"], None, &["8080:80", "53/udp"])).expect("valid flags");
    assert_eq!(networks.iter().map(|n| n.target.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(
        endpoint,
        Some(v1::EndpointSpec {
            mode: endpoint_spec::Mode::Vip as i32,
            ports: vec![port(8080, 80, TCP, INGRESS), port(0, 53, UDP, INGRESS)],
        })
    );
    let (_, endpoint) = endpoint_spec(&args(&[], Some(EndpointMode::Dnsrr), &[])).expect("valid flags");
    assert_eq!(endpoint.map(|e| e.mode), Some(endpoint_spec::Mode::Dnsrr as i32));
    assert!(endpoint_spec(&args(&[""], None, &[])).is_err());
}

/// A spec attached to network `net-a` (as `a`), publishing 8080->80/tcp and 53->53/udp in host mode.
fn spec() -> v1::ServiceSpec {
    v1::ServiceSpec {
        networks: vec![v1::NetworkAttachmentConfig { target: "net-a".into(), aliases: vec![] }],
        endpoint: Some(v1::EndpointSpec {
            mode: endpoint_spec::Mode::Vip as i32,
            ports: vec![port(8080, 80, TCP, INGRESS), port(53, 53, UDP, HOST)],
        }),
        ..Default::default()
    }
}

fn edit(flags: &[(&str, &str)]) -> Result<EndpointEdit, String> {
    let mut args = EndpointUpdateArgs {
        network_add: vec![],
        network_rm: vec![],
        endpoint_mode: None,
        publish_add: vec![],
        publish_rm: vec![],
    };
    for (flag, value) in flags {
        let value = (*value).to_owned();
        match *flag {
            "--network-add" => args.network_add.push(value),
            "--network-rm" => args.network_rm.push(value),
            "--publish-add" => args.publish_add.push(value),
            "--publish-rm" => args.publish_rm.push(value),
            "--endpoint-mode" => args.endpoint_mode = EndpointMode::from_str(&value, false).ok(),
            other => panic!("no flag {other} in this table"),
        }
    }
    EndpointEdit::parse(&args)
}

#[test]
fn update_edits_the_spec_as_docker() {
    let ids: HashMap<String, String> =
        [("a", "net-a"), ("b", "net-b")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    // What the spec holds after the flags: its networks (ID, aliases), ports and endpoint mode.
    let (a, b) = (("net-a", &[][..]), ("net-b", &[][..]));
    let (web, dns) = (port(8080, 80, TCP, INGRESS), port(53, 53, UDP, HOST));
    let (vip, dnsrr) = (endpoint_spec::Mode::Vip, endpoint_spec::Mode::Dnsrr);
    let cases = [
        (
            "network-add by name stores the ID",
            vec![("--network-add", "name=b,alias=db")],
            vec![a, ("net-b", &["db"][..])],
            vec![web.clone(), dns.clone()],
            vip,
        ),
        ("network-rm by name", vec![("--network-rm", "a")], vec![], vec![web.clone(), dns.clone()], vip),
        ("network-rm by ID", vec![("--network-rm", "net-a")], vec![], vec![web.clone(), dns.clone()], vip),
        (
            "rm, then add again",
            vec![("--network-rm", "a"), ("--network-add", "a")],
            vec![a],
            vec![web.clone(), dns.clone()],
            vip,
        ),
        ("publish-rm by target", vec![("--publish-rm", "80")], vec![a], vec![dns.clone()], vip),
        ("publish-rm by published:target", vec![("--publish-rm", "8080:80")], vec![a], vec![dns.clone()], vip),
        ("publish-rm by target/protocol", vec![("--publish-rm", "53/udp")], vec![a], vec![web.clone()], vip),
        (
            "publish-add appends",
            vec![("--publish-add", "9090:90")],
            vec![a],
            vec![web.clone(), dns.clone(), port(9090, 90, TCP, INGRESS)],
            vip,
        ),
        (
            "publish-add of a port there already",
            vec![("--publish-add", "8080:80")],
            vec![a],
            vec![web.clone(), dns.clone()],
            vip,
        ),
        (
            "replace a port",
            vec![("--publish-rm", "80"), ("--publish-add", "8081:80")],
            vec![a],
            vec![dns.clone(), port(8081, 80, TCP, INGRESS)],
            vip,
        ),
        (
            "endpoint mode",
            vec![("--endpoint-mode", "dnsrr"), ("--network-add", "b")],
            vec![a, b],
            vec![web.clone(), dns.clone()],
            dnsrr,
        ),
    ];
    for (name, flags, networks, ports, mode) in cases {
        let mut spec = spec();
        edit(&flags).and_then(|e| e.apply(&mut spec, &ids)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<(&str, Vec<&str>)> =
            spec.networks.iter().map(|n| (n.target.as_str(), n.aliases.iter().map(String::as_str).collect())).collect();
        let want: Vec<(&str, Vec<&str>)> = networks.iter().map(|(t, a)| (*t, a.to_vec())).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(spec.endpoint, Some(v1::EndpointSpec { mode: mode as i32, ports }), "{name}");
    }
    let mut untouched = v1::ServiceSpec::default();
    edit(&[("--network-add", "b")]).and_then(|e| e.apply(&mut untouched, &ids)).expect("attach");
    assert_eq!(untouched.endpoint, None, "no endpoint is made when no port or mode flag is given");
}

#[test]
fn update_refuses_what_does_not_apply() {
    let ids: HashMap<String, String> = [("a".to_owned(), "net-a".to_owned())].into();
    let cases = [
        (vec![("--network-add", "a")], "service is already attached to network a"),
        (vec![("--network-rm", "c")], "--network-rm c: the service is not attached to network c"),
        (vec![("--publish-rm", "81")], "--publish-rm 81: the service publishes no such port"),
        (vec![("--publish-rm", "80/udp")], "--publish-rm 80/udp: the service publishes no such port"),
        (vec![("--publish-rm", "9090:80")], "--publish-rm 9090:80: the service publishes no such port"),
        (vec![("--publish-rm", "target=53,protocol=udp,mode=ingress")], {
            "--publish-rm target=53,protocol=udp,mode=ingress: the service publishes no such port"
        }),
    ];
    for (flags, expected) in cases {
        let mut spec = spec();
        assert_eq!(edit(&flags).and_then(|e| e.apply(&mut spec, &ids)), Err(expected.to_owned()), "{flags:?}");
    }
    assert!(edit(&[("--publish-rm", "x")]).is_err_and(|e| e.starts_with("invalid publish-rm \"x\": ")));
    assert!(edit(&[("--publish-add", "x")]).is_err_and(|e| e.starts_with("invalid publish \"x\": ")));
}

#[test]
fn inspect_shapes() {
    let endpoint = v1::Endpoint {
        spec: Some(v1::EndpointSpec { mode: 0, ports: vec![port(0, 80, TCP, INGRESS)] }),
        ports: vec![port(30000, 80, TCP, INGRESS)],
        virtual_ips: vec![v1::VirtualIp { network_id: "ingress-id".into(), addr: "10.255.0.5/16".into() }],
    };
    assert_eq!(
        endpoint_json(Some(&endpoint)),
        serde_json::json!({
            "Spec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress"}]},
            "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30000, "PublishMode": "ingress"}],
            "VirtualIPs": [{"NetworkID": "ingress-id", "Addr": "10.255.0.5/16"}],
        })
    );
    assert_eq!(endpoint_json(None), serde_json::json!({"Spec": {}}));
    assert_eq!(
        networks_json(&spec().networks),
        serde_json::json!([{"Target": "net-a"}]),
        "no Aliases when there are none, as docker"
    );
}
