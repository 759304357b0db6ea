//! Filters as tables: which objects each filter keeps, and the errors for bad ones.

use super::*;

fn filters(values: &[&str], keys: &[Key]) -> Filters {
    let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
    Filters::parse(&values, keys).unwrap_or_else(|e| panic!("{values:?}: {e}"))
}

fn node(
    id: &str,
    host: &str,
    role: v1::NodeRole,
    availability: v1::NodeAvailability,
    labels: &[(&str, &str)],
) -> v1::Node {
    v1::Node {
        id: id.into(),
        role: role as i32,
        description: Some(v1::NodeDescription { hostname: host.into(), ..Default::default() }),
        spec: Some(v1::NodeSpec {
            availability: availability as i32,
            annotations: Some(v1::Annotations {
                labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn node_filters() {
    use v1::NodeAvailability::{Active, Drain};
    use v1::NodeRole::{Manager, Worker};
    let nodes = [
        node("m1abc", "manager-1", Manager, Active, &[]),
        node("w1def", "worker-1", Worker, Drain, &[("zone", "a")]),
        node("w2ghi", "worker-2", Worker, Active, &[("zone", "b"), ("ssd", "")]),
    ];
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["m1abc", "w1def", "w2ghi"]),
        (&["role=manager"], &["m1abc"]),
        (&["role=worker"], &["w1def", "w2ghi"]),
        (&["role=Worker"], &["w1def", "w2ghi"]),
        (&["name=worker"], &["w1def", "w2ghi"]),
        (&["name=-2"], &["w2ghi"]),
        (&["id=w1"], &["w1def"]),
        (&["id=def"], &[]),
        (&["label=zone"], &["w1def", "w2ghi"]),
        (&["label=zone=b"], &["w2ghi"]),
        (&["label=ssd"], &["w2ghi"]),
        (&["availability=drain"], &["w1def"]),
        (&["availability=active", "role=worker"], &["w2ghi"]),
        (&["availability=active", "availability=drain"], &["m1abc", "w1def", "w2ghi"]),
        (&["membership=accepted"], &["m1abc", "w1def", "w2ghi"]),
        (&["membership=pending"], &[]),
    ];
    for (given, expected) in cases {
        let f = filters(given, NODE_KEYS);
        let kept: Vec<&str> = nodes.iter().filter(|n| node_matches(n, &f)).map(|n| n.id.as_str()).collect();
        assert_eq!(kept, *expected, "{given:?}");
    }
}

fn service(id: &str, name: &str, mode: v1::service_spec::Mode, labels: &[(&str, &str)]) -> v1::Service {
    v1::Service {
        id: id.into(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations {
                name: name.into(),
                labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            }),
            mode: Some(mode),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn service_filters() {
    use v1::service_spec::Mode;
    let services = [
        service("s1", "web", Mode::Replicated(v1::ReplicatedService { replicas: 3 }), &[("tier", "front")]),
        service("s2", "webhook", Mode::Global(v1::GlobalService {}), &[]),
        service("s3", "backup", Mode::ReplicatedJob(v1::ReplicatedJob::default()), &[("tier", "back")]),
    ];
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["s1", "s2", "s3"]),
        (&["name=web"], &["s1", "s2"]),
        (&["name=hook"], &[]),
        (&["name=web", "name=backup"], &["s1", "s2", "s3"]),
        (&["id=s2"], &["s2"]),
        (&["label=tier"], &["s1", "s3"]),
        (&["label=tier=back"], &["s3"]),
        (&["mode=global"], &["s2"]),
        (&["mode=replicated"], &["s1"]),
        (&["mode=replicated-job"], &["s3"]),
        (&["mode=replicated", "name=webhook"], &[]),
    ];
    for (given, expected) in cases {
        let f = filters(given, SERVICE_KEYS);
        let kept: Vec<&str> = services.iter().filter(|s| service_matches(s, &f)).map(|s| s.id.as_str()).collect();
        assert_eq!(kept, *expected, "{given:?}");
    }
}

#[test]
fn task_filters() {
    let task = |id: &str, name: &str, node: &str, desired: TaskState| v1::Task {
        id: id.into(),
        service_id: "svc1".into(),
        service_name: "web".into(),
        node_id: node.into(),
        annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
        desired_state: desired as i32,
        ..Default::default()
    };
    let tasks = [
        task("t1", "web.1", "n1", TaskState::Running),
        task("t2", "web.1", "n2", TaskState::Shutdown),
        task("t3", "web.2", "", TaskState::Running),
        task("t4", "web.3", "n2", TaskState::Accepted),
    ];
    let hostnames = HashMap::from([("n1", "w1"), ("n2", "w2")]);
    let services = HashMap::from([("svc1", "web")]);
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["t1", "t2", "t3", "t4"]),
        (&["desired-state=running"], &["t1", "t3", "t4"]),
        (&["desired-state=shutdown"], &["t2"]),
        (&["desired-state=accepted"], &["t4"]),
        (&["name=web.1"], &["t1", "t2"]),
        (&["node=w2"], &["t2", "t4"]),
        (&["node=n1"], &["t1"]),
        (&["node=w2", "desired-state=running"], &["t4"]),
        (&["service=web"], &["t1", "t2", "t3", "t4"]),
        (&["service=svc"], &["t1", "t2", "t3", "t4"]),
        (&["service=api"], &[]),
        (&["id=t3"], &["t3"]),
    ];
    for (given, expected) in cases {
        let f = filters(given, TASK_KEYS);
        let kept: Vec<&str> =
            tasks.iter().filter(|t| task_matches(t, &f, &hostnames, &services)).map(|t| t.id.as_str()).collect();
        assert_eq!(kept, *expected, "{given:?}");
    }
}

#[test]
fn secret_and_config_filters() {
    let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let objects = [
        ("abc1", "db_password", labels(&[("env", "prod")])),
        ("abd2", "db_user", labels(&[("env", "dev")])),
        ("xyz3", "tls_key", labels(&[])),
    ];
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["abc1", "abd2", "xyz3"]),
        (&["name=db_"], &["abc1", "abd2"]),
        (&["name=password"], &[]),
        (&["id=ab"], &["abc1", "abd2"]),
        (&["id=abc1", "id=xyz"], &["abc1", "xyz3"]),
        (&["label=env"], &["abc1", "abd2"]),
        (&["label=env=dev", "name=db"], &["abd2"]),
    ];
    for (given, expected) in cases {
        let f = filters(given, PAYLOAD_KEYS);
        let kept: Vec<&str> =
            objects.iter().filter(|(id, name, l)| payload_matches(id, name, l, &f)).map(|(id, ..)| *id).collect();
        assert_eq!(kept, *expected, "{given:?}");
    }
}

#[test]
fn bad_filters_name_the_valid_keys_and_values() {
    let cases = [
        (
            NODE_KEYS,
            "color=red",
            "invalid filter \"color=red\": \"color\" is not one of name, id, label, role, membership or availability",
        ),
        (
            NODE_KEYS,
            "role",
            "invalid filter \"role\": expected KEY=VALUE with KEY one of name, id, label, role, membership or availability",
        ),
        (NODE_KEYS, "role=boss", "invalid filter \"role=boss\": role is manager or worker"),
        (
            SERVICE_KEYS,
            "mode=job",
            "invalid filter \"mode=job\": mode is replicated, global, replicated-job or global-job",
        ),
        (
            TASK_KEYS,
            "desired-state=ready",
            "invalid filter \"desired-state=ready\": desired-state is running, shutdown or accepted",
        ),
        (
            TASK_KEYS,
            "label=a",
            "invalid filter \"label=a\": \"label\" is not one of name, id, desired-state, node or service",
        ),
        (PAYLOAD_KEYS, "driver=x", "invalid filter \"driver=x\": \"driver\" is not one of name, id or label"),
    ];
    for (keys, given, expected) in cases {
        assert_eq!(Filters::parse(&[given.to_owned()], keys), Err(expected.to_owned()), "{given}");
    }
}
