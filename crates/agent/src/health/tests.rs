//! The merge of a task's health check over its image's, and the decisions on probe results.

use super::*;

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A service's `HealthConfig` (0: not set, as the CLI leaves it).
fn spec(test: &[&str], interval: u64, timeout: u64, start_period: u64, retries: u32) -> v1::HealthConfig {
    let duration = |n: u64| (n > 0).then(|| shoal_api::to_duration(secs(n)));
    v1::HealthConfig {
        test: strings(test),
        interval: duration(interval),
        timeout: duration(timeout),
        retries,
        start_period: duration(start_period),
    }
}

/// An image's `HEALTHCHECK` (0: not set).
fn image(test: &[&str], interval: u64, timeout: u64, start_period: u64, retries: u32) -> Healthcheck {
    Healthcheck {
        test: strings(test),
        interval: secs(interval),
        timeout: secs(timeout),
        start_period: secs(start_period),
        retries,
    }
}

fn check(cmd: &[&str], interval: u64, timeout: u64, start_period: u64, retries: u32) -> Check {
    Check {
        cmd: strings(cmd),
        interval: secs(interval),
        timeout: secs(timeout),
        start_period: secs(start_period),
        retries,
    }
}

#[test]
fn the_spec_merges_over_the_image_field_by_field_as_docker_does() {
    let probe = ["CMD-SHELL", "probe"];
    let by_shell = ["/bin/sh", "-c", "probe"];
    // (case, spec, image, effective check)
    type Case = (&'static str, Option<v1::HealthConfig>, Option<Healthcheck>, Option<Check>);
    let cases: Vec<Case> = vec![
        ("neither has a check", None, None, None),
        (
            "the image's, with Docker's defaults for what it leaves unset",
            None,
            Some(image(&probe, 1, 0, 0, 2)),
            Some(check(&by_shell, 1, 30, 0, 2)),
        ),
        (
            "the spec's CMD alone, every default",
            Some(spec(&["CMD", "/bin/check", "-q"], 0, 0, 0, 0)),
            None,
            Some(check(&["/bin/check", "-q"], 30, 30, 0, 3)),
        ),
        (
            "an empty spec takes everything from the image",
            Some(v1::HealthConfig::default()),
            Some(image(&probe, 1, 2, 3, 4)),
            Some(check(&by_shell, 1, 2, 3, 4)),
        ),
        (
            "--health-interval alone keeps the image's test and the rest",
            Some(spec(&[], 7, 0, 0, 0)),
            Some(image(&probe, 1, 2, 3, 4)),
            Some(check(&by_shell, 7, 2, 3, 4)),
        ),
        (
            "--health-cmd replaces the image's test, its durations stay",
            Some(spec(&["CMD-SHELL", "other"], 0, 0, 0, 5)),
            Some(image(&probe, 1, 2, 3, 4)),
            Some(check(&["/bin/sh", "-c", "other"], 1, 2, 3, 5)),
        ),
        (
            "--no-healthcheck disables the image's",
            Some(spec(&["NONE"], 0, 0, 0, 0)),
            Some(image(&probe, 1, 2, 3, 4)),
            None,
        ),
        ("an image's NONE", None, Some(image(&["NONE"], 0, 0, 0, 0)), None),
        (
            "a spec's test over an image's NONE",
            Some(spec(&probe, 0, 0, 0, 0)),
            Some(image(&["NONE"], 9, 0, 0, 0)),
            Some(check(&by_shell, 9, 30, 0, 3)),
        ),
        ("durations without a test anywhere", Some(spec(&[], 1, 1, 1, 1)), Some(image(&[], 2, 0, 0, 0)), None),
    ];
    for (case, spec, image, expected) in cases {
        assert_eq!(effective(spec.as_ref(), image.as_ref()), Ok(expected), "{case}");
    }
}

#[test]
fn a_check_without_a_command_or_of_an_unknown_type_is_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["CMD"], r#"invalid health check ["CMD"]: no command"#),
        (&["CMD-SHELL"], r#"invalid health check ["CMD-SHELL"]: no command"#),
        (
            &["HTTP", "/healthz"],
            r#"invalid health check ["HTTP", "/healthz"]: unknown type "HTTP" (expected CMD, CMD-SHELL or NONE)"#,
        ),
    ];
    for (test, message) in cases {
        let from_spec = effective(Some(&spec(test, 0, 0, 0, 0)), None).expect_err("from the spec");
        assert_eq!(from_spec.to_string(), *message);
        let from_image = effective(None, Some(&image(test, 0, 0, 0, 0))).expect_err("from the image");
        assert_eq!(from_image.to_string(), *message);
    }
}

#[test]
fn probes_decide_health_as_docker_does() {
    use Status::{Healthy, Starting, Unhealthy};
    // (case, start period, retries, status at start, probes as (passed, seconds since start),
    //  the change each probe makes)
    type Case = (&'static str, u64, u32, Status, Vec<(bool, u64)>, Vec<Option<Status>>);
    let cases: Vec<Case> = vec![
        ("a pass makes a starting container healthy", 0, 3, Starting, vec![(true, 1)], vec![Some(Healthy)]),
        (
            "retries failures in a row, without a start period, make a starting one unhealthy",
            0,
            2,
            Starting,
            vec![(false, 1), (false, 2)],
            vec![None, Some(Unhealthy)],
        ),
        (
            "failures within the start period do not count; the first after it does",
            10,
            1,
            Starting,
            vec![(false, 1), (false, 9), (false, 10)],
            vec![None, None, Some(Unhealthy)],
        ),
        (
            "a pass ends the start period",
            100,
            2,
            Starting,
            vec![(true, 1), (false, 2), (false, 3)],
            vec![Some(Healthy), None, Some(Unhealthy)],
        ),
        (
            "a pass resets the streak",
            0,
            3,
            Healthy,
            vec![(false, 1), (false, 2), (true, 3), (false, 4), (false, 5), (false, 6)],
            vec![None, None, None, None, None, Some(Unhealthy)],
        ),
        ("a container adopted healthy has no start period", 100, 1, Healthy, vec![(false, 1)], vec![Some(Unhealthy)]),
        (
            "unhealthy again healthy on a pass (the executor has stopped it by then)",
            0,
            1,
            Healthy,
            vec![(false, 1), (true, 2)],
            vec![Some(Unhealthy), Some(Healthy)],
        ),
    ];
    for (case, start_period, retries, status, probes, expected) in cases {
        let mut health = Health::new(&check(&["true"], 1, 1, start_period, retries), status);
        let changes: Vec<Option<Status>> =
            probes.iter().map(|(passed, at)| health.observe(*passed, secs(*at))).collect();
        assert_eq!(changes, expected, "{case}");
    }
}

#[test]
fn a_probe_says_what_it_printed_or_how_it_exited() {
    let out = |code, stdout: &str, stderr: &str| ExecOutput {
        code,
        timed_out: false,
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
    };
    assert_eq!(output(&out(1, "  not ready\n", "")), "not ready");
    assert_eq!(output(&out(1, "db down\n", "retrying\n")), "db down\nretrying");
    assert_eq!(output(&out(2, "\n", "")), "health check exited 2 with no output");
}
