//! The AEAD envelope every software-wrapped secret uses: XChaCha20-Poly1305 (RFC 8439
//! with the extended nonce of draft-irtf-cfrg-xchacha) under a 256-bit key, a random
//! 192-bit nonce per wrap (random nonces of this size never collide in practice), and
//! associated data naming what the secret is and where it belongs, so a wrapped secret
//! moved to another place fails to open.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::KeyBytes;

/// Nonce bytes at the front of an envelope.
pub const NONCE_LEN: usize = 24;
/// Authentication tag bytes at the end.
pub const TAG_LEN: usize = 16;

/// Encrypts `plaintext` under `key` with associated data `aad`: `nonce || ciphertext || tag`.
pub fn seal(key: &KeyBytes, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    // Encryption fails only for plaintexts over 256 GiB, far beyond a key.
    if let Ok(ct) = cipher.encrypt(
        &nonce,
        Payload {
            msg: plaintext,
            aad,
        },
    ) {
        out.extend_from_slice(&ct);
    }
    out
}

/// Opens an envelope made by [`seal`] with the same key and associated data.
///
/// # Errors
/// [`Error::Unwrap`] naming `what` when the envelope is short, altered, or was sealed
/// under another key or for another place.
pub fn open(
    key: &KeyBytes,
    envelope: &[u8],
    aad: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    if envelope.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Unwrap { what });
    }
    let (nonce, ct) = envelope.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| Error::Unwrap { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_alteration_fails() {
        let key = KeyBytes::random();
        let env = seal(&key, b"secret seed", b"place");
        assert_eq!(env.len(), NONCE_LEN + 11 + TAG_LEN);
        assert_eq!(
            &open(&key, &env, b"place", "x").unwrap()[..],
            b"secret seed"
        );
        assert!(matches!(
            open(&key, &env, b"elsewhere", "x"),
            Err(Error::Unwrap { what: "x" })
        ));
        assert!(open(&KeyBytes::random(), &env, b"place", "x").is_err());
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x20;
            assert!(open(&key, &bad, b"place", "x").is_err(), "bit flip at {i}");
        }
        for cut in 0..env.len() {
            assert!(open(&key, &env[..cut], b"place", "x").is_err(), "cut {cut}");
        }
        // Two seals of the same secret differ (fresh nonces).
        assert_ne!(seal(&key, b"a", b""), seal(&key, b"a", b""));
    }
}
