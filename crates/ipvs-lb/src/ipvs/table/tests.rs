//! The source-NAT table against this host's kernel (nf_tables, no IPVS needed): the kernel
//! takes the table, chain, rule and elements as encoded, `nft` shows the rule, and the set reads
//! back. (The sysctl and the masquerading itself need IPVS: `cargo xtask vm-test`.)

use std::process::Command;

use shoal_testkit::{Cluster, privileged};

use super::*;

fn nft_list(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "list", "table", "ip", TABLE])
        .output()
        .expect("run nft");
    assert!(out.status.success(), "nft list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_kernel_takes_the_table_and_the_set_reads_back() {
    if !privileged::require("the_kernel_takes_the_table_and_the_set_reads_back", privileged::NETNS) {
        return;
    }
    let cluster = Cluster::new(0).expect("build a namespace");
    let name = cluster.underlay_netns().to_owned();
    let mut snat = Snat::open(&Netns::named(&name)).expect("open");
    assert!(snat.keys().expect("no table yet").is_empty(), "no table: no source-NAT services");

    let a = ServiceKey::tcp("198.18.0.10".parse().expect("addr"), 81);
    let b = ServiceKey::udp("198.18.0.10".parse().expect("addr"), 53);
    snat.apply(&setup_ops()).expect("set up");
    snat.apply(&setup_ops()).expect("setting up again keeps the table and replaces the rule");
    snat.apply(&[Op::NewKeys { set: SET.to_owned(), keys: vec![a, b] }]).expect("add");
    assert_eq!(snat.keys().expect("keys"), BTreeSet::from([a, b]));

    let listing = nft_list(&name);
    assert!(listing.contains("type nat hook postrouting priority srcnat; policy accept;"), "{listing}");
    assert!(
        listing.contains("ct original ip daddr . meta l4proto . ct original proto-dst @snat_services masquerade"),
        "{listing}"
    );
    assert_eq!(listing.matches("masquerade").count(), 1, "one rule: {listing}");
    assert!(listing.contains("198.18.0.10 . tcp . 81"), "{listing}");

    snat.remove(vec![b]).expect("remove");
    assert_eq!(snat.keys().expect("keys"), BTreeSet::from([a]));
    let err = snat.remove(vec![b]).expect_err("not in the set");
    assert!(err.contains("snat_services elements of service 198.18.0.10:53/udp"), "{err}");
}
