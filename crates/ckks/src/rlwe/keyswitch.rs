//! Hybrid key switching (Bossuat, Mouchet, Troncoso-Pastoriza, Hubaux, EUROCRYPT 2021,
//! Sec. 3; Han-Ki, CT-RSA 2020): the `Q` primes are split into `dnum` digits `Q_j`; the key
//! for digit `j` encrypts `P * [Q/Q_j * (Q/Q_j)^-1 mod Q_j] * s'` under `s` over `QP`, a
//! gadget that is `P` modulo the primes of `Q_j` and 0 modulo every other prime.
//!
//! Key switching is split as Lattigo does: [`decompose_into`] (ModUp of every digit, the
//! expensive part, reusable across rotations = hoisting) and [`apply_into`] (inner product
//! with the key, lazily reduced in `u128`, then ModDown), which can also apply a Galois
//! permutation to the digits on the fly.

use std::sync::Arc;

use rayon::prelude::*;

use crate::params::Parameters;
use crate::ring::automorphism::Automorphism;
use crate::ring::basis::{digits_at_level, gadget_mod_up, mod_down, mod_up};
use crate::ring::poly::{for_each_indexed, for_each_row, join, parallel, with_scratch};
use crate::ring::sampler::{gaussian, os_rng, os_seed, uniform_poly};
use crate::ring::{Ntt, Poly};

use super::derive_seed;
use super::secret_key::SecretKey;

/// A hybrid key-switching key from some `s'` to the secret `s`: one RLWE sample over `QP`
/// per digit, with `a_j` derived from one public seed.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySwitchKey {
    params: Arc<Parameters>,
    pub(crate) b: Vec<Poly<Ntt>>,
    pub(crate) a: Vec<Poly<Ntt>>,
    seed: [u8; 32],
}

/// Seed label of the `a` components.
const KSK_LABEL: &[u8] = b"selene-ckks/ksk-a";

impl KeySwitchKey {
    /// Generates the key switching `s_from` (NTT form, at least all `Q` rows) to `sk`.
    pub(crate) fn generate(sk: &SecretKey, s_from: &Poly<Ntt>) -> Self {
        let params = sk.params().clone();
        let ring = params.ring();
        let level = params.max_level();
        let seed = os_seed();
        let mut rng = os_rng();
        let n = params.n();
        let a: Vec<Poly<Ntt>> = Self::expand_a(&params, &seed);
        // Key row `(j, k)`: group `j`'s gadget entry `P`, times `2^(w k)` for part `k` of a
        // gadget base `2^w` (1 without one).
        let rows: Vec<(std::ops::Range<usize>, u32)> = params
            .digit_groups()
            .iter()
            .zip(params.digit_parts())
            .flat_map(|(group, &parts)| {
                let w = params.gadget_log_base().unwrap_or(0);
                (0..parts as u32).map(move |k| (group.clone(), w * k))
            })
            .collect();
        let b = rows
            .iter()
            .zip(&a)
            .map(|((group, shift), aj)| {
                let e = gaussian(&mut rng, n);
                let mut bj = Poly::from_signed(ring, &e, level, true).into_ntt(ring);
                let mut as_ = aj.clone();
                as_.mul_assign(ring, sk.ntt());
                bj.sub_assign(ring, &as_);
                for i in group.clone() {
                    let m = ring.moduli()[i];
                    let g = m.mul(params.p_mod_q()[i], m.reduce_i128(1i128 << shift));
                    let src = s_from.row(i);
                    for (x, &s) in bj.row_mut(i).iter_mut().zip(src) {
                        *x = m.add(*x, m.mul(g, s));
                    }
                }
                bj
            })
            .collect();
        Self { params, b, a, seed }
    }

    fn expand_a(params: &Parameters, seed: &[u8; 32]) -> Vec<Poly<Ntt>> {
        (0..params.key_digits())
            .into_par_iter()
            .map(|j| {
                let sj = derive_seed(seed, KSK_LABEL, j as u64);
                uniform_poly(params.ring(), &sj, params.max_level(), true)
            })
            .collect()
    }

    /// Rebuilds a key from its `b` components and the seed of the `a`s.
    pub(crate) fn from_parts(params: Arc<Parameters>, b: Vec<Poly<Ntt>>, seed: [u8; 32]) -> Self {
        let a = Self::expand_a(&params, &seed);
        Self { params, b, a, seed }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// The public seed of the `a` components.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// Reorders every row into the order of `auto` (`key'[perm[k]] = key[k]`), so a
    /// rotation permutes the inner product's result once instead of every digit.
    pub(crate) fn permute_into_galois_order(&mut self, auto: &Automorphism) {
        let perm = auto.permutation();
        let n = perm.len();
        for p in self.b.iter_mut().chain(self.a.iter_mut()) {
            for_each_row(p.data_mut(), n, |_, row| {
                with_scratch(n, |t| {
                    t.copy_from_slice(row);
                    for (k, &pk) in perm.iter().enumerate() {
                        row[pk as usize] = t[k];
                    }
                })
            });
        }
    }

    /// The key back in natural order (inverse of [`Self::permute_into_galois_order`]).
    pub(crate) fn natural_order_copy(&self, auto: &Automorphism) -> Self {
        let mut out = self.clone();
        for p in out.b.iter_mut().chain(out.a.iter_mut()) {
            let n = p.n();
            for_each_row(p.data_mut(), n, |_, row| {
                with_scratch(n, |t| {
                    t.copy_from_slice(row);
                    auto.apply_ntt(t, row);
                })
            });
        }
        out
    }

    /// The `b` components, one per digit.
    pub(crate) fn b(&self) -> &[Poly<Ntt>] {
        &self.b
    }
}

/// The ModUp'ed digits of one polynomial at some level: reusable scratch, and the
/// hoisted part of a rotation.
#[derive(Clone, Debug, Default)]
pub struct Decomposition {
    digits: Vec<Poly<Ntt>>,
}

impl Decomposition {
    /// An empty decomposition (buffers are sized on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Level of the decomposed polynomial.
    pub fn level(&self) -> Option<usize> {
        self.digits.first().map(|d| d.level())
    }
}

/// ModUp of every digit of `c` (NTT form over `Q_l`) into `out` (parallel across digits);
/// with a gadget base, each one-prime digit becomes its balanced base-`2^w` parts.
pub fn decompose_into(params: &Parameters, c: &Poly<Ntt>, out: &mut Decomposition) {
    let ring = params.ring();
    let level = c.level();
    let count = params.key_digits_at_level(level);
    if out.digits.len() != count || out.level() != Some(level) {
        out.digits = (0..count).map(|_| Poly::zero(ring, level, true)).collect();
    }
    let groups = params.digit_groups();
    match params.gadget_log_base() {
        None => for_each_indexed(&mut out.digits, |j, d| {
            mod_up(ring, c, groups[j].clone(), d)
        }),
        Some(w) => {
            // One prime per group; the digit polynomials of group `j` are consecutive.
            let parts = params.digit_parts();
            let mut chunks: Vec<&mut [Poly<Ntt>]> = Vec::with_capacity(groups.len());
            let mut rest = &mut out.digits[..];
            for &k in parts.iter().take(digits_at_level(groups, level)) {
                let (head, tail) = rest.split_at_mut(k);
                chunks.push(head);
                rest = tail;
            }
            for_each_indexed(&mut chunks, |j, d| {
                gadget_mod_up(ring, c, groups[j].start, w, d)
            });
        }
    }
}

/// `acc = sum_j auto(d_j) * (b_j, a_j)` over `Q_l P` (NTT form, before ModDown): the
/// part of [`apply_into`] a caller that defers the ModDown (the packing tree's `c0`,
/// [`crate::Evaluator::pack`]) uses alone. Parallel across primes.
pub(crate) fn inner_product_into(
    params: &Parameters,
    dec: &Decomposition,
    key: &KeySwitchKey,
    auto: Option<&Automorphism>,
    acc: &mut [Poly<Ntt>; 2],
) {
    let ring = params.ring();
    let n = ring.n();
    let Some(level) = dec.level() else {
        return;
    };
    for a in acc.iter_mut() {
        if a.level() != level || a.p_rows() != ring.np() {
            *a = Poly::zero(ring, level, true);
        }
    }
    let q_rows = level + 1;
    let [acc0, acc1] = acc;
    let work = |r: usize, o0: &mut [u64], o1: &mut [u64]| {
        let idx = ring.modulus_index(q_rows, r);
        // SIMD multiply-accumulate per digit (tfhe-ntt's `mul_accumulate`, IFMA below
        // 2^50), sequential reads only.
        let plan = ring.plan(idx);
        let mac = |o: &mut [u64], key: &[Poly<Ntt>]| {
            o.fill(0);
            for (d, k) in dec.digits.iter().zip(key) {
                plan.mul_add(o, d.row(r), k.row(idx));
            }
        };
        match auto {
            None => {
                mac(o0, &key.b);
                mac(o1, &key.a);
            }
            // The key is stored in Galois order (`key'[perm[k]] = key[k]`), so
            // `sum_j d_j[perm[k]] key_j[k] = (sum_j d_j key'_j)[perm[k]]`: one gather per
            // output row instead of one per digit, from the sum in scratch.
            Some(auto) => with_scratch(n, |t| {
                for (o, key) in [(o0, &key.b), (o1, &key.a)] {
                    mac(t, key);
                    auto.apply_ntt(t, o);
                }
            }),
        }
    };
    if parallel() {
        acc0.data_mut()
            .par_chunks_exact_mut(n)
            .zip(acc1.data_mut().par_chunks_exact_mut(n))
            .enumerate()
            .for_each(|(r, (o0, o1))| work(r, o0, o1));
    } else {
        acc0.data_mut()
            .chunks_exact_mut(n)
            .zip(acc1.data_mut().chunks_exact_mut(n))
            .enumerate()
            .for_each(|(r, (o0, o1))| work(r, o0, o1));
    }
}

/// `(out0, out1) = ModDown(sum_j auto(d_j) * (b_j, a_j))` over `Q_l`: the key-switched
/// pair of the decomposed polynomial, with the Galois permutation `auto` applied to the
/// digits first when given (then `key` must be stored in that automorphism's order, see
/// [`KeySwitchKey::permute_into_galois_order`]). Parallel across primes.
pub fn apply_into(
    params: &Parameters,
    dec: &Decomposition,
    key: &KeySwitchKey,
    auto: Option<&Automorphism>,
    acc: &mut [Poly<Ntt>; 2],
    out0: &mut Poly<Ntt>,
    out1: &mut Poly<Ntt>,
) {
    let Some(level) = dec.level() else {
        return;
    };
    inner_product_into(params, dec, key, auto, acc);
    let ring = params.ring();
    let [acc0, acc1] = acc;
    for o in [&mut *out0, &mut *out1] {
        if o.level() != level || o.p_rows() != 0 {
            *o = Poly::zero(ring, level, false);
        }
    }
    join(
        || mod_down(ring, acc0, params.inv_p(), out0),
        || mod_down(ring, acc1, params.inv_p(), out1),
    );
}
