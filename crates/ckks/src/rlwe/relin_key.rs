//! The relinearization key: switches `s^2` back to `s`.

use zeroize::Zeroizing;

use crate::ring::Ntt;
use crate::ring::Poly;

use super::keyswitch::KeySwitchKey;
use super::secret_key::SecretKey;

/// Key switching from `s^2` to `s`, used after a ciphertext-ciphertext product.
#[derive(Clone, Debug, PartialEq)]
pub struct RelinKey {
    pub(crate) ksk: KeySwitchKey,
}

impl RelinKey {
    /// Generates the relinearization key of `sk`.
    pub fn new(sk: &SecretKey) -> Self {
        let ring = sk.params().ring();
        let mut s2: Zeroizing<Poly<Ntt>> = Zeroizing::new(sk.ntt().q_part(sk.params().max_level()));
        s2.mul_assign_prefix(ring, sk.ntt());
        Self {
            ksk: KeySwitchKey::generate(sk, &s2),
        }
    }

    /// Wraps a deserialized key-switching key.
    pub(crate) fn from_ksk(ksk: KeySwitchKey) -> Self {
        Self { ksk }
    }

    /// The underlying key-switching key.
    pub fn key_switch_key(&self) -> &KeySwitchKey {
        &self.ksk
    }
}
