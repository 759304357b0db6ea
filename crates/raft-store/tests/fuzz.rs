//! Fuzz tests of the decoders of bytes from other members and from disk: messages, log records,
//! segment files and snapshot files. Each decodes its seeds back to the values they were encoded
//! from, then runs mutants for `SHOAL_FUZZ_SECS` (default 2 s) on the shared engine
//! (`tests/fuzz-engine/engine.rs` at the workspace root, which describes the settings).

#[path = "../../../tests/fuzz-engine/engine.rs"]
mod fuzz_engine;

use shoal_raft_store::MessageKind;
use shoal_raft_store::fuzz;

/// The first byte of a message input picks its decoder: the kind (low bits) and whether it is
/// the answer (high bit).
fn selector(kind: MessageKind, answer: bool) -> u8 {
    let index = MessageKind::ALL.iter().position(|k| *k == kind).expect("every kind is in MessageKind::ALL");
    let high = if answer { 0x80 } else { 0 };
    index as u8 | high
}

fn selected(byte: u8) -> (MessageKind, bool) {
    (MessageKind::ALL[usize::from(byte & 0x7f) % MessageKind::ALL.len()], byte & 0x80 != 0)
}

/// decode(encode(x)) == x for every seed, and its re-encoding is the seed's bytes.
fn assert_round_trip(what: &str, decoded: Result<fuzz::Decoded, String>, seed: &fuzz::Seed) {
    let decoded = decoded.unwrap_or_else(|e| panic!("{what}: a seed does not decode: {e}"));
    assert_eq!(decoded.value, seed.value, "{what}: decoding a seed gives another value");
    assert_eq!(decoded.encoded, seed.bytes, "{what}: encoding the decoded seed gives other bytes");
}

#[test]
fn fuzz_raft_codec_message() {
    let seeds = fuzz::message_seeds();
    for s in &seeds {
        let what = format!("{} {}", s.kind, if s.answer { "answer" } else { "request" });
        assert_round_trip(&what, fuzz::decode_message(s.kind, s.answer, &s.seed.bytes), &s.seed);
    }
    let inputs = seeds
        .iter()
        .map(|s| {
            let mut input = vec![selector(s.kind, s.answer)];
            input.extend_from_slice(&s.seed.bytes);
            input
        })
        .collect();
    fuzz_engine::Target::new("raft_codec_message", inputs).run(|input| {
        let Some((&first, bytes)) = input.split_first() else { return false };
        let (kind, answer) = selected(first);
        if !answer && matches!(kind, MessageKind::ReadIndex | MessageKind::Status) {
            // These requests carry nothing to read: not worth keeping as a mutation base.
            return false;
        }
        fuzz::decode_message(kind, answer, bytes).is_ok()
    });
}

#[test]
fn fuzz_raft_log_record() {
    let seeds = fuzz::log_record_seeds();
    for seed in &seeds {
        assert_round_trip("log record", fuzz::decode_log_record(&seed.bytes), seed);
    }
    let inputs = seeds.into_iter().map(|s| s.bytes).collect();
    fuzz_engine::Target::new("raft_log_record", inputs).run(|input| fuzz::decode_log_record(input).is_ok());
}

#[test]
fn fuzz_raft_log_segment() {
    let seeds = fuzz::log_segment_seeds();
    for seed in &seeds {
        for is_last in [false, true] {
            let decoded = fuzz::decode_log_segment(&seed.bytes, fuzz::SEGMENT_FIRST_INDEX, is_last);
            assert_round_trip("log segment", decoded, seed);
        }
    }
    let inputs = seeds.into_iter().map(|s| s.bytes).collect();
    fuzz_engine::Target::new("raft_log_segment", inputs).run(|input| {
        // The same bytes as a sealed segment (damage refused) and as the last one (torn tail cut).
        let middle = fuzz::decode_log_segment(input, fuzz::SEGMENT_FIRST_INDEX, false);
        let last = fuzz::decode_log_segment(input, fuzz::SEGMENT_FIRST_INDEX, true);
        if let Ok(middle) = &middle {
            // Whatever reads as a sealed segment reads the same as the last one.
            assert_eq!(last.as_ref().ok(), Some(middle), "a whole segment reads differently as the last one");
        }
        middle.is_ok() || last.is_ok()
    });
}

#[test]
fn fuzz_raft_snapshot_file() {
    let seeds = fuzz::snapshot_file_seeds();
    for seed in &seeds {
        assert_round_trip("snapshot file", fuzz::decode_snapshot_file(&seed.bytes), seed);
    }
    let inputs = seeds.into_iter().map(|s| s.bytes).collect();
    fuzz_engine::Target::new("raft_snapshot_file", inputs).run(|input| fuzz::decode_snapshot_file(input).is_ok());
}
