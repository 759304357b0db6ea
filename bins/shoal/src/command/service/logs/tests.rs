//! `shoal service logs`: its flags, `--since` and `--tail` values, and lines as docker prints them.

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: LogsArgs,
}

fn parse(argv: &[&str]) -> Result<LogsArgs, String> {
    Cli::try_parse_from(std::iter::once("logs").chain(argv.iter().copied())).map(|c| c.args).map_err(|e| e.to_string())
}

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

#[test]
fn flags() {
    let args = parse(&["web"]).expect("defaults");
    assert_eq!((args.follow, args.tail, args.since, args.target.as_str()), (false, Tail(None), None, "web"));
    assert!(!(args.timestamps || args.no_task_ids || args.no_trunc || args.raw));

    let args = parse(&["-f", "-t", "-n", "5", "--since", "10m", "--no-task-ids", "--no-trunc", "--raw", "web"])
        .expect("all flags");
    assert!(args.follow && args.timestamps && args.no_task_ids && args.no_trunc && args.raw);
    assert_eq!((args.tail, args.since), (Tail(Some(5)), Some(Since::Ago(Duration::from_secs(600)))));
    let args = parse(&["--follow", "--timestamps", "--tail", "all", "abc123"]).expect("long names");
    assert!(args.follow && args.timestamps);
    assert_eq!(args.tail, Tail(None));

    let err = parse(&["--tail", "-1", "web"]).expect_err("a negative tail");
    assert!(err.contains("invalid --tail \"-1\": expected a number of lines (0 or more) or \"all\""), "{err}");
    let err = parse(&["--tail", "many", "web"]).expect_err("a word");
    assert!(err.contains("invalid --tail \"many\""), "{err}");
    let err = parse(&["--since", "yesterday", "web"]).expect_err("not a time");
    assert!(
        err.contains("invalid --since \"yesterday\": expected a time (2013-01-02T13:23:37Z) or a duration (42m)"),
        "{err}"
    );
    assert!(parse(&[]).is_err(), "a service or task is needed");
    assert!(parse(&["web", "db"]).is_err(), "one target");
}

#[test]
fn since_values() {
    let cases: &[(&str, Result<Since, &str>)] = &[
        ("42m", Ok(Since::Ago(Duration::from_secs(42 * 60)))),
        ("1h30m", Ok(Since::Ago(Duration::from_secs(5400)))),
        ("1357133017", Ok(Since::At(at(1_357_133_017, 0)))),
        ("1357133017.25", Ok(Since::At(at(1_357_133_017, 250_000_000)))),
        ("2013-01-02T13:23:37Z", Ok(Since::At(at(1_357_133_017, 0)))),
        ("2013-01-02T13:23:37.5Z", Ok(Since::At(at(1_357_133_017, 500_000_000)))),
        ("2013-01-02T15:23:37+02:00", Ok(Since::At(at(1_357_133_017, 0)))),
        ("2013-01-02T08:23:37.000000001-05:00", Ok(Since::At(at(1_357_133_017, 1)))),
        // Without a zone: UTC.
        ("2013-01-02T13:23:37", Ok(Since::At(at(1_357_133_017, 0)))),
        ("2013-01-02 13:23", Ok(Since::At(at(1_357_133_017 - 37, 0)))),
        ("2013-01-02", Ok(Since::At(at(1_357_084_800, 0)))),
        ("2000-02-29T00:00:00Z", Ok(Since::At(at(951_782_400, 0)))),
        ("2013-13-02", Err("invalid --since \"2013-13-02\": date \"2013-13-02\" does not exist")),
        ("2013-01-02T25:00:00Z", Err("time \"25:00:00\" does not exist")),
        ("2013-01-02T13:23:37+0200", Err("zone \"+0200\" is not +HH:MM or -HH:MM")),
        ("1969-12-31", Err("it is before 1970")),
        ("5 parsecs", Err("expected a time (2013-01-02T13:23:37Z) or a duration (42m)")),
    ];
    for (text, expected) in cases {
        match (Since::parse(text), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
    let now = at(1_800_000_000, 0);
    assert_eq!(Since::Ago(Duration::from_secs(60)).at(now), at(1_799_999_940, 0));
    assert_eq!(Since::At(at(5, 0)).at(now), at(5, 0));
}

#[test]
fn the_request_carries_the_options() {
    let args = parse(&["-f", "-n", "20", "--since", "1m", "web"]).expect("args");
    let selector = v1::LogSelector { service_ids: vec!["svc1".into()], task_ids: Vec::new() };
    let request = request(&args, selector.clone(), at(1_800_000_000, 0));
    assert_eq!(request.selector, Some(selector));
    let options = request.options.expect("options");
    assert_eq!((options.follow, options.tail), (true, Some(20)));
    assert_eq!(shoal_api::from_timestamp(options.since.as_ref()), Some(at(1_799_999_940, 0)));
    let all = request_options(&parse(&["web"]).expect("args"));
    assert_eq!((all.follow, all.tail, all.since), (false, None, None));
}

fn request_options(args: &LogsArgs) -> v1::LogSubscriptionOptions {
    request(args, v1::LogSelector::default(), at(1_800_000_000, 0)).options.expect("options")
}

fn source(task_name: &str, slot: u64, task_id: &str, node: &str) -> Source {
    Source { task_name: task_name.into(), slot, task_id: task_id.into(), node: node.into() }
}

/// A batch as printed: `out:` or `err:` and the text of each line.
fn printed(lines: &[Line<'_>], style: Style, width: usize) -> Vec<String> {
    render_batch(lines, style, width)
        .into_iter()
        .map(|(stderr, bytes)| format!("{}{}", if stderr { "err:" } else { "out:" }, String::from_utf8_lossy(&bytes)))
        .collect()
}

#[test]
fn lines_are_prefixed_as_docker_prints_them() {
    let web1 = source("web.1", 1, "x6g2o5v6mdtq4r1xbrchgp3iz", "node4");
    let web10 = source("web.10", 10, "8w2pofzb1q5j9p6o4m3c2hx7a", "node12");
    let global = source("agent.tkumq6e7g4bu", 0, "q1w2e3r4t5y6u7i8o9p0a1s2d", "node4");
    let line = |source, stderr, data: &'static str| Line {
        source: Some(source),
        time: Some(at(1_410_848_266, 5_000)),
        stderr,
        data: data.as_bytes(),
    };
    let batch = [line(&web1, false, "hello"), line(&web10, true, "oops"), line(&global, false, "up")];

    // docker: the task ID cut to 12, the slot padded to the replicas' width, then the bar; here
    // the prefixes of a batch are also padded to its widest, so the bars align.
    assert_eq!(printed(&batch[..1], Style::default(), 2), ["out:web.1.x6g2o5v6mdtq@node4     | hello\n"]);
    assert_eq!(
        printed(&batch, Style::default(), 2),
        [
            "out:web.1.x6g2o5v6mdtq@node4                 | hello\n",
            "err:web.10.8w2pofzb1q5j@node12               | oops\n",
            "out:agent.tkumq6e7g4bu.q1w2e3r4t5y6@node4    | up\n",
        ]
    );
    let no_ids = Style { no_task_ids: true, ..Style::default() };
    assert_eq!(printed(&batch[..2], no_ids, 2), ["out:web.1@node4      | hello\n", "err:web.10@node12    | oops\n"]);
    let full = Style { no_trunc: true, timestamps: true, ..Style::default() };
    assert_eq!(
        printed(&batch[..1], full, 1),
        ["out:2014-09-16T06:17:46.000005000Z web.1.x6g2o5v6mdtq4r1xbrchgp3iz@node4    | hello\n"]
    );
    let raw = Style { raw: true, ..Style::default() };
    assert_eq!(printed(&batch[..2], raw, 2), ["out:hello\n", "err:oops\n"]);
    let raw_times = Style { raw: true, timestamps: true, ..Style::default() };
    assert_eq!(printed(&batch[..1], raw_times, 2), ["out:2014-09-16T06:17:46.000005000Z hello\n"]);
}

#[test]
fn timestamps_have_nine_decimals() {
    assert_eq!(timestamp(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
    assert_eq!(timestamp(at(951_782_400, 123_456_789)), "2000-02-29T00:00:00.123456789Z");
}
