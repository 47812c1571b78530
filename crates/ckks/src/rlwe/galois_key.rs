//! Galois keys: switch `phi_g(s)` back to `s` for a rotation by `k` slots (`g = 5^k mod
//! 2N`) or for conjugation (`g = 2N - 1`).

use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::params::Parameters;
use crate::ring::automorphism::{conjugation_element, galois_element, Automorphism};
use crate::ring::{Ntt, Poly};

use super::keyswitch::KeySwitchKey;
use super::secret_key::SecretKey;

/// One Galois key with its precomputed NTT-domain permutation.
#[derive(Clone, Debug, PartialEq)]
pub struct GaloisKey {
    pub(crate) auto: Automorphism,
    pub(crate) ksk: KeySwitchKey,
}

impl GaloisKey {
    /// Generates the key for Galois element `g` (odd, `< 2N`).
    pub fn new(sk: &SecretKey, g: u64) -> Self {
        let params = sk.params();
        let ring = params.ring();
        let auto = Automorphism::new(g, params.log_n());
        let s = sk.ntt();
        let mut phi_s = Zeroizing::new(Poly::<Ntt>::zero(ring, params.max_level(), false));
        for r in 0..phi_s.rows() {
            auto.apply_ntt(s.row(r), phi_s.row_mut(r));
        }
        Self {
            auto,
            ksk: KeySwitchKey::generate(sk, &phi_s),
        }
    }

    /// Wraps a deserialized key-switching key for element `g`.
    pub(crate) fn from_ksk(g: u64, ksk: KeySwitchKey) -> Self {
        let auto = Automorphism::new(g, ksk.params().log_n());
        Self { auto, ksk }
    }

    /// The Galois element.
    pub fn element(&self) -> u64 {
        self.auto.element()
    }

    /// The underlying key-switching key.
    pub fn key_switch_key(&self) -> &KeySwitchKey {
        &self.ksk
    }
}

/// A set of Galois keys indexed by Galois element.
#[derive(Clone, Debug, Default)]
pub struct GaloisKeys {
    keys: BTreeMap<u64, Arc<GaloisKey>>,
}

impl GaloisKeys {
    /// Keys for the given rotation steps (positive = left) and, optionally, conjugation.
    /// Keys are generated in parallel.
    pub fn new(sk: &SecretKey, steps: &[i64], conjugation: bool) -> Self {
        let log_n = sk.params().log_n();
        let mut elements: Vec<u64> = steps.iter().map(|&k| galois_element(k, log_n)).collect();
        if conjugation {
            elements.push(conjugation_element(log_n));
        }
        elements.sort_unstable();
        elements.dedup();
        elements.retain(|&g| g != 1);
        let keys = elements
            .par_iter()
            .map(|&g| (g, Arc::new(GaloisKey::new(sk, g))))
            .collect();
        Self { keys }
    }

    /// Adds one key.
    pub fn insert(&mut self, key: GaloisKey) {
        self.keys.insert(key.element(), Arc::new(key));
    }

    /// The key for element `g`.
    pub fn get(&self, g: u64) -> Option<&Arc<GaloisKey>> {
        self.keys.get(&g)
    }

    /// The key for a rotation by `step` slots.
    pub fn for_step(&self, params: &Parameters, step: i64) -> Option<&Arc<GaloisKey>> {
        self.get(galois_element(step, params.log_n()))
    }

    /// Galois elements present.
    pub fn elements(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.keys().copied()
    }
}
