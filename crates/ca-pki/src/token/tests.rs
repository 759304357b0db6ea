//! Join token tests: the malformed-token table, round trips, pinning, role mapping and rotation.

use super::*;
use crate::{RootCa, TrustBundle};

/// A well-formed token text with a chosen digest and secret body.
fn text(digest: &str, secret: &str) -> String {
    format!("SHTKN-1-{digest}-{secret}")
}

fn good_digest() -> String {
    "0".repeat(49) + "1"
}

fn good_secret() -> String {
    "a".repeat(25)
}

/// The one place the parser is called: each input must fail with exactly this message.
fn check_refused(input: &str, expected: &str) {
    match input.parse::<JoinToken>() {
        Ok(token) => panic!("{input:?} parsed as {token:?}, expected error {expected:?}"),
        Err(err) => assert_eq!(err.to_string(), expected, "input {input:?}"),
    }
}

#[test]
fn malformed_tokens_have_precise_messages() {
    let d = good_digest();
    let s = good_secret();
    let table: Vec<(String, &str)> = vec![
        (String::new(), "join token is empty: pass the SHTKN-1-… token printed by `shoal-manager init`"),
        (
            format!(" {}\n", text(&d, &s)),
            "join token has leading or trailing whitespace: copy it without spaces or line breaks",
        ),
        (
            format!("SWMTKN-1-{d}-{s}"),
            "join token must start with SHTKN-, found \"SWMTKN\": this is not a shoal join token",
        ),
        (
            format!("shtkn-1-{d}-{s}"),
            "join token must start with SHTKN-, found \"shtkn\": this is not a shoal join token",
        ),
        ("SHTKN".to_owned(), "join token ends after SHTKN: expected SHTKN-1-<digest>-<secret>"),
        (format!("SHTKN-2-{d}-{s}"), "join token version \"2\" is not supported: this build reads version 1"),
        (
            format!("SHTKN-1-{d}"),
            "join token has 3 dash-separated parts, expected 4 (SHTKN-1-<digest>-<secret>): the token was cut or altered",
        ),
        (
            format!("SHTKN-1-{d}-{s}-extra"),
            "join token has 5 dash-separated parts, expected 4 (SHTKN-1-<digest>-<secret>): the token was cut or altered",
        ),
        (text(&d[1..], &s), "join token digest is 49 characters long, expected 50: the token was cut or altered"),
        (
            text(&format!("{d}0"), &s),
            "join token digest is 51 characters long, expected 50: the token was cut or altered",
        ),
        (text(&format!("{}A", &d[1..]), &s), "join token digest has 'A' at position 50: only 0-9 and a-z are allowed"),
        (
            text(&format!("0{}", &d[..49].replacen('0', "_", 1)), &s),
            "join token digest has '_' at position 2: only 0-9 and a-z are allowed",
        ),
        (text(&"z".repeat(50), &s), "join token digest is larger than a SHA-256 value: the token was altered"),
        (text(&d, &s[..24]), "join token secret is 24 characters long, expected 25: the token was cut or altered"),
        (text(&d, ""), "join token secret is 0 characters long, expected 25: the token was cut or altered"),
        (text(&d, &format!("{}é", &s[..24])), "join token secret has 'é' at position 25: only 0-9 and a-z are allowed"),
        (text(&d, &"z".repeat(25)), "join token secret is larger than 128 bits: the token was altered"),
    ];
    assert!(table.len() >= 10);
    for (input, expected) in &table {
        check_refused(input, expected);
    }
    // Each malformation has its own message.
    let mut messages: Vec<&str> = table.iter().map(|(_, m)| *m).collect();
    messages.sort_unstable();
    messages.dedup();
    assert_eq!(messages.len(), table.len());
}

#[test]
fn tokens_round_trip_at_fixed_length() {
    let token: JoinToken = text(&good_digest(), &good_secret()).parse().expect("valid");
    let printed = token.to_string();
    assert_eq!(printed, text(&good_digest(), &good_secret()));
    assert_eq!(printed.len(), 8 + 50 + 1 + 25);
    assert_eq!(printed.parse::<JoinToken>().expect("round trip"), token);
    assert!(!format!("{token:?}").contains(&good_secret()));
}

fn bundle() -> TrustBundle {
    let root = RootCa::generate(time::OffsetDateTime::now_utc()).expect("root");
    TrustBundle::from_pem(root.cert_pem()).expect("bundle")
}

#[test]
fn generated_tokens_map_to_roles_and_rotate() {
    let trust = bundle();
    let mut tokens = JoinTokens::generate(&trust).expect("tokens");
    let worker = tokens.token(Role::Worker);
    let manager = tokens.token(Role::Manager);
    assert_ne!(worker, manager);
    for token in [&worker, &manager] {
        let reparsed: JoinToken = token.to_string().parse().expect("parse");
        assert_eq!(&reparsed, token);
    }
    assert_eq!(tokens.role_for(&worker).expect("worker"), Role::Worker);
    assert_eq!(tokens.role_for(&manager).expect("manager"), Role::Manager);

    tokens.rotate(Role::Worker).expect("rotate");
    let err = tokens.role_for(&worker).expect_err("rotated token");
    assert!(matches!(err, JoinError::InvalidSecret), "{err}");
    assert_eq!(
        err.to_string(),
        "join token secret is not valid for this cluster (it may have been rotated): ask a manager for a current token"
    );
    assert_eq!(tokens.role_for(&manager).expect("manager unchanged"), Role::Manager);
    assert_eq!(tokens.role_for(&tokens.token(Role::Worker)).expect("new worker token"), Role::Worker);

    let rebuilt = JoinTokens::from_tokens(&tokens.token(Role::Worker), &tokens.token(Role::Manager)).expect("rebuild");
    assert_eq!(rebuilt, tokens);
}

#[test]
fn tokens_for_another_root_are_refused() {
    let tokens = JoinTokens::generate(&bundle()).expect("tokens");
    let mut other = tokens.clone();
    other.set_root_ca(&bundle());
    let err = other.role_for(&tokens.token(Role::Manager)).expect_err("other root");
    assert!(matches!(err, JoinError::WrongRootCa), "{err}");
    let mixed = JoinTokens::from_tokens(&tokens.token(Role::Worker), &other.token(Role::Manager));
    assert!(matches!(mixed, Err(JoinError::MixedRoots)));
}

#[test]
fn verify_root_ca_pins_the_bundle() {
    let trust = bundle();
    let token = JoinTokens::generate(&trust).expect("tokens").token(Role::Worker);
    let pinned = token.verify_root_ca(trust.pem()).expect("matching bundle");
    assert_eq!(pinned, trust);
    let err = token.verify_root_ca(bundle().pem()).expect_err("another root");
    assert_eq!(err, TokenError::RootCaMismatch);
    // The token pins the certificate, not its line endings: the same root written otherwise is
    // still that root, and what is trusted is the root as the token knows it.
    let rewrapped = trust.pem().replacen("-----\n", "-----\r\n", 1);
    assert_eq!(token.verify_root_ca(&rewrapped), Ok(trust.clone()));
    // One changed byte of the certificate is enough to refuse it.
    let body = trust.pem().find("-----\n").expect("header") + 6 + 40;
    let mut altered = trust.pem().to_owned().into_bytes();
    altered[body] = if altered[body] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("text");
    assert_eq!(token.verify_root_ca(&altered), Err(TokenError::RootCaMismatch));
}

#[test]
fn during_a_root_rotation_the_token_pins_its_own_root_alone() {
    let now = time::OffsetDateTime::now_utc();
    let mut ca = crate::ClusterCa::new(RootCa::generate(now).expect("root"));
    let old = ca.trust_bundle();
    let token = JoinTokens::generate(&old).expect("tokens").token(Role::Worker);
    ca.start_rotation(now).expect("start");
    let both = ca.trust_bundle();
    assert_ne!(both.pem(), old.pem());
    // The manager serves both roots; the token's root is found among them and pinned alone.
    assert_eq!(token.verify_root_ca(both.pem()).expect("old root among the served"), old);
    // A bundle of someone else's roots, even with two of them, does not verify.
    let mut foreign = crate::ClusterCa::new(RootCa::generate(now).expect("root"));
    foreign.start_rotation(now).expect("start");
    assert_eq!(token.verify_root_ca(foreign.trust_bundle().pem()), Err(TokenError::RootCaMismatch));
    // Once the rotation completes, tokens pinned to the new root verify the new bundle only.
    ca.complete_rotation().expect("complete");
    let mut tokens = JoinTokens::generate(&old).expect("tokens");
    tokens.set_root_ca(&ca.trust_bundle());
    assert_eq!(tokens.token(Role::Worker).verify_root_ca(ca.trust_bundle().pem()).expect("new"), ca.trust_bundle());
    assert_eq!(token.verify_root_ca(ca.trust_bundle().pem()), Err(TokenError::RootCaMismatch));
}
