//! The OCI test images, built without network from the host's `busybox-static`.
//!
//! Each image is an OCI image-layout tar archive (`oci-layout`, `index.json`, `blobs/sha256/…`)
//! that `ctr images import` and the runtime's archive loader accept. Builds are byte-identical:
//! entries are sorted, timestamps are zero, owners are root, gzip headers carry no time or name.
//!
//! | reference | what it runs |
//! |---|---|
//! | `shoal-test/web:v1`, `:v2` | busybox `httpd` on port 80; the page is `v1 HOSTNAME` / `v2 HOSTNAME` |
//! | `shoal-test/sleeper:latest` | waits until SIGTERM or SIGINT, then exits 0 |
//! | `shoal-test/crasher:latest` | exits `CRASH_CODE` (default 1) after `CRASH_AFTER` seconds (default 1) |
//! | `shoal-test/tools:latest` | idles like the sleeper; has sh, wget, nslookup, ping, ip, nc for `exec` |
//! | `shoal-test/health:latest` | the web server, page `health HOSTNAME`, with a `HEALTHCHECK` (`test ! -e /tmp/unhealthy` every 1 s, timeout 1 s, 2 retries); `GET /cgi-bin/sicken` creates `/tmp/unhealthy` |

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Building a test image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The busybox binary could not be read or listed.
    #[error("cannot use busybox at {path}: {reason} (install Debian's busybox-static)")]
    Busybox {
        /// The busybox path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing an archive failed.
    #[error("cannot write image archive {path}: {source}")]
    Write {
        /// The archive path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One test image definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageDef {
    /// Repository, e.g. `shoal-test/web`.
    pub repository: &'static str,
    /// Tag, e.g. `v1`.
    pub tag: &'static str,
    /// File name of the archive, e.g. `web-v1.tar`.
    pub file: &'static str,
    entrypoint: &'static [&'static str],
    extra: &'static [Extra],
    exposed: Option<&'static str>,
    /// The `HEALTHCHECK` in its config, if any.
    pub healthcheck: Option<ImageHealthcheck>,
}

/// A `HEALTHCHECK` as an image's config carries it (`config.Healthcheck`; Docker writes the
/// durations as integer nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHealthcheck {
    /// `["CMD", args…]`, `["CMD-SHELL", command]` or `["NONE"]`.
    pub test: &'static [&'static str],
    /// Between probes.
    pub interval: Duration,
    /// A probe running longer fails.
    pub timeout: Duration,
    /// Failures do not count for this long after start.
    pub start_period: Duration,
    /// Failures in a row that make the container unhealthy.
    pub retries: u32,
}

/// The file whose presence makes `shoal-test/health` unhealthy (its `/cgi-bin/sicken` creates it).
pub const UNHEALTHY_FILE: &str = "/tmp/unhealthy";

/// An entry of an image's second layer (above the busybox base), by path inside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// An executable shell script (`usr/local/bin/web` gets the web server's body appended).
    Script(&'static str, &'static str),
    /// A symbolic link to a target.
    Symlink(&'static str, &'static str),
    /// A named pipe.
    Fifo(&'static str),
    /// A character device node (major, minor).
    CharDevice(&'static str, u32, u32),
    /// A regular file of this many bytes of `#`.
    Filler(&'static str, usize),
}

impl ImageDef {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// A built archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The definition it was built from.
    pub def: ImageDef,
    /// The archive on disk.
    pub path: PathBuf,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
}

const WEB_V1: &str = "#!/bin/sh\n# Serves 'v1 HOSTNAME' on port 80 until SIGTERM.\nversion=v1\n";
const WEB_V2: &str = "#!/bin/sh\n# Serves 'v2 HOSTNAME' on port 80 until SIGTERM.\nversion=v2\n";
const WEB_BODY: &str = r#"root=/tmp/www
mkdir -p "$root"
printf '%s %s\n' "$version" "$(hostname)" > "$root/index.html"
# /cgi-bin/who answers the hostname and the client address the server sees (the routing
# mesh keeps the client's real address; this is how the tests check it).
mkdir -p "$root/cgi-bin"
cat > "$root/cgi-bin/who" <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n%s %s\n' "$(hostname)" "$REMOTE_ADDR"
CGI
chmod 755 "$root/cgi-bin/who"
httpd -f -p "${PORT:-80}" -h "$root" &
pid=$!
trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
wait "$pid"
"#;
const WEB_HEALTH: &str = r#"#!/bin/sh
# Serves 'health HOSTNAME' on port 80 until SIGTERM. Its HEALTHCHECK fails once /tmp/unhealthy
# exists, which GET /cgi-bin/sicken creates.
version=health
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/sicken <<'CGI'
#!/bin/sh
touch /tmp/unhealthy
printf 'Content-Type: text/plain\r\n\r\nsick %s\n' "$(hostname)"
CGI
chmod 755 /tmp/www/cgi-bin/sicken
"#;
const IDLE: &str = r#"#!/bin/sh
# Runs until SIGTERM or SIGINT, then exits 0. As PID 1 a process ignores signals it has no
# handler for, so the shell traps them and waits on an interruptible child.
trap 'exit 0' TERM INT
while :; do
  sleep 3600 &
  wait $!
done
"#;
const CRASHER: &str = r#"#!/bin/sh
# Exits CRASH_CODE (default 1) after CRASH_AFTER seconds (default 1).
sleep "${CRASH_AFTER:-1}"
exit "${CRASH_CODE:-1}"
"#;

/// Every test image.
pub const ALL: &[ImageDef] = &[
    ImageDef {
        repository: "shoal-test/web",
        tag: "v1",
        file: "web-v1.tar",
        entrypoint: &["/usr/local/bin/web"],
        extra: &[Extra::Script("usr/local/bin/web", WEB_V1)],
        exposed: Some("80/tcp"),
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/web",
        tag: "v2",
        file: "web-v2.tar",
        entrypoint: &["/usr/local/bin/web"],
        extra: &[Extra::Script("usr/local/bin/web", WEB_V2)],
        exposed: Some("80/tcp"),
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/sleeper",
        tag: "latest",
        file: "sleeper.tar",
        entrypoint: &["/usr/local/bin/idle"],
        extra: &[],
        exposed: None,
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/crasher",
        tag: "latest",
        file: "crasher.tar",
        entrypoint: &["/usr/local/bin/crasher"],
        extra: &[Extra::Script("usr/local/bin/crasher", CRASHER)],
        exposed: None,
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/tools",
        tag: "latest",
        file: "tools.tar",
        entrypoint: &["/usr/local/bin/idle"],
        extra: &[],
        exposed: None,
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/health",
        tag: "latest",
        file: "health.tar",
        entrypoint: &["/usr/local/bin/web"],
        extra: &[Extra::Script("usr/local/bin/web", WEB_HEALTH)],
        exposed: Some("80/tcp"),
        healthcheck: Some(ImageHealthcheck {
            test: &["CMD-SHELL", "test ! -e /tmp/unhealthy"],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            start_period: Duration::ZERO,
            retries: 2,
        }),
    },
];

/// A file on the host that [`HOSTILE`]'s escaping links point at; a test writes it to prove
/// that the image's link is not followed out of the image.
pub const HOST_PASSWD: &str = "/tmp/shoaltest-host-passwd";

/// Crafted images whose `/etc/passwd` attacks whoever reads it from the host: a link to
/// `/dev/zero` (with a `/dev/zero` device node in the image too), a FIFO, absolute and relative
/// links to [`HOST_PASSWD`], and a 2 MiB file. Not pushed to the registry; load them as archives.
pub const HOSTILE: &[ImageDef] = &[
    ImageDef {
        repository: "shoal-test/hostile",
        tag: "passwd-dev-zero",
        file: "hostile-dev-zero.tar",
        entrypoint: &["/usr/local/bin/idle"],
        extra: &[Extra::Symlink("etc/passwd", "/dev/zero"), Extra::CharDevice("dev/zero", 1, 5)],
        exposed: None,
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/hostile",
        tag: "passwd-fifo",
        file: "hostile-fifo.tar",
        entrypoint: &["/usr/local/bin/idle"],
        extra: &[Extra::Fifo("etc/passwd")],
        exposed: None,
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/hostile",
        tag: "passwd-host-link",
        file: "hostile-host-link.tar",
        entrypoint: &["/usr/local/bin/idle"],
        extra: &[Extra::Symlink("etc/passwd", HOST_PASSWD)],
        exposed: None,
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/hostile",
        tag: "passwd-dotdot",
        file: "hostile-dotdot.tar",
        entrypoint: &["/usr/local/bin/idle"],
        extra: &[Extra::Symlink("etc/passwd", "../../../../../../../../../../tmp/shoaltest-host-passwd")],
        exposed: None,
        healthcheck: None,
    },
    ImageDef {
        repository: "shoal-test/hostile",
        tag: "passwd-huge",
        file: "hostile-huge.tar",
        entrypoint: &["/usr/local/bin/idle"],
        extra: &[Extra::Filler("etc/passwd", 2 << 20)],
        exposed: None,
        healthcheck: None,
    },
];

/// Builds every image in [`ALL`] from the busybox at `busybox` into `out_dir`.
pub fn build_all(busybox: &Path, out_dir: &Path) -> Result<Vec<BuiltImage>, ImageError> {
    build(ALL, busybox, out_dir)
}

/// Builds the images `defs` (from [`ALL`] or [`HOSTILE`]) into `out_dir`.
pub fn build(defs: &[ImageDef], busybox: &Path, out_dir: &Path) -> Result<Vec<BuiltImage>, ImageError> {
    let base = base_layer(busybox)?;
    std::fs::create_dir_all(out_dir).map_err(|source| ImageError::Write { path: out_dir.to_owned(), source })?;
    defs.iter()
        .map(|def| {
            let path = out_dir.join(def.file);
            let (archive, manifest_digest) = image_archive(def, &base);
            write_atomically(&path, &archive)?;
            Ok(BuiltImage { def: *def, path, manifest_digest })
        })
        .collect()
}

/// A content-addressed blob.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        Self { digest: sha256(&bytes), bytes }
    }
}

/// An uncompressed layer tar and its gzip'd blob.
struct Layer {
    diff_id: String,
    blob: Blob,
}

/// A file-system entry of a layer.
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
    Fifo,
    CharDevice(u32, u32),
}

fn base_layer(busybox: &Path) -> Result<Layer, ImageError> {
    let fail = |reason: String| ImageError::Busybox { path: busybox.to_owned(), reason };
    let binary = std::fs::read(busybox).map_err(|err| fail(err.to_string()))?;
    let listing = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|err| fail(format!("cannot run --list-full: {err}")))?;
    if !listing.status.success() {
        return Err(fail(format!("--list-full exited with {}", listing.status)));
    }
    let mut entries = BTreeMap::new();
    for dir in ["bin", "dev", "etc", "proc", "root", "run", "sbin", "sys", "usr", "usr/bin"] {
        entries.insert(dir.to_owned(), Entry::Dir(0o755));
    }
    for dir in ["usr/local", "usr/local/bin", "usr/sbin", "var", "var/www"] {
        entries.insert(dir.to_owned(), Entry::Dir(0o755));
    }
    entries.insert("tmp".to_owned(), Entry::Dir(0o1777));
    entries.insert("bin/busybox".to_owned(), Entry::File(0o755, binary));
    for applet in String::from_utf8_lossy(&listing.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || !applet.contains('/') {
            continue;
        }
        entries.insert(applet.to_owned(), Entry::Symlink("/bin/busybox".to_owned()));
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    entries.insert("etc/passwd".to_owned(), Entry::File(0o644, passwd.into()));
    entries.insert("etc/group".to_owned(), Entry::File(0o644, "root:x:0:\nnogroup:x:65534:\n".into()));
    entries.insert("usr/local/bin/idle".to_owned(), Entry::File(0o755, IDLE.into()));
    Ok(layer(&entries))
}

fn extra_layer(extra: &[Extra]) -> Layer {
    let mut entries = BTreeMap::new();
    for entry in extra {
        match *entry {
            Extra::Script(path, script) => {
                let content =
                    if path == "usr/local/bin/web" { format!("{script}{WEB_BODY}") } else { script.to_owned() };
                entries.insert(path.to_owned(), Entry::File(0o755, content.into_bytes()));
            }
            Extra::Symlink(path, target) => {
                entries.insert(path.to_owned(), Entry::Symlink(target.to_owned()));
            }
            Extra::Fifo(path) => {
                entries.insert(path.to_owned(), Entry::Fifo);
            }
            Extra::CharDevice(path, major, minor) => {
                entries.insert(path.to_owned(), Entry::CharDevice(major, minor));
            }
            Extra::Filler(path, size) => {
                entries.insert(path.to_owned(), Entry::File(0o644, vec![b'#'; size]));
            }
        }
    }
    layer(&entries)
}

/// Writes `entries` (sorted by path, so parents come first) as a deterministic tar, then gzips it.
fn layer(entries: &BTreeMap<String, Entry>) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let appended = match entry {
            Entry::Dir(mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())
            }
            Entry::File(mode, bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())
            }
            Entry::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, path, target)
            }
            Entry::Fifo => {
                header.set_entry_type(tar::EntryType::Fifo);
                header.set_mode(0o644);
                header.set_size(0);
                tar.append_data(&mut header, path, std::io::empty())
            }
            Entry::CharDevice(major, minor) => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_mode(0o666);
                header.set_size(0);
                // Device numbers fit the ustar fields (at most 7 octal digits).
                header.set_device_major(*major).expect("ustar header has device fields");
                header.set_device_minor(*minor).expect("ustar header has device fields");
                tar.append_data(&mut header, path, std::io::empty())
            }
        };
        // Appending to a Vec<u8> cannot fail on I/O; paths are short, relative and ASCII.
        appended.expect("tar entry into memory");
    }
    let raw = tar.into_inner().expect("tar into memory");
    let diff_id = sha256(&raw);
    Layer { diff_id, blob: Blob::new(gzip(&raw)) }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256:");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Builds the image-layout archive of `def`; returns it and the manifest digest.
fn image_archive(def: &ImageDef, base: &Layer) -> (Vec<u8>, String) {
    let extra = (!def.extra.is_empty()).then(|| extra_layer(def.extra));
    let layers: Vec<&Layer> = std::iter::once(base).chain(extra.as_ref()).collect();
    let mut config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": def.entrypoint,
            "StopSignal": "SIGTERM",
            "WorkingDir": "/",
            "Labels": { "org.opencontainers.image.title": def.reference() },
        },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>() },
    });
    if let Some(port) = def.exposed {
        config["config"]["ExposedPorts"] = serde_json::json!({ port: {} });
    }
    if let Some(check) = def.healthcheck {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        config["config"]["Healthcheck"] = serde_json::json!({
            "Test": check.test,
            "Interval": nanos(check.interval),
            "Timeout": nanos(check.timeout),
            "StartPeriod": nanos(check.start_period),
            "Retries": check.retries,
        });
    }
    let config = Blob::new(config.to_string().into_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.bytes.len(),
        },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": l.blob.digest,
            "size": l.blob.bytes.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(manifest.to_string().into_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": manifest.digest,
            "size": manifest.bytes.len(),
            "annotations": {
                "io.containerd.image.name": def.reference(),
                "org.opencontainers.image.ref.name": def.tag,
            },
        }],
    });

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    files.insert("index.json".to_owned(), index.to_string().into_bytes());
    for blob in layers.iter().map(|l| &l.blob).chain([&config, &manifest]) {
        let hex = blob.digest.trim_start_matches("sha256:");
        files.insert(format!("blobs/sha256/{hex}"), blob.bytes.clone());
    }
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = dir_header();
        tar.append_data(&mut header, dir, std::io::empty()).expect("tar into memory");
    }
    for (path, bytes) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, path, bytes.as_slice()).expect("tar into memory");
    }
    (tar.into_inner().expect("tar into memory"), manifest.digest)
}

fn dir_header() -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mtime(0);
    header.set_mode(0o755);
    header.set_size(0);
    header
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension("tar.tmp");
    let result = std::fs::File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|source| ImageError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileged::{Need, require};

    #[test]
    fn builds_are_byte_identical() {
        if !require("builds_are_byte_identical", &[Need::File(BUSYBOX)]) {
            return;
        }
        let dir = std::env::temp_dir().join(format!("shoaltest-images-{}", std::process::id()));
        let first = build_all(Path::new(BUSYBOX), &dir.join("a")).expect("first build");
        let second = build_all(Path::new(BUSYBOX), &dir.join("b")).expect("second build");
        assert_eq!(first.len(), ALL.len());
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.manifest_digest, b.manifest_digest, "{}", a.def.reference());
            let bytes_a = std::fs::read(&a.path).expect("read first archive");
            let bytes_b = std::fs::read(&b.path).expect("read second archive");
            assert!(bytes_a == bytes_b, "{} differs between builds", a.def.file);
        }
        // Different images have different manifests; v1 and v2 share the busybox layer.
        let digests: std::collections::BTreeSet<_> = first.iter().map(|i| &i.manifest_digest).collect();
        assert_eq!(digests.len(), ALL.len());
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
    }

    #[test]
    fn references_are_unique_and_files_distinct() {
        let every: Vec<&ImageDef> = ALL.iter().chain(HOSTILE).collect();
        let refs: std::collections::BTreeSet<_> = every.iter().map(|d| d.reference()).collect();
        let files: std::collections::BTreeSet<_> = every.iter().map(|d| d.file).collect();
        assert_eq!(refs.len(), every.len());
        assert_eq!(files.len(), every.len());
    }
}
