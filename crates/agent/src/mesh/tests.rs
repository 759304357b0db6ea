//! Unit tests of the mesh's pure parts: rendered rulesets, digests, names, numbering, reading
//! `ip -j` listings and the plan of rule and route changes.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use super::render::{self, Ruleset};
use super::routes::{self, Observed, Op, Route, Rule};
use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn tcp(port: u16, to: &str) -> Publish {
    Publish { protocol: Protocol::Tcp, port, to: to.parse().expect("test socket address") }
}

/// The block without its digest line (the digest is checked separately).
fn without_comment(ruleset: &Ruleset) -> String {
    ruleset.block.lines().filter(|l| !l.starts_with("\tcomment ")).map(|l| format!("{l}\n")).collect()
}

#[test]
fn publish_ruleset_maps_protocol_and_port_to_the_sandbox() {
    let ports = [tcp(8080, "198.19.0.2:8080"), Publish { protocol: Protocol::Udp, ..tcp(53, "198.19.0.2:5353") }];
    let ruleset = render::publish_ruleset("shoal_publish", &ports);
    assert_eq!(
        without_comment(&ruleset),
        "table ip shoal_publish {\n\
         \tmap ports {\n\
         \t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\
         \t\telements = { tcp . 8080 : 198.19.0.2 . 8080, udp . 53 : 198.19.0.2 . 5353 }\n\
         \t}\n\
         \tchain prerouting {\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tfib daddr type local dnat ip to meta l4proto . th dport map @ports\n\
         \t}\n\
         \tchain output {\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @ports\n\
         \t}\n\
         }\n"
    );
    assert!(ruleset.block.starts_with(&format!("table ip shoal_publish {{\n\tcomment \"{}\"\n", ruleset.comment)));
    assert_eq!(
        ruleset.replace_script("shoal_publish"),
        format!("table ip shoal_publish\ndelete table ip shoal_publish\n{}", ruleset.block)
    );
}

#[test]
fn return_ruleset_marks_by_source_mac_and_restores_for_the_route_lookup() {
    let ruleset = render::return_ruleset(
        "shoal_mesh",
        "eth0",
        &[(ip("198.18.255.2"), 0x5348_ff02), (ip("198.18.255.3"), 0x5348_ff03)],
    );
    assert_eq!(
        without_comment(&ruleset),
        "table ip shoal_mesh {\n\
         \tmap sandboxes {\n\
         \t\ttype ether_addr : mark\n\
         \t\telements = { 02:42:c6:12:ff:02 : 0x5348ff02, 02:42:c6:12:ff:03 : 0x5348ff03 }\n\
         \t}\n\
         \tmap udp_flows {\n\
         \t\ttype ipv4_addr . inet_service . inet_service : ipv4_addr\n\
         \t\tflags dynamic,timeout\n\
         \t\ttimeout 2m\n\
         \t}\n\
         \tchain prerouting {\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"eth0\" ct state new ct mark set ether saddr map @sandboxes\n\
         \t\tct mark & 0xffff0000 == 0x53480000 meta l4proto udp update @udp_flows { ip saddr . udp sport . udp dport : ip daddr }\n\
         \t}\n\
         \tchain output_source {\n\
         \t\ttype route hook output priority raw; policy accept;\n\
         \t\tmeta l4proto udp ip saddr set ip daddr . udp dport . udp sport map @udp_flows\n\
         \t}\n\
         \tchain output {\n\
         \t\ttype route hook output priority mangle; policy accept;\n\
         \t\tct mark & 0xffff0000 == 0x53480000 meta mark set ct mark\n\
         \t}\n\
         }\n"
    );
    // nft refuses `elements = { }`: an empty map has no elements line.
    let empty = render::return_ruleset("shoal_mesh", "eth0", &[]);
    assert!(!empty.block.contains("elements"), "{}", empty.block);
    assert_eq!(render::UDP_FLOW_TIMEOUT, "2m", "the timeout in the expected text");
}

#[test]
fn digests_follow_the_content_and_the_table() {
    let a = render::publish_ruleset("t", &[tcp(80, "198.19.0.2:80")]);
    assert_eq!(a, render::publish_ruleset("t", &[tcp(80, "198.19.0.2:80")]), "same input, same digest");
    assert!(a.comment.starts_with(render::COMMENT_PREFIX) && a.comment.len() == render::COMMENT_PREFIX.len() + 16);
    for other in [
        render::publish_ruleset("t", &[tcp(81, "198.19.0.2:80")]),
        render::publish_ruleset("t", &[tcp(80, "198.19.0.3:80")]),
        render::publish_ruleset("u", &[tcp(80, "198.19.0.2:80")]),
    ] {
        assert_ne!(a.comment, other.comment, "{}", other.block);
    }
    let one = render::return_ruleset("shoal_mesh", "eth0", &[(ip("198.18.255.2"), 0x5348_ff02)]);
    assert_ne!(one.comment, render::return_ruleset("shoal_mesh", "eth1", &[(ip("198.18.255.2"), 0x5348_ff02)]).comment);
    // Known value, so that a change of the hash (which would rewrite every table once) is deliberate.
    assert_eq!(render::fnv1a64(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(render::fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn the_digest_comment_is_read_from_nfts_listing() {
    // As nft 1.0.6 lists a table made from `publish_ruleset`.
    let listing = "table ip shoal_publish {\n\tcomment \"shoal-mesh 0123456789abcdef\"\n\tmap ports {\n\
                   \t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\t}\n}\n";
    assert_eq!(render::comment_of(listing), Some("shoal-mesh 0123456789abcdef"));
    let cases = [
        ("table ip x {\n\tcomment \"someone else's\"\n}\n", "a comment that is not ours"),
        ("table ip x {\n\tchain c {\n\t\tcomment \"shoal-mesh 0\"\n\t}\n}\n", "a chain's comment"),
        ("table ip x {\n}\n", "no comment"),
        ("", "nothing"),
    ];
    for (listing, what) in cases {
        assert_eq!(render::comment_of(listing), None, "{what}");
    }
}

#[test]
fn names_written_into_rulesets_and_commands_are_checked() {
    let tables = [("shoal_publish", true), ("_x", true), ("a-b9", true), ("9a", false), ("", false)];
    let tables = tables.into_iter().chain([("a b", false), ("a;flush ruleset", false), ("x\"", false)]);
    for (name, valid) in tables.chain([(&*"a".repeat(65), false), (&*"a".repeat(64), true)]) {
        assert_eq!(render::valid_table_name(name), valid, "table {name:?}");
    }
    let interfaces = [("eth0", true), ("eth0.100", true), ("shl-eg1234abcd", true), ("0123456789abcdef", false)];
    let interfaces = interfaces.into_iter().chain([("", false), (".", false), ("..", false), ("e/0", false)]);
    for (name, valid) in interfaces.chain([("e\"0", false), ("e 0", false), ("eth0:1", false)]) {
        assert_eq!(render::valid_interface_name(name), valid, "interface {name:?}");
    }
}

#[test]
fn sandboxes_are_numbered_by_address_not_by_position() {
    assert_eq!(route_number(ip("198.18.255.2")), 0x5348_ff02);
    assert_eq!(route_number(ip("198.19.1.7")), 0x5348_0107);
    let numbered = routes::number(&[ip("198.18.255.3"), ip("198.18.255.2"), ip("198.18.255.3")]).expect("no clash");
    assert_eq!(numbered, vec![(ip("198.18.255.2"), 0x5348_ff02), (ip("198.18.255.3"), 0x5348_ff03)]);
    let without_first = routes::number(&[ip("198.18.255.3")]).expect("no clash");
    assert_eq!(without_first, vec![(ip("198.18.255.3"), 0x5348_ff03)], "removing one keeps the other's number");
    assert_eq!(routes::number(&[ip("198.18.0.5"), ip("198.19.0.5")]), Err((ip("198.18.0.5"), ip("198.19.0.5"))));
    assert_eq!(endpoint_mac(ip("198.18.255.2")), [0x02, 0x42, 198, 18, 255, 2]);
}

/// `ip -j -4 rule show` and `ip -j -4 route show table all` as iproute2 6.1 prints them.
const RULES: &str = r#"[{"priority":0,"src":"all","table":"local"},{"priority":10000,"src":"all","fwmark":"0x5348ff02","table":"1397292802"},{"priority":10000,"src":"all","fwmark":"0x5348ff03","fwmask":"0xffff","table":"5"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]"#;
const ROUTES: &str = r#"[{"dst":"default","gateway":"198.18.255.2","dev":"eth0","table":"1397292802","flags":[]},{"dst":"198.18.255.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"198.18.255.10","flags":[]},{"type":"local","dst":"127.0.0.1","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},{"dst":"default","gateway":"198.19.0.1","dev":"eth1","table":"7","flags":[]}]"#;

#[test]
fn listings_keep_only_the_meshs_rules_and_tables() {
    let observed = routes::parse_observed(RULES, ROUTES).expect("parse");
    assert_eq!(
        observed,
        Observed {
            rules: vec![
                Rule { fwmark: Some(0x5348_ff02), fwmask: None, table: "1397292802".into() },
                Rule { fwmark: Some(0x5348_ff03), fwmask: Some(0xffff), table: "5".into() },
            ],
            routes: vec![Route {
                table: 0x5348_ff02,
                dst: "default".into(),
                gateway: Some(ip("198.18.255.2")),
                dev: Some("eth0".into()),
            }],
        }
    );
    assert_eq!(routes::parse_observed("", "").expect("empty"), Observed::default());
    let err = routes::parse_observed("[{", "[]").expect_err("truncated");
    assert!(err.contains("ip -j rule show"), "{err}");
    let err = routes::parse_observed(r#"[{"priority":10000,"fwmark":"zz","table":"1"}]"#, "[]").expect_err("bad mark");
    assert!(err.contains("fwmark"), "{err}");
}

fn rule(n: u32) -> Rule {
    Rule { fwmark: Some(n), fwmask: None, table: n.to_string() }
}

fn default_route(table: u32, via: &str, dev: &str) -> Route {
    Route { table, dst: "default".into(), gateway: Some(ip(via)), dev: Some(dev.into()) }
}

/// Each case: the wanted sandboxes, what the namespace has, and the `ip -batch` lines of the
/// plan (before the marks change | after).
#[test]
fn plans_reach_exactly_the_wanted_rules_and_tables() {
    const A: u32 = 0x5348_ff02;
    const B: u32 = 0x5348_ff03;
    let (a, b) = ("198.18.255.2", "198.18.255.3");
    let both = Observed {
        rules: vec![rule(A), rule(B)],
        routes: vec![default_route(A, a, "eth0"), default_route(B, b, "eth0")],
    };
    let cases: Vec<(&str, Vec<&str>, Observed, &str, &str)> = vec![
        (
            "fresh namespace",
            vec![a, b],
            Observed::default(),
            "route replace default via 198.18.255.2 dev eth0 table 1397292802\n\
             rule add pref 10000 fwmark 0x5348ff02 lookup 1397292802\n\
             route replace default via 198.18.255.3 dev eth0 table 1397292803\n\
             rule add pref 10000 fwmark 0x5348ff03 lookup 1397292803\n",
            "",
        ),
        ("converged", vec![b, a], both.clone(), "", ""),
        (
            "one sandbox removed",
            vec![b],
            both.clone(),
            "",
            "rule del pref 10000 fwmark 0x5348ff02 lookup 1397292802\nroute flush table 1397292802\n",
        ),
        (
            "all removed",
            vec![],
            both.clone(),
            "",
            "rule del pref 10000 fwmark 0x5348ff02 lookup 1397292802\n\
             rule del pref 10000 fwmark 0x5348ff03 lookup 1397292803\n\
             route flush table 1397292802\nroute flush table 1397292803\n",
        ),
        (
            "wrong gateway and device",
            vec![a],
            Observed { rules: vec![rule(A)], routes: vec![default_route(A, b, "eth1")] },
            "route replace default via 198.18.255.2 dev eth0 table 1397292802\n",
            "",
        ),
        (
            "an extra route in a wanted table",
            vec![a],
            Observed {
                rules: vec![rule(A)],
                routes: vec![
                    default_route(A, a, "eth0"),
                    Route { table: A, dst: "198.19.5.0/24".into(), gateway: None, dev: Some("eth0".into()) },
                ],
            },
            "route flush table 1397292802\nroute replace default via 198.18.255.2 dev eth0 table 1397292802\n",
            "",
        ),
        (
            "foreign and damaged rules at the mesh's priority",
            vec![a],
            Observed {
                rules: vec![
                    Rule { fwmark: Some(A), fwmask: None, table: "main".into() },
                    Rule { fwmark: Some(A), fwmask: Some(0xffff), table: A.to_string() },
                    Rule { fwmark: None, fwmask: None, table: "7".into() },
                ],
                routes: vec![default_route(A, a, "eth0")],
            },
            "rule add pref 10000 fwmark 0x5348ff02 lookup 1397292802\n",
            "rule del pref 10000 fwmark 0x5348ff02 lookup main\n\
             rule del pref 10000 fwmark 0x5348ff02/0xffff lookup 1397292802\n\
             rule del pref 10000 lookup 7\n",
        ),
        ("nothing wanted, nothing there", vec![], Observed::default(), "", ""),
    ];
    for (name, wanted, observed, before, after) in cases {
        let wanted: Vec<Ipv4Addr> = wanted.into_iter().map(ip).collect();
        let numbered = routes::number(&wanted).expect("no clash");
        let plan = routes::plan(&numbered, "eth0", &observed);
        assert_eq!(routes::batch(&plan.before), before, "{name}: before");
        assert_eq!(routes::batch(&plan.after), after, "{name}: after");
        assert_eq!(plan.is_empty(), before.is_empty() && after.is_empty(), "{name}");
    }
    assert_eq!(Op::FlushTable(5).to_string(), "route flush table 5");
}

#[test]
fn invalid_input_is_refused_before_the_kernel_is_touched() {
    // The namespace does not exist: each error comes from the checks that run first.
    let nowhere = Path::new("/nonexistent/shoal-mesh-netns");
    let err = publish(Some(nowhere), "t", &[tcp(8080, "198.19.0.2:8080"), tcp(8080, "198.19.0.3:8080")])
        .expect_err("duplicate port");
    assert_eq!(
        err.to_string(),
        "nftables table ip t in network namespace /nonexistent/shoal-mesh-netns: port 8080/tcp is published \
         twice (to 198.19.0.2:8080 and 198.19.0.3:8080)"
    );
    let err = publish(Some(nowhere), "t", &[tcp(8080, "198.19.0.2:8080"), tcp(8080, "198.19.0.2:8080")])
        .expect_err("the same entry twice");
    assert!(matches!(err, MeshError::DuplicatePort { .. }), "{err}");
    let udp_too = [tcp(8080, "198.19.0.2:8080"), Publish { protocol: Protocol::Udp, ..tcp(8080, "198.19.0.2:8080") }];
    let err = publish(Some(nowhere), "t", &udp_too).expect_err("the namespace does not exist");
    assert!(matches!(err, MeshError::Netns { .. }), "tcp and udp on one port are fine: {err}");
    assert!(err.to_string().contains("/nonexistent/shoal-mesh-netns"), "{err}");
    let err = publish(None, "t", &[tcp(0, "198.19.0.2:8080")]).expect_err("port 0");
    assert_eq!(
        err.to_string(),
        "nftables table ip t in network namespace (current): cannot publish 0/tcp -> 198.19.0.2:8080: port 0"
    );
    let err = publish(None, "t;", &[]).expect_err("table name");
    assert!(matches!(err, MeshError::TableName { .. }), "{err}");

    let err = return_routes(nowhere, "eth 0", &[]).expect_err("interface name");
    assert!(err.to_string().contains("\"eth 0\"") && err.to_string().contains(&nowhere.display().to_string()), "{err}");
    let err = return_routes(nowhere, "eth0", &[ip("0.0.0.0")]).expect_err("unspecified");
    assert!(matches!(err, MeshError::SandboxAddress { .. }), "{err}");
    let err = return_routes(nowhere, "eth0", &[ip("198.18.0.5"), ip("198.19.0.5")]).expect_err("clash");
    assert!(err.to_string().contains("198.18.0.5 and 198.19.0.5") && err.to_string().contains("1397227525"), "{err}");
    let err = enable_forwarding(nowhere).expect_err("no namespace");
    assert!(err.to_string().starts_with("cannot enter network namespace /nonexistent/shoal-mesh-netns: "), "{err}");
}

#[test]
fn published_ports_display_as_port_protocol_and_destination() {
    assert_eq!(tcp(8080, "198.19.0.2:80").to_string(), "8080/tcp -> 198.19.0.2:80");
    let _: SocketAddrV4 = tcp(1, "198.19.0.2:1").to;
}
