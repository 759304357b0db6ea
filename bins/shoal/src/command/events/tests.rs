//! `shoal events`: its flags, and events printed as docker prints them.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: EventsArgs,
}

fn parse(argv: &[&str]) -> Result<EventsArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("events").chain(argv.iter().copied())).map(|cli| cli.args)
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_639_400)
}

#[test]
fn flags_as_docker() {
    let args =
        parse(&["--since", "10m", "--until", "2026-12-07T10:30:00Z", "-f", "type=service", "--filter", "event=update"])
            .expect("parses");
    let sent = request(&args, now());
    assert_eq!(shoal_api::from_timestamp(sent.since.as_ref()), Some(now() - Duration::from_secs(600)));
    assert_eq!(shoal_api::from_timestamp(sent.until.as_ref()), Some(UNIX_EPOCH + Duration::from_secs(1_796_639_400)));
    let filters: Vec<(&str, &str)> = sent.filters.iter().map(|f| (f.key.as_str(), f.value.as_str())).collect();
    assert_eq!(filters, [("type", "service"), ("event", "update")]);
    // Unix seconds.
    let args = parse(&["--since", "1796639400"]).expect("parses");
    assert_eq!(shoal_api::from_timestamp(request(&args, now()).since.as_ref()), Some(now()));
    // Nothing: follow from now, everything.
    assert_eq!(request(&parse(&[]).expect("parses"), now()), v1::SubscribeEventsRequest::default());
    let err = parse(&["--filter", "type"]).expect_err("no value").to_string();
    assert!(err.contains("invalid filter \"type\": expected KEY=VALUE"), "{err}");
    let err = parse(&["--until", "yesterday"]).expect_err("not a time").to_string();
    assert!(err.contains("invalid time \"yesterday\""), "{err}");
}

fn event() -> v1::Event {
    let attributes: HashMap<String, String> =
        [("replicas.old", "3"), ("name", "web"), ("replicas.new", "5")].map(|(k, v)| (k.into(), v.into())).into();
    v1::Event {
        time: Some(shoal_api::to_timestamp(now() + Duration::from_nanos(123_456_789))),
        r#type: v1::EventType::Service as i32,
        action: v1::EventAction::Update as i32,
        id: "svc1".into(),
        attributes,
    }
}

#[test]
fn lines_as_docker() {
    assert_eq!(
        render(&event(), &Style::parse(None).expect("default")),
        "2026-12-07T10:30:00.123456789Z service update svc1 (name=web, replicas.new=5, replicas.old=3)"
    );
    let bare = v1::Event { attributes: HashMap::new(), ..event() };
    assert_eq!(render(&bare, &Style::Line), "2026-12-07T10:30:00.123456789Z service update svc1");
    assert_eq!(
        render(&event(), &Style::parse(Some("{{json .}}")).expect("json")),
        r#"{"Action":"update","Actor":{"Attributes":{"name":"web","replicas.new":"5","replicas.old":"3"},"ID":"svc1"},"Type":"service","scope":"swarm","time":1796639400,"timeNano":1796639400123456789}"#
    );
    assert_eq!(
        render(&event(), &Style::parse(Some("{{.Type}} {{.Action}} {{.Actor.ID}}")).expect("template")),
        "service update svc1"
    );
    let err = Style::parse(Some("{{.Status}}")).expect_err("unknown placeholder");
    assert!(err.contains("valid placeholders: {{.Type}}"), "{err}");
}
