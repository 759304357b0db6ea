//! Object IDs: 25 lower-case base36 characters from 128 random bits, as Swarm's, so IDs are
//! unguessable and a short unique prefix is enough to name an object on the command line.

use ring::rand::{SecureRandom as _, SystemRandom};

/// Length of an ID: 128 bits need 25 base36 digits.
pub(crate) const ID_LEN: usize = 25;

/// IDs drawn from the system's random source per refill: one system call per 256 IDs when a
/// pass creates a hundred thousand tasks, rather than one per ID.
const POOL: usize = 256;

thread_local! {
    static RANDOM: std::cell::RefCell<(Vec<u8>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// A new random ID.
pub(crate) fn new_id() -> String {
    let bytes = RANDOM.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (buffer, used) = &mut *pool;
        if *used + 16 > buffer.len() {
            buffer.resize(16 * POOL, 0);
            // The system's random source failing is not something a manager can work around;
            // fall back to the clock and a counter so IDs stay unique within this process.
            if SystemRandom::new().fill(buffer).is_err() {
                static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                for chunk in buffer.chunks_exact_mut(16) {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos();
                    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    chunk.copy_from_slice(&(nanos ^ (u128::from(n) << 64)).to_le_bytes());
                }
            }
            *used = 0;
        }
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&buffer[*used..*used + 16]);
        // Used bytes are not kept around.
        buffer[*used..*used + 16].fill(0);
        *used += 16;
        bytes
    });
    base36(u128::from_le_bytes(bytes))
}

/// 25 base36 digits; two 128-bit divisions, then 64-bit arithmetic (a 128-bit division per
/// digit made IDs a measurable share of a large pass).
fn base36(n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    const CHUNK: u128 = 36u128.pow(12);
    let mut out = [b'0'; ID_LEN];
    let low = (n % CHUNK) as u64;
    let rest = n / CHUNK;
    let middle = (rest % CHUNK) as u64;
    let high = (rest / CHUNK) as u64;
    for (range, mut value) in [(13..25, low), (1..13, middle), (0..1, high)] {
        for slot in out[range].iter_mut().rev() {
            *slot = DIGITS[(value % 36) as usize];
            value /= 36;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_width_base36_and_distinct() {
        assert_eq!(base36(0), "0".repeat(ID_LEN));
        assert_eq!(base36(u128::MAX), "f5lxx1zz5pnorynqglhzmsp33");
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter().all(|id| id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
        );
    }
}
