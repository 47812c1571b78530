//! [`Evaluator::pack`] split by component, so that a server which learns the inputs'
//! `c1` before their `c0` does every key switch ahead.
//!
//! # Why the split is exact
//! A merge ([`super::pack`]) key-switches `tau(B1)`, which reads only `c1`, and adds the
//! switch's `k0` to `c0`; its other steps (the monomial product, the butterfly, the
//! automorphism, the doubling of a lone input) act on each component alone and
//! linearly. So the packed `c1`, and the sum `K` (over `Q P`, as the tree carries `c0`)
//! of every `k0` carried to the root, are functions of the inputs' `c1` only, and the
//! packed `c0` is `ModDown(P L(c0) + K)` with `L` the linear map of the other steps.
//! `ModDown(P a + K) = a + ModDown(K)` exactly (the residue mod `P` that ModDown
//! rounds away is `K`'s alone), so [`Evaluator::pack_bodies`] of [`Evaluator::pack_masks`]
//! is byte for byte [`Evaluator::pack`]: `L` applied to the `c0` over `Q`, a few vector
//! passes per merge and no NTT, plus `ModDown(K)`.
//!
//! A fresh secret-key ciphertext's `c1` is expanded from a seed, so a sender that puts
//! its seeds ahead of the `c0`s lets the receiver run [`Evaluator::pack_masks`] while
//! the `c0`s upload.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ring::automorphism::Automorphism;
use crate::ring::basis::mod_down;
use crate::ring::{Ntt, Poly, RnsContext};
use crate::scheme::ciphertext::Ciphertext;
use crate::scheme::{check_level, Encoding, Scale};

use super::pack::{add_permuted, check_packing, double, monomial, spread, Node};
use super::Evaluator;

/// What a packing makes of its inputs' `c1` ([`Evaluator::pack_masks`]): the packed
/// `c1`, and what the merges' key switches add to the packed `c0`.
#[derive(Clone, Debug)]
pub struct PackedMasks {
    /// The packed `c1`, NTT form over `Q_level`.
    c1: Poly<Ntt>,
    /// `ModDown(K)`: the key switches' share of the packed `c0`, NTT form over `Q_level`.
    k0: Poly<Ntt>,
    /// Which inputs were present, in order.
    present: Vec<bool>,
    /// The grid the inputs sit on.
    log_gap: u32,
}

impl PackedMasks {
    /// The packed `c1`, NTT form over `Q_level`: what [`Evaluator::pack_bodies`] returns
    /// as the packed ciphertext's `c1`.
    pub fn c1(&self) -> &Poly<Ntt> {
        &self.c1
    }
}

impl Evaluator {
    /// The key-switching half of [`Evaluator::pack`] on the inputs' `c1` alone (`None`
    /// for an absent input), all at one level: see the module docs. Uses the Galois keys
    /// of [`super::pack_galois_elements`].
    ///
    /// # Errors
    /// As [`Evaluator::pack`]: a count that is not a power of two or exceeds
    /// `2^log_gap`, no input at all, a missing Galois key, inputs of different level.
    pub fn pack_masks(&mut self, c1s: Vec<Option<Poly<Ntt>>>, log_gap: u32) -> Result<PackedMasks> {
        check_packing(self.params.log_n(), c1s.len(), log_gap)?;
        let level = c1s
            .iter()
            .flatten()
            .next()
            .map(Poly::level)
            .ok_or(Error::InvalidPacking { count: 0, log_gap })?;
        for c1 in c1s.iter().flatten() {
            check_level(level, c1.level())?;
        }
        let params = self.params.clone();
        let ring = params.ring();
        let present = c1s.iter().map(Option::is_some).collect();
        if c1s.len() == 1 {
            let c1 = c1s.into_iter().flatten().next();
            let c1 = c1.ok_or(Error::InvalidPacking { count: 0, log_gap })?;
            let k0 = Poly::zero(ring, level, false);
            return Ok(PackedMasks {
                c1,
                k0,
                present,
                log_gap,
            });
        }
        let leaves = c1s
            .into_iter()
            .map(|c1| c1.map(|c1| Node { c0: None, c1 }))
            .collect();
        let root = self.tree(leaves, log_gap, level)?;
        let mut k0 = Poly::zero(ring, level, false);
        if let Some(root_c0) = &root.c0 {
            mod_down(ring, root_c0, params.inv_p(), &mut k0);
        }
        Ok(PackedMasks {
            c1: root.c1,
            k0,
            present,
            log_gap,
        })
    }

    /// The packed ciphertext from the inputs' `c0` (present exactly where `masks`' `c1`
    /// were, at their level) and the key-switching half `masks`: the linear map `L` of
    /// the module docs, then `+ ModDown(K)`. No key switch, no NTT.
    ///
    /// # Errors
    /// Inputs present or absent other than where `masks`' were, or at another level.
    pub fn pack_bodies(
        &self,
        c0s: Vec<Option<Poly<Ntt>>>,
        masks: PackedMasks,
        scale: Scale,
        encoding: Encoding,
    ) -> Result<Ciphertext> {
        let PackedMasks {
            c1,
            k0,
            present,
            log_gap,
        } = masks;
        if c0s.len() != present.len() || c0s.iter().zip(&present).any(|(c, &p)| c.is_some() != p) {
            return Err(Error::InvalidPacking {
                count: c0s.len(),
                log_gap,
            });
        }
        let level = c1.level();
        for c0 in c0s.iter().flatten() {
            check_level(level, c0.level())?;
        }
        let params = self.params.clone();
        let ring = params.ring();
        let log_n = params.log_n();
        let mut cur = c0s;
        let mut log_m = log_gap;
        while cur.len() > 1 {
            let half = cur.len() / 2;
            let odds = cur.split_off(half);
            let g = (1u64 << (log_n + 1 - log_m)) + 1;
            let auto = Automorphism::new(g, log_n);
            let x = monomial(&params, log_m, level, false);
            cur = cur
                .into_par_iter()
                .zip(odds)
                .map(|(e, o)| merge_linear(ring, auto.permutation(), &x, e, o))
                .collect();
            log_m -= 1;
        }
        let mut c0 = cur
            .pop()
            .flatten()
            .ok_or(Error::InvalidPacking { count: 0, log_gap })?;
        c0.add_assign(ring, &k0);
        Ok(Ciphertext::from_components(c0, c1, scale, encoding))
    }
}

/// One merge of `c0` without its key switch: `A + tau(B)` with `A = E + x O`,
/// `B = E - x O`, or `2 E` without `O`.
fn merge_linear(
    ring: &RnsContext,
    perm: &[u32],
    x: &Poly<Ntt>,
    e: Option<Poly<Ntt>>,
    o: Option<Poly<Ntt>>,
) -> Option<Poly<Ntt>> {
    let Some(o) = o else {
        return e.map(|mut e| {
            double(ring, &mut e);
            e
        });
    };
    let (mut a, b) = spread(ring, x, e, o);
    add_permuted(ring, &mut a, &b, perm, None);
    Some(a)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ring::Coeff;
    use crate::rlwe::{Encryptor, GaloisKey, GaloisKeys, SecretKey};
    use crate::scheme::evaluator::pack::tests::wide_params;
    use crate::scheme::pack_galois_elements;
    use crate::{Parameters, Plaintext};

    /// `coeff12widepack`'s key-switching shape, its base-`2^31` gadget.
    fn params() -> Arc<Parameters> {
        wide_params(Some(31))
    }

    /// Every count and pattern of absent inputs: the split gives `pack`'s bytes.
    #[test]
    fn bodies_of_masks_are_pack_byte_for_byte() {
        let p = params();
        let sk = Arc::new(SecretKey::generate(&p));
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut enc = Encryptor::with_secret_key(sk.clone());
        for (log_gap, log_count, absent) in [
            (6u32, 6u32, vec![3usize, 60, 61]),
            (7, 3, vec![0]),
            (4, 1, vec![1]),
            (3, 0, vec![]),
        ] {
            let count = 1usize << log_count;
            let mut gks = GaloisKeys::default();
            for g in pack_galois_elements(p.log_n(), log_gap, log_count) {
                gks.insert(GaloisKey::new(&sk, g));
            }
            let mut ev = Evaluator::new(&p).with_galois_keys(Arc::new(gks));
            let cts: Vec<Option<Ciphertext>> = (0..count)
                .map(|c| {
                    let vals: Vec<i64> = (0..p.n())
                        .map(|_| rng.gen_range(-(1i64 << 40)..(1i64 << 40)))
                        .collect();
                    let poly = Poly::<Coeff>::from_signed(p.ring(), &vals, 0, false);
                    let pt = Plaintext::from_poly(
                        poly.into_ntt(p.ring()),
                        Scale(1.0),
                        Encoding::Coefficients,
                    );
                    (!absent.contains(&c)).then(|| enc.encrypt(&pt))
                })
                .collect();
            let whole = ev.pack(cts.clone(), log_gap).unwrap();
            let (c0s, c1s): (Vec<_>, Vec<_>) = cts
                .into_iter()
                .map(|ct| match ct {
                    Some(ct) => {
                        let (c0, c1) = ct.into_components();
                        (Some(c0), Some(c1))
                    }
                    None => (None, None),
                })
                .unzip();
            let masks = ev.pack_masks(c1s, log_gap).unwrap();
            let split = ev
                .pack_bodies(c0s, masks, Scale(1.0), Encoding::Coefficients)
                .unwrap();
            let ((w0, w1), (s0, s1)) = (whole.components(), split.components());
            assert_eq!(w0.data(), s0.data(), "c0, 2^{log_count} inputs");
            assert_eq!(w1.data(), s1.data(), "c1, 2^{log_count} inputs");
        }
    }

    /// Bodies present where the masks were absent (or the reverse), another count, or
    /// no input at all are refused.
    #[test]
    fn bodies_must_match_the_masks_pattern() {
        let p = params();
        let sk = Arc::new(SecretKey::generate(&p));
        let mut gks = GaloisKeys::default();
        for g in pack_galois_elements(p.log_n(), 4, 1) {
            gks.insert(GaloisKey::new(&sk, g));
        }
        let mut ev = Evaluator::new(&p).with_galois_keys(Arc::new(gks));
        let zero = || Some(Poly::<Ntt>::zero(p.ring(), 0, false));
        let masks = ev.pack_masks(vec![zero(), None], 4).unwrap();
        let (s, e) = (Scale(1.0), Encoding::Coefficients);
        assert!(ev
            .pack_bodies(vec![None, zero()], masks.clone(), s, e)
            .is_err());
        assert!(ev
            .pack_bodies(vec![zero(), zero()], masks.clone(), s, e)
            .is_err());
        assert!(ev.pack_bodies(vec![zero()], masks.clone(), s, e).is_err());
        assert!(ev.pack_bodies(vec![zero(), None], masks, s, e).is_ok());
        assert!(ev.pack_masks(vec![None, None], 4).is_err());
        assert!(ev.pack_masks(vec![zero(); 3], 4).is_err());
    }
}
