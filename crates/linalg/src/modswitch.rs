//! The download's modulus switch `q -> 2^k` and the client's decryption of switched
//! ciphertexts, shared by both methods.
//!
//! `round(c 2^k / q)` keeps `c0 + c1 s = m (mod q)` as `c0' + c1' s = m 2^k / q + r`
//! (mod `2^k`) with `r = r0 + r1 s` the rounding errors, `|r| ~ sqrt(N/18)`: the product
//! needs no more bits than its own precision, and a power-of-two modulus packs densely.

use selene_ckks::ring::{Coeff, Modulus, Ntt, Poly};
use selene_ckks::rlwe::Decryptor;
use selene_ckks::Parameters;

/// A product ciphertext after the switch to `2^k`: `c0` (all of it, or only the used
/// coefficients) and all of `c1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SwitchedCt {
    pub(crate) c0: Vec<u64>,
    pub(crate) c1: Vec<u64>,
}

/// `round(x 2^k / q) mod 2^k` for every residue `x < q` (ties round up), exactly.
///
/// The quotient is estimated in f64 and then corrected in integer arithmetic: with
/// `x < q < 2^61` and `k <= 47` the numerator `x 2^k + floor(q/2)` fits a `u128`, and the
/// estimate `x * (2^k / q)` is off by less than `2^(k - 50) + 1/2 < 1` (two f64 roundings
/// of relative error `2^-53` on a value below `2^k`), so at most one step in either
/// direction lands on `floor((x 2^k + floor(q/2)) / q)`. The loops keep it exact
/// whatever the estimate (a `u128` division per residue would cost about as much as the
/// product itself).
pub(crate) fn switch(q: &Modulus, k: u32, v: &[u64]) -> Vec<u64> {
    let qv = q.value();
    let ratio = f64::from(k).exp2() / qv as f64;
    let mask = (1u64 << k) - 1;
    let q128 = u128::from(qv);
    v.iter()
        .map(|&x| {
            debug_assert!(x < qv && k <= 64 - 17);
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

/// `v mod 2^k` centred into `[-2^(k-1), 2^(k-1))`.
#[inline]
pub(crate) fn center(v: u64, k: u32) -> i64 {
    let v = (v & ((1u64 << k) - 1)) as i64;
    if v >= 1i64 << (k - 1) {
        v - (1i64 << k)
    } else {
        v
    }
}

/// `c1 s` over the integers for a switched `c1` (values mod `2^k`): `|c1| <= 2^(k-1)` and
/// `s` is ternary, so `|c1 s| <= N 2^(k-1)`, which callers keep below `q/2`; the product
/// computed mod `q` then centres to the exact integer.
pub(crate) fn c1_times_s(params: &Parameters, dec: &Decryptor, c1: &[u64], k: u32) -> Vec<i64> {
    let ring = params.ring();
    let q = ring.moduli()[0];
    let c1: Vec<i64> = c1.iter().map(|&v| center(v, k)).collect();
    let c1 = Poly::<Coeff>::from_signed(ring, &c1, 0, false).into_ntt(ring);
    let zero = Poly::<Ntt>::zero(ring, 0, false);
    dec.decrypt_poly(&zero, &c1)
        .row(0)
        .iter()
        .map(|&v| q.center(v))
        .collect()
}

/// Whether `2^k` switched ciphertexts of `params` decrypt exactly (see [`c1_times_s`]):
/// `|c1 s| <= N 2^(k-1) = 2^(k + log N - 1)` must stay below `q/2 >= 2^(bits(q) - 2)`.
pub(crate) fn lift_fits(params: &Parameters, k: u32) -> bool {
    k + params.log_n() + 2 <= params.ring().moduli()[0].bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, by one exact `u128` division.
    fn reference(q: u64, k: u32, x: u64) -> u64 {
        let num = (u128::from(x) << k) + u128::from(q / 2);
        ((num / u128::from(q)) as u64) & ((1u64 << k) - 1)
    }

    /// The presets' primes (41-bit `Coeff12`, 61-bit `Coeff12Wide`, 40-bit `Coeff11`,
    /// 56-bit `Slots13`) with their download bits.
    fn cases() -> Vec<(Modulus, u32)> {
        crate::LinalgPreset::ALL
            .into_iter()
            .map(|p| {
                let params = p.build().unwrap();
                let k = match p.method() {
                    crate::Method::Coefficients => p.down_bits(),
                    crate::Method::Slots => crate::slots::DOWN_BITS,
                };
                (params.ring().moduli()[0], k)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn switch_is_the_exact_rounded_quotient(seed in any::<u64>(), k in 1u32..=47) {
            for (q, preset_k) in cases() {
                let x = seed % q.value();
                for kk in [k, preset_k] {
                    prop_assert_eq!(switch(&q, kk, &[x]), vec![reference(q.value(), kk, x)]);
                }
            }
        }
    }

    #[test]
    fn switch_is_exact_at_the_edges() {
        for (q, k) in cases() {
            let qv = q.value();
            // 0, q - 1, and the residues whose quotient sits right at a rounding tie.
            let mut xs = vec![0, 1, qv - 1, qv / 2, qv / 2 + 1];
            for m in [1u64, 3, 1 << 20, (1u64 << k) - 1] {
                let t = ((u128::from(m) * u128::from(qv) + u128::from(qv) / 2) >> k) as u64;
                xs.extend(
                    [t.saturating_sub(1), t, t + 1]
                        .into_iter()
                        .filter(|&x| x < qv),
                );
            }
            let want: Vec<u64> = xs.iter().map(|&x| reference(qv, k, x)).collect();
            assert_eq!(switch(&q, k, &xs), want, "q {qv} k {k}");
        }
    }
}
