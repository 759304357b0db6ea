//! Interpolation through the loader, as a table: the caller's environment over the `.env`
//! file beside the first file, typed values from variables, and where errors point.

use std::collections::BTreeMap;

use shoal_compose::{LoadOptions, Source, load_sources, render};

struct Case {
    name: &'static str,
    /// The `.env` file beside the compose files, if any.
    dot_env: Option<&'static str>,
    /// The caller's environment.
    env: &'static [(&'static str, &'static str)],
    ignore_dot_env: bool,
    files: &'static [&'static str],
    /// The services as rendered, then the warnings; or `error: …`. `$DIR` is the directory.
    want: &'static str,
}

fn check(case: &Case) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    if let Some(text) = case.dot_env {
        std::fs::write(dir.path().join(".env"), text).expect(".env written");
    }
    let sources: Vec<Source> = case
        .files
        .iter()
        .enumerate()
        .map(|(i, text)| Source::new(dir.path().join(format!("f{i}.yml")), *text))
        .collect();
    let env: BTreeMap<String, String> = case.env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let options = LoadOptions { env, ignore_dot_env: case.ignore_dot_env, ..LoadOptions::default() };
    let out = match load_sources(&sources, &options) {
        Ok(loaded) => {
            let mut project = loaded.project;
            project.networks.clear();
            for service in project.services.values_mut() {
                service.networks.clear();
            }
            let warnings: String = loaded.warnings.iter().map(|w| format!("warning: {w}\n")).collect();
            render(&project) + &warnings
        }
        Err(error) => format!("error: {error}\n"),
    };
    out.replace(&*dir.path().to_string_lossy(), "$DIR")
}

const fn case(name: &'static str, files: &'static [&'static str], want: &'static str) -> Case {
    Case { name, dot_env: None, env: &[], ignore_dot_env: false, files, want }
}

const CASES: &[Case] = &[
    Case {
        env: &[("TAG", "from-caller")],
        dot_env: Some("TAG=from-dot-env\nREGISTRY=registry.example.com\n"),
        ..case(
            "the caller's environment wins over .env",
            &["services: {web: {image: '${REGISTRY}/web:${TAG}'}}"],
            "services:\n  web:\n    image: registry.example.com/web:from-caller\n",
        )
    },
    Case {
        dot_env: Some("TAG=from-dot-env\n"),
        ignore_dot_env: true,
        ..case(
            "ignore_dot_env leaves .env unread",
            &["services: {web: {image: 'web:${TAG:-latest}'}}"],
            "services:\n  web:\n    image: web:latest\n",
        )
    },
    Case {
        env: &[("DOMAIN", "example.com")],
        dot_env: Some("HOST=www.${DOMAIN}\nURL=\"https://${HOST}/\"\n"),
        ..case(
            ".env values refer to the caller's and earlier variables",
            &["services: {web: {image: a, environment: {URL: $URL}}}"],
            "services:\n  web:\n    environment:\n      URL: https://www.example.com/\n    image: a\n",
        )
    },
    Case {
        env: &[("N", "3"), ("RO", "true"), ("GRACE", "1m"), ("MEM", "256m"), ("PORT", "8080")],
        ..case(
            "typed values come from variables",
            &[
                "services:\n  web:\n    image: a\n    read_only: ${RO}\n    stop_grace_period: ${GRACE}\n    ports: ['${PORT}:80']\n    deploy: {replicas: '${N}', resources: {limits: {memory: $MEM}}}\n",
            ],
            "services:\n  web:\n    deploy:\n      mode: replicated\n      replicas: 3\n      resources:\n        limits:\n          memory: 268435456\n    image: a\n    ports:\n      - mode: ingress\n        protocol: tcp\n        published: 8080\n        target: 80\n    read_only: true\n    stop_grace_period: 1m0s\n",
        )
    },
    Case {
        env: &[("N", "many")],
        ..case(
            "a variable that gives the wrong type is reported where it is used",
            &["services:\n  web:\n    image: a\n    deploy:\n      replicas: ${N}\n"],
            "error: $DIR/f0.yml:5:17: services.web.deploy.replicas: expected a whole number of 0 or more, found \"many\"\n",
        )
    },
    Case {
        env: &[("K", "v")],
        ..case(
            "keys are not substituted, values of x- fields are",
            &["services: {web: {image: a, labels: {'${K}': '${K}'}}}\nx-meta: {who: '${K}'}"],
            "services:\n  web:\n    image: a\n    labels:\n      \"${K}\": v\nx-meta:\n  who: v\n",
        )
    },
    case(
        "an unset variable is blank and reported once, where it is first used",
        &["services:\n  web:\n    image: a\n    environment:\n      A: ${GONE}\n      B: x${GONE}x\n"],
        "services:\n  web:\n    environment:\n      A: \"\"\n      B: xx\n    image: a\nwarning: $DIR/f0.yml:5:10: the \"GONE\" variable is not set; defaulting to a blank string\n",
    ),
    case(
        "a required variable in the second file is reported there",
        &[
            "services: {web: {image: a}}",
            "services:\n  web:\n    environment:\n      KEY: ${API_KEY:?API_KEY is required}\n",
        ],
        "error: $DIR/f1.yml:4:12: required variable API_KEY is missing a value: API_KEY is required\n",
    ),
    case(
        "a lone $ says to double it",
        &["services:\n  web:\n    image: a\n    command: echo cost $5\n"],
        "error: $DIR/f0.yml:4:14: invalid interpolation format for services.web.command: \"echo cost $5\"; you may need to escape any $ with another $\n",
    ),
    case(
        "$$ is a literal dollar, written back doubled",
        &["services:\n  web:\n    image: a\n    command: [sh, -c, 'echo $$HOME and $${HOME}']\n"],
        "services:\n  web:\n    command:\n      - sh\n      - \"-c\"\n      - \"echo $$HOME and $${HOME}\"\n    image: a\n",
    ),
    Case {
        dot_env: Some("GOOD=1\nBAD LINE\n"),
        ..case(
            "a broken .env is reported in the .env",
            &["services: {web: {image: a}}"],
            "error: $DIR/.env:2:1: invalid env file line \"BAD LINE\": expected KEY=VALUE\n",
        )
    },
    Case {
        env: &[("SECRET_VALUE", "s3cr3t")],
        ..case(
            "a secret from an environment variable keeps its value in the model",
            &["services: {web: {image: a, secrets: [token]}}\nsecrets: {token: {environment: SECRET_VALUE}}"],
            "services:\n  web:\n    image: a\n    secrets:\n      - source: token\nsecrets:\n  token:\n    environment: SECRET_VALUE\n",
        )
    },
    case(
        "a secret from an unset environment variable is an error",
        &["services: {web: {image: a, secrets: [token]}}\nsecrets:\n  token:\n    environment: SECRET_VALUE\n"],
        "error: $DIR/f0.yml:4:18: secrets.token.environment: the environment variable SECRET_VALUE is not set\n",
    ),
];

#[test]
fn interpolation_table() {
    let mut failures = Vec::new();
    for case in CASES {
        let got = check(case);
        if got != case.want {
            failures.push(format!("{}\n--- want\n{}--- got\n{got}", case.name, case.want));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

#[test]
fn secret_values_from_the_environment_are_in_the_model() {
    let env: BTreeMap<String, String> = [("TOKEN".to_owned(), "s3cr3t".to_owned())].into_iter().collect();
    let options = LoadOptions { env, ignore_dot_env: true, ..LoadOptions::default() };
    let source =
        Source::new("/stack/compose.yml", "services: {web: {image: a}}\nsecrets: {token: {environment: TOKEN}}");
    let loaded = load_sources(&[source], &options).map_err(|e| e.to_string());
    let source = loaded.map(|l| l.project.secrets["token"].source.clone());
    assert_eq!(
        source,
        Ok(shoal_compose::ObjectSource::Environment { variable: "TOKEN".to_owned(), value: "s3cr3t".to_owned() })
    );
}
