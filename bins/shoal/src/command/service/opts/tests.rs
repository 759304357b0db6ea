//! The shared flags' value parsers as tables.

use super::mount::csv_fields;
use super::refs::{parse_config, parse_secret};
use super::*;

#[test]
fn security_options() {
    assert_eq!(parse_security_opt("seccomp=unconfined"), Ok(SecurityOpt::SeccompUnconfined));
    assert_eq!(parse_security_opt("seccomp:unconfined"), Ok(SecurityOpt::SeccompUnconfined));
    assert_eq!(parse_security_opt("seccomp=default"), Ok(SecurityOpt::SeccompDefault));
    let err = parse_security_opt("seccomp=/etc/profile.json").expect_err("custom profile");
    assert!(err.contains("custom profiles are not supported"), "{err}");
    let err = parse_security_opt("apparmor=unconfined").expect_err("other option");
    assert_eq!(err, "unknown security option \"apparmor=unconfined\": the one supported is seccomp=unconfined");
}

#[test]
fn words_split_as_a_shell_would() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("  ", &[]),
        ("nginx -g 'daemon off;'", &["nginx", "-g", "daemon off;"]),
        (r#"sh -c "echo \"hi\" $HOME""#, &["sh", "-c", r#"echo "hi" $HOME"#]),
        (r"a\ b c", &["a b", "c"]),
        ("''", &[""]),
        ("x'y'\"z\"", &["xyz"]),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_words(text), Ok(Words(expected.iter().map(|w| (*w).to_owned()).collect())), "{text}");
    }
    assert_eq!(parse_words("'open"), Err("\"'open\": a ' is not closed".to_owned()));
    assert_eq!(parse_words("\"open"), Err("\"\\\"open\": a \" is not closed".to_owned()));
    assert_eq!(parse_words("end\\"), Err("\"end\\\\\": ends with a lone \\".to_owned()));
}

#[test]
fn numbers_ratios_and_cpus() {
    assert_eq!(parse_parallelism("0"), Ok(0));
    assert_eq!(parse_parallelism("4"), Ok(4));
    assert_eq!(
        parse_parallelism("-1"),
        Err("\"-1\" is not a whole number ≥ 0: give how many tasks to update at once (0: all)".to_owned())
    );
    assert_eq!(parse_ratio("0"), Ok(0.0));
    assert_eq!(parse_ratio("0.25"), Ok(0.25));
    assert_eq!(parse_ratio("1"), Ok(1.0));
    for bad in ["1.5", "-0.1", "NaN", "half"] {
        assert!(parse_ratio(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
    assert!(parse_cpus("-1").is_err());
    assert_eq!(parse_retries("3"), Ok(3));
    assert!(parse_retries("-3").is_err());
}

#[test]
fn env_labels_and_mounts() {
    assert_eq!(parse_env("A=1"), Ok("A=1".to_owned()));
    assert_eq!(parse_env("EMPTY="), Ok("EMPTY=".to_owned()));
    assert!(parse_env("A").is_err());
    assert!(parse_env("=1").is_err());
    assert_eq!(parse_label("tier=front"), Ok(("tier".to_owned(), "front".to_owned())));
    assert_eq!(parse_label("flag"), Ok(("flag".to_owned(), String::new())));
    assert!(parse_label("=x").is_err());

    let bind = v1::mount::Type::Bind as i32;
    let volume = v1::mount::Type::Volume as i32;
    let tmpfs = v1::mount::Type::Tmpfs as i32;
    let cases: &[(&str, v1::Mount)] = &[
        (
            "type=bind,source=/srv,target=/data,readonly",
            v1::Mount {
                r#type: bind,
                source: "/srv".into(),
                target: "/data".into(),
                read_only: true,
                ..Default::default()
            },
        ),
        (
            "src=cache,dst=/cache",
            v1::Mount { r#type: volume, source: "cache".into(), target: "/cache".into(), ..Default::default() },
        ),
        (
            "type=tmpfs,destination=/run,tmpfs-size=64M,tmpfs-mode=1770,ro=false",
            v1::Mount {
                r#type: tmpfs,
                target: "/run".into(),
                tmpfs_size_bytes: 64 << 20,
                tmpfs_mode: 0o1770,
                ..Default::default()
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_mount(text).as_ref(), Ok(expected), "{text}");
    }
    let example = "; e.g. type=bind,source=/srv/data,target=/data,readonly";
    let fields = "type, source, target, readonly, bind-propagation, volume-nocopy, volume-driver, volume-opt, \
                  volume-label, tmpfs-size, tmpfs-mode";
    let bad = [
        ("source=/a", "the target is missing".to_owned()),
        ("type=nfs,target=/a", "type \"nfs\" is not bind, volume or tmpfs".to_owned()),
        ("target=/a,size=1", format!("unknown field \"size\" (fields: {fields})")),
        (
            "type=bind,source=/a,target=/b,tmpfs-size=1M",
            "tmpfs-size is for type=tmpfs mounts, not type=bind".to_owned(),
        ),
        ("target=/a,readonly=maybe", "readonly=maybe is not true or false".to_owned()),
    ];
    for (text, why) in bad {
        assert_eq!(parse_mount(text), Err(format!("invalid mount {text:?}: {why}{example}")), "{text}");
    }
}

#[test]
fn csv_fields_as_go_reads_them() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[""]),
        ("a", &["a"]),
        ("a,b,,c", &["a", "b", "", "c"]),
        ("a,", &["a", ""]),
        (
            r#""volume-opt=o=addr=192.0.2.10,nfsvers=4",target=/x"#,
            &["volume-opt=o=addr=192.0.2.10,nfsvers=4", "target=/x"],
        ),
        (r#"a,"b""c",d"#, &["a", r#"b"c"#, "d"]),
        (r#""""#, &[""]),
        (r#"x,"""#, &["x", ""]),
        ("a b, c", &["a b", " c"]),
    ];
    for (text, expected) in cases {
        assert_eq!(csv_fields(text), Ok(expected.iter().map(|f| (*f).to_owned()).collect()), "{text}");
    }
    let hint = "quote whole fields, e.g. \"volume-opt=o=addr=192.0.2.10,nfsvers=4\"";
    let bad = [
        (r#""open"#, "the quote before \"open\" is not closed".to_owned()),
        (r#""a"b,c"#, format!("the quoted field \"a\" goes on after its closing quote; {hint}")),
        (r#"volume-opt="o=a,b""#, format!("a quote inside the field that starts \"volume-opt=\"; {hint}")),
    ];
    for (text, expected) in bad {
        assert_eq!(csv_fields(text), Err(expected), "{text}");
    }
}

#[test]
fn mount_options_of_each_type() {
    use v1::mount::bind_options::Propagation;
    let bind = |propagation: Propagation| v1::Mount {
        r#type: v1::mount::Type::Bind as i32,
        source: "/srv".into(),
        target: "/data".into(),
        bind_options: Some(v1::mount::BindOptions { propagation: propagation as i32 }),
        ..Default::default()
    };
    let volume = |options: v1::mount::VolumeOptions| v1::Mount {
        r#type: v1::mount::Type::Volume as i32,
        source: "data".into(),
        target: "/data".into(),
        volume_options: Some(options),
        ..Default::default()
    };
    let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let cases: Vec<(&str, v1::Mount)> = vec![
        ("type=bind,src=/srv,dst=/data,bind-propagation=rshared", bind(Propagation::Rshared)),
        ("type=bind,src=/srv,dst=/data,bind-propagation=SLAVE", bind(Propagation::Slave)),
        ("type=bind,src=/srv,dst=/data,bind-propagation=rprivate", bind(Propagation::Rprivate)),
        ("src=data,dst=/data,volume-nocopy", volume(v1::mount::VolumeOptions { no_copy: true, ..Default::default() })),
        ("src=data,dst=/data,volume-nocopy=false", volume(v1::mount::VolumeOptions::default())),
        (
            "src=data,dst=/data,volume-nocopy=1",
            volume(v1::mount::VolumeOptions { no_copy: true, ..Default::default() }),
        ),
        (
            "src=data,dst=/data,volume-driver=local,volume-label=team=web,volume-label=cache",
            volume(v1::mount::VolumeOptions {
                driver: "local".into(),
                labels: map(&[("team", "web"), ("cache", "")]),
                ..Default::default()
            }),
        ),
        (
            r#"type=volume,src=data,dst=/data,volume-opt=type=nfs,"volume-opt=o=addr=192.0.2.10,nfsvers=4",volume-opt=device=:/export"#,
            volume(v1::mount::VolumeOptions {
                driver_options: map(&[("type", "nfs"), ("o", "addr=192.0.2.10,nfsvers=4"), ("device", ":/export")]),
                ..Default::default()
            }),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_mount(text), Ok(expected), "{text}");
    }
    let example = "; e.g. type=bind,source=/srv/data,target=/data,readonly";
    let bad = [
        (
            "type=volume,src=v,dst=/d,bind-propagation=shared",
            "bind-propagation is for type=bind mounts, not type=volume",
        ),
        ("type=bind,src=/s,dst=/d,volume-nocopy", "volume-nocopy is for type=volume mounts, not type=bind"),
        ("type=tmpfs,dst=/d,volume-opt=type=nfs", "volume-opt is for type=volume mounts, not type=tmpfs"),
        // The type may come last, as docker's.
        ("volume-label=a=b,dst=/d,type=bind,src=/s", "volume-label is for type=volume mounts, not type=bind"),
        (
            "type=bind,src=/s,dst=/d,bind-propagation=recursive",
            "bind-propagation \"recursive\" is not one of rprivate (the default), private, rshared, shared, rslave, slave",
        ),
        ("src=v,dst=/d,volume-nocopy=maybe", "volume-nocopy=maybe is not true or false"),
        (
            "src=v,dst=/d,volume-driver=nfs",
            "volume-driver \"nfs\": the one volume driver is local (for NFS: volume-opt=type=nfs)",
        ),
        (
            "src=v,dst=/d,volume-opt=o",
            "volume-opt \"o\" is not KEY=VALUE (keys: type, o, device; e.g. volume-opt=type=nfs)",
        ),
        ("src=v,dst=/d,volume-label==x", "volume-label \"=x\" has no key; expected KEY=VALUE or KEY"),
        ("src=v,dst", "dst needs a value: dst=VALUE"),
    ];
    for (text, why) in bad {
        assert_eq!(parse_mount(text), Err(format!("invalid mount {text:?}: {why}{example}")), "{text}");
    }
}

#[test]
fn secret_and_config_references() {
    let file = |name: &str, uid: u32, gid: u32, mode: u32| Some(v1::FileTarget { name: name.into(), uid, gid, mode });
    let secret = |name: &str, target| v1::SecretReference {
        secret_id: String::new(),
        secret_name: name.into(),
        file: target,
        data_version: 0,
    };
    let cases = [
        ("db_password", secret("db_password", file("db_password", 0, 0, 0o444))),
        ("source=db_password", secret("db_password", file("db_password", 0, 0, 0o444))),
        (
            "source=db_password,target=db,uid=1000,gid=1001,mode=0400",
            secret("db_password", file("db", 1000, 1001, 0o400)),
        ),
        ("src=key,target=/etc/ssl/key.pem,mode=440", secret("key", file("/etc/ssl/key.pem", 0, 0, 0o440))),
        ("src=key,mode=0o600", secret("key", file("key", 0, 0, 0o600))),
        (r#""source=key",TARGET=k"#, secret("key", file("k", 0, 0, 0o444))),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_secret(text), Ok(expected), "{text}");
    }
    let config = parse_config("nginx_conf").expect("config");
    assert_eq!(config.config_name, "nginx_conf");
    assert_eq!(config.file, file("/nginx_conf", 0, 0, 0o444), "a config goes to /NAME");
    let config = parse_config("source=nginx_conf,target=/etc/nginx/nginx.conf,mode=0440").expect("config");
    assert_eq!((config.config_id.as_str(), config.file), ("", file("/etc/nginx/nginx.conf", 0, 0, 0o440)));

    let example = "; e.g. --secret db_password, or --secret source=db_password,target=db,uid=1000,mode=0400";
    let bad = [
        ("source=db,mode=rw", "mode \"rw\" is not an octal mode such as 0400"),
        ("source=db,mode=0999", "mode \"0999\" is not an octal mode such as 0400"),
        ("source=db,mode=77777", "mode \"77777\" is not an octal mode such as 0400"),
        ("source=db,uid=-1", "uid \"-1\" is not a number ≥ 0"),
        ("source=db,gid=staff", "gid \"staff\" is not a number ≥ 0"),
        ("source=db,tgt=x", "unknown field \"tgt\" (fields: source, target, uid, gid, mode)"),
        ("source=db,ro", "field \"ro\" is not KEY=VALUE"),
        ("target=db", "the source is missing: name the stored one with source=NAME"),
        ("", "the source is missing: name the stored one with source=NAME"),
    ];
    for (text, why) in bad {
        assert_eq!(parse_secret(text), Err(format!("invalid --secret {text:?}: {why}{example}")), "{text}");
    }
    let err = parse_config("target=/x").expect_err("no source");
    assert!(err.starts_with("invalid --config \"target=/x\": the source is missing"), "{err}");
    assert!(err.ends_with("e.g. --config nginx_conf, or --config source=nginx_conf,target=/etc/nginx/nginx.conf"));
}

#[test]
fn capabilities_sysctls_and_ulimits() {
    for (text, expected) in [("NET_ADMIN", "NET_ADMIN"), ("cap_sys_ptrace", "SYS_PTRACE"), (" all ", "ALL")] {
        assert_eq!(container::parse_capability(text), Ok(expected.to_owned()), "{text}");
    }
    for bad in ["", "CAP_", "NET ADMIN", "net-admin"] {
        let err = container::parse_capability(bad).expect_err(bad);
        assert!(err.ends_with("expected a name such as NET_ADMIN, SYS_PTRACE or ALL"), "{err}");
    }

    assert_eq!(
        container::parse_sysctl("net.ipv4.ip_unprivileged_port_start=0"),
        Ok(("net.ipv4.ip_unprivileged_port_start".to_owned(), "0".to_owned()))
    );
    assert_eq!(container::parse_sysctl("kernel.shmmax=1024"), Ok(("kernel.shmmax".to_owned(), "1024".to_owned())));
    assert_eq!(container::parse_sysctl("fs.mqueue.msg_max=20").map(|(k, _)| k), Ok("fs.mqueue.msg_max".to_owned()));
    let err = container::parse_sysctl("vm.swappiness=10").expect_err("not namespaced");
    assert!(
        err.starts_with("invalid sysctl \"vm.swappiness=10\": a container can set only namespaced sysctls"),
        "{err}"
    );
    let err = container::parse_sysctl("net.core.somaxconn").expect_err("no value");
    assert!(err.starts_with("invalid sysctl \"net.core.somaxconn\": expected KEY=VALUE"), "{err}");

    let ulimit = |name: &str, soft, hard| v1::Ulimit { name: name.into(), soft, hard };
    let cases = [
        ("nofile=1024:2048", ulimit("nofile", 1024, 2048)),
        ("nproc=512", ulimit("nproc", 512, 512)),
        ("NOFILE=1:1", ulimit("nofile", 1, 1)),
        ("memlock=-1:-1", ulimit("memlock", -1, -1)),
        ("core=0:-1", ulimit("core", 0, -1)),
    ];
    for (text, expected) in cases {
        assert_eq!(container::parse_ulimit(text), Ok(expected), "{text}");
    }
    let example = "; e.g. --ulimit nofile=1024:2048 (soft:hard)";
    let bad = [
        ("nofile", "expected NAME=SOFT[:HARD]".to_owned()),
        ("files=1", format!("\"files\" is not a resource limit; one of {}", container::ULIMITS.join(", "))),
        ("nofile=2048:1024", "the soft limit 2048 is above the hard limit 1024".to_owned()),
        ("nofile=-1:1024", "the soft limit -1 is above the hard limit 1024".to_owned()),
        ("nofile=many", "\"many\" is not a limit (a number ≥ 0, or -1 for unlimited)".to_owned()),
        ("nofile=-2", "\"-2\" is not a limit (a number ≥ 0, or -1 for unlimited)".to_owned()),
    ];
    for (text, why) in bad {
        assert_eq!(container::parse_ulimit(text), Err(format!("invalid ulimit {text:?}: {why}{example}")), "{text}");
    }
}

#[test]
fn dns_hosts_groups_and_pids() {
    assert_eq!(container::parse_nameserver("192.0.2.53"), Ok("192.0.2.53".to_owned()));
    assert_eq!(container::parse_nameserver(" 2001:db8::53 "), Ok("2001:db8::53".to_owned()));
    assert!(container::parse_nameserver("dns.example").is_err());
    for ok in ["example.com", "a-b.internal", "x", "."] {
        assert_eq!(container::parse_dns_search(ok), Ok(ok.to_owned()), "{ok}");
    }
    for bad in ["-a.com", "a..b", "a_b.com", "", "a.com."] {
        assert!(container::parse_dns_search(bad).is_err(), "{bad}");
    }
    assert_eq!(container::parse_dns_option("ndots:2"), Ok("ndots:2".to_owned()));
    assert!(container::parse_dns_option("ndots 2").is_err());

    let cases = [
        ("db.internal:192.0.2.20", "192.0.2.20 db.internal"),
        ("db=192.0.2.20", "192.0.2.20 db"),
        ("v6:2001:db8::1", "2001:db8::1 v6"),
        ("v6:[2001:db8::1]", "2001:db8::1 v6"),
    ];
    for (text, expected) in cases {
        assert_eq!(container::parse_host(text), Ok(expected.to_owned()), "{text}");
    }
    for bad in ["db", "db:not-an-ip", ":192.0.2.1", "d b:192.0.2.1", "db:host-gateway"] {
        let err = container::parse_host(bad).expect_err(bad);
        assert!(err.ends_with("expected HOST:IP with an IP address, e.g. --host db.internal:192.0.2.20"), "{err}");
    }
    assert_eq!(container::parse_group("video"), Ok("video".to_owned()));
    assert_eq!(container::parse_group("1001"), Ok("1001".to_owned()));
    assert!(container::parse_group("a:b").is_err());
    assert!(container::parse_group(" ").is_err());

    assert_eq!(parse_pids("100"), Ok(100));
    assert_eq!(parse_pids("0"), Ok(0));
    assert_eq!(parse_pids("-1"), Err("\"-1\" is not a number of processes ≥ 0 (0: no limit)".to_owned()));
}

#[test]
fn env_files_as_docker_reads_them() {
    let lookup = |name: &str| (name == "HOME").then(|| "/root".to_owned());
    let text =
        "\u{feff}# a comment\nA=1\n\n   B= spaced value \nC=\"quoted\"\r\nHOME\nUNSET\n  # indented comment\nD=x=y\nE=";
    assert_eq!(
        container::parse_env_file(text, lookup),
        Ok(["A=1", "B= spaced value ", "C=\"quoted\"", "HOME=/root", "D=x=y", "E="].map(str::to_owned).to_vec())
    );
    assert_eq!(
        container::parse_env_file("A=1\nBAD KEY=2", lookup),
        Err("line 2: variable name \"BAD KEY\" contains whitespace".to_owned())
    );
    assert_eq!(container::parse_env_file("=1", lookup), Err("line 1: no variable name before the =".to_owned()));

    let dir = std::env::temp_dir().join(format!("shoal-env-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.env");
    std::fs::write(&good, "A=1\nB=2\n").expect("write");
    let bad = dir.join("bad.env");
    std::fs::write(&bad, b"A=1\nB=\xff\n").expect("write");
    assert_eq!(read_env_files(std::slice::from_ref(&good)), Ok(vec!["A=1".to_owned(), "B=2".to_owned()]));
    assert_eq!(
        read_env_files(std::slice::from_ref(&bad)),
        Err(format!("--env-file {}: line 2 is not UTF-8 text", bad.display()))
    );
    let err = read_env_files(&[dir.join("nope.env")]).expect_err("missing");
    assert!(err.starts_with(&format!("--env-file {}: cannot read it: ", dir.join("nope.env").display())), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    let mut env = vec!["A=1".to_owned(), "B=2".to_owned()];
    set_env(&mut env, "B=3");
    set_env(&mut env, "C=");
    assert_eq!(env, ["A=1", "B=3", "C="]);
}

#[test]
fn capabilities_are_edited_as_docker_does() {
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    // existing add, existing drop, --cap-add, --cap-drop → add, drop.
    let cases: &[Case<'_>] = &[
        (&[], &[], &["NET_ADMIN", "SYS_PTRACE", "NET_ADMIN"], &[], &["NET_ADMIN", "SYS_PTRACE"], &[]),
        (&[], &[], &["NET_ADMIN"], &["NET_ADMIN", "MKNOD"], &["NET_ADMIN"], &["MKNOD"]),
        (&["NET_ADMIN"], &["MKNOD"], &["MKNOD"], &[], &["MKNOD", "NET_ADMIN"], &[]),
        (&["NET_ADMIN", "CAP_SYS_TIME"], &[], &[], &["SYS_TIME"], &["NET_ADMIN"], &["SYS_TIME"]),
        (&["NET_ADMIN"], &[], &["ALL"], &[], &["ALL"], &[]),
        (&[], &["MKNOD"], &[], &["ALL"], &[], &["ALL"]),
        // No flag: the lists stay as they are, even unsorted.
        (&["SYS_TIME", "NET_ADMIN"], &[], &[], &[], &["SYS_TIME", "NET_ADMIN"], &[]),
    ];
    let owned = |list: &[&str]| list.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    for (add_list, drop_list, add, drop, want_add, want_drop) in cases {
        let (mut add_list, mut drop_list) = (owned(add_list), owned(drop_list));
        container::edit_capabilities(&mut add_list, &mut drop_list, &owned(add), &owned(drop));
        assert_eq!((add_list, drop_list), (owned(want_add), owned(want_drop)), "{add:?} {drop:?}");
    }
}

#[test]
fn hosts_are_edited_as_docker_does() {
    let existing = || -> Vec<String> {
        ["192.0.2.1 db db-primary", "192.0.2.2 db", "192.0.2.3 cache"].map(str::to_owned).to_vec()
    };
    let removal = |text: &str| container::parse_host_removal(text).expect("removal");
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&["db"], &[], &["192.0.2.1 db-primary", "192.0.2.3 cache"]),
        (&["db:192.0.2.2"], &[], &["192.0.2.1 db db-primary", "192.0.2.3 cache"]),
        (&["cache"], &["cache:192.0.2.9"], &["192.0.2.1 db db-primary", "192.0.2.2 db", "192.0.2.9 cache"]),
        (&[], &["db:192.0.2.2"], &["192.0.2.1 db db-primary", "192.0.2.2 db", "192.0.2.3 cache"]),
    ];
    for (rm, add, expected) in cases {
        let rm: Vec<_> = rm.iter().map(|r| removal(r)).collect();
        let add: Vec<String> = add.iter().map(|a| container::parse_host(a).expect("host")).collect();
        let mut hosts = existing();
        container::edit_hosts(&mut hosts, &rm, &add).expect("edit");
        assert_eq!(hosts, *expected, "{rm:?} {add:?}");
    }
    let mut hosts = existing();
    assert_eq!(
        container::edit_hosts(&mut hosts, &[removal("db:192.0.2.3")], &[]),
        Err("--host-rm db:192.0.2.3: the service has no host entry db:192.0.2.3".to_owned())
    );
    assert!(container::parse_host_removal("db:nope").is_err());
}
