//! `--secret` and `--config` (docker's `opts.SecretOpt` and `opts.ConfigOpt`): which stored
//! secret or config a service's tasks read, and as which file. The CLI sends the name; the
//! manager resolves it to the object's ID and current payload version when it stores the spec.

use shoal_api::v1;

use super::mount::csv_fields;

/// Secrets and configs differ here only in words and in the default target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn flag(self) -> &'static str {
        match self {
            Self::Secret => "--secret",
            Self::Config => "--config",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Self::Secret => "e.g. --secret db_password, or --secret source=db_password,target=db,uid=1000,mode=0400",
            Self::Config => "e.g. --config nginx_conf, or --config source=nginx_conf,target=/etc/nginx/nginx.conf",
        }
    }

    /// Where the file goes without `target=`: under /run/secrets/ for a secret (the runtime
    /// puts a relative name there), at /NAME for a config.
    fn default_target(self, name: &str) -> String {
        match self {
            Self::Secret => name.to_owned(),
            Self::Config => format!("/{name}"),
        }
    }
}

/// The source name and file target of a `--secret` or `--config` value: `NAME`, or
/// `source=NAME,target=T,uid=U,gid=G,mode=0440` (`src` too; the mode is octal; uid and gid
/// default to 0, the mode to 0444).
fn parse_reference(text: &str, kind: Kind) -> Result<(String, v1::FileTarget), String> {
    let fail = |why: String| format!("invalid {} {text:?}: {why}; {}", kind.flag(), kind.example());
    let fields = csv_fields(text).map_err(fail)?;
    let mut file = v1::FileTarget { mode: 0o444, ..Default::default() };
    let mut source = String::new();
    if let [name] = fields.as_slice()
        && !name.contains('=')
    {
        source = name.trim().to_owned();
    } else {
        for field in fields.iter().filter(|f| !f.is_empty()) {
            let Some((key, value)) = field.split_once('=') else {
                return Err(fail(format!("field {field:?} is not KEY=VALUE")));
            };
            let value = value.trim();
            let number =
                |what: &str| value.parse::<u32>().map_err(|_| fail(format!("{what} {value:?} is not a number ≥ 0")));
            match key.trim().to_ascii_lowercase().as_str() {
                "source" | "src" => source = value.to_owned(),
                "target" => file.name = value.to_owned(),
                "uid" => file.uid = number("uid")?,
                "gid" => file.gid = number("gid")?,
                "mode" => {
                    let digits = value.strip_prefix("0o").unwrap_or(value);
                    file.mode = u32::from_str_radix(digits, 8)
                        .ok()
                        .filter(|mode| *mode <= 0o7777)
                        .ok_or_else(|| fail(format!("mode {value:?} is not an octal mode such as 0400")))?;
                }
                other => return Err(fail(format!("unknown field {other:?} (fields: source, target, uid, gid, mode)"))),
            }
        }
    }
    if source.is_empty() {
        return Err(fail("the source is missing: name the stored one with source=NAME".to_owned()));
    }
    if file.name.is_empty() {
        file.name = kind.default_target(&source);
    }
    Ok((source, file))
}

/// `--secret`: the secret's name goes in `secret_name`, the ID stays empty (the manager
/// resolves it).
pub(crate) fn parse_secret(text: &str) -> Result<v1::SecretReference, String> {
    let (secret_name, file) = parse_reference(text, Kind::Secret)?;
    Ok(v1::SecretReference { secret_id: String::new(), secret_name, file: Some(file), data_version: 0 })
}

/// `--config`, as `--secret`; the target defaults to `/NAME`.
pub(crate) fn parse_config(text: &str) -> Result<v1::ConfigReference, String> {
    let (config_name, file) = parse_reference(text, Kind::Config)?;
    Ok(v1::ConfigReference { config_id: String::new(), config_name, file: Some(file), data_version: 0 })
}

/// What the edits need of a secret or config reference.
pub(crate) trait FileRef: Clone {
    /// Its name and ID (either may be empty in a spec the CLI has not sent yet).
    fn source(&self) -> (&str, &str);
    fn target(&self) -> &str;
}

impl FileRef for v1::SecretReference {
    fn source(&self) -> (&str, &str) {
        (&self.secret_name, &self.secret_id)
    }

    fn target(&self) -> &str {
        self.file.as_ref().map_or(self.secret_name.as_str(), |f| f.name.as_str())
    }
}

impl FileRef for v1::ConfigReference {
    fn source(&self) -> (&str, &str) {
        (&self.config_name, &self.config_id)
    }

    fn target(&self) -> &str {
        self.file.as_ref().map_or(self.config_name.as_str(), |f| f.name.as_str())
    }
}

/// Refuses two references at the same target (`what`: secret or config).
pub(crate) fn check_targets<R: FileRef>(refs: &[R], what: &str) -> Result<(), String> {
    for (i, r) in refs.iter().enumerate() {
        if let Some(other) = refs[..i].iter().find(|o| o.target() == r.target()) {
            return Err(format!(
                "{what}s {} and {} both have the target {}; give one of them another target=",
                other.source().0,
                r.source().0,
                r.target()
            ));
        }
    }
    Ok(())
}

/// `--secret-rm`/`--config-rm` (by name, ID or target; one that matches nothing is an error),
/// then `--secret-add`/`--config-add` (replacing a reference at the same target, as
/// `--mount-add` replaces a mount).
pub(crate) fn edit_refs<R: FileRef>(list: &mut Vec<R>, rm: &[String], add: &[R], what: &str) -> Result<(), String> {
    check_targets(add, what)?;
    for name in rm {
        let before = list.len();
        list.retain(|r| {
            let (source, id) = r.source();
            source != name && id != name && r.target() != name
        });
        if list.len() == before {
            return Err(format!("--{what}-rm {name}: the service has no {what} {name} (by name or target)"));
        }
    }
    for reference in add {
        match list.iter_mut().find(|r| r.target() == reference.target()) {
            Some(existing) => existing.clone_from(reference),
            None => list.push(reference.clone()),
        }
    }
    check_targets(list, what)
}
