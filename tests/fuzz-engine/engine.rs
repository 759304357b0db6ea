//! A small deterministic mutation fuzzer for the decoders of bytes from the network or disk, run
//! as ordinary tests on stable Rust (cargo-fuzz needs nightly, which Shoal does not use).
//!
//! Each crate's `tests/fuzz.rs` includes this file with
//! `#[path = "../../../tests/fuzz-engine/engine.rs"] mod fuzz_engine;`. It is a file and not a
//! crate on purpose: it is dev-only and has no dependencies, and the seven subsystem crates depend
//! on no other Shoal crate (DESIGN.md §1, checked by `cargo xtask tidy`). Included this way it is
//! compiled into each crate's fuzz test binary only, adds no edge to the crate graph and no
//! `Cargo.toml` change, so the layering stays as it is. (The test kit is the one Shoal crate a
//! subsystem may take as a dev-dependency, but it is a netns harness that half of them do not
//! build, and a fuzzer is not a harness.)
//!
//! How a target runs: every seed input as given, then inputs made by mutating a pool that starts
//! as the seeds and keeps (up to [`POOL_MAX`]) mutants the target accepted, so later mutations
//! start from deeper valid shapes. Mutations: bit flip, a byte set to 0/0xff/0x7f/0x80/1 or a
//! random value, truncation, random bytes appended, a slice duplicated or deleted, two pool
//! entries spliced, a length-like field overwritten with a large value (1, 2, 4 or 8 bytes in
//! either byte order, or a LEB128 varint), a target's token inserted. A panic is caught, reported
//! with the seed, the execution number and the input in hex, and fails the test. A single
//! allocation over [`MAX_ALLOCATION`] while an input runs (a length taken from the input without a
//! bound) prints the same report and aborts the test process. The sequence of inputs depends only
//! on the seed, so a failure is replayed exactly.
//!
//! Environment:
//! - `SHOAL_FUZZ_SECS`: how long each target runs (default 2, fractions allowed);
//! - `SHOAL_FUZZ_RUNS`: how many executions at most; alone (without `SHOAL_FUZZ_SECS`) it is the
//!   only bound, which is how a failure is replayed;
//! - `SHOAL_FUZZ_SEED`: the seed (default: from the clock, printed at the start and the end);
//! - `SHOAL_FUZZ_INPUT`: a hex input to run once instead of fuzzing (with a test-name filter).
//!
//! Each target prints `fuzz NAME: seed S` when it starts and
//! `fuzz NAME: N executions in S s, 0 crashes, seed X` when it ends.

// Each crate's fuzz test uses only some of the engine (e.g. tokens); the engine reports on the
// terminal, which is its job.
#![allow(dead_code, clippy::print_stdout, clippy::print_stderr)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a target runs when `SHOAL_FUZZ_SECS` and `SHOAL_FUZZ_RUNS` are not set.
const DEFAULT_SECS: f64 = 2.0;
/// How many inputs the pool holds: the seeds, then accepted mutants.
pub(crate) const POOL_MAX: usize = 512;
/// The largest single allocation an input may cause. Inputs are at most tens of KiB, so a
/// decoder asking for more than this took a length from the input without checking it against
/// what the input holds.
pub(crate) const MAX_ALLOCATION: usize = 64 << 20;
/// Bytes a mutation sets, the classic boundary values.
const INTERESTING: [u8; 6] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];
/// Values written over length-like fields.
const LARGE: [u64; 10] = [
    u64::MAX,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff,
    0x7fff,
    0x8000,
    0x1_0000,
];
const HEX: &[u8; 16] = b"0123456789abcdef";

/// One decoder to fuzz: its name, its valid inputs, and how its inputs are shaped.
#[derive(Debug)]
pub(crate) struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    max_len: usize,
    tokens: Vec<Vec<u8>>,
}

/// What a finished run did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report {
    /// Inputs executed, seeds included.
    pub(crate) executions: u64,
    /// How long it took.
    pub(crate) elapsed: Duration,
    /// The seed, to replay the run.
    pub(crate) seed: u64,
}

impl Target {
    /// A target named `name` (as printed; the test is `fuzz_NAME`) starting from `seeds`, valid
    /// inputs made by the crate's own encoders.
    pub(crate) fn new(name: &'static str, seeds: Vec<Vec<u8>>) -> Self {
        assert!(!seeds.is_empty(), "fuzz {name}: a target needs at least one seed input");
        Self { name, seeds, max_len: 4096, tokens: Vec::new() }
    }

    /// Inputs are cut to this many bytes (default 4096; never below the longest seed plus 256).
    pub(crate) fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// Byte strings a mutation may insert or write over the input (keywords of a text format).
    pub(crate) fn tokens(mut self, tokens: &[&[u8]]) -> Self {
        self.tokens = tokens.iter().map(|t| t.to_vec()).collect();
        self
    }

    /// Runs `target` on every seed and then on mutants until the time or run budget is spent.
    /// `target` returns whether the input was accepted (decoded); accepted mutants join the pool.
    /// A panic in `target` fails the test with the seed, the execution number and the input.
    pub(crate) fn run(self, mut target: impl FnMut(&[u8]) -> bool) -> Report {
        let budget = Budget::from_env(self.name);
        let seed = budget.seed;
        eprintln!("fuzz {}: seed {seed}", self.name);
        let started = Instant::now();
        let mut executions = 0u64;
        if let Some(input) = &budget.input {
            execute(self.name, seed, 0, input, &mut target);
            return finish(self.name, 1, started, seed);
        }
        let max_len = self.seeds.iter().map(|s| s.len() + 256).max().unwrap_or(0).max(self.max_len);
        for input in &self.seeds {
            execute(self.name, seed, executions, input, &mut target);
            executions += 1;
        }
        let mut rng = Rng::new(seed);
        let mut pool = self.seeds.clone();
        loop {
            if budget.runs.is_some_and(|runs| executions >= runs) {
                break;
            }
            if executions.is_multiple_of(32) && budget.time.is_some_and(|time| started.elapsed() >= time) {
                break;
            }
            let mut input = pool[rng.below(pool.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut input, &pool, &self.tokens, &mut rng);
                input.truncate(max_len);
            }
            let accepted = execute(self.name, seed, executions, &input, &mut target);
            executions += 1;
            if accepted {
                if pool.len() < POOL_MAX {
                    pool.push(input);
                } else if self.seeds.len() < POOL_MAX && rng.below(4) == 0 {
                    // Replace an accepted mutant, never a seed.
                    let at = self.seeds.len() + rng.below(POOL_MAX - self.seeds.len());
                    pool[at] = input;
                }
            }
        }
        finish(self.name, executions, started, seed)
    }
}

fn finish(name: &str, executions: u64, started: Instant, seed: u64) -> Report {
    let elapsed = started.elapsed();
    println!("fuzz {name}: {executions} executions in {:.1} s, 0 crashes, seed {seed}", elapsed.as_secs_f64());
    Report { executions, elapsed, seed }
}

/// Runs one input, catching a panic; returns whether the target accepted it.
fn execute(
    name: &'static str,
    seed: u64,
    execution: u64,
    input: &[u8],
    target: &mut impl FnMut(&[u8]) -> bool,
) -> bool {
    let running = Running { name, seed, execution, input: input.as_ptr(), len: input.len() };
    RUNNING.with(|r| r.set(Some(running)));
    let result = panic::catch_unwind(AssertUnwindSafe(|| target(input)));
    RUNNING.with(|r| r.set(None));
    match result {
        Ok(accepted) => accepted,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            panic!(
                "fuzz {name}: execution {execution} panicked: {message}\n\
                 seed {seed}: replay with SHOAL_FUZZ_SEED={seed} SHOAL_FUZZ_RUNS={}, or with SHOAL_FUZZ_INPUT=<the input>\n\
                 input ({} bytes): {}",
                execution + 1,
                input.len(),
                hex(input)
            );
        }
    }
}

/// The time, run and seed settings of a run, from the environment.
#[derive(Debug)]
struct Budget {
    seed: u64,
    time: Option<Duration>,
    runs: Option<u64>,
    input: Option<Vec<u8>>,
}

impl Budget {
    fn from_env(name: &str) -> Self {
        let var = |key: &str| std::env::var(key).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let seed = match var("SHOAL_FUZZ_SEED") {
            Some(text) => text.parse().unwrap_or_else(|_| panic!("fuzz {name}: SHOAL_FUZZ_SEED={text:?} is not a u64")),
            None => clock_seed(),
        };
        let secs: Option<f64> = var("SHOAL_FUZZ_SECS").map(|text| {
            text.parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .unwrap_or_else(|| panic!("fuzz {name}: SHOAL_FUZZ_SECS={text:?} is not a number of seconds"))
        });
        let runs: Option<u64> = var("SHOAL_FUZZ_RUNS").map(|text| {
            text.parse().unwrap_or_else(|_| panic!("fuzz {name}: SHOAL_FUZZ_RUNS={text:?} is not a count"))
        });
        let input = var("SHOAL_FUZZ_INPUT").map(|text| {
            unhex(&text)
                .unwrap_or_else(|| panic!("fuzz {name}: SHOAL_FUZZ_INPUT is not hex ({} characters)", text.len()))
        });
        // Runs alone bound a replay exactly; otherwise time bounds the run.
        let time = match (secs, runs) {
            (Some(secs), _) => Some(Duration::from_secs_f64(secs)),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs_f64(DEFAULT_SECS)),
        };
        Self { seed, time, runs, input }
    }
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// xorshift64* seeded through splitmix64, so that nearby seeds give unrelated sequences.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // xorshift's state must not be zero.
        Self(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; `n` must not be zero.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
}

/// Applies one random mutation to `input`.
fn mutate(input: &mut Vec<u8>, pool: &[Vec<u8>], tokens: &[Vec<u8>], rng: &mut Rng) {
    let len = input.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 if len > 0 => {
            let at = rng.below(len);
            input[at] = rng.byte();
        }
        3 if len > 0 => input.truncate(rng.below(len)),
        4 => {
            for _ in 0..1 + rng.below(32) {
                input.push(rng.byte());
            }
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = start + 1 + rng.below((len - start).min(64));
            let piece = input[start..end].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, piece);
        }
        6 if len > 0 => {
            let start = rng.below(len);
            let end = start + 1 + rng.below((len - start).min(64));
            input.drain(start..end);
        }
        7 => {
            let other = &pool[rng.below(pool.len())];
            input.truncate(rng.below(len + 1));
            let from = rng.below(other.len() + 1);
            input.extend_from_slice(&other[from..]);
        }
        8 | 9 => overwrite_length(input, rng),
        10 if !tokens.is_empty() => {
            let token = &tokens[rng.below(tokens.len())];
            let at = rng.below(len + 1);
            if rng.below(2) == 0 {
                input.splice(at..at, token.iter().copied());
            } else {
                let end = (at + token.len()).min(len);
                input.splice(at..end, token.iter().copied());
            }
        }
        // An empty input, or no tokens: grow it instead.
        _ => input.push(INTERESTING[rng.below(INTERESTING.len())]),
    }
}

/// Writes a large or just-too-large value over a random place, as a length or count would be
/// encoded: 1, 2, 4 or 8 bytes little- or big-endian, or a LEB128 varint.
fn overwrite_length(input: &mut Vec<u8>, rng: &mut Rng) {
    let value = match rng.below(3) {
        0 | 1 => LARGE[rng.below(LARGE.len())],
        _ => input.len() as u64 + 1 + rng.below(16) as u64,
    };
    let width = 1usize << rng.below(4);
    let bytes = match rng.below(3) {
        0 => value.to_le_bytes()[..width].to_vec(),
        1 => value.to_be_bytes()[8 - width..].to_vec(),
        _ => leb128(value),
    };
    if input.len() < bytes.len() {
        input.resize(bytes.len(), 0);
    }
    let at = rng.below(input.len() - bytes.len() + 1);
    input[at..at + bytes.len()].copy_from_slice(&bytes);
}

fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|b| [char::from(HEX[usize::from(b >> 4)]), char::from(HEX[usize::from(b & 0x0f)])]).collect()
}

/// Bytes from hex (either case, no separators); `None` when it is not hex.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2).map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?)).collect()
}

/// The input a thread is running, for the report of an oversized allocation.
#[derive(Debug, Clone, Copy)]
struct Running {
    name: &'static str,
    seed: u64,
    execution: u64,
    input: *const u8,
    len: usize,
}

thread_local! {
    static RUNNING: Cell<Option<Running>> = const { Cell::new(None) };
}

/// The system allocator, stopping the test when an input makes a decoder ask for more than
/// [`MAX_ALLOCATION`] bytes at once. (Unwinding out of an allocator is not allowed, so it reports
/// and aborts instead of panicking; the test fails either way.)
#[derive(Debug)]
struct CappedAllocator;

// SAFETY: every call is passed to the system allocator unchanged; the size check only reads a
// thread-local and, past the cap, writes to stderr and aborts.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: the caller's contract for `alloc_zeroed` is the system allocator's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the system allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        // SAFETY: `ptr` came from the system allocator with `layout`; the caller's contract holds.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

fn check_size(size: usize) {
    if size <= MAX_ALLOCATION {
        return;
    }
    let Ok(Some(running)) = RUNNING.try_with(Cell::get) else { return };
    // Stop reporting on this thread, in case writing the report allocates.
    let _ = RUNNING.try_with(|r| r.set(None));
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\nfuzz {}: execution {} asked for {size} bytes in one allocation (over {MAX_ALLOCATION}): a length \
         taken from the input without a bound?\nseed {}: replay with SHOAL_FUZZ_SEED={} SHOAL_FUZZ_RUNS={}\n\
         input ({} bytes): ",
        running.name,
        running.execution,
        running.seed,
        running.seed,
        running.execution + 1,
        running.len
    );
    // SAFETY: `RUNNING` holds the input only while `execute` runs it on this thread, and
    // `execute` neither frees nor changes it meanwhile.
    let input = unsafe { std::slice::from_raw_parts(running.input, running.len) };
    let mut line = [0u8; 128];
    for chunk in input.chunks(line.len() / 2) {
        for (i, b) in chunk.iter().enumerate() {
            line[2 * i] = HEX[usize::from(b >> 4)];
            line[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        let _ = err.write_all(&line[..2 * chunk.len()]);
    }
    let _ = err.write_all(b"\n");
    let _ = err.flush();
    std::process::abort();
}
