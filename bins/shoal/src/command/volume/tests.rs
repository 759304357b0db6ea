//! Volumes as text: the list over nodes, docker's inspect JSON with the node, prune's report.

use std::time::{Duration, SystemTime};

use super::*;

fn volume(name: &str, tasks: &[&str]) -> v1::NodeVolume {
    v1::NodeVolume {
        name: name.into(),
        driver: "local".into(),
        options: [("type".to_owned(), "nfs".to_owned())].into_iter().collect(),
        labels: [("team".to_owned(), "web".to_owned())].into_iter().collect(),
        created_at: Some(shoal_api::to_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))),
        mountpoint: format!("/var/lib/shoal/volumes/{name}/_data"),
        task_ids: tasks.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn nodes() -> Vec<v1::NodeVolumes> {
    vec![
        v1::NodeVolumes {
            node_id: "w2id".into(),
            hostname: "worker-2".into(),
            volumes: vec![volume("data", &[]), volume("cache", &["t1"])],
        },
        v1::NodeVolumes { node_id: "w1id".into(), hostname: "worker-1".into(), volumes: vec![volume("data", &["t2"])] },
        v1::NodeVolumes { node_id: "m1id".into(), hostname: String::new(), volumes: vec![] },
    ]
}

#[test]
fn ls_lists_every_node_by_name() {
    assert_eq!(
        volumes_table(&nodes()),
        "DRIVER   VOLUME NAME   NODE\n\
         local    cache         worker-2\n\
         local    data          worker-1\n\
         local    data          worker-2\n"
    );
    let rows = volume_rows(&nodes());
    assert_eq!(rows[0], ["local", "cache", "worker-2", "w2id", "/var/lib/shoal/volumes/cache/_data", "team=web", "t1"]);
    assert_eq!(rows[0].len(), VOLUME_COLUMNS.len());
    let nameless =
        [v1::NodeVolumes { node_id: "m1id".into(), hostname: String::new(), volumes: vec![volume("x", &[])] }];
    assert_eq!(volume_rows(&nameless)[0][2], "m1id", "a node without a hostname shows its ID");
}

#[test]
fn filters_keep_the_volumes_that_match() {
    /// Filters, and the (volume, node) pairs they keep.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case<'_>] = &[
        (&["dangling=true"], &[("data", "worker-2")]),
        (&["dangling=0"], &[("cache", "worker-2"), ("data", "worker-1")]),
        (&["name=ach"], &[("cache", "worker-2")]),
        (&["driver=local", "label=team=web", "name=data"], &[("data", "worker-1"), ("data", "worker-2")]),
        (&["label=team=db"], &[]),
    ];
    for (given, expected) in cases {
        let values: Vec<String> = given.iter().map(|v| (*v).to_owned()).collect();
        let filters = Filters::parse(&values, VOLUME_KEYS).expect("filters");
        let mut listed = nodes();
        for node in &mut listed {
            node.volumes.retain(|v| volume_matches(v, &filters));
        }
        let kept: Vec<(String, String)> =
            volume_rows(&listed).into_iter().map(|r| (r[1].clone(), r[2].clone())).collect();
        let expected: Vec<(String, String)> =
            expected.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        assert_eq!(kept, expected, "{given:?}");
    }
    let err = Filters::parse(&["dangling=maybe".to_owned()], VOLUME_KEYS).expect_err("bad value");
    assert_eq!(err, "invalid filter \"dangling=maybe\": dangling is true, false, 1 or 0");
}

#[test]
fn inspect_is_dockers_json_with_the_node() {
    let listed = nodes();
    assert_eq!(
        volume_json(&listed[0], &listed[0].volumes[1]),
        serde_json::json!({
            "CreatedAt": "2027-01-15T08:00:00Z",
            "Driver": "local",
            "Labels": {"team": "web"},
            "Mountpoint": "/var/lib/shoal/volumes/cache/_data",
            "Name": "cache",
            "Options": {"type": "nfs"},
            "Scope": "local",
            "Node": "worker-2",
            "NodeID": "w2id",
            "Tasks": ["t1"],
        })
    );
}

#[test]
fn prune_reports_what_it_removed() {
    assert_eq!(pruned(&[]), "");
    assert_eq!(pruned(&["a".to_owned(), "b".to_owned()]), "Deleted Volumes:\na\nb\n");
}
