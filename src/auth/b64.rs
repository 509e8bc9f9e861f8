//! base64url (RFC 4648 §5) without padding, as JWS compact serialization
//! and JWK use it (RFC 7515 §2). Written here rather than adding a crate:
//! forty lines, no allocation beyond the output.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `input` as base64url without padding.
pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(ALPHABET[idx as usize] as char);
        }
    }
    out
}

/// Encodes `input` as standard base64 with padding (RFC 4648 §4), as HTTP
/// Basic credentials use it.
pub fn encode_std(input: &[u8]) -> String {
    let mut out: String = encode(input)
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

fn value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    } as u32)
}

/// Decodes unpadded base64url. Refuses padding, characters outside the
/// URL-safe alphabet, a length that leaves one stray character, and
/// non-zero bits in the last character beyond the data (non-canonical
/// encodings), so each byte string has exactly one accepted encoding.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    for chunk in input.chunks(4) {
        let mut n: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = chunk.len() - 1;
        // Bits below the kept bytes must be zero.
        let unused = match keep {
            1 => n & 0xffff,
            2 => n & 0xff,
            _ => 0,
        };
        if unused != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn standard_alphabet_with_padding() {
        // RFC 4648 §10 vectors, and the two characters that differ.
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::encode_std(raw.as_bytes()), enc);
        }
        assert_eq!(super::encode_std(&[0xfb, 0xff]), "+/8=");
    }

    use super::*;

    #[test]
    fn rfc4648_vectors_in_the_url_alphabet() {
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff, 0xfe], "-__-"),
        ];
        for (raw, enc) in cases {
            assert_eq!(encode(raw), *enc);
            assert_eq!(decode(enc.as_bytes()).as_deref(), Some(*raw), "{enc}");
        }
    }

    #[test]
    fn refuses_padding_foreign_characters_and_stray_bits() {
        assert_eq!(decode(b"Zg=="), None);
        assert_eq!(decode(b"Zm9v+A"), None);
        assert_eq!(decode(b"Zm9v/A"), None);
        assert_eq!(decode(b"Z"), None);
        assert_eq!(decode(b"Zh"), None, "non-zero trailing bits");
        assert_eq!(decode(b"Zm9"), None, "non-zero trailing bits");
        assert_eq!(decode(b"Zm8"), Some(b"fo".to_vec()));
    }

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let e = encode(&data[..len]);
            assert_eq!(decode(e.as_bytes()).as_deref(), Some(&data[..len]));
        }
    }
}
