//! The events broker: what each change becomes (a table over [`derive`]), the filters, then the
//! broker on a real store (events in order, `since` replaying the history, a filter dropping the
//! others, `until` ending the stream, a slow subscriber told what it lost).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use prost::Message as _;
use shoal_api::v1::{self, EventAction, EventType, TaskState};

use super::*;
use crate::objects::ObjectStore;
use crate::testutil::store;

fn service(name: &str, replicas: u64, image: &str) -> v1::Service {
    v1::Service {
        id: "svc1".into(),
        meta: Some(v1::Meta { version: 3, ..Default::default() }),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: image.into(), ..Default::default() }),
                ..Default::default()
            }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(state: v1::node_status::State, availability: v1::NodeAvailability, role: v1::NodeRole) -> v1::Node {
    v1::Node {
        id: "node1".into(),
        description: Some(v1::NodeDescription { hostname: "worker-1".into(), ..Default::default() }),
        spec: Some(v1::NodeSpec { availability: availability as i32, ..Default::default() }),
        status: Some(v1::NodeStatus { state: state as i32, ..Default::default() }),
        role: role as i32,
        ..Default::default()
    }
}

fn task(state: TaskState, desired: TaskState, message: &str) -> v1::Task {
    v1::Task {
        id: "task1".into(),
        service_id: "svc1".into(),
        service_name: "web".into(),
        slot: 2,
        node_id: "node1".into(),
        desired_state: desired as i32,
        status: Some(v1::TaskStatus { state: state as i32, message: message.into(), ..Default::default() }),
        ..Default::default()
    }
}

fn secret(name: &str, data: &[u8]) -> v1::Secret {
    v1::Secret {
        id: "sec1".into(),
        spec: Some(v1::SecretSpec {
            annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
            data: data.to_vec(),
        }),
        ..Default::default()
    }
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// One row: a change of the object under `key`, and the event it is (`None`: no event).
struct Case {
    name: &'static str,
    key: &'static str,
    old: Option<Vec<u8>>,
    new: Option<Vec<u8>>,
    expect: Option<(EventType, EventAction, &'static str, BTreeMap<String, String>)>,
}

#[test]
fn changes_become_events() {
    use v1::node_status::State::{Down, Ready};
    use v1::{NodeAvailability as Avail, NodeRole as Role};
    let enc = |m: &dyn Fn() -> Vec<u8>| Some(m());
    let mut bumped = service("web", 3, "nginx:1");
    bumped.meta = Some(v1::Meta { version: 9, ..Default::default() });
    let mut updating = service("web", 3, "nginx:1");
    updating.update_status =
        Some(v1::UpdateStatus { state: v1::update_status::UpdateState::Updating as i32, ..Default::default() });
    let cases = [
        Case {
            name: "a service is created",
            key: "/services/svc1",
            old: None,
            new: enc(&|| service("web", 3, "nginx:1").encode_to_vec()),
            expect: Some((EventType::Service, EventAction::Create, "svc1", attrs(&[("name", "web")]))),
        },
        Case {
            name: "a service is scaled and its image changed",
            key: "/services/svc1",
            old: enc(&|| service("web", 3, "nginx:1").encode_to_vec()),
            new: enc(&|| service("web", 5, "nginx:2").encode_to_vec()),
            expect: Some((
                EventType::Service,
                EventAction::Update,
                "svc1",
                attrs(&[
                    ("name", "web"),
                    ("replicas.old", "3"),
                    ("replicas.new", "5"),
                    ("image.old", "nginx:1"),
                    ("image.new", "nginx:2"),
                ]),
            )),
        },
        Case {
            name: "a service's update starts",
            key: "/services/svc1",
            old: enc(&|| service("web", 3, "nginx:1").encode_to_vec()),
            new: Some(updating.encode_to_vec()),
            expect: Some((
                EventType::Service,
                EventAction::Update,
                "svc1",
                attrs(&[("name", "web"), ("updatestate.old", ""), ("updatestate.new", "updating")]),
            )),
        },
        Case {
            name: "only the bookkeeping of a service changes: no event",
            key: "/services/svc1",
            old: enc(&|| service("web", 3, "nginx:1").encode_to_vec()),
            new: Some(bumped.encode_to_vec()),
            expect: None,
        },
        Case {
            name: "a service is removed: named from its last value",
            key: "/services/svc1",
            old: enc(&|| service("web", 3, "nginx:1").encode_to_vec()),
            new: None,
            expect: Some((EventType::Service, EventAction::Remove, "svc1", attrs(&[("name", "web")]))),
        },
        Case {
            name: "a node goes down",
            key: "/nodes/node1",
            old: enc(&|| node(Ready, Avail::Active, Role::Worker).encode_to_vec()),
            new: enc(&|| node(Down, Avail::Active, Role::Worker).encode_to_vec()),
            expect: Some((
                EventType::Node,
                EventAction::Update,
                "node1",
                attrs(&[("name", "worker-1"), ("state.old", "ready"), ("state.new", "down")]),
            )),
        },
        Case {
            name: "a node is drained and promoted",
            key: "/nodes/node1",
            old: enc(&|| node(Ready, Avail::Active, Role::Worker).encode_to_vec()),
            new: enc(&|| node(Ready, Avail::Drain, Role::Manager).encode_to_vec()),
            expect: Some((
                EventType::Node,
                EventAction::Update,
                "node1",
                attrs(&[
                    ("name", "worker-1"),
                    ("availability.old", "active"),
                    ("availability.new", "drain"),
                    ("role.old", "worker"),
                    ("role.new", "manager"),
                ]),
            )),
        },
        Case {
            name: "a task is created",
            key: "/tasks/task1",
            old: None,
            new: enc(&|| task(TaskState::Pending, TaskState::Running, "").encode_to_vec()),
            expect: Some((
                EventType::Task,
                EventAction::Create,
                "task1",
                attrs(&[("service", "web"), ("slot", "2"), ("node", "node1")]),
            )),
        },
        Case {
            name: "a task starts running",
            key: "/tasks/task1",
            old: enc(&|| task(TaskState::Starting, TaskState::Running, "").encode_to_vec()),
            new: enc(&|| task(TaskState::Running, TaskState::Running, "started").encode_to_vec()),
            expect: Some((
                EventType::Task,
                EventAction::Update,
                "task1",
                attrs(&[
                    ("service", "web"),
                    ("slot", "2"),
                    ("node", "node1"),
                    ("state.old", "starting"),
                    ("state.new", "running"),
                ]),
            )),
        },
        Case {
            name: "a task is told to shut down",
            key: "/tasks/task1",
            old: enc(&|| task(TaskState::Running, TaskState::Running, "").encode_to_vec()),
            new: enc(&|| task(TaskState::Running, TaskState::Shutdown, "").encode_to_vec()),
            expect: Some((
                EventType::Task,
                EventAction::Update,
                "task1",
                attrs(&[
                    ("service", "web"),
                    ("slot", "2"),
                    ("node", "node1"),
                    ("desiredstate.old", "running"),
                    ("desiredstate.new", "shutdown"),
                ]),
            )),
        },
        Case {
            name: "only a task's status message changes: no event",
            key: "/tasks/task1",
            old: enc(&|| task(TaskState::Running, TaskState::Running, "").encode_to_vec()),
            new: enc(&|| task(TaskState::Running, TaskState::Running, "still running").encode_to_vec()),
            expect: None,
        },
        Case {
            name: "a secret is rotated: its name only, never its payload",
            key: "/secrets/sec1",
            old: enc(&|| secret("db-password", b"hunter2").encode_to_vec()),
            new: enc(&|| secret("db-password", b"correct horse").encode_to_vec()),
            expect: Some((EventType::Secret, EventAction::Update, "sec1", attrs(&[("name", "db-password")]))),
        },
        Case {
            name: "a name index is not an object",
            key: "/names/services/web",
            old: None,
            new: Some(b"svc1".to_vec()),
            expect: None,
        },
        Case {
            name: "the cluster object has no events",
            key: "/cluster/c1",
            old: None,
            new: Some(v1::Cluster::default().encode_to_vec()),
            expect: None,
        },
        Case {
            name: "a value that does not decode is skipped",
            key: "/services/svc1",
            old: None,
            new: Some(vec![0xff, 0xff, 0xff]),
            expect: None,
        },
    ];
    for case in cases {
        let got = derive(case.key, case.old.as_deref(), case.new.as_deref());
        let expect =
            case.expect.map(|(kind, action, id, attributes)| Change { kind, action, id: id.into(), attributes });
        assert_eq!(got, expect, "{}", case.name);
    }
}

fn event(kind: EventType, action: EventAction, id: &str, attributes: &[(&str, &str)]) -> v1::Event {
    v1::Event {
        time: None,
        r#type: kind as i32,
        action: action as i32,
        id: id.into(),
        attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}

fn filters(pairs: &[(&str, &str)]) -> Result<Filters, String> {
    let filters: Vec<v1::EventFilter> =
        pairs.iter().map(|(k, v)| v1::EventFilter { key: (*k).into(), value: (*v).into() }).collect();
    Filters::parse(&filters)
}

#[test]
fn filters_as_docker() {
    let web = event(EventType::Service, EventAction::Update, "svc1", &[("name", "web")]);
    let web_task =
        event(EventType::Task, EventAction::Create, "task1", &[("service", "web"), ("node", "node1"), ("slot", "1")]);
    let node = event(EventType::Node, EventAction::Update, "node1", &[("name", "worker-1")]);
    // Filters, and whether each of the three events passes them.
    type Row = (&'static [(&'static str, &'static str)], [bool; 3]);
    let cases: &[Row] = &[
        (&[], [true, true, true]),
        (&[("type", "service")], [true, false, false]),
        // The same key twice: either value.
        (&[("type", "service"), ("type", "node")], [true, false, true]),
        // Different keys: both.
        (&[("type", "service"), ("event", "create")], [false, false, false]),
        (&[("event", "create")], [false, true, false]),
        (&[("service", "web")], [true, true, false]),
        (&[("service", "svc1")], [true, false, false]),
        (&[("node", "node1")], [false, true, true]),
        (&[("node", "worker-1")], [false, false, true]),
        (&[("id", "svc1")], [true, false, false]),
        (&[("name", "worker-1")], [false, false, true]),
        (&[("scope", "swarm")], [true, true, true]),
        (&[("scope", "local")], [false, false, false]),
    ];
    for (pairs, expect) in cases {
        let parsed = filters(pairs).expect("valid filters");
        let got = [&web, &web_task, &node].map(|e| parsed.matches(e));
        assert_eq!(got, *expect, "{pairs:?}");
    }
    assert_eq!(
        filters(&[("container", "x")]),
        Err("invalid filter \"container\": the keys are type, event, id, name, scope, service, node, network, secret, config, task".into())
    );
    assert_eq!(
        filters(&[("type", "container")]),
        Err("invalid filter type=\"container\": it is one of service, node, task, network, secret, config".into())
    );
}

/// The next event of `stream`, within a few seconds.
async fn next(stream: &mut EventStream) -> v1::SubscribeEventsMessage {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5s")
        .expect("the stream goes on")
        .expect("not an error")
}

fn summary(message: &v1::SubscribeEventsMessage) -> (EventType, EventAction, String) {
    let event = message.event.as_ref().expect("an event");
    (event.r#type(), event.action(), event.attributes.get("name").cloned().unwrap_or_default())
}

/// Waits until the broker has read the store (its watch starts after its first read).
async fn settled(broker: &EventBroker, objects: &ObjectStore) {
    // A write the broker must see: a network, whose event proves the watch is running.
    let probe = v1::Network {
        id: "probe".into(),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations { name: "probe".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    objects.create(probe).await.expect("create the probe network");
    for _ in 0..100 {
        if broker.shared.history().iter().any(|e| e.id == "probe") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker never saw the probe network");
}

#[tokio::test]
async fn a_subscriber_sees_a_service_created_updated_and_removed_in_order() {
    let (objects, _dir) = store("events-order").await;
    let broker = EventBroker::start(objects.store().clone());
    settled(&broker, &objects).await;
    let service_events = EventsService::new(broker.clone());
    let mut stream = service_events
        .open(v1::SubscribeEventsRequest {
            filters: vec![v1::EventFilter { key: "type".into(), value: "service".into() }],
            ..Default::default()
        })
        .expect("subscribe");

    tracing::info!("--- create, scale, remove a service");
    let created = objects.create(service("web", 3, "nginx:1")).await.expect("create");
    let mut scaled = created.clone();
    scaled.spec = service("web", 5, "nginx:1").spec;
    let scaled = objects.update(scaled).await.expect("scale");
    objects.delete::<v1::Service>("svc1", scaled.meta.as_ref().map_or(0, |m| m.version)).await.expect("remove");

    let first = next(&mut stream).await;
    assert_eq!(summary(&first), (EventType::Service, EventAction::Create, "web".into()));
    assert!(first.event.as_ref().and_then(|e| e.time.as_ref()).is_some(), "an event has its time");
    let second = next(&mut stream).await;
    assert_eq!(summary(&second), (EventType::Service, EventAction::Update, "web".into()));
    let attributes = &second.event.as_ref().expect("an event").attributes;
    assert_eq!(
        (attributes.get("replicas.old").map(String::as_str), attributes.get("replicas.new").map(String::as_str)),
        (Some("3"), Some("5"))
    );
    assert_eq!(summary(&next(&mut stream).await), (EventType::Service, EventAction::Remove, "web".into()));

    tracing::info!("--- since replays what was kept, and the filter drops the probe network");
    let mut replay = service_events
        .open(v1::SubscribeEventsRequest {
            since: Some(shoal_api::to_timestamp(SystemTime::now() - Duration::from_secs(600))),
            until: Some(shoal_api::to_timestamp(SystemTime::now())),
            filters: vec![v1::EventFilter { key: "name".into(), value: "web".into() }],
        })
        .expect("subscribe with since");
    let mut replayed = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(5), replay.next()).await.expect("ends") {
        replayed.push(summary(&message.expect("not an error")).1);
    }
    assert_eq!(replayed, [EventAction::Create, EventAction::Update, EventAction::Remove]);

    tracing::info!("--- an unknown filter key is refused");
    let refused = service_events
        .open(v1::SubscribeEventsRequest {
            filters: vec![v1::EventFilter { key: "container".into(), value: "x".into() }],
            ..Default::default()
        })
        .err()
        .expect("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_told_what_it_lost() {
    let (objects, _dir) = store("events-lag").await;
    let broker = EventBroker::start(objects.store().clone());
    settled(&broker, &objects).await;
    let mut stream = EventsService::new(broker.clone()).open(v1::SubscribeEventsRequest::default()).expect("subscribe");
    // More events than the broker holds for a subscriber, published while it does not read
    // (this test's runtime has one thread: the subscription's task runs only once it waits).
    let published = HISTORY + 100;
    for i in 0..published {
        let change = Change {
            kind: EventType::Network,
            action: EventAction::Create,
            id: format!("net{i}"),
            attributes: BTreeMap::new(),
        };
        broker.shared.publish(change, SystemTime::now());
    }
    let (mut received, mut lost) = (0, 0);
    while received + lost < published as u64 {
        let message = next(&mut stream).await;
        if message.event.is_some() { received += 1 } else { lost += message.lost }
    }
    assert_eq!((received, lost), (HISTORY as u64, 100), "the newest events arrive, the oldest are counted lost");
    // The history stays bounded too.
    assert_eq!(broker.shared.history().len(), HISTORY);
}
