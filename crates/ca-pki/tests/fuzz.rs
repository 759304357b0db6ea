//! Fuzz tests of what this crate reads from outside: join tokens and unlock keys (typed or
//! passed by people and scripts), wrapped data keys (from disk) and certificate signing requests
//! (from joining nodes, over the network). Each checks its seeds round-trip, then runs mutants for
//! `SHOAL_FUZZ_SECS` (default 2 s) on the shared engine (`tests/fuzz-engine/engine.rs` at the
//! workspace root, which describes the settings). Everything here is public API: no hidden entry
//! point is needed.

#[path = "../../../tests/fuzz-engine/engine.rs"]
mod fuzz_engine;

use shoal_ca_pki::{
    ClusterCa, DEFAULT_NODE_VALIDITY, DataKey, JoinToken, JoinTokens, NodeCredentials, NodeIdentity, NodeKey, Role,
    RootCa, UnlockKey,
};
use time::OffsetDateTime;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn new_ca(now: OffsetDateTime) -> ClusterCa {
    ClusterCa::new(RootCa::generate(now).expect("a root CA"))
}

#[test]
fn fuzz_join_token() {
    let ca = new_ca(OffsetDateTime::now_utc());
    let trust = ca.trust_bundle();
    let tokens = JoinTokens::generate(&trust).expect("join tokens");
    let mut seeds = Vec::new();
    for role in [Role::Worker, Role::Manager] {
        let text = tokens.token(role).to_string();
        let token: JoinToken = text.parse().unwrap_or_else(|e| panic!("the {role:?} token does not parse: {e}"));
        assert_eq!(token, tokens.token(role), "parse(print(token)) != token");
        assert_eq!(tokens.role_for(&token).expect("the token is valid"), role);
        token.verify_root_ca(trust.pem()).expect("the token pins this root CA");
        seeds.push(text.into_bytes());
    }
    // The smallest token: every digit zero.
    let zeros = format!("SHTKN-1-{}-{}", "0".repeat(50), "0".repeat(25));
    assert_eq!(zeros.parse::<JoinToken>().expect("all zeros is a token").to_string(), zeros);
    seeds.push(zeros.into_bytes());
    let tokens_for_mutation: &[&[u8]] = &[b"SHTKN", b"-", b"1", b"z", b"0", b"SHTKN-1-"];
    fuzz_engine::Target::new("join_token", seeds).tokens(tokens_for_mutation).run(|input| {
        let text = String::from_utf8_lossy(input);
        match text.parse::<JoinToken>() {
            Ok(token) => {
                // The format is fixed-width and canonical: what parses prints back unchanged.
                assert_eq!(token.to_string(), text, "a token does not print as the text it was read from");
                let _ = tokens.role_for(&token);
                let _ = token.verify_root_ca(trust.pem());
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    });
}

#[test]
fn fuzz_unlock_key() {
    let mut seeds = Vec::new();
    for _ in 0..2 {
        let key = UnlockKey::generate().expect("an unlock key");
        let text = key.to_string();
        assert_eq!(text.parse::<UnlockKey>().expect("the key parses"), key, "parse(print(key)) != key");
        seeds.push(text.into_bytes());
    }
    let tokens: &[&[u8]] = &[b"SHKEY", b"-", b"1", b"z", b"0"];
    fuzz_engine::Target::new("unlock_key", seeds).tokens(tokens).run(|input| {
        let text = String::from_utf8_lossy(input);
        match text.parse::<UnlockKey>() {
            Ok(key) => {
                assert_eq!(key.to_string(), text, "a key does not print as the text it was read from");
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    });
}

#[test]
fn fuzz_wrapped_data_key() {
    let kek = UnlockKey::generate().expect("an unlock key");
    let mut seeds = Vec::new();
    for _ in 0..2 {
        let key = DataKey::generate().expect("a data key");
        let wrapped = key.wrap(&kek).expect("the key wraps");
        assert_eq!(DataKey::unwrap(&wrapped, &kek).expect("the key unwraps"), key, "unwrap(wrap(key)) != key");
        seeds.push(wrapped);
    }
    fuzz_engine::Target::new("wrapped_data_key", seeds).run(|input| match DataKey::unwrap(input, &kek) {
        Ok(_) => true,
        Err(e) => {
            let _ = e.to_string();
            false
        }
    });
}

/// The CA signs certificate signing requests that joining nodes send. Inputs are the DER of a
/// request, wrapped in PEM as a node sends it.
#[test]
fn fuzz_csr() {
    let now = OffsetDateTime::now_utc();
    let ca = new_ca(now);
    let identity = NodeIdentity { node_id: "node-1".into(), role: Role::Worker, cluster_id: "cluster-1".into() };
    let mut seeds = Vec::new();
    for _ in 0..2 {
        let key = NodeKey::generate().expect("a node key");
        let der = pem_body(&key.csr_pem().expect("a CSR"));
        let chain = ca.issue(&pem(&der), &identity, DEFAULT_NODE_VALIDITY, now).expect("the CA signs the CSR");
        let credentials = NodeCredentials::new(&chain, key).expect("the chain matches the node's key");
        assert_eq!(credentials.identity(), &identity, "the certificate names the identity the CA chose");
        seeds.push(der);
    }
    fuzz_engine::Target::new("csr", seeds).run(|der| {
        match ca.issue(&pem(der), &identity, DEFAULT_NODE_VALIDITY, now) {
            Ok(_) => true,
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    });
}

/// The bytes inside a PEM block.
fn pem_body(pem: &str) -> Vec<u8> {
    let text: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let Some(value) = BASE64.iter().position(|b| *b == c) else { continue };
        acc = (acc << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// `der` as a PEM certificate signing request.
fn pem(der: &[u8]) -> String {
    let mut body = String::new();
    for chunk in der.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                body.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                body.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE REQUEST-----\n");
    out
}
