//! Fuzz tests of the decoders of the kernel's netlink answers: IPVS generic-netlink messages and
//! nf_tables answers and set-element dumps. No kernel, socket or privilege is needed. Each
//! decodes its seeds to what they were written from, then runs mutants for `SHOAL_FUZZ_SECS`
//! (default 2 s) on the shared engine (`tests/fuzz-engine/engine.rs` at the workspace root, which
//! describes the settings).

#[path = "../../../tests/fuzz-engine/engine.rs"]
mod fuzz_engine;

use shoal_ipvs_lb::fuzz;

fn assert_seeds_decode(what: &str, seeds: &[fuzz::Seed], decode: impl Fn(&[u8]) -> Result<fuzz::Decoded, String>) {
    for seed in seeds {
        let decoded = decode(&seed.bytes).unwrap_or_else(|e| panic!("{what}: a seed does not decode: {e}"));
        assert_eq!(decoded, seed.decoded, "{what}: a seed decodes to something else than it was written from");
    }
}

#[test]
fn fuzz_ipvs_netlink() {
    let seeds = fuzz::ipvs_seeds();
    assert_seeds_decode("IPVS message", &seeds, fuzz::decode_ipvs);
    let inputs = seeds.into_iter().map(|s| s.bytes).collect();
    fuzz_engine::Target::new("ipvs_netlink", inputs).run(|input| fuzz::decode_ipvs(input).is_ok());
}

#[test]
fn fuzz_nft_netlink() {
    let seeds = fuzz::nft_seeds();
    assert_seeds_decode("nf_tables answer", &seeds, fuzz::decode_nft);
    let inputs = seeds.into_iter().map(|s| s.bytes).collect();
    fuzz_engine::Target::new("nft_netlink", inputs).run(|input| fuzz::decode_nft(input).is_ok());
}
