//! Tests of the binary encoding: every type round-trips, every truncation and stray byte is an
//! error with an offset (never a panic or a huge allocation), and the encoding is compact.

use std::alloc::GlobalAlloc;
use std::alloc::Layout;
use std::alloc::System;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::*;

/// The system allocator, noting the largest single allocation each thread asks for, so a test
/// can check what decoding reserves.
#[derive(Debug)]
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed to the system allocator unchanged; noting a size allocates nothing.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` or `System.realloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from the system allocator with `layout`; the caller's contract holds.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> usize {
    LARGEST.with(|l| l.set(0));
    let _ = std::hint::black_box(f());
    LARGEST.with(Cell::get)
}

fn leader(term: u64, node: u64) -> LeaderId<u64, NodeId> {
    LeaderId { term, node_id: node }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(leader(term, 2), index)
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes: BTreeMap<NodeId, BasicNode> =
        [(1, BasicNode::new("10.0.0.1:2377")), (2, BasicNode::new("10.0.0.2:2377")), (3, BasicNode::new("n3"))]
            .into_iter()
            .collect();
    Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([1, 2, 3])], nodes).expect("valid membership")
}

fn txn() -> Txn {
    Txn::new()
        .when(Compare::mod_revision("/a", 300))
        .when(Compare::exists(vec![0u8, 255]))
        .when(Compare::missing(""))
        .and_then(Op::put("/a", vec![7u8; 400]))
        .and_then(Op::delete("/b"))
        .or_else(Op::put("", ""))
}

fn entries() -> Vec<Entry> {
    vec![
        Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
        Entry { log_id: log_id(1, 2), payload: EntryPayload::Membership(membership()) },
        Entry { log_id: log_id(u64::MAX, u64::MAX), payload: EntryPayload::Normal(Command { txn: txn() }) },
    ]
}

fn committed_vote(term: u64, node: u64) -> Vote {
    let mut v = Vote::new(term, node);
    v.committed = true;
    v
}

/// Encodes, decodes, and checks the value and that every shorter prefix and a stray byte fail.
fn round_trip<T: Encode + Decode + std::fmt::Debug>(value: &T) -> Vec<u8> {
    let bytes = to_vec(value);
    let back: T = from_slice(&bytes).expect("decodes");
    assert_eq!(format!("{back:?}"), format!("{value:?}"));
    for n in 0..bytes.len() {
        assert!(from_slice::<T>(&bytes[..n]).is_err(), "prefix of {n} of {} bytes decoded", bytes.len());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(from_slice::<T>(&longer).unwrap_err(), DecodeError::Trailing { at: bytes.len(), count: 1 });
    bytes
}

#[test]
fn every_type_round_trips_and_rejects_truncation_and_trailing_bytes() {
    for e in entries() {
        round_trip(&e);
    }
    round_trip(&txn());
    round_trip(&Txn::new());
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: committed_vote(3, 2),
        prev_log_id: Some(log_id(2, 9)),
        entries: entries(),
        leader_commit: None,
    };
    round_trip(&append);
    for resp in [
        AppendEntriesResponse::<TypeConfig>::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(3, 4))),
        AppendEntriesResponse::PartialSuccess(None),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(9, 3)),
    ] {
        round_trip(&resp);
    }
    let mut vote_req = VoteRequest::<TypeConfig>::new(Vote::new(4, 1), Some(log_id(3, 7)));
    round_trip(&vote_req);
    vote_req.leadership_transfer = true;
    round_trip(&vote_req);
    round_trip(&VoteResponse::<TypeConfig>::new(committed_vote(4, 1), None, true));
    round_trip(&SnapshotResponse::<TypeConfig>::new(Vote::new(1, 1)));
    round_trip(&TransferLeaderRequest::<TypeConfig>::new(committed_vote(6, 2), 3, Some(log_id(6, 40))));
    round_trip(&TransferLeaderRequest::<TypeConfig>::new(committed_vote(6, 2), 3, None));
    for resp in [
        Ok(()),
        Err(TransferLeaderError::<TypeConfig>::VoteChanged { expected: committed_vote(6, 2), actual: Vote::new(7, 3) }),
        Err(TransferLeaderError::LogNotFlushed { expected: Some(log_id(6, 40)), actual: None }),
    ] {
        round_trip(&resp);
    }
    round_trip(&SnapshotMeta {
        last_log_id: Some(log_id(5, 100)),
        last_membership: StoredMembership::new(Some(log_id(1, 2)), membership()),
    });
    // The empty membership of a member that has never been configured.
    round_trip(&SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default() });
    round_trip(&TxnOutcome { succeeded: false, revision: 1 << 40, deleted: 3 });
    round_trip(&KeyValue { key: b"k".to_vec(), value: vec![], create_revision: 1, mod_revision: 2, version: 3 });
}

#[test]
fn varints_cover_the_whole_range_and_reject_overlong_input() {
    for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
        let bytes = round_trip(&v);
        assert_eq!(bytes.len(), (64 - v.leading_zeros() as usize).div_ceil(7).max(1));
    }
    // Eleven continuation bytes, and a tenth byte with more than the 64th bit.
    assert_eq!(from_slice::<u64>(&[0xff; 11]).unwrap_err(), DecodeError::Varint { at: 0 });
    let mut too_big = vec![0xff; 9];
    too_big.push(0x02);
    assert_eq!(from_slice::<u64>(&too_big).unwrap_err(), DecodeError::Varint { at: 0 });
}

#[test]
fn a_length_beyond_the_input_fails_before_allocating() {
    // A put whose key claims u64::MAX bytes: refused at the length, with its offset.
    let mut bytes = vec![0u8];
    put_u64(&mut bytes, u64::MAX);
    assert_eq!(from_slice::<Op>(&bytes).unwrap_err(), DecodeError::Truncated { at: 1, what: "put key" });
    // A transaction claiming a billion compares in a few bytes.
    let mut bytes = Vec::new();
    put_u64(&mut bytes, 1 << 30);
    assert_eq!(from_slice::<Txn>(&bytes).unwrap_err(), DecodeError::Truncated { at: 0, what: "compares" });
}

#[test]
fn unknown_tags_and_invalid_values_name_the_offset() {
    let mut bytes = to_vec(&log_id(1, 1));
    let tag_at = bytes.len();
    bytes.push(7);
    assert_eq!(
        from_slice::<Entry>(&bytes).unwrap_err(),
        DecodeError::Tag { at: tag_at, what: "entry payload", tag: 7 }
    );
    // A membership whose voter has no node: openraft's own validation refuses it.
    let mut bytes = Vec::new();
    put_u64(&mut bytes, 1);
    put_u64(&mut bytes, 1);
    put_u64(&mut bytes, 5);
    put_u64(&mut bytes, 0);
    assert!(matches!(
        from_slice::<Membership<NodeId, BasicNode>>(&bytes),
        Err(DecodeError::Invalid { what: "membership", .. })
    ));
    // A boolean that is neither 0 nor 1.
    let mut bytes = to_vec(&Vote::new(1, 1));
    let last = bytes.len() - 1;
    bytes[last] = 2;
    assert_eq!(from_slice::<Vote>(&bytes).unwrap_err(), DecodeError::Tag { at: last, what: "vote committed", tag: 2 });
}

#[test]
fn messages_carry_the_version_and_a_json_sender_is_named() {
    let bytes = message(&TxnOutcome { succeeded: true, revision: 5, deleted: 0 });
    assert_eq!(bytes[0], MESSAGE_VERSION);
    assert_eq!(from_message::<TxnOutcome>(&bytes), Ok(TxnOutcome { succeeded: true, revision: 5, deleted: 0 }));
    let json = br#"{"succeeded":true,"revision":5,"deleted":0}"#;
    let err = from_message::<TxnOutcome>(json).unwrap_err();
    assert!(matches!(err, DecodeError::Version { found: b'{', .. }));
    assert!(err.to_string().contains("older Shoal"), "{err}");
    assert!(matches!(from_message::<TxnOutcome>(&[9, 1, 5, 0]), Err(DecodeError::Version { found: 9, hint: "" })));
    assert!(from_message::<TxnOutcome>(&[]).is_err());
}

#[test]
fn a_transaction_of_large_values_costs_little_more_than_its_bytes() {
    // The manager's batches: 500 puts of 400-byte values under ~40-byte keys.
    let mut t = Txn::new();
    for i in 0..500 {
        t = t.and_then(Op::put(format!("/tasks/{i:032}"), vec![0x5a; 400]));
    }
    let raw: usize =
        t.success.iter().map(|op| if let Op::Put { key, value } = op { key.len() + value.len() } else { 0 }).sum();
    let entry = Entry { log_id: log_id(1, 1), payload: EntryPayload::Normal(Command { txn: t.clone() }) };
    let binary = to_vec(&entry).len();
    let json = serde_json::to_vec(&entry).expect("json").len();
    assert!(binary <= raw + 500 * 4 + 16, "binary {binary} bytes for {raw} bytes of keys and values");
    assert!(binary * 2 < json, "binary {binary} bytes, json {json} bytes");
}

#[test]
fn a_crafted_list_length_reserves_no_more_than_a_small_bound() {
    // A message of 1 MiB claiming a million entries: the length check passes (one byte of input
    // per element), but a million entries in memory are a hundred times that. (The bytes after
    // the length are no valid entry, so only what was reserved up front is measured.)
    let n: usize = 1 << 20;
    let mut bytes = Vec::new();
    put_u64(&mut bytes, n as u64);
    bytes.resize(bytes.len() + n, 0xff);
    let entry_size = std::mem::size_of::<Entry>();
    assert!(entry_size >= 32, "entries are larger than a byte of input ({entry_size})");
    let largest = largest_allocation(|| get_items::<Entry>(&mut Reader::new(&bytes), "entries"));
    assert!(
        largest <= MAX_PREALLOCATED * entry_size,
        "decoding reserved {largest} bytes for a {} byte input",
        bytes.len()
    );

    tracing::info!("--- the same for the voter sets of a membership");
    let mut bytes = Vec::new();
    put_u64(&mut bytes, n as u64);
    bytes.resize(bytes.len() + n, 0xff);
    let largest = largest_allocation(|| from_slice::<Membership<NodeId, BasicNode>>(&bytes));
    assert!(largest <= MAX_PREALLOCATED * std::mem::size_of::<BTreeSet<NodeId>>(), "reserved {largest} bytes");
}

#[test]
fn a_list_longer_than_the_preallocation_decodes_whole() {
    let kvs: Vec<KeyValue> = (0..3 * MAX_PREALLOCATED as u64)
        .map(|i| KeyValue {
            key: i.to_be_bytes().to_vec(),
            value: vec![1],
            create_revision: i,
            mod_revision: i,
            version: 1,
        })
        .collect();
    let mut bytes = Vec::new();
    put_items(&mut bytes, &kvs);
    let mut r = Reader::new(&bytes);
    let back: Vec<KeyValue> = get_items(&mut r, "key-values").expect("decodes");
    r.finish().expect("every byte read");
    assert_eq!(back, kvs);
}
