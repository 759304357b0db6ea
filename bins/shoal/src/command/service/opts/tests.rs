//! The shared flags' value parsers as tables.

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
    let bad = [
        ("source=/a", "the target is missing"),
        ("type=nfs,target=/a", "type \"nfs\" is not bind, volume or tmpfs"),
        ("target=/a,size=1", "unknown field \"size\" (fields: type, source, target, readonly, tmpfs-size, tmpfs-mode)"),
        ("type=bind,source=/a,target=/b,tmpfs-size=1M", "tmpfs-size and tmpfs-mode are for type=tmpfs"),
        ("target=/a,readonly=maybe", "readonly=maybe is not true or false"),
    ];
    for (text, why) in bad {
        assert_eq!(parse_mount(text), Err(format!("invalid mount {text:?}: {why}{example}")), "{text}");
    }
}
