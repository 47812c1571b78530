//! Bearer tokens a server may accept: random enough that guessing is hopeless, which a
//! string can only show by its form (hex or base64 of at least 16 bytes, not visibly
//! patterned), and fresh ones from the operating system's generator.

use rand::RngCore;

use crate::error::{Error, Result};

/// Bytes of randomness a server token must carry at least (128 bits).
pub const MIN_TOKEN_BYTES: usize = 16;

/// Bytes of randomness in a token made by [`new_token`] (256 bits).
const NEW_TOKEN_BYTES: usize = 32;

/// A fresh token: 32 bytes from the OS generator, in lowercase hex.
pub fn new_token() -> String {
    let mut b = [0u8; NEW_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes `token` encodes when it is all hex digits (an odd count drops the last).
fn hex_bytes(token: &[u8]) -> Option<Vec<u8>> {
    if !token.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    Some(
        token
            .chunks_exact(2)
            .map(|p| digit(p[0]) << 4 | digit(p[1]))
            .collect(),
    )
}

/// The 6-bit values of `token` when it is base64 (standard or URL-safe alphabet,
/// optional `=` padding).
fn base64_sextets(token: &[u8]) -> Option<Vec<u8>> {
    let body = token
        .strip_suffix(b"==")
        .or_else(|| token.strip_suffix(b"="));
    let body = body.unwrap_or(token);
    body.iter()
        .map(|&c| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        })
        .collect()
}

/// Checks that `token` can carry at least 128 random bits: hex of at least 16 bytes or
/// base64 of at least 16 bytes, with at least half of its symbols distinct (up to the
/// alphabet's size), so `000...0` or a repeated word is refused. The check cannot prove
/// randomness; [`new_token`] makes tokens that pass.
///
/// # Errors
/// [`Error::Credentials`] saying what is missing.
pub fn check_token_strength(token: &[u8]) -> Result<()> {
    let weak = |why: String| Error::Credentials {
        what: "bearer token",
        why: format!(
            "{why}; a server token must be hex or base64 of at least {MIN_TOKEN_BYTES} random \
             bytes (`selene serve --new-token` prints one)"
        ),
    };
    // The symbols, bits per symbol and alphabet size of the encoding; a token of hex
    // digits only is read as hex, so a short hex token does not pass as base64.
    let (symbols, bits, alphabet) = if let Some(b) = hex_bytes(token) {
        (b, 4 * 2, 256)
    } else if let Some(s) = base64_sextets(token) {
        (s, 6, 64)
    } else {
        return Err(weak("it is neither hex nor base64".into()));
    };
    let carried = symbols.len() * bits / 8;
    if carried < MIN_TOKEN_BYTES {
        return Err(weak(format!("it encodes {carried} bytes")));
    }
    let mut seen = [false; 256];
    for &s in &symbols {
        seen[s as usize] = true;
    }
    let distinct = seen.iter().filter(|&&x| x).count();
    let want = symbols.len().min(alphabet) / 2;
    if distinct < want {
        return Err(weak(format!(
            "it repeats itself ({distinct} distinct symbols in {})",
            symbols.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_patterned_or_foreign_tokens_are_refused_and_random_ones_accepted() {
        for bad in [
            &b"s3cret"[..],
            b"loopback-token",
            b"0123456789abcdef0123456789abcde", // 15.5 bytes of hex
            b"00000000000000000000000000000000",
            b"abababababababababababababababab",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            b"0123456789abcdef0123456789abcd", // 15 bytes of hex
            b"correct horse battery staple!!",
            b"",
        ] {
            assert!(
                check_token_strength(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"6f1c9e0a4b7d2385e1f0c6a9b3d47e52"[..], // 16 bytes hex
            b"q3ZbW9vN0xKp1LmT4rYcHg",                // 16 bytes base64, unpadded
            b"q3ZbW9vN0xKp1LmT4rYcHg==",
            b"q3Zb-9vN0xKp1L_T4rYcHg", // URL-safe
        ] {
            check_token_strength(good).unwrap();
        }
        for _ in 0..1000 {
            let t = new_token();
            assert_eq!(t.len(), 2 * NEW_TOKEN_BYTES);
            check_token_strength(t.as_bytes()).unwrap();
        }
    }
}
