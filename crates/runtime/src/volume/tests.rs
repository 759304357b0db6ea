//! The local driver's pure parts as tables (names, options, the split of `o`, NFS addresses),
//! and plain-directory volumes in a temporary root. Mounts are in `tests/volume.rs`.

use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A temporary volume root, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("shoaltest-volumes-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn names_follow_docker() {
    for good in ["db", "db-data", "a.b_c-d", "0x", "Web1"] {
        assert!(check_name(good).is_ok(), "{good:?}");
    }
    for bad in ["", "a", "-db", ".db", "_db", "db/x", "../etc", "db data", "dé"] {
        let err = check_name(bad).expect_err(bad).to_string();
        assert!(err.starts_with(&format!("invalid volume name {bad:?}: use at least two characters")), "{err}");
    }
}

#[test]
fn options_are_the_local_drivers() {
    /// (options, expected error)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case<'_>] = &[
        (&[], None),
        (&[("type", "tmpfs"), ("device", "tmpfs")], None),
        (&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m")], None),
        (&[("type", "nfs"), ("device", ":/export"), ("o", "addr=192.0.2.10")], None),
        (
            &[("type", "tmpfs"), ("device", "tmpfs"), ("size", "64m")],
            Some("volume db: unknown option \"size\": the local driver takes type, o and device"),
        ),
        (
            &[("type", "tmpfs")],
            Some("volume db: option device is needed with type (for example type=tmpfs,device=tmpfs,o=size=64m)"),
        ),
        (
            &[("device", "/dev/sdb1")],
            Some("volume db: option type is needed with device (for example type=tmpfs,device=tmpfs,o=size=64m)"),
        ),
        (
            &[("o", "size=1m")],
            Some("volume db: option type is needed with o (for example type=tmpfs,device=tmpfs,o=size=64m)"),
        ),
    ];
    for (options, expected) in cases {
        let got = check_options("db", &map(options)).err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), *expected, "{options:?}");
    }
}

#[test]
fn o_splits_into_flags_and_data_as_docker_does() {
    use MsFlags as F;
    // (o, flags, data)
    let cases: &[(&str, MsFlags, &str)] = &[
        ("", F::empty(), ""),
        ("size=64m", F::empty(), "size=64m"),
        ("size=64m,uid=1000,mode=0750", F::empty(), "size=64m,uid=1000,mode=0750"),
        ("addr=192.0.2.10,nfsvers=4", F::empty(), "addr=192.0.2.10,nfsvers=4"),
        ("ro,nosuid,nodev,noexec,size=1m", F::MS_RDONLY | F::MS_NOSUID | F::MS_NODEV | F::MS_NOEXEC, "size=1m"),
        ("ro,rw", F::empty(), ""),
        ("nosuid,suid,nodev,dev,noexec,exec", F::empty(), ""),
        ("sync,dirsync,mand", F::MS_SYNCHRONOUS | F::MS_DIRSYNC | F::MS_MANDLOCK, ""),
        ("sync,async,mand,nomand", F::empty(), ""),
        (
            "noatime,nodiratime,relatime,strictatime",
            F::MS_NOATIME | F::MS_NODIRATIME | F::MS_RELATIME | F::MS_STRICTATIME,
            "",
        ),
        ("noatime,atime,relatime,norelatime,strictatime,nostrictatime", F::empty(), ""),
        ("bind", F::MS_BIND, ""),
        ("rbind,ro", F::MS_BIND | F::MS_REC | F::MS_RDONLY, ""),
        ("remount,ro", F::MS_REMOUNT | F::MS_RDONLY, ""),
        ("rshared", F::MS_SHARED | F::MS_REC, ""),
        ("private,slave,unbindable", F::MS_PRIVATE | F::MS_SLAVE | F::MS_UNBINDABLE, ""),
        ("defaults,size=1m", F::empty(), "size=1m"),
        ("vers=4.1,soft,ro,timeo=30", F::MS_RDONLY, "vers=4.1,soft,timeo=30"),
    ];
    for (o, flags, data) in cases {
        assert_eq!(parse_options(o), (*flags, (*data).to_owned()), "{o:?}");
    }
}

#[test]
fn nfs_host_names_become_addresses() {
    let resolve = |host: &str| match host {
        "nas.example" => Ok("192.0.2.10".parse().expect("address")),
        _ => Err("no such host".to_owned()),
    };
    let request = |options: &[(&str, &str)]| mount_request("db", &map(options), resolve);
    fn nfs(o: &str) -> [(&str, &str); 3] {
        [("type", "nfs"), ("device", ":/export"), ("o", o)]
    }
    // (o, data passed to the kernel)
    let cases = [
        ("addr=nas.example,nfsvers=4", "addr=192.0.2.10,nfsvers=4"),
        ("addr=192.0.2.11,nfsvers=4", "addr=192.0.2.11,nfsvers=4"),
        ("nfsvers=4,addr=2001:db8::1", "nfsvers=4,addr=2001:db8::1"),
        ("ro,nfsvers=4", "nfsvers=4"),
    ];
    for (o, data) in cases {
        let got = request(&nfs(o)).expect("request").expect("a mount");
        assert_eq!(got.data, data, "{o}");
        assert_eq!((got.fstype.as_str(), got.device.as_str()), ("nfs", ":/export"));
    }
    let nfs4 = request(&[("type", "nfs4"), ("device", ":/"), ("o", "addr=nas.example")]).expect("nfs4");
    assert_eq!(nfs4.map(|r| r.data), Some("addr=192.0.2.10".to_owned()));
    // Only NFS resolves: other filesystems keep their data as given.
    let cifs =
        request(&[("type", "cifs"), ("device", "//nas.example/share"), ("o", "addr=nas.example")]).expect("cifs");
    assert_eq!(cifs.map(|r| r.data), Some("addr=nas.example".to_owned()));
    let err = request(&nfs("addr=gone.example")).expect_err("unresolvable");
    assert_eq!(err.to_string(), "volume db: cannot resolve the NFS server address \"gone.example\": no such host");
    assert_eq!(request(&[]).expect("plain").map(|r| r.fstype), None, "no type: a plain directory");
    // The real resolver knows localhost.
    assert_eq!(resolve_host("localhost"), Ok("127.0.0.1".parse().expect("address")));
}

#[test]
fn mount_errors_say_what_the_kernel_meant() {
    assert_eq!(
        explain_mount_error(Errno::ENODEV, "nfs"),
        "ENODEV: No such device: the kernel has no nfs filesystem (load its module, or use a kernel that has it)"
    );
    assert_eq!(explain_mount_error(Errno::EIO, "nfs"), "EIO: I/O error");
}

#[test]
fn plain_volumes_are_created_listed_kept_and_removed() {
    let root = Root::new("plain");
    let volumes = LocalVolumes::new(root.0.clone());
    assert_eq!(volumes.list().expect("list of nothing"), []);
    let labels = map(&[("com.example.team", "db")]);
    let before = SystemTime::now();
    let db = volumes.ensure("db-data", &BTreeMap::new(), &labels).expect("create");
    assert_eq!(db.name, "db-data");
    assert_eq!(db.mountpoint, root.0.join("db-data/_data"));
    assert!(db.mountpoint.is_dir());
    assert_eq!(db.labels, labels);
    assert!(db.created_at >= before - Duration::from_secs(1), "{:?}", db.created_at);
    let metadata = root.0.join("db-data/volume.json");
    assert!(metadata.is_file(), "metadata beside _data, not inside it");
    assert_eq!(std::fs::read_dir(&db.mountpoint).expect("read _data").count(), 0);

    std::fs::write(db.mountpoint.join("row"), "1\n").expect("write into the volume");
    let again = volumes.ensure("db-data", &BTreeMap::new(), &map(&[("other", "label")])).expect("ensure again");
    assert_eq!(again, db, "an existing volume is returned as it is");
    assert_eq!(std::fs::read_to_string(db.mountpoint.join("row")).ok().as_deref(), Some("1\n"));

    let cache = volumes.ensure("cache", &BTreeMap::new(), &BTreeMap::new()).expect("create another");
    std::fs::create_dir_all(root.0.join("not a volume")).expect("a stray directory");
    let names: Vec<String> = volumes.list().expect("list").into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["cache", "db-data"]);
    assert_eq!(volumes.get("cache").expect("get"), cache);

    volumes.remove("db-data").expect("remove");
    assert!(!root.0.join("db-data").exists());
    let err = volumes.remove("db-data").expect_err("removed already");
    assert!(matches!(err, VolumeError::NotFound { .. }), "{err}");
    assert_eq!(err.to_string(), "no such volume: db-data");
    assert_eq!(volumes.get("db-data").expect_err("gone").to_string(), "no such volume: db-data");
    assert!(matches!(volumes.remove("../etc"), Err(VolumeError::InvalidName { .. })));
}

#[test]
fn options_given_again_must_match() {
    let root = Root::new("differ");
    let volumes = LocalVolumes::new(root.0.clone());
    // Written as an earlier ensure would have, without mounting (that needs root): the
    // comparison happens before any mount.
    let dir = root.0.join("scratch");
    std::fs::create_dir_all(dir.join(DATA)).expect("mkdir");
    let stored = map(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]);
    let metadata = Metadata { options: stored.clone(), labels: BTreeMap::new(), created_at_unix_nanos: 1_000_000_000 };
    std::fs::write(dir.join(METADATA), serde_json::to_vec(&metadata).expect("json")).expect("write");
    let got = volumes.get("scratch").expect("get");
    assert_eq!((got.options, got.created_at), (stored, UNIX_EPOCH + Duration::from_secs(1)));

    let other = map(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=2m")]);
    let err = volumes.ensure("scratch", &other, &BTreeMap::new()).expect_err("other options");
    assert_eq!(
        err.to_string(),
        "volume scratch exists with other options (o: \"size=1m\" now, \"size=2m\" given): remove it first, \
         or give no options to use it"
    );
    let fewer = map(&[("type", "tmpfs"), ("device", "tmpfs")]);
    let err = volumes.ensure("scratch", &fewer, &BTreeMap::new()).expect_err("fewer options");
    assert!(err.to_string().contains("(o: \"size=1m\" now, unset given)"), "{err}");

    std::fs::write(dir.join(METADATA), "{not json").expect("corrupt");
    let err = volumes.get("scratch").expect_err("corrupt metadata");
    assert!(
        err.to_string()
            .starts_with(&format!("volume scratch: {} is not valid volume metadata", dir.join(METADATA).display())),
        "{err}"
    );
}

#[test]
fn a_directory_without_metadata_is_a_plain_volume() {
    let root = Root::new("adopt");
    std::fs::create_dir_all(root.0.join("old/_data")).expect("mkdir");
    let volumes = LocalVolumes::new(root.0.clone());
    let old = volumes.get("old").expect("adopted");
    assert!(old.options.is_empty() && old.labels.is_empty());
    assert!(old.created_at > UNIX_EPOCH);
}
