//! `KeyBytes`: a 256-bit symmetric key or seed held in memory, zeroized on drop, never
//! printed, compared in constant time, with HKDF-SHA256 subkeys for each purpose.

use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes in every symmetric key and seed of the hierarchy.
pub const KEY_LEN: usize = 32;

/// A 256-bit secret (keystore key, session seed, derived subkey).
///
/// # Security
/// Zeroized on drop; `Debug` prints `[redacted]`; equality only through
/// [`KeyBytes::ct_eq`]; no `Clone`, so every copy is explicit.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyBytes([u8; KEY_LEN]);

impl KeyBytes {
    /// A fresh key from the OS CSPRNG.
    pub fn random() -> Self {
        let mut k = Self([0; KEY_LEN]);
        OsRng.fill_bytes(&mut k.0);
        k
    }

    /// Takes `bytes` (a slice of exactly [`KEY_LEN`] bytes), copying them; the caller
    /// zeroizes its own buffer.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    /// The secret bytes. Handle like the key itself.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// HKDF-SHA256 (RFC 5869) subkey for one purpose: `salt` binds it to a keystore,
    /// `info` names the purpose, so no two uses of a key share bytes.
    pub fn derive(&self, salt: &[u8], info: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(salt), &self.0);
        let mut out = Self([0; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's 255 * 32 byte limit.
        if hk.expand(info, &mut out.0).is_err() {
            out.0.zeroize();
        }
        out
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_zeroize_clears() {
        let mut k = KeyBytes::from_slice(&[0xab; KEY_LEN]).unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("[redacted]") && !shown.contains("ab") && !shown.contains("171"));
        // The same code path ZeroizeOnDrop runs on drop; after it, the buffer reads zero
        // through the safe accessor. (A dropped value cannot be read in safe Rust at
        // all, so this is the observable half of the guarantee.)
        k.zeroize();
        assert_eq!(k.expose(), &[0; KEY_LEN]);
    }

    #[test]
    fn derive_separates_purposes_and_salts() {
        let k = KeyBytes::random();
        let a = k.derive(b"salt", b"a");
        let b = k.derive(b"salt", b"b");
        let c = k.derive(b"other", b"a");
        assert!(!a.ct_eq(&b) && !a.ct_eq(&c));
        assert!(a.ct_eq(&k.derive(b"salt", b"a")));
        assert!(KeyBytes::from_slice(&[0; 31]).is_none());
    }

    #[test]
    fn hkdf_matches_rfc5869_test_case_1_prefix() {
        // RFC 5869, A.1: IKM = 0x0b x 22 is not 32 bytes, so check the library against
        // the RFC through its own API, then that `derive` is that expansion.
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        let k = KeyBytes::from_slice(&[7; 32]).unwrap();
        let mut direct = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"s"), &[7; 32])
            .expand(b"i", &mut direct)
            .unwrap();
        assert_eq!(k.derive(b"s", b"i").expose(), &direct);
    }
}
