//! The first merge levels of packed outputs, moved from the ciphertexts to the weights.
//!
//! A merge at level `l` (grid `m`, `tau = tau_g`, `g = 2N/m + 1`, see
//! [`selene_ckks::Evaluator::pack`]) computes `R = E + x^(m/2) O + tau(E - x^(m/2) O)`.
//! Write every intermediate ciphertext as `sum_s sigma_s(x) * U_s`: images `sigma_s(x)`
//! of the input ciphertext under the automorphisms `sigma_s = prod_{l in s} tau_l` (`s`
//! a set of levels, as a bit mask) times plaintexts `U_s`. A block starts as
//! `x * W` (`s = {}`, `U = W`). The merge then only touches plaintexts:
//! - `x^(m/2) sum_s sigma_s(x) U_s = sum_s sigma_s(x) (x^(m/2) U_s)`,
//! - `tau(sigma_s(x) U_s) = sigma_{s + l}(x) tau(U_s)` (automorphisms commute, and apply
//!   to the product factor by factor),
//!
//! so after `L` levels a merged result is `sum_{s < 2^L} sigma_s(x) U_s` with `U_s`
//! computed once, when the weights are prepared. The server then needs the `2^L - 1`
//! images of each input ciphertext, key switches that share one decomposition
//! (hoisting), instead of one key switch per merged block: `ceil(d_in/k_i) (2^L - 1)`
//! instead of about `2^L` times fewer real merges. The multiply-adds stay one per weight
//! block (`2^L` plaintexts per merged result, `2^L` blocks merged). The images' key-switch
//! noise is multiplied by the weights like the encryption noise is, and is of the same
//! size (`~2^7` against `2^x_bits`).

use selene_ckks::ring::automorphism::Automorphism;
use selene_ckks::ring::{Coeff, Modulus, Poly};
use selene_ckks::Parameters;

/// The Galois element of merge level `l` (from 1) for a grid of `2^log_gap`:
/// `2N/m + 1` with `m = 2^(log_gap - l + 1)`.
pub(crate) fn level_element(log_n: u32, log_gap: u32, l: u32) -> u64 {
    (1u64 << (log_n + l - log_gap)) + 1
}

/// The elements `sigma_s` of the images, `s = 0..2^L` (`s = 0` is the identity).
pub(crate) fn image_elements(log_n: u32, log_gap: u32, levels: u32) -> Vec<u64> {
    let two_n = 2u64 << log_n;
    (0..1u64 << levels)
        .map(|s| {
            (1..=levels)
                .filter(|l| s >> (l - 1) & 1 == 1)
                .fold(1u64, |acc, l| {
                    // Both factors are below 2N <= 2^17: the product fits.
                    acc * level_element(log_n, log_gap, l) % two_n
                })
        })
        .collect()
}

/// One item of the fold: per image `s`, per input block `b`, an NTT-form polynomial.
type Item = Vec<Vec<Vec<u64>>>;

/// Folds the first `levels` merge levels into the weight blocks of one packed output:
/// `blocks[c]` (`2^r` of them, `None` past the matrix) holds the `in_blocks` NTT-form
/// weight blocks of output block `c`. Returns the `2^(r - levels)` merged items (`None`
/// where every block merged into it is absent), each `2^levels` images by `in_blocks`
/// polynomials.
pub(crate) fn fold(
    params: &Parameters,
    log_gap: u32,
    levels: u32,
    blocks: Vec<Option<Vec<Vec<u64>>>>,
) -> Vec<Option<Item>> {
    let ring = params.ring();
    let q: Modulus = ring.moduli()[0];
    let n = params.n();
    let log_n = params.log_n();
    let mut cur: Vec<Option<Item>> = blocks
        .into_iter()
        .map(|b| b.map(|polys| vec![polys]))
        .collect();
    for l in 1..=levels {
        let log_m = log_gap + 1 - l;
        let mut mono = vec![0i64; n];
        mono[1usize << (log_m - 1)] = 1;
        let x = Poly::<Coeff>::from_signed(ring, &mono, 0, false).into_ntt(ring);
        let x = x.row(0);
        let auto = Automorphism::new(level_element(log_n, log_gap, l), log_n);
        let half = cur.len() / 2;
        let odds = cur.split_off(half);
        cur = cur
            .into_iter()
            .zip(odds)
            .map(|(e, o)| {
                let (e, o) = match (e, o) {
                    (None, None) => return None,
                    (e, o) => (e, o),
                };
                let like = e
                    .as_ref()
                    .or(o.as_ref())
                    .map_or((0, 0), |i| (i.len(), i[0].len()));
                let zero = || vec![vec![vec![0u64; n]; like.1]; like.0];
                let (e, o) = (e.unwrap_or_else(zero), o.unwrap_or_else(zero));
                let mut r: Item = vec![Vec::new(); 2 * like.0];
                for (s, (es, os)) in e.into_iter().zip(o).enumerate() {
                    let mut a_s = Vec::with_capacity(es.len());
                    let mut t_s = Vec::with_capacity(es.len());
                    for (eb, ob) in es.iter().zip(&os) {
                        let y: Vec<u64> = ob.iter().zip(x).map(|(&v, &w)| q.mul(v, w)).collect();
                        a_s.push(eb.iter().zip(&y).map(|(&a, &b)| q.add(a, b)).collect());
                        let b_: Vec<u64> = eb.iter().zip(&y).map(|(&a, &b)| q.sub(a, b)).collect();
                        let mut t = vec![0u64; n];
                        auto.apply_ntt(&b_, &mut t);
                        t_s.push(t);
                    }
                    r[s] = a_s;
                    r[s + like.0] = t_s;
                }
                Some(r)
            })
            .collect();
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiling::{Packing, Tiling};

    #[test]
    fn image_elements_are_distinct_odd_and_start_with_the_identity() {
        for (log_n, log_gap, levels) in [(12u32, 10u32, 5u32), (12, 11, 4), (11, 6, 6), (12, 3, 0)]
        {
            let g = image_elements(log_n, log_gap, levels);
            assert_eq!(g.len(), 1 << levels);
            assert_eq!(g[0], 1);
            let mut sorted = g.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), g.len(), "{log_n} {log_gap} {levels}");
            assert!(g.iter().all(|&e| e % 2 == 1 && e < 2 << log_n));
        }
    }

    #[test]
    fn hoisting_balances_images_against_real_merges() {
        // One input block, 768 output blocks packed in 10 levels: 2^5 - 1 images and
        // 2^5 - 1 merges, against 767 merges unhoisted.
        let t = Tiling {
            n_b: 1,
            k_i: 1024,
            k_o: 4,
        };
        assert_eq!(t.pack_levels(3072), 10);
        assert_eq!(t.hoist_levels(576, 3072, 10, Packing::FOLDED), 5);
        // A flooded preset folds nothing.
        let flat = Packing { fold: false };
        assert_eq!(t.hoist_levels(576, 3072, 10, flat), 0);
        assert_eq!(t.packed_work(576, 3072, flat), (767, 768));
        // Many input blocks make images dear: fewer levels move.
        let wide = Tiling {
            n_b: 1,
            k_i: 32,
            k_o: 128,
        };
        assert!(wide.hoist_levels(576, 3072, wide.pack_levels(3072), Packing::FOLDED) <= 2);
    }
}
