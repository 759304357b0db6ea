//! The override rules, as a table: files merged in order, and the services they give (rendered
//! as `shoal stack config` prints them, networks left out for brevity).

use shoal_compose::{LoadOptions, Source, load_sources, render};

/// Loads the files in order and renders the services, or the error.
fn check(files: &[&str]) -> String {
    let sources: Vec<Source> =
        files.iter().enumerate().map(|(i, text)| Source::new(format!("/stack/f{i}.yml"), *text)).collect();
    let options = LoadOptions { ignore_dot_env: true, ..LoadOptions::default() };
    match load_sources(&sources, &options) {
        Ok(loaded) => {
            let mut project = loaded.project;
            project.networks.clear();
            for service in project.services.values_mut() {
                service.networks.clear();
            }
            render(&project)
        }
        Err(error) => format!("error: {error}\n"),
    }
}

struct Case {
    name: &'static str,
    files: &'static [&'static str],
    want: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "scalars replace; a service only in the override is added",
        files: &[
            "services: {web: {image: nginx:1, user: www}}",
            "services: {web: {image: nginx:2}, db: {image: postgres}}",
        ],
        want: "services:\n  db:\n    image: postgres\n  web:\n    image: nginx:2\n    user: www\n",
    },
    Case {
        name: "environment merges by key across list and mapping forms",
        files: &[
            "services: {web: {image: a, environment: [A=1, B=2]}}",
            "services: {web: {environment: {B: three, C: '4'}}}",
        ],
        want: "services:\n  web:\n    environment:\n      A: \"1\"\n      B: three\n      C: \"4\"\n    image: a\n",
    },
    Case {
        name: "labels, sysctls and extra_hosts merge by key",
        files: &[
            "services: {web: {image: a, labels: [x=1, y=2], sysctls: {net.core.somaxconn: 1024}, extra_hosts: ['db:10.0.0.1']}}",
            "services: {web: {labels: {y: '3'}, sysctls: [net.ipv4.ip_forward=1], extra_hosts: ['db=10.0.0.2', 'cache:10.0.0.3']}}",
        ],
        want: "services:\n  web:\n    extra_hosts:\n      cache: 10.0.0.3\n      db: 10.0.0.2\n    image: a\n    labels:\n      x: \"1\"\n      \"y\": \"3\"\n    sysctls:\n      net.core.somaxconn: \"1024\"\n      net.ipv4.ip_forward: \"1\"\n",
    },
    Case {
        name: "command, entrypoint and other lists replace",
        files: &[
            "services: {web: {image: a, command: serve --debug, entrypoint: [/init], dns: [1.1.1.1, 8.8.8.8], cap_add: [NET_ADMIN]}}",
            "services: {web: {command: [serve], dns: 9.9.9.9}}",
        ],
        want: "services:\n  web:\n    cap_add:\n      - NET_ADMIN\n    command:\n      - serve\n    dns:\n      - 9.9.9.9\n    entrypoint:\n      - /init\n    image: a\n",
    },
    Case {
        name: "ports merge by address, published port, target and protocol",
        files: &[
            "services: {web: {image: a, ports: ['80:80', '443:443', '53:53/udp']}}",
            "services: {web: {ports: [{target: 80, published: 80, mode: host}, '53:53', '8080:8080']}}",
        ],
        want: "services:\n  web:\n    image: a\n    ports:\n      - mode: host\n        protocol: tcp\n        published: 80\n        target: 80\n      - mode: ingress\n        protocol: tcp\n        published: 443\n        target: 443\n      - mode: ingress\n        protocol: udp\n        published: 53\n        target: 53\n      - mode: ingress\n        protocol: tcp\n        published: 53\n        target: 53\n      - mode: ingress\n        protocol: tcp\n        published: 8080\n        target: 8080\n",
    },
    Case {
        name: "volumes merge by target",
        files: &[
            "services: {web: {image: a, volumes: ['data:/data', '/host/logs:/logs']}}\nvolumes: {data: {}, other: {}}",
            "services: {web: {volumes: ['other:/data:ro', '/tmp:/tmp']}}",
        ],
        want: "services:\n  web:\n    image: a\n    volumes:\n      - read_only: true\n        source: other\n        target: /data\n        type: volume\n      - source: /host/logs\n        target: /logs\n        type: bind\n      - source: /tmp\n        target: /tmp\n        type: bind\nvolumes:\n  data: {}\n  other: {}\n",
    },
    Case {
        name: "secrets and configs merge by target, a short entry's target being its source",
        files: &[
            "services: {web: {image: a, secrets: [key, {source: cert, target: tls.pem}], configs: [conf]}}\nsecrets: {key: {external: true}, cert: {external: true}, cert2: {external: true}}\nconfigs: {conf: {external: true}}",
            "services: {web: {secrets: [{source: key, mode: 0400}, {source: cert2, target: tls.pem}], configs: [{source: conf, target: /etc/conf}]}}",
        ],
        want: "services:\n  web:\n    configs:\n      - source: conf\n      - source: conf\n        target: /etc/conf\n    image: a\n    secrets:\n      - mode: 0400\n        source: key\n      - source: cert2\n        target: tls.pem\nsecrets:\n  cert:\n    external: true\n  cert2:\n    external: true\n  key:\n    external: true\nconfigs:\n  conf:\n    external: true\n",
    },
    Case {
        name: "deploy merges deeply",
        files: &[
            "services: {web: {image: a, deploy: {replicas: 2, resources: {limits: {memory: 1g}}, placement: {constraints: [node.role==worker]}}}}",
            "services: {web: {deploy: {replicas: 5, resources: {limits: {cpus: '1.5'}}, update_config: {order: start-first}}}}",
        ],
        want: "services:\n  web:\n    deploy:\n      mode: replicated\n      placement:\n        constraints:\n          - node.role==worker\n      replicas: 5\n      resources:\n        limits:\n          cpus: \"1.5\"\n          memory: 1073741824\n      update_config:\n        order: start-first\n    image: a\n",
    },
    Case {
        name: "healthcheck fields merge; the test is replaced whole",
        files: &[
            "services: {web: {image: a, healthcheck: {test: [CMD, curl, -f, http://localhost], interval: 30s, retries: 3}}}",
            "services: {web: {healthcheck: {interval: 5s, test: curl -f http://localhost/health}}}",
        ],
        want: "services:\n  web:\n    healthcheck:\n      interval: 5s\n      retries: 3\n      test:\n        - CMD-SHELL\n        - curl -f http://localhost/health\n    image: a\n",
    },
    Case {
        name: "logging options merge for the same driver",
        files: &[
            "services: {web: {image: a, logging: {driver: json-file, options: {max-size: 10m}}}}",
            "services: {web: {logging: {options: {max-file: '3'}}}}",
        ],
        want: "services:\n  web:\n    image: a\n    logging:\n      driver: json-file\n      options:\n        max-file: \"3\"\n        max-size: 10m\n",
    },
    Case {
        name: "another logging driver replaces the options",
        files: &[
            "services: {web: {image: a, logging: {driver: json-file, options: {max-size: 10m}}}}",
            "services: {web: {logging: {driver: syslog, options: {tag: web}}}}",
        ],
        want: "services:\n  web:\n    image: a\n    logging:\n      driver: syslog\n      options:\n        tag: web\n",
    },
    Case {
        name: "depends_on merges by service, list and mapping forms",
        files: &[
            "services: {web: {image: a, depends_on: [db]}, db: {image: b}, cache: {image: c}}",
            "services: {web: {depends_on: {db: {condition: service_healthy}, cache: {condition: service_started}}}}",
        ],
        want: "services:\n  cache:\n    image: c\n  db:\n    image: b\n  web:\n    depends_on:\n      cache:\n        condition: service_started\n      db:\n        condition: service_healthy\n    image: a\n",
    },
    Case {
        name: "!reset removes what earlier files set",
        files: &[
            "services: {web: {image: a, ports: ['80:80'], environment: {A: '1', B: '2'}}, debug: {image: d}}",
            "services: {web: {ports: !reset [], environment: {B: !reset null}}, debug: !reset null}",
        ],
        want: "services:\n  web:\n    environment:\n      A: \"1\"\n    image: a\n",
    },
    Case {
        name: "!override replaces instead of merging",
        files: &[
            "services: {web: {image: a, environment: {A: '1'}, ports: ['80:80']}}",
            "services: {web: {environment: !override {B: '2'}, ports: !override ['8080:80']}}",
        ],
        want: "services:\n  web:\n    environment:\n      B: \"2\"\n    image: a\n    ports:\n      - mode: ingress\n        protocol: tcp\n        published: 8080\n        target: 80\n",
    },
    Case {
        name: "three files apply in order",
        files: &[
            "services: {web: {image: a:1, deploy: {replicas: 1}}}",
            "services: {web: {image: a:2, deploy: {replicas: 2}}}",
            "services: {web: {image: a:3}}",
        ],
        want: "services:\n  web:\n    deploy:\n      mode: replicated\n      replicas: 2\n    image: a:3\n",
    },
    Case {
        name: "top-level objects and x- fields merge",
        files: &[
            "services: {web: {image: a}}\nvolumes: {data: {driver: local, labels: [a=1]}}\nx-meta: {owner: dev, tier: web}",
            "volumes: {data: {labels: {b: '2'}}}\nx-meta: {owner: ops}",
        ],
        want: "services:\n  web:\n    image: a\nvolumes:\n  data:\n    driver: local\n    labels:\n      a: \"1\"\n      b: \"2\"\nx-meta:\n  owner: ops\n  tier: web\n",
    },
    Case {
        name: "a mistake in the override names the override file",
        files: &["services: {web: {image: a}}", "services:\n  web:\n    deploy:\n      replcas: 2\n"],
        want: "error: /stack/f1.yml:4:7: unknown key `replcas` in services.web.deploy; did you mean `replicas`?\n",
    },
    Case {
        name: "an override may supply the image a build-only base lacks",
        files: &["services: {web: {build: .}}", "services: {web: {image: registry.example.com/web:1}}"],
        want: "services:\n  web:\n    image: registry.example.com/web:1\n",
    },
];

#[test]
fn merge_table() {
    let mut failures = Vec::new();
    for case in CASES {
        let got = check(case.files);
        if got != case.want {
            failures.push(format!("{}\n--- want\n{}--- got\n{got}", case.name, case.want));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), CASES.len(), failures.join("\n"));
}
