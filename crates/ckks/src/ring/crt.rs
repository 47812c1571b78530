//! Exact CRT reconstruction of RNS coefficients to `f64`.
//!
//! Garner's mixed-radix conversion with balanced digits `v_i in (-q_i/2, q_i/2]`:
//! `x = v_0 + q_0 (v_1 + q_1 (v_2 + ...))` is then the centered representative of the
//! residues in `(-Q/2, Q/2)` (the primes are odd), and a Horner sum in `f64` from the top
//! digit loses no more than `f64` rounding on the result itself, whatever the size of `Q`.
//!
//! Fast path: decrypted CKKS values are far below `Q`, so each coefficient is first
//! reconstructed exactly in `i128` from the first `k` primes (`q_0 ... q_{k-1} < 2^125`) and
//! checked against every remaining residue. If all agree, that value is the centered
//! representative (CRT uniqueness: both lie in `(-Q/2, Q/2)` and agree modulo `Q`); if
//! not, the full Garner path runs. Exact either way, and `O(L)` instead of `O(L^2)` per
//! coefficient in the common case.

use rayon::prelude::*;

use super::poly::{Coeff, Poly};
use super::RnsContext;

/// `q_j^-1 mod q_i` (with Shoup quotients) for `j < i <= level`, indexed `[i][j]`.
fn garner_constants(ctx: &RnsContext, level: usize) -> Vec<Vec<(u64, u64)>> {
    (0..=level)
        .map(|i| {
            let m = ctx.moduli()[i];
            (0..i)
                .map(|j| {
                    let inv = m.inv(ctx.moduli()[j].value()).unwrap_or(0);
                    (inv, m.shoup(inv))
                })
                .collect()
        })
        .collect()
}

/// Writes the centered integer value of every coefficient of `p` (over `Q_l` only) as
/// `f64`, multiplied by `factor` (e.g. `1 / scale`). Parallel over coefficient chunks.
pub fn reconstruct_f64(ctx: &RnsContext, p: &Poly<Coeff>, factor: f64, out: &mut [f64]) {
    let level = p.level();
    let consts = garner_constants(ctx, level);
    let moduli = &ctx.moduli()[..=level];
    let chunk = 1024;
    // Prefix of primes whose product stays below 2^125.
    let mut prefix = 0;
    let mut log_prod = 0u32;
    while prefix <= level && log_prod + moduli[prefix].bits() <= 125 {
        log_prod += moduli[prefix].bits();
        prefix += 1;
    }
    let work = |c: usize, o: &mut [f64]| {
        let mut v = vec![0i64; level + 1];
        'coeff: for (t, x) in o.iter_mut().enumerate() {
            let k = c * chunk + t;
            if prefix > 0 {
                for i in 0..prefix {
                    let m = moduli[i];
                    let mut r = p.row(i)[k];
                    for j in 0..i {
                        let (w, ws) = consts[i][j];
                        r = m.mul_shoup(m.sub(r, m.reduce_i64(v[j])), w, ws);
                    }
                    v[i] = m.center(r);
                }
                let mut acc = v[prefix - 1] as i128;
                for i in (0..prefix - 1).rev() {
                    acc = acc * moduli[i].value() as i128 + v[i] as i128;
                }
                if (prefix..=level).all(|i| moduli[i].reduce_i128(acc) == p.row(i)[k]) {
                    *x = acc as f64 * factor;
                    continue 'coeff;
                }
            }
            for i in 0..=level {
                let m = moduli[i];
                let mut r = p.row(i)[k];
                for j in 0..i {
                    let (w, ws) = consts[i][j];
                    r = m.mul_shoup(m.sub(r, m.reduce_i64(v[j])), w, ws);
                }
                v[i] = m.center(r);
            }
            let mut acc = v[level] as f64;
            for i in (0..level).rev() {
                acc = acc * moduli[i].value() as f64 + v[i] as f64;
            }
            *x = acc * factor;
        }
    };
    if super::poly::parallel() {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, o)| work(c, o));
    } else {
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, o)| work(c, o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::modulus::generate_ntt_primes;

    #[test]
    fn reconstruction_is_exact_for_values_beyond_one_prime() {
        let primes = generate_ntt_primes(4, &[30, 31, 32, 40]).unwrap();
        let ctx = RnsContext::new(4, &primes[..3], &primes[3..]).unwrap();
        let q: i128 = primes[..3].iter().map(|&x| x as i128).product();
        // Exact integers: up to +-(Q-1)/2, written as i128 and reduced per prime.
        let vals: Vec<i128> = (0..16)
            .map(|i: i128| match i {
                0 => (q - 1) / 2,
                1 => -(q - 1) / 2,
                _ => (i - 8) * 0x1234_5678_9abc_def1 % (q / 2) + i,
            })
            .collect();
        let mut p = Poly::<Coeff>::zero(&ctx, 2, false);
        for r in 0..3 {
            let m = ctx.moduli()[r];
            for (x, &v) in p.row_mut(r).iter_mut().zip(&vals) {
                *x = m.reduce_i128(v);
            }
        }
        let mut out = vec![0.0; 16];
        reconstruct_f64(&ctx, &p, 1.0, &mut out);
        for (o, &v) in out.iter().zip(&vals) {
            assert_eq!(*o, v as f64, "value {v}");
        }
    }

    #[test]
    fn large_values_take_the_full_garner_path() {
        // Five 40-bit primes: Q ~ 2^200, beyond the i128 fast path's prefix.
        let primes = generate_ntt_primes(4, &[40, 40, 40, 40, 40, 45]).unwrap();
        let ctx = RnsContext::new(4, &primes[..5], &primes[5..]).unwrap();
        let mut p = Poly::<Coeff>::zero(&ctx, 4, false);
        // x_k = d_k * q0 q1 q2 q3 + k with top digit d_k = k - 8 (so |x| ~ 2^163).
        let prod4: f64 = primes[..4].iter().map(|&q| q as f64).product();
        for r in 0..5 {
            let m = ctx.moduli()[r];
            let pr = primes[..4].iter().fold(1u64, |a, &q| m.mul(a, m.reduce(q)));
            for k in 0..16 {
                let top = m.reduce_i64(k as i64 - 8);
                p.row_mut(r)[k] = m.add(m.mul(top, pr), k as u64);
            }
        }
        let mut out = vec![0.0; 16];
        reconstruct_f64(&ctx, &p, 1.0, &mut out);
        for (k, &o) in out.iter().enumerate() {
            let want = (k as f64 - 8.0) * prod4 + k as f64;
            assert!(
                (o - want).abs() <= want.abs() * 1e-15 + 1e-9,
                "{k}: {o} vs {want}"
            );
        }
    }
}
