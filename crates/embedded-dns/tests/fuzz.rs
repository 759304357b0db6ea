//! Fuzz tests of the DNS messages the server reads from the network: containers' queries (raw
//! bytes in, the reply's bytes out, no sockets) and upstream servers' answers to forwarded
//! queries. Each checks what its seeds get, then runs mutants for `SHOAL_FUZZ_SECS` (default
//! 2 s) on the shared engine (`tests/fuzz-engine/engine.rs` at the workspace root, which
//! describes the settings).

#[path = "../../../tests/fuzz-engine/engine.rs"]
mod fuzz_engine;

use shoal_embedded_dns::fuzz::{self, DnsFuzzer, Outcome};

/// Labels and names of the fuzz table, for mutations to splice into queries.
const TOKENS: &[&[u8]] =
    &[b"\x03web", b"\x03big", b"\x05tasks", b"\x05shoal\x08internal\x00", b"\x07in-addr\x04arpa\x00"];

#[test]
fn fuzz_dns_query() {
    let dns = DnsFuzzer::new();
    let seeds = fuzz::query_seeds();
    for seed in &seeds {
        assert_eq!(fuzz::summary(&dns.query(&seed.bytes, seed.tcp)), seed.outcome, "query {:02x?}", seed.bytes);
    }
    let inputs = seeds.into_iter().map(|s| s.bytes).collect();
    fuzz_engine::Target::new("dns_query", inputs).max_len(1024).tokens(TOKENS).run(|input| {
        let udp = dns.query(input, false);
        let tcp = dns.query(input, true);
        udp != Outcome::Drop || tcp != Outcome::Drop
    });
}

#[test]
fn fuzz_dns_upstream_answer() {
    let dns = DnsFuzzer::new();
    let seeds = fuzz::upstream_answer_seeds();
    for seed in &seeds {
        let outcome = dns.upstream_answer(&seed.bytes, seed.tcp);
        assert_eq!(fuzz::summary(&outcome), seed.outcome, "answer {:02x?}", seed.bytes);
    }
    let inputs = seeds.into_iter().map(|s| s.bytes).collect();
    fuzz_engine::Target::new("dns_upstream_answer", inputs).run(|input| {
        let udp = dns.upstream_answer(input, false);
        let tcp = dns.upstream_answer(input, true);
        udp != Outcome::Drop || tcp != Outcome::Drop
    });
}

/// Found by `fuzz_dns_upstream_answer`: an upstream answer whose authority name is a pointer to
/// offset 0, the header's ID. The bytes parse with the upstream's ID; rewritten with the
/// client's they did not, and the client got an answer it could not read.
#[test]
fn an_answer_compressed_into_its_own_header_reaches_the_client_readable() {
    let hex = "0033818300010000000100000b7767c2076578616d706c6503008000000000b700c000010010000007e800000e10\
               1000120001000002580026026e73c0100a686f73746d6173740c000100ff0000012c00c2c0000250c00c000100100\
               00007e800000e10000002646d6173740c000100010000012c000400003c2004c00002512eb0a608c09a531f";
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    let dns = DnsFuzzer::new();
    // Both check that the reply parses and carries the client's ID.
    dns.upstream_answer(&bytes, false);
    dns.upstream_answer(&bytes, true);
}
