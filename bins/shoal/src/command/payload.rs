//! `shoal secret …` and `shoal config …`, as docker/cli's `secret/` and `config/`: create, ls,
//! inspect, rm, and `update` (not docker's), which replaces the labels or rotates the payload —
//! the payload becomes a new version and the manager moves every service that uses it there.
//! Secrets and configs are one kind of object (a named payload that tasks read as a file) but
//! for their size limit and whether the payload ever comes back (a config's does, a secret's
//! never), so one module serves both nouns through [`Kind`]; what it prints is made by pure
//! functions of [`Payload`], tested as text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read as _;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::filter::{Filters, PAYLOAD_KEYS, payload_matches};
use super::service::parse_label;
use super::{ListArgs, api, reported};
use crate::format::{self, Column, Output, column};
use crate::render;

/// Which of the two nouns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Config => "config",
        }
    }

    /// Swarm's limits: a payload is smaller than this.
    pub(crate) fn limit(self) -> usize {
        match self {
            Self::Secret => 500 * 1024,
            Self::Config => 1000 * 1024,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum PayloadCommand {
    /// Create one from FILE, or from standard input with -; prints its ID.
    Create {
        /// Label KEY[=VALUE] (repeatable).
        #[arg(long, short, value_parser = parse_label)]
        label: Vec<(String, String)>,
        /// Its name: 1-64 letters, digits, '-', '_' and '.'.
        name: String,
        /// The file with the payload, or - for standard input.
        file: String,
    },
    /// List them (never with their payload).
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
        /// Only those that match: name=PREFIX, id=PREFIX, label=KEY[=VALUE] (repeatable; one key
        /// given twice matches either value).
        #[arg(long, short)]
        filter: Vec<String>,
    },
    /// Show them in full as JSON (a config with its payload, a secret never), or as text with
    /// --pretty.
    Inspect {
        /// Print a human-readable format instead of JSON.
        #[arg(long)]
        pretty: bool,
        /// Names, IDs or unique ID prefixes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove them (refused for one a service uses).
    #[command(alias = "remove")]
    Rm {
        /// Names, IDs or unique ID prefixes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Change the labels, or rotate the payload: the new one becomes the next version and every
    /// service that uses it is updated to it (its tasks replaced by its update config); prints
    /// those services.
    Update(UpdateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// Add or change a label, KEY[=VALUE] (repeatable).
    #[arg(long = "label-add", value_parser = parse_label)]
    label_add: Vec<(String, String)>,
    /// Remove a label, by KEY (repeatable).
    #[arg(long = "label-rm")]
    label_rm: Vec<String>,
    /// The new payload: a file, or - for standard input.
    #[arg(long = "data-file", value_name = "FILE", conflicts_with = "file")]
    data_file: Option<String>,
    /// Its name, ID or a unique ID prefix.
    name: String,
    /// The new payload, as --data-file.
    file: Option<String>,
}

/// A secret or config as the CLI shows it (a secret's payload is never kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Payload {
    pub(crate) id: String,
    pub(crate) version: u64,
    pub(crate) created: Option<SystemTime>,
    pub(crate) updated: Option<SystemTime>,
    pub(crate) name: String,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) data_version: u64,
    pub(crate) digest: String,
    pub(crate) data: Vec<u8>,
}

impl Payload {
    fn new(
        id: String,
        meta: Option<v1::Meta>,
        annotations: Option<v1::Annotations>,
        data_version: u64,
        digest: String,
    ) -> Self {
        let meta = meta.unwrap_or_default();
        let annotations = annotations.unwrap_or_default();
        Self {
            id,
            version: meta.version,
            created: shoal_api::from_timestamp(meta.created_at.as_ref()),
            updated: shoal_api::from_timestamp(meta.updated_at.as_ref()),
            name: annotations.name,
            labels: annotations.labels,
            data_version,
            digest,
            data: Vec::new(),
        }
    }
}

impl From<v1::Secret> for Payload {
    fn from(secret: v1::Secret) -> Self {
        // Whatever the manager sent, a secret's payload goes no further.
        let annotations = secret.spec.and_then(|s| s.annotations);
        Self::new(secret.id, secret.meta, annotations, secret.data_version, secret.digest)
    }
}

impl From<v1::Config> for Payload {
    fn from(config: v1::Config) -> Self {
        let spec = config.spec.unwrap_or_default();
        Self {
            data: spec.data,
            ..Self::new(config.id, config.meta, spec.annotations, config.data_version, config.digest)
        }
    }
}

/// `n` bytes as KiB with one decimal.
fn kib(n: usize) -> String {
    format!("{:.1} KiB", n as f64 / 1024.0)
}

/// Checks a payload read from `what` (`cut`: there was more than was read): not empty, and
/// under the kind's limit.
pub(crate) fn check_payload(kind: Kind, what: &str, data: Vec<u8>, cut: bool) -> Result<Vec<u8>, String> {
    let noun = kind.noun();
    let limit = kind.limit();
    if data.is_empty() {
        return Err(format!("{what} is empty: a {noun} needs a payload of 1 byte to {}", kib(limit - 1)));
    }
    if data.len() >= limit {
        let size = if cut {
            format!("more than {}", kib(data.len() - 1))
        } else {
            format!("{} ({} bytes)", kib(data.len()), data.len())
        };
        return Err(format!("{what} is {size}: a {noun} must be smaller than {} ({limit} bytes)", kib(limit)));
    }
    Ok(data)
}

/// Reads a payload from `file`, or standard input for `-` (at most twice the limit, as docker:
/// enough to say how far over it is).
fn read_payload(kind: Kind, file: &str) -> anyhow::Result<Vec<u8>> {
    let max = 2 * kind.limit() as u64;
    let mut data = Vec::new();
    let what = if file == "-" {
        std::io::stdin()
            .lock()
            .take(max + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read the {} from standard input", kind.noun()))?;
        "standard input".to_owned()
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(max + 1).read_to_end(&mut data))
            .with_context(|| format!("cannot read the {} file {file}", kind.noun()))?;
        file.to_owned()
    };
    let cut = data.len() as u64 > max;
    check_payload(kind, &what, data, cut).map_err(anyhow::Error::msg)
}

/// Standard base64 with padding, as Go's JSON shows bytes (a config's `Spec.Data`).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bytes = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn sorted(labels: &HashMap<String, String>) -> BTreeMap<&str, &str> {
    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// As docker's JSON: `ID`, `Version.Index`, the times, `Spec` (with `Data`, base64, when
/// `with_data`: a config's inspect), and Shoal's `DataVersion` and `Digest` (SHA-256 of the
/// current payload).
pub(crate) fn payload_json(payload: &Payload, with_data: bool) -> serde_json::Value {
    let time = |at: Option<SystemTime>| at.map(render::rfc3339);
    let mut json = json!({
        "ID": payload.id,
        "Version": {"Index": payload.version},
        "CreatedAt": time(payload.created),
        "UpdatedAt": time(payload.updated),
        "Spec": {"Name": payload.name, "Labels": sorted(&payload.labels)},
        "DataVersion": payload.data_version,
        "Digest": format!("sha256:{}", payload.digest),
    });
    if with_data {
        json["Spec"]["Data"] = base64(&payload.data).into();
    }
    json
}

/// A time as Go prints one (`2027-01-15 08:00:00.5 +0000 UTC`), as docker's `--pretty` does.
fn go_time(at: Option<SystemTime>) -> String {
    at.map(|at| format!("{} +0000 UTC", render::rfc3339(at).replace('T', " ").trim_end_matches('Z')))
        .unwrap_or_default()
}

/// `inspect --pretty`: docker's fields, Shoal's version and digest, and for a config its
/// payload as text.
pub(crate) fn pretty(kind: Kind, payload: &Payload) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ID:              {}", payload.id);
    let _ = writeln!(out, "Name:            {}", payload.name);
    if !payload.labels.is_empty() {
        let _ = writeln!(out, "Labels:");
        for (key, value) in sorted(&payload.labels) {
            let _ = writeln!(out, " - {key}{}", if value.is_empty() { String::new() } else { format!("={value}") });
        }
    }
    let _ = writeln!(out, "Created at:      {}", go_time(payload.created));
    let _ = writeln!(out, "Updated at:      {}", go_time(payload.updated));
    let _ = writeln!(out, "Data version:    {}", payload.data_version);
    let _ = writeln!(out, "Digest:          sha256:{}", payload.digest);
    if kind == Kind::Config {
        let _ = writeln!(out, "Data:\n{}", String::from_utf8_lossy(&payload.data));
    }
    out
}

/// The placeholders of `secret ls --format` and `config ls --format`, in the order of
/// [`payload_rows`]' cells.
pub(crate) const PAYLOAD_COLUMNS: &[Column] = &[
    column("ID", "ID"),
    column("Name", "NAME"),
    column("Version", "VERSION"),
    column("CreatedAt", "CREATED"),
    column("UpdatedAt", "UPDATED"),
    column("Labels", "LABELS"),
    column("Digest", "DIGEST"),
];

/// By name (then ID), each as its [`PAYLOAD_COLUMNS`] cells.
pub(crate) fn payload_rows(payloads: &[Payload], now: SystemTime) -> Vec<Vec<String>> {
    let mut sorted_payloads: Vec<&Payload> = payloads.iter().collect();
    sorted_payloads.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    sorted_payloads
        .into_iter()
        .map(|p| {
            let labels: Vec<String> = sorted(&p.labels).iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                p.id.clone(),
                p.name.clone(),
                p.data_version.to_string(),
                render::ago(p.created, now),
                render::ago(p.updated, now),
                labels.join(","),
                format!("sha256:{}", p.digest),
            ]
        })
        .collect()
}

/// `secret ls` and `config ls`: docker's columns, with VERSION (the payload's) after the name.
pub(crate) fn payload_table(payloads: &[Payload], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = payload_rows(payloads, now).into_iter().map(|row| row[..5].to_vec()).collect();
    render::table(&["ID", "NAME", "VERSION", "CREATED", "UPDATED"], &rows)
}

/// What `update` prints: the services moved to the new payload, one per line; that none uses
/// it; or, for a labels-only change (`rotated` false), the name.
pub(crate) fn update_report(kind: Kind, name: &str, rotated: bool, unchanged: bool, services: &[String]) -> String {
    let noun = kind.noun();
    match (rotated, unchanged, services) {
        (false, _, _) => format!("{name}\n"),
        (true, true, _) => format!("{noun} {name} already has this payload; nothing changed\n"),
        (true, false, []) => format!("no service uses {noun} {name}\n"),
        (true, false, services) => services.iter().map(|s| format!("{s}\n")).collect(),
    }
}

/// The control API's calls for either noun.
struct Api<'a> {
    control: &'a mut ControlClient<Channel>,
    kind: Kind,
}

impl Api<'_> {
    fn missing(&self) -> anyhow::Error {
        anyhow::anyhow!("the manager answered without the {}", self.kind.noun())
    }

    async fn create(&mut self, annotations: v1::Annotations, data: Vec<u8>) -> Result<Option<Payload>, tonic::Status> {
        let annotations = Some(annotations);
        let created = match self.kind {
            Kind::Secret => {
                let spec = v1::SecretSpec { annotations, data };
                let request = v1::CreateSecretRequest { spec: Some(spec) };
                self.control.create_secret(request).await?.into_inner().secret.map(Payload::from)
            }
            Kind::Config => {
                let spec = v1::ConfigSpec { annotations, data };
                let request = v1::CreateConfigRequest { spec: Some(spec) };
                self.control.create_config(request).await?.into_inner().config.map(Payload::from)
            }
        };
        Ok(created)
    }

    async fn get(&mut self, name: &str) -> Result<Option<Payload>, tonic::Status> {
        Ok(match self.kind {
            Kind::Secret => {
                let request = v1::GetSecretRequest { secret: name.to_owned() };
                self.control.get_secret(request).await?.into_inner().secret.map(Payload::from)
            }
            Kind::Config => {
                let request = v1::GetConfigRequest { config: name.to_owned() };
                self.control.get_config(request).await?.into_inner().config.map(Payload::from)
            }
        })
    }

    async fn list(&mut self) -> Result<Vec<Payload>, tonic::Status> {
        Ok(match self.kind {
            Kind::Secret => {
                let secrets = self.control.list_secrets(v1::ListSecretsRequest::default()).await?.into_inner().secrets;
                secrets.into_iter().map(Payload::from).collect()
            }
            Kind::Config => {
                let configs = self.control.list_configs(v1::ListConfigsRequest::default()).await?.into_inner().configs;
                configs.into_iter().map(Payload::from).collect()
            }
        })
    }

    /// Sends the new labels (`None`: unchanged) and payload (empty: unchanged) for the object
    /// as read; returns it as written and the services moved to its new payload.
    async fn update(
        &mut self,
        read: &Payload,
        annotations: Option<v1::Annotations>,
        data: Vec<u8>,
    ) -> Result<(Option<Payload>, Vec<String>), tonic::Status> {
        Ok(match self.kind {
            Kind::Secret => {
                let spec = v1::SecretSpec { annotations, data };
                let request =
                    v1::UpdateSecretRequest { secret: read.id.clone(), version: read.version, spec: Some(spec) };
                let answer = self.control.update_secret(request).await?.into_inner();
                (answer.secret.map(Payload::from), answer.services)
            }
            Kind::Config => {
                let spec = v1::ConfigSpec { annotations, data };
                let request =
                    v1::UpdateConfigRequest { config: read.id.clone(), version: read.version, spec: Some(spec) };
                let answer = self.control.update_config(request).await?.into_inner();
                (answer.config.map(Payload::from), answer.services)
            }
        })
    }

    async fn remove(&mut self, name: &str) -> Result<(), tonic::Status> {
        match self.kind {
            Kind::Secret => {
                self.control.remove_secret(v1::RemoveSecretRequest { secret: name.to_owned() }).await?;
            }
            Kind::Config => {
                self.control.remove_config(v1::RemoveConfigRequest { config: name.to_owned() }).await?;
            }
        }
        Ok(())
    }
}

/// The labels after `--label-rm` (each must be there) and `--label-add`.
pub(crate) fn edit_labels(
    kind: Kind,
    read: &Payload,
    rm: &[String],
    add: &[(String, String)],
) -> Result<HashMap<String, String>, String> {
    let mut labels = read.labels.clone();
    for key in rm {
        if labels.remove(key).is_none() {
            return Err(format!("--label-rm {key}: {} {} has no label {key}", kind.noun(), read.name));
        }
    }
    labels.extend(add.iter().cloned());
    Ok(labels)
}

async fn update(control: &mut ControlClient<Channel>, kind: Kind, args: &UpdateArgs) -> anyhow::Result<()> {
    let noun = kind.noun();
    let file = args.data_file.as_ref().or(args.file.as_ref());
    if file.is_none() && args.label_add.is_empty() && args.label_rm.is_empty() {
        anyhow::bail!(
            "nothing to change: give a new payload (shoal {noun} update {} FILE, - for standard input) or \
             --label-add/--label-rm",
            args.name
        );
    }
    let data = file.map(|file| read_payload(kind, file)).transpose()?.unwrap_or_default();
    let mut calls = Api { control, kind };
    let read = calls.get(&args.name).await.map_err(api)?.ok_or_else(|| calls.missing())?;
    let annotations = if args.label_add.is_empty() && args.label_rm.is_empty() {
        None
    } else {
        let labels = edit_labels(kind, &read, &args.label_rm, &args.label_add).map_err(anyhow::Error::msg)?;
        Some(v1::Annotations { name: read.name.clone(), labels })
    };
    let rotated = !data.is_empty();
    let (written, services) = match calls.update(&read, annotations, data).await {
        Ok(answer) => answer,
        Err(status) if status.code() == tonic::Code::Aborted => {
            anyhow::bail!("{noun} {} was changed by someone else since it was read; run the command again", read.name)
        }
        Err(status) => return Err(api(status)),
    };
    let written = written.ok_or_else(|| calls.missing())?;
    let unchanged = written.data_version == read.data_version;
    print!("{}", update_report(kind, &read.name, rotated, unchanged, &services));
    Ok(())
}

pub(crate) async fn payload_command(
    control: &mut ControlClient<Channel>,
    kind: Kind,
    command: PayloadCommand,
) -> anyhow::Result<()> {
    match command {
        PayloadCommand::Create { label, name, file } => {
            let data = read_payload(kind, &file)?;
            let annotations = v1::Annotations { name, labels: label.into_iter().collect() };
            let mut calls = Api { control, kind };
            let created = calls.create(annotations, data).await.map_err(api)?.ok_or_else(|| calls.missing())?;
            println!("{}", created.id);
        }
        PayloadCommand::Ls { list, filter } => {
            let output = list.output(PAYLOAD_COLUMNS)?;
            let filters = Filters::parse(&filter, PAYLOAD_KEYS).map_err(anyhow::Error::msg)?;
            let mut payloads = Api { control, kind }.list().await.map_err(api)?;
            payloads.retain(|p| payload_matches(&p.id, &p.name, &p.labels, &filters));
            // A list never shows a payload, not even a config's.
            payloads.iter_mut().for_each(|p| p.data.clear());
            let now = SystemTime::now();
            match (list.quiet, output) {
                (true, _) => payload_rows(&payloads, now).iter().for_each(|row| println!("{}", row[0])),
                (false, Output::Json) => {
                    let json = payloads.iter().map(|p| payload_json(p, false)).collect();
                    println!("{}", serde_json::Value::Array(json));
                }
                (false, Output::Default) => print!("{}", payload_table(&payloads, now)),
                (false, output) => print!("{}", format::render(&output, &payload_rows(&payloads, now))),
            }
        }
        PayloadCommand::Inspect { pretty: as_text, names } => {
            // As docker: what was found is printed, each name not found is an error.
            let mut found = Vec::new();
            let mut failed = 0;
            let mut calls = Api { control, kind };
            for name in &names {
                match calls.get(name).await {
                    Ok(Some(payload)) => found.push(payload),
                    Ok(None) => {
                        eprintln!("Error: the manager answered without {} {name}", kind.noun());
                        failed += 1;
                    }
                    Err(status) => {
                        eprintln!("Error: {}", status.message());
                        failed += 1;
                    }
                }
            }
            if as_text {
                let blocks: Vec<String> = found.iter().map(|p| pretty(kind, p)).collect();
                print!("{}", blocks.join("\n"));
            } else if !found.is_empty() || failed == 0 {
                let json: Vec<serde_json::Value> =
                    found.iter().map(|p| payload_json(p, kind == Kind::Config)).collect();
                println!("{}", serde_json::to_string_pretty(&json)?);
            }
            reported(failed)?;
        }
        PayloadCommand::Rm { names } => {
            let mut failed = 0;
            let mut calls = Api { control, kind };
            for name in names {
                match calls.remove(&name).await {
                    Ok(()) => println!("{name}"),
                    Err(status) => {
                        eprintln!("Error: {}", status.message());
                        failed += 1;
                    }
                }
            }
            reported(failed)?;
        }
        PayloadCommand::Update(args) => update(control, kind, &args).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests;
