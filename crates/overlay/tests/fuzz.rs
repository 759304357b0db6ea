//! Fuzz test of the reader of the kernel's `NETLINK_XFRM` answers (SA and policy dumps, acks).
//! No kernel, socket or privilege is needed. The seeds are messages this crate writes, which have
//! the layout of the kernel's dump entries; they decode to what they were written from, then
//! mutants run for `SHOAL_FUZZ_SECS` (default 2 s) on the shared engine
//! (`tests/fuzz-engine/engine.rs` at the workspace root).

#[path = "../../../tests/fuzz-engine/engine.rs"]
mod fuzz_engine;

use std::net::Ipv4Addr;

use shoal_overlay::xfrm::{self, Policy, PolicyAction, Reply, Sa, SaId};

const SEQ: u32 = 7;

#[test]
fn fuzz_xfrm_netlink() {
    let (src, dst) = (Ipv4Addr::new(192, 0, 2, 11), Ipv4Addr::new(192, 0, 2, 12));
    let sa = Sa { src, dst, spi: 0x1234_5678, key: [7; 16], salt: [1, 2, 3, 4] };
    let to_peer = Policy {
        src: Some(src),
        dst: Some(dst),
        dport: 4789,
        priority: 100,
        action: PolicyAction::Encrypt { spi: 0x1234_5678 },
    };
    let block = Policy { src: None, dst: None, dport: 4789, priority: 200, action: PolicyAction::Block };
    let seeds = [
        (xfrm::new_sa(&sa, SEQ), Reply::Sa(SaId { src, dst, spi: sa.spi })),
        (xfrm::set_policy(&to_peer, false, SEQ), Reply::Policy(to_peer)),
        (xfrm::set_policy(&block, false, SEQ), Reply::Policy(block)),
    ];
    let mut datagram = Vec::new();
    for (bytes, reply) in &seeds {
        assert_eq!(xfrm::parse(bytes, SEQ), Ok(vec![reply.clone()]), "a seed decodes to what it was written from");
        datagram.extend_from_slice(bytes);
    }
    assert_eq!(xfrm::parse(&datagram, SEQ).map(|r| r.len()), Ok(3), "several messages in one datagram");
    let mut inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(bytes, _)| bytes).collect();
    inputs.push(datagram);
    fuzz_engine::Target::new("xfrm_netlink", inputs).run(|input| xfrm::parse(input, SEQ).is_ok());
}
