//! Random bytes from the operating system through ring, the crate's one source of randomness.

use ring::rand::{SecureRandom, SystemRandom};

/// The system random number generator failed; callers turn this into their own error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RandomFailure;

/// Fills an array with random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RandomFailure> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| RandomFailure)?;
    Ok(out)
}

/// A random serial number for a certificate: 16 bytes with the top bit clear so it is positive.
pub(crate) fn serial() -> Result<rcgen::SerialNumber, RandomFailure> {
    let mut bytes = random_bytes::<16>()?;
    bytes[0] &= 0x7f;
    // A leading zero byte would be dropped by DER; keep the serial a full 16 bytes.
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// Compares two secrets of the same length in time that does not depend on where they differ.
pub(crate) fn constant_time_eq<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        let a = [1u8, 2, 3, 4];
        assert!(constant_time_eq(&a, &[1, 2, 3, 4]));
        assert!(!constant_time_eq(&a, &[0, 2, 3, 4]));
        assert!(!constant_time_eq(&a, &[1, 2, 3, 5]));
    }

    #[test]
    fn random_bytes_differ() {
        let a = random_bytes::<16>().expect("random");
        let b = random_bytes::<16>().expect("random");
        assert_ne!(a, b);
    }
}
