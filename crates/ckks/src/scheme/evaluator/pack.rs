//! Packing of coefficient-encoded ciphertexts whose useful coefficients sit on a
//! power-of-two grid: the merge tree of PackLWEs (Chen, Dai, Kim, Song, ACNS 2021,
//! Alg. 2) applied to RLWE inputs, as in BumbleBee (Lu et al., NDSS 2025, sec. 4) and
//! Lattigo's `rlwe.Evaluator.Pack`.
//!
//! # The merge step
//! Let `m >= 2` be a power of two and `tau = tau_g` with `g = 2N/m + 1`. For an exponent
//! `i`, `X^i -> X^(i g) = X^i X^(2N i / m)`, and `X^(2N) = 1`, so `tau` fixes `X^i` when
//! `m | i`, negates it when `i = m/2 (mod m)`, and maps every other exponent to another
//! exponent that is not a multiple of `m/2` (the 2-adic valuation of `i g` is that of `i`).
//! Given `E` and `O` whose useful coefficients sit at multiples of `m` (anything
//! elsewhere), with `Y = X^(m/2) O`, `A = E + Y`, `B = E - Y`:
//!
//! ```text
//! R = A + tau(B):   R[i] = 2 E[i]          for i = 0     (mod m)
//!                   R[i] = 2 O[i - m/2]    for i = m/2   (mod m)
//! ```
//!
//! (at `i = 0 mod m`, `Y[i]` cancels between `A` and `tau(B)`; at `i = m/2`, `E[i]`
//! does), and every other exponent receives only coefficients from exponents that are
//! not multiples of `m/2`. So one key switch merges two ciphertexts of grid `m` into one
//! of grid `m/2`, doubling the values; an absent `O` needs no key switch (`R = 2E`, the
//! odd half of the grid then holds garbage that no reader looks at).
//!
//! # The tree
//! [`Evaluator::pack`] merges `2^r` ciphertexts of grid `2^G` (`r <= G`) in `r` levels:
//! level `l` (from 1) pairs input `c` with `c + 2^(r-l)` at grid `2^(G-l+1)`. Input `c`'s
//! coefficient at `p 2^G` ends at `p 2^G + c 2^(G-r)`, multiplied by `2^r`. The noise of
//! each key switch is doubled by every later level, like the values, so the relative
//! error of a packed value is that of the inputs plus about `r` key-switch noises.
//!
//! # Deferred ModDown of `c0`
//! A merge's key switch returns `(tau(B0) + ModDown(k0), ModDown(k1))` with `(k0, k1)`
//! over `Q P`. Only `c1` feeds the next level's decomposition; `c0` is only added,
//! doubled, multiplied by monomials and permuted, all of which commute with the
//! division by `P`. So the tree carries `P c0` over `Q P` (a leaf's is `c0 P mod q_i`
//! and 0 mod `P`), adds each `k0` whole, and switches `c0` down once at the root: one
//! NTT over `Q` and one inverse NTT over `P` fewer per merge, and one rounding of `c0`
//! in all instead of one per merge (as Lattigo's hoisted linear transforms defer
//! theirs).

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::params::Parameters;
use crate::ring::basis::mod_down;
use crate::ring::poly::for_each_row_seq;
use crate::ring::{Ntt, Poly, RnsContext};
use crate::rlwe::keyswitch::{decompose_into, inner_product_into};
use crate::rlwe::{Decomposition, GaloisKey};
use crate::scheme::ciphertext::Ciphertext;
use crate::scheme::{check_encoding, check_level};

use super::Evaluator;

/// The Galois elements [`Evaluator::pack`] uses to merge `2^levels` ciphertexts of grid
/// `2^log_gap` in a ring of degree `2^log_n`: `2N/m + 1` for `m = 2^log_gap, ..., 2^(log_gap - levels + 1)`.
pub fn pack_galois_elements(log_n: u32, log_gap: u32, levels: u32) -> Vec<u64> {
    (0..levels.min(log_gap))
        .map(|l| {
            let log_m = log_gap - l;
            (1u64 << (log_n + 1 - log_m)) + 1
        })
        .collect()
}

/// A ciphertext inside the merge tree: `c0` lifted to `Q P` as `P c0` (see the module
/// docs; `None` while it is zero, as in [`Evaluator::pack_masks`] until a key switch adds
/// to it), `c1` over `Q`; both NTT form.
pub(super) struct Node {
    pub(super) c0: Option<Poly<Ntt>>,
    pub(super) c1: Poly<Ntt>,
}

impl Node {
    /// `(P c0, c1)`: `c0 (P mod q_i)` in the `Q` rows, 0 in the `P` rows.
    fn lift(params: &Parameters, ct: Ciphertext) -> Self {
        let ring = params.ring();
        let (c0, c1) = ct.into_components();
        let mut lifted = Poly::zero(ring, c0.level(), true);
        for (r, &p) in params.p_mod_q().iter().enumerate().take(c0.q_rows()) {
            let m = ring.moduli()[r];
            let ps = m.shoup(p);
            for (o, &x) in lifted.row_mut(r).iter_mut().zip(c0.row(r)) {
                *o = m.mul_shoup(x, p, ps);
            }
        }
        Self {
            c0: Some(lifted),
            c1,
        }
    }

    /// `2 self` (a merge without its odd input).
    fn double(mut self, ring: &RnsContext) -> Self {
        if let Some(c0) = &mut self.c0 {
            double(ring, c0);
        }
        double(ring, &mut self.c1);
        self
    }
}

/// One worker's key-switching buffers, reused across its merges.
#[derive(Default)]
struct MergeScratch {
    dec: Decomposition,
    acc: Option<[Poly<Ntt>; 2]>,
    down: Option<Poly<Ntt>>,
}

/// `(e, o) <- (e + o, e - o)` row-wise (same shape).
fn butterfly(ring: &RnsContext, e: &mut Poly<Ntt>, o: &mut Poly<Ntt>) {
    let (q_rows, n) = (e.q_rows(), ring.n());
    for (r, (er, or)) in e
        .data_mut()
        .chunks_exact_mut(n)
        .zip(o.data_mut().chunks_exact_mut(n))
        .enumerate()
    {
        let m = ring.moduli()[ring.modulus_index(q_rows, r)];
        for (x, y) in er.iter_mut().zip(or.iter_mut()) {
            let (a, b) = (*x, *y);
            *x = m.add(a, b);
            *y = m.sub(a, b);
        }
    }
}

impl Evaluator {
    /// Packs `cts` (a power-of-two count `2^r`, `None` for an all-zero input) whose useful
    /// coefficients sit at multiples of `2^log_gap` into one ciphertext: input `c`'s
    /// coefficient at `p 2^log_gap` lands at `p 2^log_gap + c 2^(log_gap - r)`, times
    /// `2^r`. Uses the Galois keys of [`pack_galois_elements`]; merges of one level run
    /// in parallel.
    ///
    /// # Errors
    /// A count that is not a power of two or exceeds `2^log_gap`, no input at all,
    /// `log_gap` beyond `log N`, a missing Galois key, operands of different level,
    /// scale or encoding.
    pub fn pack(&mut self, mut cts: Vec<Option<Ciphertext>>, log_gap: u32) -> Result<Ciphertext> {
        check_packing(self.params.log_n(), cts.len(), log_gap)?;
        let first = cts
            .iter()
            .flatten()
            .next()
            .ok_or(Error::InvalidPacking { count: 0, log_gap })?;
        let (level, scale, encoding) = (first.level(), first.scale(), first.encoding());
        for ct in cts.iter().flatten() {
            check_level(level, ct.level())?;
            check_encoding(encoding, ct.encoding())?;
            scale.check_same(ct.scale())?;
        }
        if cts.len() == 1 {
            return cts
                .pop()
                .flatten()
                .ok_or(Error::InvalidPacking { count: 0, log_gap });
        }
        let params = self.params.clone();
        let leaves = cts
            .into_par_iter()
            .map(|ct| ct.map(|ct| Node::lift(&params, ct)))
            .collect();
        let root = self.tree(leaves, log_gap, level)?;
        let mut c0 = Poly::zero(params.ring(), level, false);
        if let Some(root_c0) = &root.c0 {
            mod_down(params.ring(), root_c0, params.inv_p(), &mut c0);
        }
        Ok(Ciphertext::from_components(c0, root.c1, scale, encoding))
    }

    /// The merge levels over `cur` (a power-of-two count above one, at least one present,
    /// all at `level`), from grid `2^log_gap`: the root.
    pub(super) fn tree(
        &mut self,
        mut cur: Vec<Option<Node>>,
        log_gap: u32,
        level: usize,
    ) -> Result<Node> {
        let params = self.params.clone();
        let log_n = params.log_n();
        let mut log_m = log_gap;
        while cur.len() > 1 {
            let half = cur.len() / 2;
            let odds = cur.split_off(half);
            let pairs: Vec<_> = cur.into_iter().zip(odds).collect();
            let g = (1u64 << (log_n + 1 - log_m)) + 1;
            // Only a level with an odd input to merge needs its key.
            let key = if pairs.iter().any(|(_, o)| o.is_some()) {
                Some(self.galois_key(g)?)
            } else {
                None
            };
            let x = monomial(&params, log_m, level, true);
            cur = pairs
                .into_par_iter()
                .map_init(MergeScratch::default, |s, (e, o)| {
                    merge(&params, key.as_ref().ok_or(g), &x, e, o, s)
                })
                .collect::<Result<_>>()?;
            log_m -= 1;
        }
        cur.pop()
            .flatten()
            .ok_or(Error::InvalidPacking { count: 0, log_gap })
    }
}

/// Errors unless `count` is a power of two at most `2^log_gap` and `log_gap <= log_n`.
pub(super) fn check_packing(log_n: u32, count: usize, log_gap: u32) -> Result<()> {
    if !count.is_power_of_two() || log_gap > log_n || count.trailing_zeros() > log_gap {
        return Err(Error::InvalidPacking { count, log_gap });
    }
    Ok(())
}

/// `N x^(m/2)` (`m = 2^log_m`) over `Q_level` (and `P` with `with_p`), NTT form: the
/// constant of a merge level's monomial product, for the SIMD
/// [`crate::ring::NttPlan::mul_normalize`] that divides by `N`.
pub(super) fn monomial(params: &Parameters, log_m: u32, level: usize, with_p: bool) -> Poly<Ntt> {
    let mut mono = vec![0i64; params.n()];
    mono[1usize << (log_m - 1)] = params.n() as i64;
    Poly::from_signed(params.ring(), &mono, level, with_p).into_ntt(params.ring())
}

/// `poly <- x poly` row by row, `x` a [`monomial`] of `poly`'s shape.
fn mul_monomial(ring: &RnsContext, poly: &mut Poly<Ntt>, x: &Poly<Ntt>) {
    let q_rows = poly.q_rows();
    for_each_row_seq(poly.data_mut(), ring.n(), |r, row| {
        let idx = ring.modulus_index(q_rows, r);
        ring.plan(idx).mul_normalize(row, x.row(r));
    });
}

/// One component's `(A, B) = (E + x O, E - x O)` in the inputs' buffers, `(x O, -x O)`
/// without `E`: a merge's steps before the automorphism.
pub(super) fn spread(
    ring: &RnsContext,
    x: &Poly<Ntt>,
    e: Option<Poly<Ntt>>,
    mut o: Poly<Ntt>,
) -> (Poly<Ntt>, Poly<Ntt>) {
    mul_monomial(ring, &mut o, x);
    match e {
        Some(mut e) => {
            butterfly(ring, &mut e, &mut o);
            (e, o)
        }
        None => {
            let a = o.clone();
            o.neg_assign(ring);
            (a, o)
        }
    }
}

/// `poly <- 2 poly`.
pub(super) fn double(ring: &RnsContext, poly: &mut Poly<Ntt>) {
    let q_rows = poly.q_rows();
    for_each_row_seq(poly.data_mut(), ring.n(), |r, row| {
        let m = ring.moduli()[ring.modulus_index(q_rows, r)];
        row.iter_mut().for_each(|x| *x = m.add(*x, *x));
    });
}

/// `a <- a + tau(b)` row by row, with `tau`'s NTT-form permutation `perm`, plus `k` when
/// given (same shape as `a`).
pub(super) fn add_permuted(
    ring: &RnsContext,
    a: &mut Poly<Ntt>,
    b: &Poly<Ntt>,
    perm: &[u32],
    k: Option<&Poly<Ntt>>,
) {
    let (n, q_rows) = (ring.n(), a.q_rows());
    for (r, row) in a.data_mut().chunks_exact_mut(n).enumerate() {
        let m = ring.moduli()[ring.modulus_index(q_rows, r)];
        let src = b.row(r);
        match k {
            Some(k) => {
                for ((o, &p), &k) in row.iter_mut().zip(perm).zip(k.row(r)) {
                    *o = m.add(*o, m.add(src[p as usize], k));
                }
            }
            None => {
                for (o, &p) in row.iter_mut().zip(perm) {
                    *o = m.add(*o, src[p as usize]);
                }
            }
        }
    }
}

/// One merge step with `x = N x^(m/2)` (NTT form over `Q P`) and the level's Galois key
/// (`Err(g)` when the level needed none), in the buffers of its inputs: `Y = x O` in
/// `O`'s, then `A = E + Y` in `E`'s and `B = E - Y` in `O`'s, and `A + tau(B)` in `A`'s.
fn merge(
    params: &Parameters,
    key: std::result::Result<&Arc<GaloisKey>, u64>,
    x: &Poly<Ntt>,
    e: Option<Node>,
    o: Option<Node>,
    s: &mut MergeScratch,
) -> Result<Option<Node>> {
    let ring = params.ring();
    let Some(o) = o else {
        return Ok(e.map(|e| e.double(ring)));
    };
    let key = key.map_err(|g| Error::MissingGaloisKey { galois_element: g })?;
    let level = o.c1.level();
    let (e0, e1) = e.map_or((None, None), |e| (e.c0, Some(e.c1)));
    // A zero `c0` on both sides stays unwritten until the key switch's `k0`; a zero odd
    // one beside an even one is made whole (a zero even one is the absent `E`).
    let c0 = match (e0, o.c0) {
        (None, None) => None,
        (e0, o0) => {
            let o0 = o0.unwrap_or_else(|| Poly::zero(ring, level, true));
            Some(spread(ring, x, e0, o0))
        }
    };
    let (mut a1, b1) = spread(ring, x, e1, o.c1);
    // tau(B) = (tau(B0) + ModDown(k0), ModDown(k1)); `c0` keeps `P tau(B0) + k0`.
    decompose_into(params, &b1, &mut s.dec);
    let acc = s
        .acc
        .get_or_insert_with(|| [Poly::zero(ring, level, true), Poly::zero(ring, level, true)]);
    inner_product_into(params, &s.dec, &key.ksk, Some(&key.auto), acc);
    let down = s.down.get_or_insert_with(|| Poly::zero(ring, level, false));
    if down.level() != level {
        *down = Poly::zero(ring, level, false);
    }
    mod_down(ring, &acc[1], params.inv_p(), down);
    a1.add_assign(ring, down);
    let a0 = match c0 {
        Some((mut a0, b0)) => {
            add_permuted(ring, &mut a0, &b0, key.auto.permutation(), Some(&acc[0]));
            a0
        }
        // Both zero: `A0 + tau(B0) = 0`.
        None => acc[0].clone(),
    };
    Ok(Some(Node {
        c0: Some(a0),
        c1: a1,
    }))
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ring::Coeff;
    use crate::rlwe::{Encryptor, GaloisKey, GaloisKeys, SecretKey};
    use crate::scheme::{Encoding, Scale};
    use crate::{Decryptor, Parameters, ParametersLiteral, Plaintext, Security};

    fn params() -> Arc<Parameters> {
        Parameters::new(&ParametersLiteral {
            log_n: 12,
            log_q: vec![54],
            log_p: vec![54],
            log_scale: 20,
            dnum: None,
            gadget_log_base: None,
            security: Security::Hes128,
        })
        .unwrap()
    }

    /// Packs `count` inputs (some absent) of grid `2^log_gap` with garbage everywhere off
    /// the grid and checks every packed value against `2^r` times its input up to
    /// the noise.
    #[test]
    fn packed_values_land_where_the_module_says_and_garbage_never_reaches_them() {
        let p = params();
        let n = p.n();
        let sk = Arc::new(SecretKey::generate(&p));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (log_gap, log_count, absent) in [
            (6u32, 6u32, vec![3usize, 60]),
            (4, 2, vec![]),
            (3, 0, vec![]),
        ] {
            let count = 1usize << log_count;
            let mut gks = GaloisKeys::default();
            for g in pack_galois_elements(p.log_n(), log_gap, log_count) {
                gks.insert(GaloisKey::new(&sk, g));
            }
            let mut ev = Evaluator::new(&p).with_galois_keys(Arc::new(gks));
            let mut enc = Encryptor::with_secret_key(sk.clone());
            let mut inputs = Vec::new();
            let mut cts = Vec::new();
            for c in 0..count {
                let vals: Vec<i64> = (0..n)
                    .map(|_| rng.gen_range(-(1i64 << 30)..(1i64 << 30)))
                    .collect();
                let pt = Plaintext::from_poly(
                    Poly::<Coeff>::from_signed(p.ring(), &vals, 0, false).into_ntt(p.ring()),
                    Scale(1.0),
                    Encoding::Coefficients,
                );
                if absent.contains(&c) {
                    cts.push(None);
                    inputs.push(None);
                } else {
                    cts.push(Some(enc.encrypt(&pt)));
                    inputs.push(Some(vals));
                }
            }
            let packed = ev.pack(cts, log_gap).unwrap();
            let dec = Decryptor::new(sk.clone());
            let (c0, c1) = packed.components();
            let m = dec.decrypt_poly(c0, c1);
            let q = p.ring().moduli()[0].value();
            let centre = |v: u64| {
                if v > q / 2 {
                    v as i64 - q as i64
                } else {
                    v as i64
                }
            };
            let gap = 1usize << log_gap;
            let r = log_count;
            let mut worst = 0i64;
            for (c, vals) in inputs.iter().enumerate() {
                for pos in (0..n).step_by(gap) {
                    let at = pos + c * (gap >> r);
                    let want = vals.as_ref().map_or(0, |v| v[pos]) << r;
                    if vals.is_none() {
                        continue;
                    }
                    worst = worst.max((centre(m.row(0)[at]) - want).abs());
                }
            }
            // Fresh noise (a few units) and each level's key-switch noise, doubled by
            // every later level: far below 2^(r + 8), against values up to 2^(30 + r).
            assert!(
                worst < 1 << (r + 8),
                "gap 2^{log_gap}, 2^{r} inputs: error {worst}"
            );
        }
    }

    /// `coeff12widepack`'s key-switching shape: one 60-bit `q` and `P ~ 2^47` (what the
    /// security bound leaves at `N = 2^12`), with the gadget base `2^gadget_log_base`.
    pub(in crate::scheme::evaluator) fn wide_params(
        gadget_log_base: Option<u32>,
    ) -> Arc<Parameters> {
        Parameters::new(&ParametersLiteral {
            log_n: 12,
            log_q: vec![60],
            log_p: vec![47],
            log_scale: 20,
            dnum: None,
            gadget_log_base,
            security: Security::Hes128,
        })
        .unwrap()
    }

    /// The worst packing error at a one-prime `q ~ 2^60` with `P ~ 2^47` (what the security
    /// bound leaves at `N = 2^12`), for 16 inputs of zeros at grid `2^6`.
    fn wide_pack_error(gadget_log_base: Option<u32>) -> i64 {
        let p = wide_params(gadget_log_base);
        let sk = Arc::new(SecretKey::generate(&p));
        let (log_gap, log_count) = (6u32, 4u32);
        let mut gks = GaloisKeys::default();
        for g in pack_galois_elements(p.log_n(), log_gap, log_count) {
            gks.insert(GaloisKey::new(&sk, g));
        }
        let mut ev = Evaluator::new(&p).with_galois_keys(Arc::new(gks));
        let mut enc = Encryptor::with_secret_key(sk.clone());
        let zero = Plaintext::from_poly(
            Poly::<Coeff>::from_signed(p.ring(), &vec![0; p.n()], 0, false).into_ntt(p.ring()),
            Scale(1.0),
            Encoding::Coefficients,
        );
        let cts = (0..1 << log_count)
            .map(|_| Some(enc.encrypt(&zero)))
            .collect();
        let packed = ev.pack(cts, log_gap).unwrap();
        let (c0, c1) = packed.components();
        let m = Decryptor::new(sk).decrypt_poly(c0, c1);
        let q = p.ring().moduli()[0];
        (0..p.n())
            .step_by(1 << (log_gap - log_count))
            .map(|at| q.center(m.row(0)[at]).abs())
            .max()
            .unwrap()
    }

    /// With one 61-bit prime and `P ~ 2^47` a whole-prime digit leaves key-switch noise
    /// near `q sqrt(N) / P ~ 2^20` per merge; the base-`2^31` gadget leaves the rounding
    /// (`~sqrt(N)`), doubled by each later level.
    #[test]
    fn a_gadget_base_keeps_key_switch_noise_at_the_rounding_when_p_is_below_q() {
        let gadget = wide_pack_error(Some(31));
        let plain = wide_pack_error(None);
        println!("worst packing error: gadget {gadget}, one digit {plain}");
        assert!(gadget < 1 << 12, "gadget: {gadget}");
        assert!(plain > 1 << 16, "one digit: {plain}");
    }

    /// Inputs the merges could not add, and a merge level without its key, are errors
    /// before any work; a level whose odd inputs are all absent needs no key.
    #[test]
    fn mismatched_inputs_and_missing_keys_are_refused() {
        let p = params();
        let sk = Arc::new(SecretKey::generate(&p));
        let mut enc = Encryptor::with_secret_key(sk.clone());
        let zero = |scale| {
            let poly = Poly::<Coeff>::from_signed(p.ring(), &vec![0; p.n()], 0, false);
            Plaintext::from_poly(
                poly.into_ntt(p.ring()),
                Scale(scale),
                Encoding::Coefficients,
            )
        };
        let (a, b) = (enc.encrypt(&zero(1.0)), enc.encrypt(&zero(2.0)));
        let mut gks = GaloisKeys::default();
        for g in pack_galois_elements(p.log_n(), 4, 1) {
            gks.insert(GaloisKey::new(&sk, g));
        }
        let mut ev = Evaluator::new(&p).with_galois_keys(Arc::new(gks));
        assert!(ev.pack(vec![Some(a.clone()), Some(b)], 4).is_err());
        assert!(ev.pack(vec![Some(a.clone()), Some(a.clone())], 4).is_ok());
        let mut bare = Evaluator::new(&p);
        assert!(matches!(
            bare.pack(vec![Some(a.clone()), Some(a.clone())], 4),
            Err(Error::MissingGaloisKey { .. })
        ));
        assert!(bare.pack(vec![Some(a), None], 4).is_ok());
    }

    #[test]
    fn bad_counts_are_refused() {
        let p = params();
        let mut ev = Evaluator::new(&p);
        assert!(ev.pack(vec![None, None, None], 4).is_err());
        assert!(ev.pack(vec![None; 4], 1).is_err());
        assert!(ev.pack(vec![None; 2], 4).is_err());
    }
}
