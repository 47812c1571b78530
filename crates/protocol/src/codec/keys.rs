//! The client's Galois key set for packed product outputs: a count, then each key in the
//! engine's serialization with a length prefix. The server accepts exactly the elements
//! its layouts need ([`decode_galois_keys`]), each once, so an upload cannot make it hold
//! more than the session's plan requires.

use std::sync::Arc;

use selene_ckks::{GaloisKey, GaloisKeys, Parameters};
use selene_codec::{Reader, Writer};

use crate::error::{Error, Result};

/// The wire form of `keys`.
pub fn encode_galois_keys(keys: &GaloisKeys) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = keys
        .elements()
        .filter_map(|g| keys.get(g).map(|k| k.encode()))
        .collect();
    let mut w = Writer::with_capacity(4 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    // The count is at most the number of odd elements below 2N: far below u32::MAX.
    w.u32(parts.len() as u32);
    for p in &parts {
        w.u32(p.len() as u32);
        w.raw(p);
    }
    w.into_bytes()
}

/// Parses a key set for `params` holding exactly the Galois elements in `expected`
/// (in any order, each once), checking counts and lengths before any allocation.
///
/// # Errors
/// [`Error::Wire`] for framing faults, [`Error::KeysRejected`] for a key of another
/// element, a duplicate or a missing one, engine errors for a malformed key.
pub fn decode_galois_keys(
    bytes: &[u8],
    params: &Arc<Parameters>,
    expected: &[u64],
) -> Result<GaloisKeys> {
    let mut rd = Reader::new(bytes);
    // A key is at least its header: 16 bytes is a safe floor for the count check.
    let n = rd.count_u32("Galois key count", expected.len(), 16)?;
    let mut keys = GaloisKeys::default();
    for _ in 0..n {
        let len = rd.u32("Galois key length")? as usize;
        let key = GaloisKey::decode(rd.take("Galois key", len)?, params)?;
        let g = key.element();
        if !expected.contains(&g) || keys.get(g).is_some() {
            return Err(Error::KeysRejected(format!(
                "Galois element {g} is not one this session's packing needs, or repeats"
            )));
        }
        keys.insert(key);
    }
    rd.expect_end()?;
    if let Some(g) = expected.iter().find(|&&g| keys.get(g).is_none()) {
        return Err(Error::KeysRejected(format!(
            "no key for Galois element {g}"
        )));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use selene_ckks::SecretKey;
    use selene_linalg::LinalgPreset;

    use super::*;

    #[test]
    fn key_sets_round_trip_and_only_the_expected_elements_pass() {
        let params = LinalgPreset::Coeff12Pack.build().unwrap();
        let sk = SecretKey::generate(&params);
        let mut keys = GaloisKeys::default();
        for g in [17, 33] {
            keys.insert(GaloisKey::new(&sk, g));
        }
        let bytes = encode_galois_keys(&keys);
        let back = decode_galois_keys(&bytes, &params, &[33, 17]).unwrap();
        assert_eq!(back.elements().collect::<Vec<_>>(), [17, 33]);
        assert_eq!(
            back.get(17).unwrap().encode(),
            keys.get(17).unwrap().encode()
        );
        // Another element, a missing one, a truncation, trailing bytes.
        assert!(decode_galois_keys(&bytes, &params, &[17, 65]).is_err());
        assert!(decode_galois_keys(&bytes, &params, &[17, 33, 65]).is_err());
        assert!(decode_galois_keys(&bytes[..bytes.len() - 1], &params, &[17, 33]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_galois_keys(&long, &params, &[17, 33]).is_err());
        // A count above what is expected is refused before reading any key.
        let mut many = bytes.clone();
        many[..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(decode_galois_keys(&many, &params, &[17, 33]).is_err());
    }
}
