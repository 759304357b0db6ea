//! Fixed-width base36 (`0-9a-z`) encoding of big-endian byte strings, used by join tokens and unlock keys.
//!
//! Fixed width matters: a token always has the same length, so a cut or padded token is caught by
//! its length before anything else.

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Characters needed for 32 bytes (256 bits): 36^50 > 2^256 > 36^49.
pub(crate) const WIDTH_32_BYTES: usize = 50;
/// Characters needed for 16 bytes (128 bits): 36^25 > 2^128 > 36^24.
pub(crate) const WIDTH_16_BYTES: usize = 25;

/// Why a base36 string did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A character outside `0-9a-z`, with its 1-based position.
    Character { position: usize, found: char },
    /// The value does not fit in the output bytes.
    Range,
}

/// Encodes `bytes` (big-endian) as exactly `width` base36 digits, zero-padded on the left.
///
/// `width` must be large enough for `bytes`; the constants above are.
pub(crate) fn encode(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 36) as u8;
            remainder = acc % 36;
        }
        *slot = ALPHABET[remainder as usize];
    }
    digits.into_iter().map(char::from).collect()
}

/// Decodes base36 digits into a big-endian array of `N` bytes.
pub(crate) fn decode<const N: usize>(text: &str) -> Result<[u8; N], DecodeError> {
    let mut out = [0u8; N];
    for (index, found) in text.chars().enumerate() {
        let digit = match found {
            '0'..='9' => found as u32 - '0' as u32,
            'a'..='z' => found as u32 - 'a' as u32 + 10,
            _ => {
                return Err(DecodeError::Character { position: index + 1, found });
            }
        };
        let mut carry = digit;
        for byte in out.iter_mut().rev() {
            let acc = u32::from(*byte) * 36 + carry;
            *byte = (acc & 0xff) as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return Err(DecodeError::Range);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_fixed_width() {
        for bytes in [[0u8; 32], [0xff; 32], [0x5a; 32]] {
            let text = encode(&bytes, WIDTH_32_BYTES);
            assert_eq!(text.len(), WIDTH_32_BYTES);
            assert_eq!(decode::<32>(&text), Ok(bytes));
        }
        let text = encode(&[0xff; 16], WIDTH_16_BYTES);
        assert_eq!(text.len(), WIDTH_16_BYTES);
        assert_eq!(decode::<16>(&text), Ok([0xff; 16]));
    }

    #[test]
    fn widths_are_minimal() {
        // The largest value fills the width without a leading zero.
        assert!(!encode(&[0xff; 32], WIDTH_32_BYTES).starts_with('0'));
        assert!(!encode(&[0xff; 16], WIDTH_16_BYTES).starts_with('0'));
    }

    #[test]
    fn small_values() {
        assert_eq!(encode(&[0, 35], 3), "00z");
        assert_eq!(encode(&[0, 36], 3), "010");
        assert_eq!(decode::<2>("010"), Ok([0, 36]));
    }

    #[test]
    fn rejects_bad_characters_and_overflow() {
        assert_eq!(decode::<2>("0A"), Err(DecodeError::Character { position: 2, found: 'A' }));
        assert_eq!(decode::<1>("zz"), Err(DecodeError::Range));
        assert_eq!(decode::<16>(&"z".repeat(WIDTH_16_BYTES)), Err(DecodeError::Range));
    }
}
