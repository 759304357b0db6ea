//! Shoal's xfrm netlink messages against this kernel, in a namespace of their own: outbound
//! policies (encrypt through an SPI, or block) are added, read back, switched to another SPI in
//! place and deleted; an SA is added, read back and deleted where the kernel has ESP and AES-GCM
//! (run by hand in a VM of the harness so far: the test binary copied there), and refused with the
//! reason where it has not (this host: no `esp4`), never half made.

// A test: it says which kernel it found, next to its own output.
#![allow(clippy::print_stderr)]

use std::net::Ipv4Addr;

use shoal_overlay::xfrm::{Policy, PolicyAction, Sa, SaId, XfrmSocket};
use shoal_testkit::privileged::{self, Need};
use shoal_testkit::{Cluster, in_netns};

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);

#[test]
fn policies_and_sas_round_trip_in_a_namespace() {
    if !privileged::require("xfrm policies_and_sas_round_trip_in_a_namespace", &[Need::Root, Need::Command("ip")]) {
        return;
    }
    // The kernel has ESP when its module loads (or is built in); this host's has not, the VMs'
    // has.
    let _ = std::process::Command::new("modprobe").args(["-q", "esp4"]).status();
    let has_esp = std::path::Path::new("/sys/module/esp4").exists();
    let cluster = Cluster::new(1).expect("cluster");
    let netns = cluster.node(1).expect("node").netns.clone();
    in_netns(&netns, move || {
        let mut xfrm = XfrmSocket::open().expect("open NETLINK_XFRM");
        assert!(xfrm.policies().expect("dump").is_empty(), "a fresh namespace has no policy of ours");
        let block = Policy { src: None, dst: None, dport: 4789, priority: 200, action: PolicyAction::Block };
        let to_peer = Policy {
            src: Some(LOCAL),
            dst: Some(PEER),
            dport: 4789,
            priority: 100,
            action: PolicyAction::Encrypt { spi: 0x0100_0001 },
        };
        xfrm.set_policy(&block, false).expect("add the block policy");
        xfrm.set_policy(&to_peer, false).expect("add the peer's policy");
        let err = xfrm.set_policy(&to_peer, false).expect_err("added twice");
        assert!(err.to_string().contains("File exists"), "{err}");
        let mut listed = xfrm.policies().expect("dump");
        listed.sort_by_key(|p| p.priority);
        assert_eq!(listed, [to_peer, block]);

        let rotated = Policy { action: PolicyAction::Encrypt { spi: 0x0100_0002 }, ..to_peer };
        xfrm.set_policy(&rotated, true).expect("switch the SPI in place");
        assert!(xfrm.policies().expect("dump").contains(&rotated));
        xfrm.delete_policy(&rotated).expect("delete");
        xfrm.delete_policy(&block).expect("delete");
        assert!(xfrm.policies().expect("dump").is_empty());

        assert_eq!(xfrm.probe_esp().expect("probe"), has_esp, "the probe tells a kernel with ESP from one without");
        assert!(xfrm.sas().expect("dump").is_empty(), "the probe leaves nothing behind");
        let sa = Sa { src: LOCAL, dst: PEER, spi: 0x0100_0001, key: [0x5a; 16], salt: [1, 2, 3, 4] };
        match xfrm.add_sa(&sa) {
            Ok(()) => {
                assert!(has_esp, "an SA was made although esp4 cannot be loaded");
                eprintln!("--- this kernel has ESP: the SA was added, read back and deleted");
                let id = SaId { src: LOCAL, dst: PEER, spi: sa.spi };
                assert_eq!(xfrm.sas().expect("dump"), [id]);
                xfrm.delete_sa(id).expect("delete");
                assert!(xfrm.sas().expect("dump").is_empty());
            }
            Err(err) => {
                assert!(!has_esp, "esp4 is loaded, yet the SA was refused: {err}");
                eprintln!("--- this kernel has no ESP: {err}");
                assert!(err.no_esp(), "an SA is refused only for want of ESP here: {err}");
                assert!(err.to_string().contains("this kernel has no ESP (esp4)"), "{err}");
                assert!(xfrm.sas().expect("dump").is_empty(), "nothing half made");
            }
        }
    })
    .expect("enter the namespace");
}
