//! The key store's parsers of files on disk (crate `selene-keys`, private parsers
//! exposed under `cfg(fuzzing)`), up to the cryptography that needs the root key: any
//! bytes parse or fail with an error, never a panic. First byte, modulo 5
//! (`selene_fuzz::KeystoreFormat`):
//!
//! - 0 `keystore.bin`: header, backend descriptor (Argon2 parameters validated, never
//!   run), wrapped key, signed policy, wrapped session records, MAC. Canonical:
//!   re-encodes to the input.
//! - 1 `releases.log`: JSON lines hash-chained from `selene_fuzz::LOG_KEYSTORE_ID`;
//!   every entry of a log that verifies prints and parses back to itself.
//! - 2 `releases.head`: `lines head mac`; prints and parses back to itself.
//! - 3 the owner policy (`OwnerPolicy::from_toml`): prints as TOML that parses back to
//!   the same policy.
//! - 4 an XChaCha20-Poly1305 envelope (wrapped keystore or session key) under a fixed
//!   key: opens only if untouched (the seeds are sealed under it).
#![no_main]

use selene_fuzz::KeystoreFormat;
use selene_keys::{envelope, fuzzing, KeyBytes, OwnerPolicy};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    match KeystoreFormat::from_selector(sel) {
        KeystoreFormat::File => {
            if let Ok(f) = fuzzing::keystore_file(bytes) {
                assert_eq!(f.header_len, f.header_encoded_len, "header length");
                assert_eq!(f.body_len + 32, bytes.len(), "MAC'd body length");
                // Parsing is pure: `reencoded == bytes` closes the round trip.
                assert_eq!(f.reencoded, bytes, "keystore re-encodes differently");
            }
        }
        KeystoreFormat::Log => {
            if let Ok(s) = fuzzing::release_log(bytes, &selene_fuzz::LOG_KEYSTORE_ID) {
                let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
                // A verified log ends in a newline: one empty piece after the last line.
                assert_eq!(s.lines as usize + 1, lines.len().max(1));
                let mut rows = 0u64;
                for line in lines.iter().take(s.lines as usize) {
                    let e = fuzzing::log_line(line).expect("a verified line parses");
                    let printed = fuzzing::encode_log_line(&e).expect("an entry prints");
                    assert_eq!(fuzzing::log_line(&printed), Some(e.clone()), "entry");
                    rows = rows.saturating_add(e.rows);
                }
                let total = s
                    .rows_per_key
                    .values()
                    .fold(0u64, |a, &r| a.saturating_add(r));
                assert_eq!(total, rows, "rows per key");
            }
        }
        KeystoreFormat::Head => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            if let Some((lines, head, mac)) = fuzzing::log_head(text) {
                let printed = fuzzing::log_head_text(lines, head, mac);
                assert_eq!(fuzzing::log_head(&printed), Some((lines, head, mac)));
            }
        }
        KeystoreFormat::OwnerPolicy => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            if let Ok(p) = OwnerPolicy::from_toml(text) {
                let again = p.to_toml().expect("a valid policy prints");
                let back = OwnerPolicy::from_toml(&again).expect("round trip");
                assert_eq!(back, p);
            }
        }
        KeystoreFormat::Envelope => {
            let key = KeyBytes::from_slice(&selene_fuzz::ENVELOPE_KEY).expect("32 bytes");
            if let Ok(plain) = envelope::open(&key, bytes, selene_fuzz::ENVELOPE_AAD, "fuzz") {
                assert_eq!(
                    plain.len() + envelope::NONCE_LEN + envelope::TAG_LEN,
                    bytes.len()
                );
            }
        }
    }
});
