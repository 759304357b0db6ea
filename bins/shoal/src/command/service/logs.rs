//! `shoal service logs SERVICE|TASK`: the output of a service's tasks (or of one task), streamed
//! by the manager from the agents (`shoal.v1.Logs`; any manager will do, a follower relays to the
//! leader). Each line is prefixed as docker prints it, `web.1.abc123def456@node4    | `, standard
//! output to stdout and standard error to stderr; `--raw` prints the lines alone. What the
//! manager warns of (a node that is down, or went away while following) goes to stderr.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use shoal_api::v1::{self, control_client::ControlClient, logs_client::LogsClient};
use tonic::transport::Channel;

use super::super::{api, parse_duration};
use crate::render;

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Follow log output: new lines, and new tasks of the service, until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// Number of lines to show from the end of each task's log, or "all".
    #[arg(long, short = 'n', default_value = "all", value_parser = parse_tail, allow_hyphen_values = true)]
    tail: Tail,
    /// Show logs since a timestamp (e.g. "2013-01-02T13:23:37Z"; without a zone, UTC) or
    /// relative (e.g. "42m" for 42 minutes, "1h30m").
    #[arg(long, value_parser = Since::parse)]
    since: Option<Since>,
    /// Show timestamps.
    #[arg(long, short)]
    timestamps: bool,
    /// Do not include task IDs in output.
    #[arg(long = "no-task-ids")]
    no_task_ids: bool,
    /// Do not truncate output (full task IDs).
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Do not neatly format logs: the lines alone.
    #[arg(long)]
    raw: bool,
    /// A service (name, ID or ID prefix) or a task (ID or ID prefix).
    target: String,
}

/// `--tail`: a number of lines, or all of them (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail(Option<u64>);

fn parse_tail(text: &str) -> Result<Tail, String> {
    if text == "all" {
        return Ok(Tail(None));
    }
    text.parse::<u64>()
        .map(|n| Tail(Some(n)))
        .map_err(|_| format!("invalid --tail {text:?}: expected a number of lines (0 or more) or \"all\""))
}

/// `--since`: a point in time, or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    At(SystemTime),
    Ago(Duration),
}

impl Since {
    /// An RFC 3339 time (`2013-01-02T13:23:37Z`, with fractions and offsets; without a zone,
    /// UTC), a date (`2013-01-02`, midnight UTC), Unix seconds (`1357133017`, `1357133017.5`),
    /// or a duration before now (`42m`, `1h30m`, `90s`).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let secs: f64 = text.parse().map_err(|_| format!("invalid --since {text:?}: not a number of seconds"))?;
            let since = Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid --since {text:?}: {e}"))?;
            return Ok(Self::At(UNIX_EPOCH + since));
        }
        if text.contains('-') {
            return parse_time(text).map(Self::At).map_err(|reason| {
                format!("invalid --since {text:?}: {reason} (expected e.g. 2013-01-02T13:23:37Z or 42m)")
            });
        }
        parse_duration(text).map(Self::Ago).map_err(|_| {
            format!("invalid --since {text:?}: expected a time (2013-01-02T13:23:37Z) or a duration (42m)")
        })
    }

    /// The point in time, counting back from `now`.
    pub(crate) fn at(self, now: SystemTime) -> SystemTime {
        match self {
            Self::At(at) => at,
            Self::Ago(ago) => now.checked_sub(ago).unwrap_or(UNIX_EPOCH),
        }
    }
}

/// `2013-01-02`, `2013-01-02T13:23:37`, `…37.5Z`, `…37+02:00` (a space for the `T` too).
fn parse_time(text: &str) -> Result<SystemTime, String> {
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let number = |part: &str, what: &str| part.parse::<i64>().map_err(|_| format!("{what} {part:?} is not a number"));
    let mut fields = date.split('-');
    let (Some(year), Some(month), Some(day), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("date {date:?} is not YEAR-MONTH-DAY"));
    };
    let (year, month, day) = (number(year, "year")?, number(month, "month")?, number(day, "day")?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(format!("date {date:?} does not exist"));
    }
    let mut secs = days_from_civil(year, month, day) * 86_400;
    let mut nanos = 0u32;
    if let Some(time) = time {
        // The zone: Z, or +HH:MM / -HH:MM, or none (UTC).
        let (clock, offset) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else if let Some(at) = time.rfind(['+', '-']) {
            let (clock, zone) = time.split_at(at);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let Some((hours, minutes)) = zone[1..].split_once(':') else {
                return Err(format!("zone {zone:?} is not +HH:MM or -HH:MM"));
            };
            (clock, sign * (number(hours, "zone hours")? * 3600 + number(minutes, "zone minutes")? * 60))
        } else {
            (time, 0)
        };
        let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let mut parts = whole.split(':');
        let (Some(h), Some(m), s, None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(format!("time {clock:?} is not HH:MM:SS"));
        };
        let (h, m, s) = (number(h, "hour")?, number(m, "minute")?, s.map_or(Ok(0), |s| number(s, "second"))?);
        if h > 23 || m > 59 || s > 60 {
            return Err(format!("time {clock:?} does not exist"));
        }
        if !fraction.is_empty() {
            if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("fraction of a second {fraction:?} is not 1 to 9 digits"));
            }
            nanos = format!("{fraction:0<9}").parse().map_err(|_| format!("fraction {fraction:?}"))?;
        }
        secs += h * 3600 + m * 60 + s - offset;
    }
    let secs = u64::try_from(secs).map_err(|_| "it is before 1970".to_owned())?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2014-09-16T06:17:46.000000000Z`: RFC 3339 with nine decimals, so that timestamps align (as
/// docker's `--timestamps`, and `shoal events`).
pub(crate) fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = render::rfc3339(UNIX_EPOCH + Duration::from_secs(since.as_secs()));
    format!("{}.{:09}Z", whole.trim_end_matches('Z'), since.subsec_nanos())
}

/// How lines are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    timestamps: bool,
    no_task_ids: bool,
    no_trunc: bool,
    raw: bool,
}

/// What a line's prefix is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    /// `web.1`, or `web.NODEID` for a global task.
    task_name: String,
    slot: u64,
    task_id: String,
    /// The node's hostname (its ID when it is not known).
    node: String,
}

/// The digits of `n` in base 10 (docker's `getMaxLength`).
fn digits(n: u64) -> usize {
    n.to_string().len()
}

/// `web.1.abc123def456@node4`, padded as docker pads it: by the digits the slot lacks against the
/// service's replica count (`width`), so that `web.2` and `web.10` line up.
fn prefix(source: &Source, style: Style, width: usize) -> String {
    let mut name = source.task_name.clone();
    if !style.no_task_ids {
        name.push('.');
        if style.no_trunc {
            name.push_str(&source.task_id);
        } else {
            name.extend(source.task_id.chars().take(12));
        }
    }
    let padding = if source.slot > 0 { width.saturating_sub(digits(source.slot)) } else { 0 };
    format!("{name}@{}{}", source.node, " ".repeat(padding))
}

/// One line to print.
#[derive(Debug)]
struct Line<'a> {
    source: Option<&'a Source>,
    time: Option<SystemTime>,
    stderr: bool,
    data: &'a [u8],
}

/// A batch's lines as printed, each with whether it goes to stderr: `[TIME ]PREFIX    | LINE`,
/// the prefixes padded to the widest of the batch so that the bars align, or `[TIME ]LINE` raw.
fn render_batch(lines: &[Line<'_>], style: Style, width: usize) -> Vec<(bool, Vec<u8>)> {
    let prefixes: Vec<String> = if style.raw {
        Vec::new()
    } else {
        lines.iter().map(|l| l.source.map(|s| prefix(s, style, width)).unwrap_or_default()).collect()
    };
    let widest = prefixes.iter().map(|p| p.chars().count()).max().unwrap_or(0);
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut out = Vec::with_capacity(line.data.len() + widest + 48);
            if style.timestamps {
                let time = line.time.map(timestamp).unwrap_or_default();
                out.extend_from_slice(time.as_bytes());
                out.push(b' ');
            }
            if let Some(prefix) = prefixes.get(i) {
                out.extend_from_slice(format!("{prefix:<widest$}    | ").as_bytes());
            }
            out.extend_from_slice(line.data);
            out.push(b'\n');
            (line.stderr, out)
        })
        .collect()
}

/// Task and node names for prefixes, fetched as new ones appear.
struct Names<'c> {
    control: &'c mut ControlClient<Channel>,
    tasks: HashMap<String, v1::Task>,
    nodes: HashMap<String, String>,
    sources: HashMap<(String, String), Source>,
}

impl Names<'_> {
    async fn source(&mut self, context: &v1::LogContext) -> Source {
        let key = (context.task_id.clone(), context.node_id.clone());
        if let Some(source) = self.sources.get(&key) {
            return source.clone();
        }
        if !self.tasks.contains_key(&context.task_id) {
            let request = v1::GetTaskRequest { task: context.task_id.clone() };
            if let Ok(task) = self.control.get_task(request).await.map(|r| r.into_inner().task) {
                self.tasks.extend(task.map(|t| (t.id.clone(), t)));
            }
        }
        if !self.nodes.contains_key(&context.node_id) {
            // A node that joined since: the list again, once per new node.
            if let Ok(nodes) = self.control.list_nodes(v1::ListNodesRequest::default()).await {
                self.nodes.extend(nodes.into_inner().nodes.into_iter().map(|n| (n.id.clone(), hostname(&n))));
            }
            self.nodes.entry(context.node_id.clone()).or_insert_with(|| context.node_id.clone());
        }
        let task = self.tasks.get(&context.task_id);
        let task_name = task
            .and_then(|t| t.annotations.as_ref().map(|a| a.name.clone()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| context.task_id.clone());
        let source = Source {
            task_name,
            slot: task.map_or(0, |t| t.slot),
            task_id: context.task_id.clone(),
            node: self.nodes.get(&context.node_id).cloned().unwrap_or_default(),
        };
        self.sources.insert(key, source.clone());
        source
    }
}

fn hostname(node: &v1::Node) -> String {
    node.description.as_ref().map(|d| d.hostname.clone()).filter(|h| !h.is_empty()).unwrap_or_else(|| node.id.clone())
}

/// What the logs are of: a service or a task, found as docker finds them (the service first).
async fn target(
    control: &mut ControlClient<Channel>,
    target: &str,
) -> anyhow::Result<(v1::LogSelector, Option<v1::Service>, Option<v1::Task>)> {
    let service = control.get_service(v1::GetServiceRequest { service: target.to_owned() }).await;
    match service.map(|r| r.into_inner().service) {
        Ok(Some(service)) => {
            let selector = v1::LogSelector { service_ids: vec![service.id.clone()], task_ids: Vec::new() };
            return Ok((selector, Some(service), None));
        }
        Ok(None) => {}
        Err(status) if status.code() == tonic::Code::NotFound => {}
        Err(status) => return Err(api(status)),
    }
    match control.get_task(v1::GetTaskRequest { task: target.to_owned() }).await.map(|r| r.into_inner().task) {
        Ok(Some(task)) => {
            let selector = v1::LogSelector { service_ids: Vec::new(), task_ids: vec![task.id.clone()] };
            Ok((selector, None, Some(task)))
        }
        Ok(None) => anyhow::bail!("no such task or service: {target}"),
        Err(status) if status.code() == tonic::Code::NotFound => anyhow::bail!("no such task or service: {target}"),
        Err(status) => Err(api(status)),
    }
}

/// The subscription `args` ask for.
fn request(args: &LogsArgs, selector: v1::LogSelector, now: SystemTime) -> v1::SubscribeLogsRequest {
    v1::SubscribeLogsRequest {
        selector: Some(selector),
        options: Some(v1::LogSubscriptionOptions {
            follow: args.follow,
            tail: args.tail.0,
            since: args.since.map(|s| shoal_api::to_timestamp(s.at(now))),
            streams: Vec::new(),
        }),
    }
}

pub(crate) async fn logs(
    channel: Channel,
    control: &mut ControlClient<Channel>,
    args: &LogsArgs,
) -> anyhow::Result<()> {
    let (selector, service, task) = target(control, &args.target).await?;
    let request = request(args, selector, SystemTime::now());
    // Docker's padding: slots as wide as the replica count (or the task's own slot).
    let width = match (&service, &task) {
        (Some(service), _) => match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
            Some(v1::service_spec::Mode::Replicated(r)) => digits(r.replicas),
            _ => 1,
        },
        (None, Some(task)) => digits(task.slot),
        (None, None) => 1,
    };
    let mut tasks: HashMap<String, v1::Task> = task.into_iter().map(|t| (t.id.clone(), t)).collect();
    if let Some(service) = &service {
        let listed = v1::ListTasksRequest { service_ids: vec![service.id.clone()], ..Default::default() };
        tasks.extend(
            control.list_tasks(listed).await.map_err(api)?.into_inner().tasks.into_iter().map(|t| (t.id.clone(), t)),
        );
    }
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
    let nodes = nodes.iter().map(|n| (n.id.clone(), hostname(n))).collect();
    let style =
        Style { timestamps: args.timestamps, no_task_ids: args.no_task_ids, no_trunc: args.no_trunc, raw: args.raw };
    let mut names = Names { control, tasks, nodes, sources: HashMap::new() };
    let mut stream = LogsClient::new(channel).subscribe_logs(request).await.map_err(api)?.into_inner();
    while let Some(message) = stream.message().await.map_err(api)? {
        for warning in &message.warnings {
            eprintln!("warning: {warning}");
        }
        let mut sources = Vec::with_capacity(message.messages.len());
        for m in &message.messages {
            sources.push(match (&m.context, style.raw) {
                (Some(context), false) => Some(names.source(context).await),
                _ => None,
            });
        }
        let lines: Vec<Line<'_>> = message
            .messages
            .iter()
            .zip(&sources)
            .map(|(m, source)| Line {
                source: source.as_ref(),
                time: shoal_api::from_timestamp(m.timestamp.as_ref()),
                stderr: m.stream == v1::LogStream::Stderr as i32,
                data: &m.data,
            })
            .collect();
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        for (stderr, bytes) in render_batch(&lines, style, width) {
            let written = if stderr { err.write_all(&bytes) } else { out.write_all(&bytes) };
            // The reader went away (`| head`): done, quietly.
            if written.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
                return Ok(());
            }
            written?;
        }
        let flushed = out.flush();
        if flushed.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            return Ok(());
        }
        flushed?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
