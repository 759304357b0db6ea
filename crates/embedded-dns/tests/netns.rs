//! The server in real network namespaces: containers ask 127.0.0.11:53 from their own namespace,
//! the fake upstream answers on the test underlay, and the server forwards from a node namespace.

// Tests narrate their steps on stderr, which the test runner shows when one fails.
#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shoal_embedded_dns::{AttachError, Delta, Endpoint, ServiceRecord, TaskRecord};
use shoal_testkit::privileged;
use support::{Env, Netns, addresses, ask_tcp, ask_udp, query, udp_client};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn service(id: &str, name: &str, endpoint: Endpoint) -> ServiceRecord {
    ServiceRecord { id: id.into(), name: name.into(), aliases: vec![format!("{name}-alias")], endpoint }
}

fn task(id: &str, service_id: &str, name: &str, addresses: &[&str], healthy: bool) -> TaskRecord {
    TaskRecord {
        id: id.into(),
        service_id: Some(service_id.into()),
        name: name.into(),
        hostname: Some(format!("{id}-host")),
        aliases: vec![],
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        healthy,
    }
}

fn upsert_service(network: &str, service: ServiceRecord) -> Delta {
    Delta::UpsertService { network: network.into(), service }
}

fn upsert_task(network: &str, task: TaskRecord) -> Delta {
    Delta::UpsertTask { network: network.into(), task }
}

/// `front`: web (VIP, IPv4 and IPv6) with two tasks; `back`: db (VIP) with one task.
fn two_networks(env: &Env) {
    env.server
        .records()
        .apply([
            upsert_service("front", service("s-web", "web", Endpoint::Vip(vec![ip("198.18.0.2"), ip("2001:db8::2")]))),
            upsert_task("front", task("t1", "s-web", "web.1.aaa", &["198.18.0.10", "2001:db8::10"], true)),
            upsert_task("front", task("t2", "s-web", "web.2.bbb", &["198.18.0.11", "2001:db8::11"], true)),
            upsert_service("back", service("s-db", "db", Endpoint::Vip(vec![ip("198.19.0.2")]))),
            upsert_task("back", task("t3", "s-db", "db.1.ccc", &["198.19.0.10"], true)),
        ])
        .expect("apply records");
}

fn assert_nxdomain(reply: &Message, what: &str) {
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{what}: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_and_aaaa_for_services_tasks_and_task_names() {
    if !privileged::require("a_and_aaaa_for_services_tasks_and_task_names", privileged::NETNS) {
        return;
    }
    let mut env = Env::new(Duration::ZERO);
    two_networks(&env);
    let c1 = env.container("c1", &["front"]).await;

    eprintln!("--- service VIP, A and AAAA, with the short TTL");
    let a = ask_udp(&c1, "web.", RecordType::A).await;
    assert_eq!(addresses(&a), ["198.18.0.2"]);
    assert_eq!(a.answers[0].ttl, 5);
    assert_eq!(addresses(&ask_udp(&c1, "web.", RecordType::AAAA).await), ["2001:db8::2"]);
    assert_eq!(addresses(&ask_udp(&c1, "web-alias.shoal.internal.", RecordType::A).await), ["198.18.0.2"]);

    eprintln!("--- tasks.NAME, task names and hostnames");
    assert_eq!(addresses(&ask_udp(&c1, "tasks.web.", RecordType::A).await), ["198.18.0.10", "198.18.0.11"]);
    assert_eq!(addresses(&ask_udp(&c1, "tasks.web.", RecordType::AAAA).await), ["2001:db8::10", "2001:db8::11"]);
    assert_eq!(addresses(&ask_udp(&c1, "web.1.aaa.", RecordType::A).await), ["198.18.0.10"]);
    assert_eq!(addresses(&ask_udp(&c1, "web.2.bbb.", RecordType::AAAA).await), ["2001:db8::11"]);
    assert_eq!(addresses(&ask_udp(&c1, "t2-host.", RecordType::A).await), ["198.18.0.11"]);

    eprintln!("--- a stock client (busybox nslookup) in the container gets the same");
    let out = support::run_output(shoal_testkit::Cluster::command_in(&c1, "/bin/busybox").args([
        "nslookup",
        "-type=a",
        "web",
        "127.0.0.11",
    ]));
    assert!(out.contains("198.18.0.2"), "busybox nslookup web: {out}");

    eprintln!("--- a delta is visible at once; removal gives NXDOMAIN");
    env.server
        .records()
        .apply([Delta::RemoveService { network: "front".into(), service_id: "s-web".into() }])
        .expect("remove");
    assert_nxdomain(&ask_udp(&c1, "web.", RecordType::A).await, "removed service");
    assert!(env.upstream.seen().is_empty(), "nothing local went upstream: {:?}", env.upstream.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_resolve_only_their_networks() {
    if !privileged::require("containers_resolve_only_their_networks", privileged::NETNS) {
        return;
    }
    let mut env = Env::new(Duration::ZERO);
    two_networks(&env);
    let c1 = env.container("c1", &["front"]).await;
    let c2 = env.container("c2", &["back"]).await;

    eprintln!("--- each sees its own network's services, not the other's");
    assert_eq!(addresses(&ask_udp(&c1, "web.", RecordType::A).await), ["198.18.0.2"]);
    assert_eq!(addresses(&ask_udp(&c2, "db.", RecordType::A).await), ["198.19.0.2"]);
    assert_nxdomain(&ask_udp(&c2, "web.", RecordType::A).await, "c2 asks for front's service");
    assert_nxdomain(&ask_udp(&c2, "tasks.web.", RecordType::A).await, "c2 asks for front's tasks");
    assert_nxdomain(&ask_udp(&c2, "web.1.aaa.", RecordType::A).await, "c2 asks for front's task");
    assert_nxdomain(&ask_tcp(&c2, "web.", RecordType::A).await, "c2 over tcp");
    assert_nxdomain(&ask_udp(&c1, "db.", RecordType::A).await, "c1 asks for back's service");
    assert!(env.upstream.seen().is_empty(), "service names never go upstream: {:?}", env.upstream.seen());

    eprintln!("--- c2 joins front too");
    env.server.set_networks("c2", vec!["back".into(), "front".into()]).expect("set networks");
    assert_eq!(addresses(&ask_udp(&c2, "web.", RecordType::A).await), ["198.18.0.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsrr_returns_every_healthy_task() {
    if !privileged::require("dnsrr_returns_every_healthy_task", privileged::NETNS) {
        return;
    }
    let mut env = Env::new(Duration::ZERO);
    let mut deltas = vec![upsert_service("front", service("s-rr", "rr", Endpoint::DnsRr))];
    for i in 1..=5 {
        let addr = format!("198.18.2.{i}");
        deltas.push(upsert_task("front", task(&format!("r{i}"), "s-rr", &format!("rr.{i}.x"), &[&addr], i != 5)));
    }
    env.server.records().apply(deltas).expect("apply");
    let c1 = env.container("c1", &["front"]).await;
    let expected = ["198.18.2.1", "198.18.2.2", "198.18.2.3", "198.18.2.4"];
    assert_eq!(addresses(&ask_udp(&c1, "rr.", RecordType::A).await), expected, "the unhealthy task is left out");
    assert_eq!(addresses(&ask_udp(&c1, "tasks.rr.", RecordType::A).await), expected);
    eprintln!("--- task 5 becomes healthy");
    env.server
        .records()
        .apply([upsert_task("front", task("r5", "s-rr", "rr.5.x", &["198.18.2.5"], true))])
        .expect("apply");
    assert_eq!(addresses(&ask_udp(&c1, "rr.", RecordType::A).await).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_the_upstream_in_another_netns_and_caches() {
    if !privileged::require("forwards_to_the_upstream_in_another_netns_and_caches", privileged::NETNS) {
        return;
    }
    let mut env = Env::new(Duration::ZERO);
    two_networks(&env);
    let c1 = env.container("c1", &["front"]).await;

    eprintln!("--- an outside name is forwarded, then answered from the cache");
    let first = ask_udp(&c1, "www.example.test.", RecordType::A).await;
    assert_eq!(addresses(&first), ["203.0.113.7"]);
    let second = ask_udp(&c1, "WWW.Example.Test.", RecordType::A).await;
    assert_eq!(addresses(&second), ["203.0.113.7"]);
    assert_eq!(second.queries[0].name().to_ascii(), "WWW.Example.Test.", "the client's spelling is echoed");
    let nx = ask_udp(&c1, "nx.example.test.", RecordType::A).await;
    assert_nxdomain(&nx, "upstream NXDOMAIN passes through");
    assert_nxdomain(&ask_udp(&c1, "nx.example.test.", RecordType::A).await, "negative answer from the cache");
    assert_eq!(env.upstream.seen(), ["www.example.test", "nx.example.test"], "one upstream query per name");

    eprintln!("--- a lost upstream datagram is sent again after a second, before the 4 s timeout");
    let started = Instant::now();
    // An answer at all means the second datagram went out before the timeout (with the only
    // upstream timed out, the client would get SERVFAIL).
    assert_eq!(addresses(&ask_udp(&c1, "lossy.example.test.", RecordType::A).await), ["203.0.113.7"]);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "sent again after a second, not at once: {took:?}");
    assert_eq!(env.upstream.seen().iter().filter(|n| *n == "lossy.example.test").count(), 2);

    eprintln!("--- the cluster domain, single labels and tasks.X never leak");
    for name in ["nosuch.shoal.internal.", "web.other.shoal.internal.", "nosuch.", "tasks.nosuch."] {
        assert_nxdomain(&ask_udp(&c1, name, RecordType::A).await, name);
    }
    assert_eq!(env.upstream.seen().len(), 4, "{:?}", env.upstream.seen());

    eprintln!("--- a truncated upstream answer is fetched over TCP for a TCP client");
    let udp = ask_udp(&c1, "big.example.test.", RecordType::A).await;
    assert!(udp.metadata.truncation, "a UDP client gets TC");
    let tcp = ask_tcp(&c1, "big.example.test.", RecordType::A).await;
    assert_eq!(tcp.answers.len(), 100);

    eprintln!("--- no upstreams: SERVFAIL for outside names; upstreams back: answers again");
    env.server.set_upstreams(&[]);
    let reply = ask_udp(&c1, "other.example.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    env.server.set_upstreams(&[support::UPSTREAM]);
    assert_eq!(addresses(&ask_udp(&c1, "other.example.test.", RecordType::A).await), ["203.0.113.7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_or_slow_never_holds_up_local_answers() {
    if !privileged::require("upstream_down_or_slow_never_holds_up_local_answers", privileged::NETNS) {
        return;
    }
    // The upstream holds `held` questions until released, and the server waits a minute for
    // it: what must not wait for the upstream shows as happening while a query is held.
    let mut env = Env::with_upstreams(Duration::ZERO, vec![support::UPSTREAM], Duration::from_secs(60));
    two_networks(&env);
    let c1 = env.container("c1", &["front"]).await;

    eprintln!("--- detach with an upstream query in flight frees the address, not after the query");
    let held_ns = c1.clone();
    let pending = tokio::spawn(async move { ask_udp(&held_ns, "held0.example.test.", RecordType::A).await });
    env.upstream.received("held0", |seen| seen.iter().any(|n| n == "held0.example.test")).await;
    assert!(env.server.detach("c1"));
    let c1_path = std::path::PathBuf::from("/run/netns").join(&c1);
    // The aborted tasks drop their sockets on the runtime; the query stays held meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(err) = env.server.attach("c1", &c1_path, vec!["front".into()]).await {
        assert!(Instant::now() < deadline, "re-attach while a forwarded query was in flight: {err}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pending.abort();

    eprintln!("--- an upstream query in flight, local answers meanwhile");
    let held_ns = c1.clone();
    let held = tokio::spawn(async move { ask_udp(&held_ns, "held.example.test.", RecordType::A).await });
    env.upstream.received("held", |seen| seen.iter().any(|n| n == "held.example.test")).await;
    for _ in 0..20 {
        assert_eq!(addresses(&ask_udp(&c1, "web.", RecordType::A).await), ["198.18.0.2"]);
    }
    assert!(!held.is_finished(), "the held query is still waiting for the upstream");

    eprintln!("--- over one TCP connection, a local query behind a held one is answered first");
    let mut stream = support::tcp_client(&c1);
    support::send_tcp(&mut stream, 1, "heldtcp.example.test.", RecordType::A).await;
    support::send_tcp(&mut stream, 2, "web.", RecordType::A).await;
    let first = support::read_tcp(&mut stream, Duration::from_secs(5)).await;
    assert_eq!((first.metadata.id, addresses(&first)), (2, vec!["198.18.0.2".to_owned()]));
    env.upstream.release();
    let second = support::read_tcp(&mut stream, Duration::from_secs(5)).await;
    assert_eq!((second.metadata.id, addresses(&second)), (1, vec!["203.0.113.7".to_owned()]));
    assert_eq!(addresses(&held.await.expect("held query")), ["203.0.113.7"]);

    eprintln!("--- upstream down: SERVFAIL without waiting for the timeout, local names still answered");
    env.upstream.stop().await;
    // ask_udp gives up after 5 s, long before the 60 s timeout: an answer means the refused
    // query failed at once.
    let reply = ask_udp(&c1, "down.example.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(addresses(&ask_udp(&c1, "web.", RecordType::A).await), ["198.18.0.2"]);
    assert_eq!(addresses(&ask_tcp(&c1, "tasks.web.", RecordType::A).await), ["198.18.0.10", "198.18.0.11"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_upstream_costs_one_timeout() {
    if !privileged::require("a_dead_first_upstream_costs_one_timeout", privileged::NETNS) {
        return;
    }
    let mut env =
        Env::with_upstreams(Duration::ZERO, vec![support::BLACK_HOLE, support::UPSTREAM], Duration::from_millis(500));
    let dead = support::BlackHole::start(env.cluster.underlay_netns());
    let c1 = env.container("c1", &["front"]).await;
    let started = Instant::now();
    assert_eq!(addresses(&ask_udp(&c1, "one.example.test.", RecordType::A).await), ["203.0.113.7"]);
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(450), "the first query waits for the dead upstream: {first:?}");
    assert_eq!(addresses(&ask_udp(&c1, "two.example.test.", RecordType::A).await), ["203.0.113.7"]);
    // Had the second query gone to the dead upstream first, it would have reached it half a
    // second before the answer came.
    assert_eq!(dead.seen(), ["one.example.test"], "the dead upstream now goes last");
    assert_eq!(env.upstream.seen(), ["one.example.test", "two.example.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_fall_back_to_tcp() {
    if !privileged::require("large_answers_fall_back_to_tcp", privileged::NETNS) {
        return;
    }
    let mut env = Env::new(Duration::ZERO);
    let mut deltas = vec![upsert_service("front", service("s-big", "big", Endpoint::DnsRr))];
    for i in 0..100u8 {
        let addr = format!("198.18.{}.{}", 4 + i / 50, 1 + i % 50);
        deltas.push(upsert_task("front", task(&format!("b{i}"), "s-big", &format!("big.{i}.x"), &[&addr], true)));
    }
    env.server.records().apply(deltas).expect("apply");
    let c1 = env.container("c1", &["front"]).await;
    let udp = ask_udp(&c1, "tasks.big.", RecordType::A).await;
    assert!(udp.metadata.truncation, "100 A records do not fit 512 bytes: TC set");
    let tcp = ask_tcp(&c1, "tasks.big.", RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(addresses(&tcp).len(), 100);
    assert_eq!(addresses(&ask_tcp(&c1, "big.", RecordType::A).await).len(), 100, "dnsrr too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_1024_concurrent_queries() {
    if !privileged::require("answers_1024_concurrent_queries", privileged::NETNS) {
        return;
    }
    // Slow answers take 300 ms; the server waits a minute for any.
    let mut env = Env::with_upstreams(Duration::from_millis(300), vec![support::UPSTREAM], Duration::from_secs(60));
    two_networks(&env);
    let c1 = env.container("c1", &["front"]).await;

    for (what, name_of) in [
        ("local", (|_| "web.".to_owned()) as fn(u16) -> String),
        // Each a different name, so none is served from the cache: 1,024 upstream queries, held
        // until all of them have reached the upstream (which only queries in flight together can).
        ("forwarded", |i| format!("held{i}.example.test.")),
        // The same name, not cached yet: one upstream query, 1,024 answers.
        ("identical forwarded", |_| "slowsame.example.test.".to_owned()),
    ] {
        eprintln!("--- 1,024 {what} queries sent at once");
        let socket = udp_client(&c1);
        let started = Instant::now();
        for id in 0..1024u16 {
            socket.send_to(&query(id, &name_of(id), RecordType::A, false), "127.0.0.11:53").await.expect("send");
        }
        if what == "forwarded" {
            env.upstream
                .received("1,024 different questions at once", |seen| {
                    let held: BTreeSet<&String> = seen.iter().filter(|n| n.starts_with("held")).collect();
                    held.len() == 1024
                })
                .await;
            env.upstream.release();
        }
        let mut answered = vec![false; 1024];
        let mut buf = vec![0u8; 4096];
        let mut count = 0;
        while count < 1024 {
            let n = match tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await {
                Ok(received) => received.expect("receive"),
                Err(_) => panic!("{what}: only {count} of 1024 answered"),
            };
            let reply = Message::from_vec(&buf[..n]).expect("decode");
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{what}: {reply:?}");
            let slot = &mut answered[usize::from(reply.metadata.id)];
            assert!(!*slot, "{what}: answer {} twice", reply.metadata.id);
            *slot = true;
            count += 1;
        }
        eprintln!("--- {what}: 1024 answered in {:?}", started.elapsed());
    }
    let seen = env.upstream.seen();
    // Held queries may have been sent again (every second without an answer): count names.
    let held: BTreeSet<&String> = seen.iter().filter(|n| n.starts_with("held")).collect();
    assert_eq!(held.len(), 1024);
    assert_eq!(seen.iter().filter(|n| *n == "slowsame.example.test").count(), 1, "identical questions share a query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_errors_name_the_container_and_namespace() {
    if !privileged::require("attach_errors_name_the_container_and_namespace", privileged::NETNS) {
        return;
    }
    let mut env = Env::new(Duration::ZERO);
    let prefix = env.cluster.prefix().to_owned();

    let missing = std::path::PathBuf::from(format!("/run/netns/{prefix}-missing"));
    let err = env.server.attach("cx", &missing, vec![]).await.expect_err("no such namespace");
    assert!(matches!(err, AttachError::Namespace { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("container cx: enter namespace {}: ", missing.display())), "{err}");

    let taken = Netns::new(format!("{prefix}-taken"), true);
    let squatter = shoal_testkit::in_netns(&taken.name, || std::net::UdpSocket::bind("127.0.0.11:53"))
        .expect("enter namespace")
        .expect("bind the resolver address first");
    let err = env.server.attach("cy", &taken.path(), vec![]).await.expect_err("address in use");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("container cy: bind udp 127.0.0.11:53 in namespace {}: ", taken.path().display())),
        "{text}"
    );
    drop(squatter);

    eprintln!("--- lo down: attach works (with a warning), nothing answers until lo is up");
    let lo_down = Netns::new(format!("{prefix}-lodown"), false);
    env.server.attach("cz", &lo_down.path(), vec![]).await.expect("attach with lo down");
    assert!(env.server.detach("cz"));

    let c1 = env.container("c1", &["front"]).await;
    let c1_path = std::path::PathBuf::from("/run/netns").join(&c1);
    let err = env.server.attach("c1", &c1_path, vec![]).await.expect_err("twice");
    assert_eq!(err.to_string(), "container c1 is already attached to the dns server");

    eprintln!("--- detach frees 127.0.0.11:53 in the namespace; attach again works");
    assert!(env.server.detach("c1"));
    assert!(!env.server.detach("c1"));
    // The aborted tasks drop their sockets on the runtime; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match env.server.attach("c1", &c1_path, vec![]).await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                eprintln!("--- not yet: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("attach after detach: {err}"),
        }
    }
    let err = env.server.set_networks("nobody", vec![]).expect_err("not attached");
    assert_eq!(err.to_string(), "container nobody is not attached to the dns server");
}
