//! Object IDs: 25 lower-case base36 characters from 128 random bits, as Swarm's, so IDs are
//! unguessable and a short unique prefix is enough to name an object on the command line.

use ring::rand::{SecureRandom as _, SystemRandom};

/// Length of an ID: 128 bits need 25 base36 digits.
pub(crate) const ID_LEN: usize = 25;

/// A new random ID.
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // The system's random source failing is not something a manager can work around; fall back
    // to the clock and a counter so IDs stay unique within this process in that case.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes = (nanos ^ (u128::from(n) << 64)).to_le_bytes();
    }
    base36(u128::from_le_bytes(bytes))
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; ID_LEN];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
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
