//! Modulus switch of a one-prime ciphertext from `q` to a power of two `2^k`, the form a
//! result takes for the download when only its key holder will decrypt it.
//!
//! `round(c 2^k / q)` keeps `c0 + c1 s = m (mod q)` as `c0' + c1' s = m 2^k / q + r`
//! (mod `2^k`) with `r = r0 + r1 s` the rounding errors, `|r| ~ sqrt(N/18)`: the result
//! needs no more bits than its own precision, and a power-of-two modulus packs densely.
//! [`Decryptor::c1_s_pow2`] and [`Decryptor::decrypt_pow2`] undo it with the secret key.

use crate::error::{Error, Result};
use crate::params::Parameters;
use crate::ring::{Modulus, Ntt, Poly};

use super::decryptor::Decryptor;

/// A power-of-two modulus `2^k`, `1 <= k <= `[`Pow2Modulus::MAX_BITS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pow2Modulus {
    bits: u32,
}

impl Pow2Modulus {
    /// Largest `k`: [`Pow2Modulus::switch`] needs `x 2^k` to fit a `u128` (`x < 2^61`)
    /// and its f64 estimate to be off by a few units at most (`2^(k - 50) + 1/2`).
    pub const MAX_BITS: u32 = 52;

    /// The modulus `2^bits`.
    ///
    /// # Errors
    /// [`Error::InvalidPow2Bits`] unless `1 <= bits <= MAX_BITS`.
    pub fn new(bits: u32) -> Result<Self> {
        if (1..=Self::MAX_BITS).contains(&bits) {
            Ok(Self { bits })
        } else {
            Err(Error::InvalidPow2Bits {
                bits,
                max: Self::MAX_BITS,
            })
        }
    }

    /// `k`.
    pub fn bits(self) -> u32 {
        self.bits
    }

    /// `v mod 2^k` centred into `[-2^(k-1), 2^(k-1))`.
    #[inline]
    pub fn center(self, v: u64) -> i64 {
        let k = self.bits;
        let v = (v & ((1u64 << k) - 1)) as i64;
        if v >= 1i64 << (k - 1) {
            v - (1i64 << k)
        } else {
            v
        }
    }

    /// `round(x 2^k / q) mod 2^k` for every residue `x < q` of `v` (ties round up), exactly.
    ///
    /// The quotient is estimated in f64 and then corrected in integer arithmetic: with
    /// `x < q < 2^61` and `k <= 52` the numerator `x 2^k + floor(q/2)` fits a `u128`, and
    /// the estimate `x * (2^k / q)` is off by less than `2^(k - 50) + 1/2` (two f64
    /// roundings of relative error `2^-53` on a value below `2^k`): one step in either
    /// direction for `k <= 50`, at most five at 52, lands on
    /// `floor((x 2^k + floor(q/2)) / q)`. The loops keep it exact whatever the estimate
    /// (a `u128` division per residue would cost about as much as the matrix product
    /// whose result is switched).
    pub fn switch(self, q: &Modulus, v: &[u64]) -> Vec<u64> {
        let k = self.bits;
        let qv = q.value();
        let ratio = f64::from(k).exp2() / qv as f64;
        let mask = (1u64 << k) - 1;
        let q128 = u128::from(qv);
        v.iter()
            .map(|&x| {
                debug_assert!(x < qv);
                let num = (u128::from(x) << k) + (q128 >> 1);
                let mut est = u128::from((x as f64 * ratio).round() as u64);
                while est * q128 > num {
                    est -= 1;
                }
                while (est + 1) * q128 <= num {
                    est += 1;
                }
                (est as u64) & mask
            })
            .collect()
    }

    /// Whether ciphertexts of `params` switched to `2^k` decrypt exactly (see
    /// [`Decryptor::c1_s_pow2`]): `|c1 s| <= N 2^(k-1) = 2^(k + log N - 1)` must stay below
    /// half the modulus the product is computed in: the first prime `q`
    /// (`q/2 >= 2^(bits(q) - 2)`), or `q p` with the first special prime `p` when `q`
    /// alone is too narrow (`q p / 2 >= 2^(bits(q) + bits(p) - 3)`).
    pub fn lift_fits(self, params: &Parameters) -> bool {
        self.bits + params.log_n() + 2 <= lift_bits(params)
    }

    /// Whether `q` alone holds the lift (one NTT product instead of two).
    fn lift_fits_q(self, params: &Parameters) -> bool {
        self.bits + params.log_n() + 2 <= params.ring().moduli()[0].bits()
    }
}

impl Decryptor {
    /// `c1 s` over the integers for a `c1` switched to `2^k` (values mod `2^k`, `N` of
    /// them), modulo `2^64` (two's complement) where it is wider: `|c1| <= 2^(k-1)` and
    /// `s` is ternary, so `|c1 s| <= N 2^(k-1)`, which [`Pow2Modulus::lift_fits`] keeps
    /// below `q/2`, or below `q p / 2` (then the product is also computed mod the first
    /// special prime `p` and lifted by the CRT); the result centres to the exact integer.
    /// Adding `c0` and centring mod `2^k` ([`Pow2Modulus::center`]) decrypts any subset
    /// of the coefficients.
    ///
    /// # Errors
    /// [`Error::Pow2LiftTooWide`] unless `modulus.lift_fits(params)`;
    /// [`Error::Pow2Length`] unless `c1` has `N` values.
    pub fn c1_s_pow2(&self, c1: &[u64], modulus: Pow2Modulus) -> Result<Vec<i64>> {
        let params = self.params();
        check_pow2(params, c1.len(), modulus)?;
        let ring = params.ring();
        let q = ring.moduli()[0];
        let mut c1s: Vec<i64> = c1.iter().map(|&v| modulus.center(v)).collect();
        let mut p = Poly::<Ntt>::zero(ring, 0, false);
        p.assign_signed(ring, &c1s);
        let row = p.row_mut(0);
        let s = self.secret_key().ntt();
        ring.plan(0).mul_backward(row, s.row(0));
        if modulus.lift_fits_q(params) {
            for (out, &v) in c1s.iter_mut().zip(&*row) {
                *out = q.center(v);
            }
            return Ok(c1s);
        }
        // The same product mod the first special prime `p`, then the CRT lift to the
        // centred integer mod `q p` (exact: `|c1 s| < q p / 2` by `lift_fits`), of which
        // only the value mod `2^k` is kept.
        let at = ring.nq();
        let pm = ring.moduli()[at];
        let mut rp: Vec<u64> = c1s.iter().map(|&v| pm.reduce_i64(v)).collect();
        let plan = ring.plan(at);
        plan.forward(&mut rp);
        plan.mul_backward(&mut rp, s.row(s.q_rows()));
        let q_inv = pm.inv(pm.reduce(q.value())).unwrap_or(0);
        let (qv, pv) = (i128::from(q.value()), i128::from(pm.value()));
        let qp = qv * pv;
        for ((out, &a), &b) in c1s.iter_mut().zip(&*row).zip(&rp) {
            // v = a + q t with t = (b - a) q^-1 mod p, in [0, q p); centred.
            let t = pm.mul(pm.sub(b, pm.reduce(a)), q_inv);
            let mut v = i128::from(a) + qv * i128::from(t);
            if v > qp / 2 {
                v -= qp;
            }
            // Two's complement keeps the low 64 bits, hence the value mod 2^k.
            *out = v as i64;
        }
        Ok(c1s)
    }

    /// `c0 + c1 s` centred mod `2^k` for a ciphertext switched to `2^k` with all `N`
    /// coefficients of both components: the message scaled by `2^k / q`, plus noise.
    ///
    /// # Errors
    /// As [`Decryptor::c1_s_pow2`]; [`Error::Pow2Length`] unless `c0` has `N` values.
    pub fn decrypt_pow2(&self, c0: &[u64], c1: &[u64], modulus: Pow2Modulus) -> Result<Vec<i64>> {
        check_pow2(self.params(), c0.len(), modulus)?;
        let c1s = self.c1_s_pow2(c1, modulus)?;
        Ok(c0
            .iter()
            .zip(&c1s)
            .map(|(&a, &b)| modulus.center((a as i64).wrapping_add(b) as u64))
            .collect())
    }
}

/// Bits of the modulus [`Decryptor::c1_s_pow2`] can compute `c1 s` in: the first prime
/// `q`'s, plus the first special prime's less one (their product) when there is one.
fn lift_bits(params: &Parameters) -> u32 {
    let m = params.ring().moduli();
    let q = m[0].bits();
    match params.p().first() {
        Some(_) => q + m[params.ring().nq()].bits() - 1,
        None => q,
    }
}

/// Errors unless a component of `len` values mod `modulus` decrypts exactly under `params`.
fn check_pow2(params: &Parameters, len: usize, modulus: Pow2Modulus) -> Result<()> {
    if !modulus.lift_fits(params) {
        return Err(Error::Pow2LiftTooWide {
            bits: modulus.bits(),
            log_n: params.log_n(),
            q_bits: lift_bits(params),
        });
    }
    if len != params.n() {
        return Err(Error::Pow2Length {
            found: len,
            expected: params.n(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::params::{ParametersLiteral, Security};
    use crate::ring::Coeff;
    use crate::rlwe::{Encryptor, SecretKey};
    use proptest::prelude::*;

    /// The definition, by one exact `u128` division.
    fn reference(q: u64, k: u32, x: u64) -> u64 {
        let num = (u128::from(x) << k) + u128::from(q / 2);
        ((num / u128::from(q)) as u64) & ((1u64 << k) - 1)
    }

    /// One-prime parameters `(log N, bits of q, bits of P)`.
    fn params(log_n: u32, q: u32, p: u32) -> Arc<Parameters> {
        Parameters::new(&ParametersLiteral {
            log_n,
            log_q: vec![q],
            log_p: vec![p],
            log_scale: 20,
            dnum: None,
            gadget_log_base: None,
            security: Security::Hes128,
        })
        .unwrap()
    }

    /// The primes of Selene's linalg presets (40-bit `coeff11`, 41-bit `coeff12`, 61-bit
    /// `coeff12wide`, 56-bit `slots13`) with their download bits.
    fn cases() -> Vec<(Arc<Parameters>, Pow2Modulus)> {
        [
            (11, 39, 13, 24),
            (12, 41, 20, 24),
            (12, 60, 20, 46),
            (13, 55, 60, 36),
            // Past q alone: the lift through q p (coeff12widepack's primes).
            (12, 60, 47, 49),
            (12, 60, 47, 52),
        ]
        .into_iter()
        .map(|(log_n, q, p, k)| (params(log_n, q, p), Pow2Modulus::new(k).unwrap()))
        .collect()
    }

    proptest! {
        #[test]
        fn switch_is_the_exact_rounded_quotient(seed in any::<u64>(), k in 1u32..=52) {
            for (params, preset_k) in cases() {
                let q = params.ring().moduli()[0];
                let x = seed % q.value();
                for kk in [Pow2Modulus::new(k).unwrap(), preset_k] {
                    prop_assert_eq!(kk.switch(&q, &[x]), vec![reference(q.value(), kk.bits(), x)]);
                }
            }
        }
    }

    #[test]
    fn switch_is_exact_at_the_edges() {
        for (params, k) in cases() {
            let q = params.ring().moduli()[0];
            let (qv, kb) = (q.value(), k.bits());
            // 0, q - 1, and the residues whose quotient sits right at a rounding tie.
            let mut xs = vec![0, 1, qv - 1, qv / 2, qv / 2 + 1];
            for m in [1u64, 3, 1 << 20, (1u64 << kb) - 1] {
                let t = ((u128::from(m) * u128::from(qv) + u128::from(qv) / 2) >> kb) as u64;
                xs.extend(
                    [t.saturating_sub(1), t, t + 1]
                        .into_iter()
                        .filter(|&x| x < qv),
                );
            }
            let want: Vec<u64> = xs.iter().map(|&x| reference(qv, kb, x)).collect();
            assert_eq!(k.switch(&q, &xs), want, "q {qv} k {kb}");
        }
    }

    #[test]
    fn bits_outside_the_range_are_refused() {
        for bits in [0, Pow2Modulus::MAX_BITS + 1, 64] {
            assert_eq!(
                Pow2Modulus::new(bits),
                Err(Error::InvalidPow2Bits {
                    bits,
                    max: Pow2Modulus::MAX_BITS
                })
            );
        }
        let m = Pow2Modulus::new(4).unwrap();
        assert_eq!(
            [0, 7, 8, 15, 16 + 9].map(|v| m.center(v)),
            [0, 7, -8, -1, -7]
        );
    }

    /// A switched encryption of `m` decrypts to `m 2^k / q` up to the rounding noise
    /// (`|r| ~ sqrt(N/18)` plus the encryption noise scaled down by `2^k / q`).
    #[test]
    fn switched_ciphertexts_decrypt_to_the_scaled_message() {
        for (params, k) in cases() {
            let ring = params.ring();
            let q = ring.moduli()[0];
            let sk = Arc::new(SecretKey::generate(&params));
            let mut enc = Encryptor::with_secret_key(sk.clone());
            let dec = Decryptor::new(sk);
            let n = params.n();
            // Messages that land on multiples of 2^(k-10) after the switch.
            let unit = q.value() as f64 / f64::from(k.bits()).exp2();
            let want: Vec<i64> = (0..n as i64).map(|i| (i % 512 - 256) << 8).collect();
            let m: Vec<i64> = want
                .iter()
                .map(|&w| (w as f64 * unit).round() as i64)
                .collect();
            let ct =
                enc.encrypt_poly(&Poly::<Coeff>::from_signed(ring, &m, 0, false).into_ntt(ring));
            let c0 = k.switch(&q, ct.c0.into_coeff(ring).row(0));
            let c1 = k.switch(&q, ct.c1.into_coeff(ring).row(0));
            let got = dec.decrypt_pow2(&c0, &c1, k).unwrap();
            let c1s = dec.c1_s_pow2(&c1, k).unwrap();
            // Twelve standard deviations of the rounding noise.
            let bound = (12.0 * (n as f64 / 18.0).sqrt()) as i64;
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= bound,
                    "k {} coefficient {i}: {g} vs {w}",
                    k.bits()
                );
                assert_eq!(g, k.center(c0[i].wrapping_add(c1s[i] as u64)));
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let (params, k) = cases().swap_remove(1);
        let dec = Decryptor::new(Arc::new(SecretKey::generate(&params)));
        let n = params.n();
        assert_eq!(
            dec.c1_s_pow2(&vec![0; n - 1], k),
            Err(Error::Pow2Length {
                found: n - 1,
                expected: n
            })
        );
        assert_eq!(
            dec.decrypt_pow2(&[0; 3], &vec![0; n], k),
            Err(Error::Pow2Length {
                found: 3,
                expected: n
            })
        );
        // The lift runs through q p: its bits are both primes' less one.
        let lift = lift_bits(&params);
        let m = params.ring().moduli();
        assert_eq!(lift, m[0].bits() + m[1].bits() - 1);
        let wide = Pow2Modulus::new(lift - 13).unwrap();
        assert!(k.lift_fits(&params) && !wide.lift_fits(&params));
        assert_eq!(
            dec.c1_s_pow2(&vec![0; n], wide),
            Err(Error::Pow2LiftTooWide {
                bits: lift - 13,
                log_n: 12,
                q_bits: lift
            })
        );
    }
}
