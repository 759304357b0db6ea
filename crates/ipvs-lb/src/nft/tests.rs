//! Unit tests of the nftables payloads and of reading a listing back.

use serde_json::json;

use super::*;

fn svc() -> Service {
    Service {
        key: ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 10), 80),
        backends: vec![
            Backend { addr: Ipv4Addr::new(198, 18, 1, 12), port: 8080, weight: 2 },
            Backend::new(Ipv4Addr::new(198, 18, 1, 11), 8080),
            Backend { addr: Ipv4Addr::new(198, 18, 1, 13), port: 8080, weight: 0 },
        ],
        source_nat: true,
    }
}

#[test]
fn chain_names_spell_the_key() {
    assert_eq!(chain_name(&svc().key), "svc_198_18_0_10_tcp_80");
}

#[test]
fn weights_become_numgen_ranges_and_drained_backends_comments() {
    let rules = service_rules(&svc().normalized());
    let rendered: Vec<String> = rules.iter().map(|(r, c)| format!("{r} {c:?}")).collect();
    assert_eq!(
        rendered,
        [
            r#"[] Some("drained 198.18.1.13:8080")"#,
            r#"[{"mangle":{"key":{"ct":{"key":"mark"}},"value":{"|":[{"ct":{"key":"mark"}},536870912]}}}] None"#,
            concat!(
                r#"[{"match":{"left":{"meta":{"key":"l4proto"}},"op":"==","right":"tcp"}},"#,
                r#"{"dnat":{"addr":{"map":{"data":{"set":[[0,{"concat":["198.18.1.11",8080]}],"#,
                r#"[{"range":[1,2]},{"concat":["198.18.1.12",8080]}]]},"#,
                r#""key":{"numgen":{"mod":3,"mode":"inc","offset":0}}}},"family":"ip"}}] None"#
            ),
        ]
    );
}

#[test]
fn no_active_backend_drops() {
    let mut service = svc();
    for b in &mut service.backends {
        b.weight = 0;
    }
    let rules = service_rules(&service);
    assert_eq!(rules.last().map(|(r, _)| r.to_string()), Some(r#"[{"drop":null}]"#.to_owned()));
}

#[test]
fn a_listing_reads_back_as_the_service() {
    let service = svc().normalized();
    let mut objects = vec![
        json!({"map": {"name": MAP, "elem": [[element_key(&service.key), {"goto": {"target": chain_name(&service.key)}}]]}}),
    ];
    for (expr, comment) in service_rules(&service) {
        let mut rule = json!({"chain": chain_name(&service.key), "expr": expr});
        if let Some(c) = comment {
            rule["comment"] = json!(c);
        }
        objects.push(json!({ "rule": rule }));
    }
    let parsed = parse_table(&json!({ "nftables": objects })).expect("parse");
    assert_eq!(parsed, vec![service]);
}

#[test]
fn invalid_services_name_the_service() {
    let mut service = svc();
    service.backends.push(service.backends[0]);
    let err = service.validate().expect_err("duplicate backend");
    assert_eq!(err.to_string(), "invalid service 198.18.0.10:80/tcp: backend 198.18.1.12:8080 is listed twice");
}

#[test]
fn sctp_and_udp_services_match_their_protocol_and_key_by_it() {
    for (protocol, name) in [(Protocol::Sctp, "sctp"), (Protocol::Udp, "udp")] {
        let key = ServiceKey { addr: Ipv4Addr::new(198, 18, 0, 11), port: 3868, protocol };
        let service = Service::new(key, vec![Backend::new(Ipv4Addr::new(198, 18, 1, 11), 3868)]);
        let rules = service_rules(&service);
        let dnat = rules.last().map(|(r, _)| r.to_string()).unwrap_or_default();
        assert!(dnat.contains(&format!(r#""right":"{name}""#)), "{dnat}");
        assert_eq!(element_key(&key).to_string(), format!(r#"{{"concat":["198.18.0.11","{name}",3868]}}"#));
        assert_eq!(chain_name(&key), format!("svc_198_18_0_11_{name}_3868"));
    }
}
