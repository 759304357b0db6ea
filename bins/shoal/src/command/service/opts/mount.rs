//! `--mount` as docker's `opts.MountOpt` reads it: comma-separated `KEY=VALUE` fields, read as
//! one CSV record (a field in double quotes may hold commas), to a `Mount` with its bind or
//! volume options.

use shoal_api::v1::{self, mount};

use crate::command::parse_bytes;

/// Splits `text` into fields as Go's `encoding/csv` reads one record, which is how docker
/// reads `--mount`, `--secret` and `--config`: fields are separated by commas; a field that
/// starts with `"` is quoted, may hold commas, and ends at the `"` before the next comma (`""`
/// inside it stands for one `"`); a `"` anywhere else is an error.
pub(crate) fn csv_fields(text: &str) -> Result<Vec<String>, String> {
    const HINT: &str = "quote whole fields, e.g. \"volume-opt=o=addr=192.0.2.10,nfsvers=4\"";
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') if matches!(chars.peek(), None | Some(',')) => break,
                    Some('"') => {
                        return Err(format!("the quoted field \"{field}\" goes on after its closing quote; {HINT}"));
                    }
                    Some(c) => field.push(c),
                    None => return Err(format!("the quote before {field:?} is not closed")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if c == '"' {
                    return Err(format!("a quote inside the field that starts {field:?}; {HINT}"));
                }
                field.push(c);
            }
        }
        fields.push(field);
        // What ended the field is a comma or the end.
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// A boolean as Go's `strconv.ParseBool` takes it: 1, t, true, 0, f, false (any case).
pub(crate) fn parse_bool_word(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

fn parse_propagation(value: &str) -> Result<mount::bind_options::Propagation, String> {
    use mount::bind_options::Propagation;
    match value.trim().to_ascii_lowercase().as_str() {
        "rprivate" => Ok(Propagation::Rprivate),
        "private" => Ok(Propagation::Private),
        "rshared" => Ok(Propagation::Rshared),
        "shared" => Ok(Propagation::Shared),
        "rslave" => Ok(Propagation::Rslave),
        "slave" => Ok(Propagation::Slave),
        _ => Err(format!(
            "bind-propagation {value:?} is not one of rprivate (the default), private, rshared, shared, rslave, slave"
        )),
    }
}

const FIELDS: &str = "type, source, target, readonly, bind-propagation, volume-nocopy, volume-driver, volume-opt, \
                      volume-label, tmpfs-size, tmpfs-mode";

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]` and docker's options:
/// `bind-propagation=rshared` (bind), `volume-nocopy`, `volume-driver=local`,
/// `volume-opt=KEY=VALUE` and `volume-label=KEY=VALUE` (volume, repeatable),
/// `tmpfs-size=64M` and `tmpfs-mode=1770` (tmpfs); `src`, `dst`, `destination` and `ro` too;
/// the type defaults to volume. Fields of another type's mounts are errors.
pub(crate) fn parse_mount(text: &str) -> Result<v1::Mount, String> {
    let fail =
        |why: String| format!("invalid mount {text:?}: {why}; e.g. type=bind,source=/srv/data,target=/data,readonly");
    let mut mount = v1::Mount { r#type: mount::Type::Volume as i32, ..Default::default() };
    // The first option field of each kind, to name it if the type does not take it.
    let (mut bind_field, mut volume_field, mut tmpfs_field) = (None, None, None);
    for field in csv_fields(text).map_err(fail)?.iter().filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim().to_ascii_lowercase(), Some(value.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let first = |slot: &mut Option<String>| {
            slot.get_or_insert_with(|| key.clone());
        };
        match (key.as_str(), value) {
            ("type", Some(kind)) => {
                mount.r#type = match kind.to_ascii_lowercase().as_str() {
                    "bind" => mount::Type::Bind,
                    "volume" => mount::Type::Volume,
                    "tmpfs" => mount::Type::Tmpfs,
                    _ => return Err(fail(format!("type {kind:?} is not bind, volume or tmpfs"))),
                } as i32
            }
            ("source" | "src", Some(source)) => mount.source = source.to_owned(),
            ("target" | "dst" | "destination", Some(target)) => mount.target = target.to_owned(),
            ("readonly" | "ro", None) => mount.read_only = true,
            ("readonly" | "ro", Some(value)) => {
                mount.read_only =
                    parse_bool_word(value).ok_or_else(|| fail(format!("readonly={value} is not true or false")))?
            }
            ("bind-propagation", Some(value)) => {
                first(&mut bind_field);
                let propagation = parse_propagation(value).map_err(fail)?;
                mount.bind_options = Some(mount::BindOptions { propagation: propagation as i32 });
            }
            ("volume-nocopy", value) => {
                first(&mut volume_field);
                let no_copy = match value {
                    None => true,
                    Some(value) => parse_bool_word(value)
                        .ok_or_else(|| fail(format!("volume-nocopy={value} is not true or false")))?,
                };
                mount.volume_options.get_or_insert_with(Default::default).no_copy = no_copy;
            }
            ("volume-driver", Some(driver)) => {
                first(&mut volume_field);
                if !driver.is_empty() && driver != "local" {
                    return Err(fail(format!(
                        "volume-driver {driver:?}: the one volume driver is local (for NFS: volume-opt=type=nfs)"
                    )));
                }
                mount.volume_options.get_or_insert_with(Default::default).driver = driver.to_owned();
            }
            ("volume-opt", Some(option)) => {
                first(&mut volume_field);
                let Some((name, value)) = option.split_once('=').filter(|(name, _)| !name.trim().is_empty()) else {
                    return Err(fail(format!(
                        "volume-opt {option:?} is not KEY=VALUE (keys: type, o, device; e.g. volume-opt=type=nfs)"
                    )));
                };
                let options = &mut mount.volume_options.get_or_insert_with(Default::default).driver_options;
                options.insert(name.trim().to_owned(), value.to_owned());
            }
            ("volume-label", Some(label)) => {
                first(&mut volume_field);
                let (name, value) = label.split_once('=').unwrap_or((label, ""));
                if name.trim().is_empty() {
                    return Err(fail(format!("volume-label {label:?} has no key; expected KEY=VALUE or KEY")));
                }
                let labels = &mut mount.volume_options.get_or_insert_with(Default::default).labels;
                labels.insert(name.trim().to_owned(), value.to_owned());
            }
            ("tmpfs-size", Some(size)) => {
                first(&mut tmpfs_field);
                mount.tmpfs_size_bytes = parse_bytes(size).map_err(fail)?;
            }
            ("tmpfs-mode", Some(mode)) => {
                first(&mut tmpfs_field);
                mount.tmpfs_mode = u32::from_str_radix(mode, 8)
                    .map_err(|_| fail(format!("tmpfs-mode {mode:?} is not an octal mode such as 1770")))?;
            }
            (
                "type" | "source" | "src" | "target" | "dst" | "destination" | "bind-propagation" | "volume-driver"
                | "volume-opt" | "volume-label" | "tmpfs-size" | "tmpfs-mode",
                None,
            ) => {
                return Err(fail(format!("{key} needs a value: {key}=VALUE")));
            }
            _ => return Err(fail(format!("unknown field {key:?} (fields: {FIELDS})"))),
        }
    }
    if mount.target.is_empty() {
        return Err(fail("the target is missing".to_owned()));
    }
    let kind = mount::Type::try_from(mount.r#type).unwrap_or(mount::Type::Volume);
    let options =
        [(bind_field, mount::Type::Bind), (volume_field, mount::Type::Volume), (tmpfs_field, mount::Type::Tmpfs)];
    for (field, wanted) in options {
        if let Some(field) = field.filter(|_| wanted != kind) {
            let (wanted, kind) = (type_name(wanted), type_name(kind));
            return Err(fail(format!("{field} is for type={wanted} mounts, not type={kind}")));
        }
    }
    Ok(mount)
}

/// The name `--mount type=` takes (and `service inspect` shows).
pub(crate) fn type_name(kind: mount::Type) -> &'static str {
    match kind {
        mount::Type::Bind => "bind",
        mount::Type::Volume => "volume",
        mount::Type::Tmpfs => "tmpfs",
    }
}

/// A propagation as `--mount bind-propagation=` takes it.
pub(crate) fn propagation_name(propagation: i32) -> &'static str {
    use mount::bind_options::Propagation;
    match Propagation::try_from(propagation) {
        Ok(Propagation::Private) => "private",
        Ok(Propagation::Rshared) => "rshared",
        Ok(Propagation::Shared) => "shared",
        Ok(Propagation::Rslave) => "rslave",
        Ok(Propagation::Slave) => "slave",
        _ => "rprivate",
    }
}
