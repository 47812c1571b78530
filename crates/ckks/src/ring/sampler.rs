//! Randomness: a ChaCha20 CSPRNG seeded from the OS, uniform residues by rejection (so a
//! 32-byte seed reproduces a public `a` exactly), uniform ternary secrets, and the
//! discrete Gaussian (sigma 3.2, tail cut at 6 sigma) by a cumulative distribution table.

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};

use super::poly::{for_each_row, Ntt, Poly};
use super::RnsContext;

/// Standard deviation of the RLWE error (HE standard).
pub const ERROR_SIGMA: f64 = 3.2;
/// Tail cut of the error distribution, in standard deviations.
pub const ERROR_TAIL_SIGMAS: f64 = 6.0;

/// A fresh ChaCha20 generator seeded from the operating system.
pub fn os_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_seed(os_seed())
}

/// A fresh 32-byte seed from the OS.
pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    seed
}

/// Fills `row` with uniform residues mod `q` by rejection sampling on `bits`-bit words.
fn uniform_row(rng: &mut ChaCha20Rng, q: u64, row: &mut [u64]) {
    let mask = u64::MAX >> q.leading_zeros();
    for x in row.iter_mut() {
        *x = loop {
            let v = rng.next_u64() & mask;
            if v < q {
                break v;
            }
        };
    }
}

/// A uniform polynomial in NTT form (uniform evaluations are a uniform polynomial),
/// generated row by row from `seed` with one ChaCha20 stream per row, so it is
/// reproducible from the seed and the rows can be filled in parallel.
pub fn uniform_poly(ctx: &RnsContext, seed: &[u8; 32], level: usize, with_p: bool) -> Poly<Ntt> {
    let mut p = Poly::<Ntt>::zero(ctx, level, with_p);
    let q_rows = p.q_rows();
    for_each_row(p.data_mut(), ctx.n(), |r, row| {
        let idx = ctx.modulus_index(q_rows, r);
        let mut rng = ChaCha20Rng::from_seed(*seed);
        // Stream per global modulus index: the same seed gives the same row at any level.
        rng.set_stream(idx as u64);
        uniform_row(&mut rng, ctx.moduli()[idx].value(), row);
    });
    p
}

/// Uniform ternary coefficients in `{-1, 0, 1}` (rejection on bytes, no modulo bias).
pub fn ternary(rng: &mut ChaCha20Rng, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        rng.fill_bytes(&mut buf);
        for &b in &buf {
            if b < 255 && out.len() < n {
                out.push(i64::from(b % 3) - 1);
            }
        }
    }
    out
}

/// Cumulative table of `|x|` for the discrete Gaussian of `ERROR_SIGMA`, truncated at
/// `ERROR_TAIL_SIGMAS`: entry `k` is `P(|x| <= k) * 2^63` (rounded), computed once.
fn cdt() -> &'static [u64] {
    static TABLE: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let bound = (ERROR_SIGMA * ERROR_TAIL_SIGMAS) as i64;
        let rho = |x: i64| (-(x * x) as f64 / (2.0 * ERROR_SIGMA * ERROR_SIGMA)).exp();
        let total: f64 = (-bound..=bound).map(rho).sum();
        let mut acc = 0.0;
        (0..=bound)
            .map(|k| {
                acc += if k == 0 { rho(0) } else { 2.0 * rho(k) } / total;
                if k == bound {
                    1u64 << 63
                } else {
                    (acc * 9223372036854775808.0) as u64
                }
            })
            .collect()
    })
}

/// Discrete Gaussian errors of sigma 3.2: one 64-bit word per sample, its top bit for the
/// sign and the other 63 for `|x|` by a full, branch-free scan of the table.
pub fn gaussian(rng: &mut ChaCha20Rng, n: usize) -> Vec<i64> {
    let table = cdt();
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            let (sign, u) = ((r >> 63) as i64, r & (u64::MAX >> 1));
            let mag: i64 = table.iter().map(|&t| i64::from(u >= t)).sum();
            mag * (1 - 2 * sign)
        })
        .collect()
}

/// Rounded continuous Gaussian of a large standard deviation `sigma` (noise flooding,
/// where `sigma` is far beyond any table). Box-Muller in f64: the 53-bit mantissa bounds
/// the statistical distance to the discrete Gaussian far below the flooding's own
/// `2^-s` target for the sigmas used (< 2^60).
pub fn wide_gaussian(rng: &mut ChaCha20Rng, n: usize, sigma: f64) -> Vec<i128> {
    let unit = |rng: &mut ChaCha20Rng| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (unit(rng), unit(rng));
        let r = sigma * (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()).round() as i128);
        out.push((r * t.sin()).round() as i128);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_moments_and_support() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let e = gaussian(&mut rng, 200_000);
        let mean = e.iter().sum::<i64>() as f64 / e.len() as f64;
        let var = e.iter().map(|&x| (x * x) as f64).sum::<f64>() / e.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(
            (var.sqrt() - ERROR_SIGMA).abs() < 0.05,
            "sigma {}",
            var.sqrt()
        );
        assert!(e.iter().all(|x| x.abs() <= 19));
        let t = ternary(&mut rng, 30_000);
        for v in -1..=1 {
            let c = t.iter().filter(|&&x| x == v).count();
            assert!((c as i64 - 10_000).abs() < 500, "ternary {v}: {c}");
        }
        let w = wide_gaussian(&mut rng, 100_000, 1e6);
        let sd = (w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((sd / 1e6 - 1.0).abs() < 0.02, "wide sigma {sd}");
    }

    #[test]
    fn uniform_poly_is_reproducible_across_levels() {
        let primes = crate::ring::modulus::generate_ntt_primes(4, &[30, 30, 40]).unwrap();
        let ctx = RnsContext::new(4, &primes[..2], &primes[2..]).unwrap();
        let a = uniform_poly(&ctx, &[1; 32], 1, true);
        let b = uniform_poly(&ctx, &[1; 32], 0, false);
        assert_eq!(a.row(0), b.row(0));
        assert_ne!(a.row(0), a.row(1));
        assert!((0..a.rows()).all(|r| a
            .row(r)
            .iter()
            .all(|&x| x < ctx.moduli()[a.modulus_index(&ctx, r)].value())));
    }
}
