//! `shoal events`: the cluster's object changes as they happen, as docker's `events` prints
//! them for the swarm scope (`shoal.v1.Events`; any manager will do, each derives the events
//! from its own replica). `--since` replays what the manager kept (its last 1,024 events),
//! `--until` ends the stream, `--filter` is passed to the manager, which applies it.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use shoal_api::v1::{self, events_client::EventsClient};
use tonic::transport::Channel;

use super::service::{Since, timestamp};
use super::{MAX_ANSWER_BYTES, api};
use crate::format::{Column, Template, column};

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Show events since a time: RFC 3339 (2026-12-07T10:30:00Z), Unix seconds, or a duration
    /// before now (10m). Only what the manager kept (its last 1,024 events).
    #[arg(long, value_parser = parse_time_arg)]
    since: Option<Since>,
    /// Stream events until this time (as --since); without it, until interrupted.
    #[arg(long, value_parser = parse_time_arg)]
    until: Option<Since>,
    /// Filter events: type=service|node|task|network|secret|config, event=create|update|remove,
    /// service=, node=, network=, secret=, config=, task= (ID or name), id=, name=, scope=swarm.
    #[arg(long, short, value_parser = parse_filter)]
    filter: Vec<(String, String)>,
    /// json ('{{json .}}', docker's fields), or a template: '{{.Type}} {{.Action}} {{.Actor.ID}}'.
    #[arg(long)]
    format: Option<String>,
}

fn parse_time_arg(text: &str) -> Result<Since, String> {
    Since::parse(text).map_err(|e| e.replacen("invalid --since ", "invalid time ", 1))
}

fn parse_filter(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.trim().to_ascii_lowercase(), value.to_owned())),
        _ => Err(format!("invalid filter {text:?}: expected KEY=VALUE, e.g. type=service")),
    }
}

/// The placeholders of `--format` templates other than JSON, as docker's `events.Message`.
pub(crate) const EVENT_COLUMNS: &[Column] = &[
    column("Type", "TYPE"),
    column("Action", "ACTION"),
    column("Actor.ID", "ID"),
    column("ID", "ID"),
    column("Scope", "SCOPE"),
    column("Time", "TIME"),
    column("TimeNano", "TIME NANO"),
];

/// How each event is printed.
#[derive(Debug)]
enum Style {
    /// `TIME TYPE ACTION ID (KEY=VALUE, …)`.
    Line,
    /// One JSON object per line with docker's field names.
    Json,
    Template(Template),
}

impl Style {
    fn parse(format: Option<&str>) -> Result<Self, String> {
        match format.map(str::trim) {
            None | Some("" | "table") => Ok(Self::Line),
            Some("json" | "{{json .}}" | "{{ json . }}") => Ok(Self::Json),
            Some(template) => Template::parse(template, EVENT_COLUMNS).map(Self::Template),
        }
    }
}

/// `event`'s time, type, action, ID and attributes sorted by key.
struct Parts<'a> {
    time: SystemTime,
    kind: &'static str,
    action: &'static str,
    id: &'a str,
    attributes: BTreeMap<&'a str, &'a str>,
}

/// An event's type and action as docker words them: `service`, `update`.
pub(crate) fn words(event: &v1::Event) -> (&'static str, &'static str) {
    let kind = match event.r#type() {
        v1::EventType::Service => "service",
        v1::EventType::Node => "node",
        v1::EventType::Task => "task",
        v1::EventType::Network => "network",
        v1::EventType::Secret => "secret",
        v1::EventType::Config => "config",
        v1::EventType::Unknown => "unknown",
    };
    let action = match event.action() {
        v1::EventAction::Create => "create",
        v1::EventAction::Update => "update",
        v1::EventAction::Remove => "remove",
        v1::EventAction::Unknown => "unknown",
    };
    (kind, action)
}

fn parts(event: &v1::Event) -> Parts<'_> {
    let (kind, action) = words(event);
    Parts {
        time: shoal_api::from_timestamp(event.time.as_ref()).unwrap_or(UNIX_EPOCH),
        kind,
        action,
        id: &event.id,
        attributes: event.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
    }
}

/// One event as `style` prints it, without the newline.
fn render(event: &v1::Event, style: &Style) -> String {
    let p = parts(event);
    let nanos = p.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    match style {
        Style::Line => {
            let mut line = format!("{} {} {} {}", timestamp(p.time), p.kind, p.action, p.id);
            if !p.attributes.is_empty() {
                let attributes: Vec<String> = p.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                line.push_str(&format!(" ({})", attributes.join(", ")));
            }
            line
        }
        Style::Json => serde_json::json!({
            "Type": p.kind,
            "Action": p.action,
            "Actor": { "ID": p.id, "Attributes": p.attributes },
            "scope": "swarm",
            "time": nanos.as_secs(),
            "timeNano": nanos.as_nanos(),
        })
        .to_string(),
        Style::Template(template) => template.fill(&[
            p.kind.to_owned(),
            p.action.to_owned(),
            p.id.to_owned(),
            p.id.to_owned(),
            "swarm".to_owned(),
            nanos.as_secs().to_string(),
            nanos.as_nanos().to_string(),
        ]),
    }
}

/// The request `args` make, with relative times counted back from `now`.
fn request(args: &EventsArgs, now: SystemTime) -> v1::SubscribeEventsRequest {
    v1::SubscribeEventsRequest {
        since: args.since.map(|since| shoal_api::to_timestamp(since.at(now))),
        until: args.until.map(|until| shoal_api::to_timestamp(until.at(now))),
        filters: args
            .filter
            .iter()
            .map(|(key, value)| v1::EventFilter { key: key.clone(), value: value.clone() })
            .collect(),
    }
}

pub(crate) async fn events(channel: Channel, args: &EventsArgs) -> anyhow::Result<()> {
    let style = Style::parse(args.format.as_deref()).map_err(anyhow::Error::msg)?;
    if let (Some(since), Some(until)) = (args.since, args.until) {
        let now = SystemTime::now();
        if until.at(now) < since.at(now) {
            anyhow::bail!("--until is before --since: no event can match");
        }
    }
    let mut client = EventsClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
    let mut stream = client.subscribe(request(args, SystemTime::now())).await.map_err(api)?.into_inner();
    let mut stdout = std::io::stdout().lock();
    while let Some(message) = stream.message().await.map_err(api)? {
        if message.lost > 0 {
            eprintln!(
                "warning: this client read too slowly and the manager dropped {} events; \
                 run again with --since to see what it kept",
                message.lost
            );
        }
        if let Some(event) = &message.event {
            writeln!(stdout, "{}", render(event, &style))?;
            // One event at a time: a reader (a pipe into grep) sees each as it happens.
            stdout.flush()?;
        }
    }
    Ok(())
}
