//! The dashboard's API without a manager: access, routes, the model and its frames, the views.
//! (Against a cluster, and in a browser: `tests/dashboard.rs`.)

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode, header};
use serde_json::{Value, json};
use shoal_api::v1::{self, TaskState};

use super::http::{ResponseBody, Server};
use super::state::{Change, Dirty, Hub, KEPT_EVENTS, Model, RELIST_OVER, TaskRead, task_read};
use super::view::{self, Kind};
use super::{new_token, refused_listen};

const TOKEN: &str = "0123456789abcdef";

fn server() -> Arc<Server> {
    // Never dialled: the requests here are refused or answered before any call to a manager.
    let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
    let hub = Hub::new("192.0.2.10:2377");
    Arc::new(Server {
        hub,
        control: v1::control_client::ControlClient::new(channel),
        token: TOKEN.to_owned(),
        port: 8088,
    })
}

fn request(method: &str, uri: &str) -> hyper::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

fn signed_in(method: &str, uri: &str) -> hyper::http::request::Builder {
    request(method, uri)
        .header(header::COOKIE, format!("theme=dark; shoal_dashboard_8089=x; shoal_dashboard_8088={TOKEN}"))
}

async fn send(server: &Arc<Server>, request: Request<Full<Bytes>>) -> hyper::Response<ResponseBody> {
    Arc::clone(server).handle(request).await
}

async fn body(response: hyper::Response<ResponseBody>) -> String {
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn every_request_needs_the_token_of_the_printed_url() {
    let server = server();
    for path in ["/", "/app.js", "/api/state", "/api/events"] {
        let answer = send(&server, request("GET", path).body(empty()).expect("request")).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(body(answer).await.contains("open the URL `shoal dashboard` printed"));
    }
    let wrong = request("GET", "/api/state").header(header::COOKIE, "shoal_dashboard_8088=0123456789abcdeX");
    assert_eq!(send(&server, wrong.body(empty()).expect("request")).await.status(), StatusCode::UNAUTHORIZED);
    // Another dashboard's cookie (another port) is not this one's.
    let other = request("GET", "/api/state").header(header::COOKIE, format!("shoal_dashboard_8089={TOKEN}"));
    assert_eq!(send(&server, other.body(empty()).expect("request")).await.status(), StatusCode::UNAUTHORIZED);
    let wrong = send(&server, request("GET", "/?token=nope").body(empty()).expect("request")).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());

    // The printed URL: a cookie only this site's requests carry, and the page without the token —
    // always `/`, whatever path came with the token.
    for path in ["/", "//evil.example", "/app.js"] {
        let signed =
            send(&server, request("GET", &format!("{path}?token={TOKEN}")).body(empty()).expect("request")).await;
        assert_eq!(signed.status(), StatusCode::SEE_OTHER);
        assert_eq!(signed.headers()[header::LOCATION], "/", "{path}");
        let cookie = signed.headers()[header::SET_COOKIE].to_str().expect("ascii");
        assert_eq!(cookie, format!("shoal_dashboard_8088={TOKEN}; Path=/; HttpOnly; SameSite=Strict"));
    }

    let page = send(&server, signed_in("GET", "/").body(empty()).expect("request")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii").to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()[header::REFERRER_POLICY], "no-referrer");
    let html = body(page).await;
    assert!(html.contains(r#"<script src="/app.js""#) && !html.contains("<script>"), "no inline script: {html}");
}

#[tokio::test]
async fn assets_and_unknown_routes() {
    let server = server();
    for (path, kind, needle) in [
        ("/app.js", "text/javascript; charset=utf-8", "new EventSource('/api/events')"),
        ("/app.css", "text/css; charset=utf-8", ".st-failed"),
        ("/index.html", "text/html; charset=utf-8", "<dialog id=\"confirm\""),
    ] {
        let answer = send(&server, signed_in("GET", path).body(empty()).expect("request")).await;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        assert_eq!(answer.headers()[header::CONTENT_TYPE], kind, "{path}");
        assert!(body(answer).await.contains(needle), "{path}");
    }
    let missing = send(&server, signed_in("GET", "/api/nope").body(empty()).expect("request")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(missing).await, r#"{"error":"no such page or API: /api/nope"}"#);
    let method = send(&server, signed_in("DELETE", "/api/state").body(empty()).expect("request")).await;
    assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn actions_check_their_request_before_asking_the_manager() {
    let server = server();
    let post = |path: &str, kind: Option<&str>, body: &str| {
        let mut builder = signed_in("POST", path);
        if let Some(kind) = kind {
            builder = builder.header(header::CONTENT_TYPE, kind);
        }
        builder.body(Full::new(Bytes::from(body.to_owned()))).expect("request")
    };
    // A form post (what a page elsewhere could make a browser send) is not an action.
    let form =
        send(&server, post("/api/services/web/scale", Some("application/x-www-form-urlencoded"), "replicas=3")).await;
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let not_json = send(&server, post("/api/services/web/scale", Some("application/json"), "{replicas: 3")).await;
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert!(body(not_json).await.contains("the request body is not JSON"));
    for bad in [r#"{"replicas": -1}"#, r#"{"replicas": 2.5}"#, r#"{"replicas": "3"}"#, r#"{"replicas": 100001}"#, "{}"]
    {
        let answer = send(&server, post("/api/services/web/scale", Some("application/json"), bad)).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{bad}");
        let error: Value = serde_json::from_str(&body(answer).await).expect("json");
        let error = error["error"].as_str().expect("error");
        assert!(error.starts_with("invalid replicas ") && error.ends_with("from 0 to 100000"), "{error}");
    }
    let answer =
        send(&server, post("/api/nodes/n1/availability", Some("application/json"), r#"{"availability":"off"}"#)).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(answer).await, r#"{"error":"invalid availability \"off\": expected active, pause or drain"}"#);
    let answer = send(&server, post("/api/nodes/n1/promote", Some("application/json"), "{}")).await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let big = format!(r#"{{"replicas": 1, "pad": "{}"}}"#, "x".repeat(70_000));
    let answer = send(&server, post("/api/services/web/scale", Some("application/json"), &big)).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
}

fn task(id: &str, service: &str, node: &str, state: TaskState) -> v1::Task {
    v1::Task {
        id: id.to_owned(),
        service_id: service.to_owned(),
        node_id: node.to_owned(),
        slot: 2,
        annotations: Some(v1::Annotations { name: "web.2".to_owned(), ..Default::default() }),
        desired_state: TaskState::Running as i32,
        status: Some(v1::TaskStatus {
            state: state as i32,
            err: if state == TaskState::Failed { "task: non-zero exit (137)".to_owned() } else { String::new() },
            timestamp: Some(shoal_api::to_timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn views_carry_what_the_pages_show() {
    let view = view::task(&task("t1", "s1", "n1", TaskState::Failed), None);
    assert_eq!(view["name"], "web.2");
    assert_eq!(view["state"], "failed");
    assert_eq!(view["desired"], "running");
    assert_eq!(view["error"], "task: non-zero exit (137)");
    assert_eq!(view["since"], 1_800_000_000_000u64);

    let node = v1::Node {
        id: "n1".to_owned(),
        spec: Some(v1::NodeSpec { availability: v1::NodeAvailability::Drain as i32, ..Default::default() }),
        description: Some(v1::NodeDescription {
            hostname: "worker-1".to_owned(),
            resources: Some(v1::Resources { nano_cpus: 2_000_000_000, memory_bytes: 1 << 30, ..Default::default() }),
            ..Default::default()
        }),
        status: Some(v1::NodeStatus { state: v1::node_status::State::Ready as i32, ..Default::default() }),
        manager_status: Some(v1::ManagerStatus { leader: true, ..Default::default() }),
        role: v1::NodeRole::Manager as i32,
        ..Default::default()
    };
    let view = view::node(&node);
    assert_eq!(
        (&view["name"], &view["role"], &view["availability"], &view["state"], &view["leader"], &view["cpus"]),
        (&json!("worker-1"), &json!("manager"), &json!("drain"), &json!("ready"), &json!(true), &json!(2.0))
    );

    let service = v1::Service {
        id: "s1".to_owned(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: "web".to_owned(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Global(v1::GlobalService {})),
            ..Default::default()
        }),
        update_status: Some(v1::UpdateStatus {
            state: v1::update_status::UpdateState::RollbackStarted as i32,
            message: "rollback in progress".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let view = view::service(&service);
    assert_eq!((&view["name"], &view["mode"], &view["replicas"]), (&json!("web"), &json!("global"), &Value::Null));
    assert_eq!(view["update"]["state"], "rollback_started");
    assert_eq!(view["canRollback"], false);
}

fn keyed(values: &[(&str, i64)]) -> HashMap<String, Value> {
    values.iter().map(|(id, n)| ((*id).to_owned(), json!({ "id": id, "n": n }))).collect()
}

#[test]
fn the_model_sends_only_what_changed() {
    let mut model = Model::new("m");
    let mut change = Change::default();
    model.replace(Kind::Task, keyed(&[("a", 1), ("b", 1)]), &mut change);
    assert_eq!(change.upserts[&Kind::Task].len(), 2);

    let mut change = Change::default();
    model.replace(Kind::Task, keyed(&[("a", 1), ("c", 1)]), &mut change);
    assert_eq!(change.upserts[&Kind::Task], vec![json!({ "id": "c", "n": 1 })], "a is unchanged");
    assert_eq!(change.removes[&Kind::Task], vec!["b".to_owned()]);

    let mut change = Change::default();
    model.upsert(Kind::Task, "a".to_owned(), json!({ "id": "a", "n": 1 }), &mut change);
    model.remove(Kind::Task, "zzz", &mut change);
    assert!(change.is_empty(), "nothing new: nothing to send");

    for i in 0..KEPT_EVENTS + 5 {
        model.record(json!({ "n": i }), &mut change);
    }
    let snapshot: Value = serde_json::from_str(&model.snapshot()).expect("json");
    let events = snapshot["events"].as_array().expect("events");
    assert_eq!((events.len(), &events[0]["n"]), (KEPT_EVENTS, &json!(5)));
    assert_eq!(snapshot["tasks"], json!([{ "id": "a", "n": 1 }, { "id": "c", "n": 1 }]));
    assert_eq!(snapshot["status"], json!({ "manager": "m", "connected": false, "error": null }));
}

#[test]
fn many_changed_tasks_are_listed_by_their_services() {
    let mut model = Model::new("m");
    let mut change = Change::default();
    let service = |id: &str, name: &str| json!({ "id": id, "name": name });
    let services = [("s1", service("s1", "web")), ("s2", service("s2", "db"))];
    model.replace(Kind::Service, services.into_iter().map(|(id, v)| (id.to_owned(), v)).collect(), &mut change);
    let task =
        |id: &str, service: &str, state: &str| (id.to_owned(), json!({ "id": id, "service": service, "state": state }));
    model.replace(Kind::Task, [task("a", "s1", "running"), task("b", "s2", "running")].into(), &mut change);

    // The events name a known task and a new one of a service known by name.
    let named: HashMap<String, String> = [("a".to_owned(), String::new()), ("c".to_owned(), "web".to_owned())].into();
    assert_eq!(model.services_of(&named), Some(["s1".to_owned()].into()));
    let unknown: HashMap<String, String> = [("z".to_owned(), "nope".to_owned())].into();
    assert_eq!(model.services_of(&unknown), None, "a service that cannot be told: list every task");

    // web's tasks listed: a changed, c new; db's task b untouched though it is not in the list.
    let mut change = Change::default();
    let web = |t: &Value| t["service"] == "s1";
    model.replace_where(Kind::Task, [task("a", "s1", "failed"), task("c", "s1", "running")].into(), web, &mut change);
    let mut upserted: Vec<&str> = change.upserts[&Kind::Task].iter().filter_map(|t| t["id"].as_str()).collect();
    upserted.sort_unstable();
    assert_eq!(upserted, ["a", "c"]);
    assert!(change.removes.is_empty());
    let mut change = Change::default();
    model.replace_where(Kind::Task, [task("c", "s1", "running")].into(), web, &mut change);
    assert_eq!(change.removes[&Kind::Task], ["a".to_owned()]);
    assert_eq!(model.count(Kind::Task), 2, "b and c");
}

#[test]
fn what_a_batch_reads_of_the_tasks() {
    use v1::{EventAction as A, EventType as T};
    let mut model = Model::new("m");
    let mut change = Change::default();
    model.replace(Kind::Service, [("s1".to_owned(), json!({ "id": "s1", "name": "web" }))].into(), &mut change);
    model.replace(Kind::Task, [("a".to_owned(), json!({ "id": "a", "service": "s1" }))].into(), &mut change);
    let with_service = |e: v1::SubscribeEventsMessage, service: &str| {
        let mut e = e;
        if let Some(event) = e.event.as_mut() {
            event.attributes.insert("service".to_owned(), service.to_owned());
        }
        e
    };
    let many = |service: &str| -> Vec<v1::SubscribeEventsMessage> {
        (0..=RELIST_OVER).map(|i| with_service(event(T::Task, A::Create, &format!("t{i}")), service)).collect()
    };
    // A few tasks: each by itself.
    assert_eq!(task_read(&Dirty::of(&[event(T::Task, A::Update, "a")]), &model), TaskRead::Each);
    // A service changed: its tasks, since whether each is up to date may have changed.
    assert_eq!(
        task_read(&Dirty::of(&[event(T::Service, A::Update, "s1")]), &model),
        TaskRead::Of(["s1".to_owned()].into())
    );
    // Many tasks of a known service: that service's tasks.
    assert_eq!(task_read(&Dirty::of(&many("web")), &model), TaskRead::Of(["s1".to_owned()].into()));
    // Of a service the model does not know, or with services made in the same batch: every task.
    assert_eq!(task_read(&Dirty::of(&many("api")), &model), TaskRead::All);
    let mut batch = vec![event(T::Service, A::Remove, "s1"), event(T::Service, A::Create, "s2")];
    batch.extend(many("web"));
    assert_eq!(task_read(&Dirty::of(&batch), &model), TaskRead::All, "web may now be s2");
    // Events lost: every task.
    let lost = v1::SubscribeEventsMessage { event: None, lost: 1 };
    assert_eq!(task_read(&Dirty::of(&[lost]), &model), TaskRead::All);
}

#[test]
fn a_task_is_up_to_date_as_the_updater_counts_it() {
    let service = |image: &str| v1::Service {
        id: "s1".to_owned(),
        spec: Some(v1::ServiceSpec {
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: image.to_owned(), ..Default::default() }),
                ..Default::default()
            }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut task = task("t1", "s1", "n1", TaskState::Running);
    task.spec = service("web:v1").spec.and_then(|s| s.task);
    assert_eq!(view::task(&task, Some(&service("web:v1")))["current"], true);
    assert_eq!(view::task(&task, Some(&service("web:v2")))["current"], false);
    // A scale changes the service's spec version, not what its tasks run.
    let mut scaled = service("web:v1");
    scaled.spec_version = 7;
    assert_eq!(view::task(&task, Some(&scaled))["current"], true);
    assert_eq!(view::task(&task, None)["current"], Value::Null);
}

fn event(kind: v1::EventType, action: v1::EventAction, id: &str) -> v1::SubscribeEventsMessage {
    v1::SubscribeEventsMessage {
        event: Some(v1::Event { r#type: kind as i32, action: action as i32, id: id.to_owned(), ..Default::default() }),
        lost: 0,
    }
}

#[test]
fn a_batch_of_events_names_what_to_read_again() {
    use v1::{EventAction as A, EventType as T};
    let dirty = Dirty::of(&[
        event(T::Task, A::Create, "t1"),
        event(T::Task, A::Update, "t2"),
        event(T::Task, A::Remove, "t1"),
        event(T::Service, A::Remove, "s1"),
        event(T::Service, A::Create, "s1"),
        // Not shown: nothing to read.
        event(T::Secret, A::Create, "x"),
    ]);
    assert_eq!(dirty.changed[&Kind::Task], ["t2".to_owned()].into());
    assert_eq!(dirty.removed[&Kind::Task], ["t1".to_owned()].into());
    assert_eq!(dirty.changed[&Kind::Service], ["s1".to_owned()].into());
    assert!(dirty.removed[&Kind::Service].is_empty());
    assert!(!dirty.all);
    let lost = Dirty::of(&[v1::SubscribeEventsMessage { event: None, lost: 3 }]);
    assert!(lost.all);
}

/// The next whole server-sent event of `body`.
async fn next_frame(body: &mut ResponseBody) -> String {
    let mut text = String::new();
    while !text.ends_with("\n\n") {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("a frame within 5 s")
            .expect("the stream goes on")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("utf-8"));
        }
    }
    text
}

#[tokio::test]
async fn the_stream_starts_with_the_model_then_sends_each_change() {
    let server = server();
    server.hub.apply(|model, change| {
        model.upsert(
            Kind::Task,
            "t1".to_owned(),
            view::task(&task("t1", "s1", "n1", TaskState::Running), None),
            change,
        );
    });
    let answer = send(&server, signed_in("GET", "/api/events").body(empty()).expect("request")).await;
    assert_eq!(answer.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut stream = answer.into_body();
    let first = next_frame(&mut stream).await;
    let data: Value =
        serde_json::from_str(first.strip_prefix("event: reset\ndata: ").expect("a reset").trim_end()).expect("json");
    assert_eq!(data["tasks"][0]["state"], "running");

    // The task fails: the browser hears of that task alone.
    server.hub.apply(|model, change| {
        model.upsert(Kind::Task, "t1".to_owned(), view::task(&task("t1", "s1", "n1", TaskState::Failed), None), change);
    });
    let delta = next_frame(&mut stream).await;
    let data: Value =
        serde_json::from_str(delta.strip_prefix("event: delta\ndata: ").expect("a delta").trim_end()).expect("json");
    assert_eq!(data["upsert"]["tasks"][0]["state"], "failed");
    assert_eq!(data["upsert"].as_object().map(|o| o.len()), Some(1));

    server.hub.set_link(true, None);
    let status = next_frame(&mut stream).await;
    assert_eq!(status, "event: status\ndata: {\"connected\":true,\"error\":null,\"manager\":\"192.0.2.10:2377\"}\n\n");

    // The whole model, as a page that loads it once sees it.
    let state = send(&server, signed_in("GET", "/api/state").body(empty()).expect("request")).await;
    let state: Value = serde_json::from_str(&body(state).await).expect("json");
    assert_eq!(state["tasks"][0]["error"], "task: non-zero exit (137)");
    assert_eq!(state["status"]["connected"], true);
    assert_eq!(server.hub.read(|m| m.count(Kind::Task)), 1);
}

#[test]
fn only_loopback_unless_asked_and_a_fresh_token_each_time() {
    for ok in ["127.0.0.1:8088", "[::1]:0", "127.0.0.2:80"] {
        assert_eq!(refused_listen(ok.parse().expect("addr"), false), None, "{ok}");
    }
    let refused = refused_listen("0.0.0.0:8088".parse().expect("addr"), false).expect("refused");
    assert!(refused.contains("--allow-remote") && refused.contains("127.0.0.1:8088"), "{refused}");
    assert_eq!(refused_listen("192.0.2.1:8088".parse().expect("addr"), true), None);
    let (a, b) = (new_token().expect("token"), new_token().expect("token"));
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
}
