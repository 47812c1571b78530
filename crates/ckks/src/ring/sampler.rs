//! Randomness: a ChaCha20 CSPRNG seeded from the OS, uniform residues by rejection (so a
//! 32-byte seed reproduces a public `a` exactly), uniform ternary secrets, and the
//! discrete Gaussian (sigma 3.2, tail cut at 6 sigma) by a cumulative distribution table.

use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use rand_core::{OsRng, RngCore, SeedableRng};
use zeroize::Zeroize;

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

/// The stream a 32-byte seed expands by into a uniform polynomial. A seeded ciphertext
/// names it in its flags, so every peer expands a seed alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expansion {
    /// ChaCha20, one stream per modulus: keys, and ciphertexts of format flag 1.
    ChaCha20,
    /// ChaCha8, one stream per modulus: fresh secret-key ciphertexts (flag 2). The
    /// expansion of a public `a` needs a pseudorandom stream, not a secret one; eight
    /// rounds keep a wide margin over the best known attacks (seven), as fhe.rs uses
    /// them for the same purpose, at 2.5x the speed of twenty.
    ChaCha8,
}

/// A seed and the stream it expands by: all a fresh ciphertext ships of its `c1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The 32 bytes.
    pub bytes: [u8; 32],
    /// How they expand.
    pub expansion: Expansion,
}

/// Fills `words` with the generator's next 64-bit words (little-endian, as
/// `next_u64` would return them one by one), drawn in bulk. The staging bytes are wiped:
/// they may be a secret error's randomness.
fn fill_words<R: RngCore>(rng: &mut R, words: &mut [u64]) {
    const CHUNK: usize = 256;
    let mut bytes = [0u8; 8 * CHUNK];
    for chunk in words.chunks_mut(CHUNK) {
        let bytes = &mut bytes[..8 * chunk.len()];
        rng.fill_bytes(bytes);
        rand_core::le::read_u64_into(bytes, chunk);
    }
    bytes.zeroize();
}

/// Fills `row` with uniform residues mod `q` by rejection sampling on `bits(q)`-bit
/// words: the accepted words of the stream, in order. Words are drawn in bulk and
/// compacted without branches; rejection is rare (`q` sits near its power of two), and
/// a short round draws exactly the words still missing, so the stream is consumed as a
/// word-by-word loop would consume it.
fn uniform_row<R: RngCore>(rng: &mut R, q: u64, row: &mut [u64]) {
    let mask = u64::MAX >> q.leading_zeros();
    let mut filled = 0;
    while filled < row.len() {
        let rest = &mut row[filled..];
        fill_words(rng, rest);
        let mut kept = 0;
        for i in 0..rest.len() {
            let v = rest[i] & mask;
            rest[kept] = v;
            kept += usize::from(v < q);
        }
        filled += kept;
    }
}

/// A uniform polynomial in NTT form (uniform evaluations are a uniform polynomial),
/// generated row by row from `seed` with one ChaCha20 stream per row, so it is
/// reproducible from the seed and the rows can be filled in parallel.
pub fn uniform_poly(ctx: &RnsContext, seed: &[u8; 32], level: usize, with_p: bool) -> Poly<Ntt> {
    uniform_poly_by(ctx, seed, level, with_p, Expansion::ChaCha20)
}

/// [`uniform_poly`] by the stream `expansion` names.
pub fn uniform_poly_by(
    ctx: &RnsContext,
    seed: &[u8; 32],
    level: usize,
    with_p: bool,
    expansion: Expansion,
) -> Poly<Ntt> {
    let mut p = Poly::<Ntt>::zero(ctx, level, with_p);
    let q_rows = p.q_rows();
    for_each_row(p.data_mut(), ctx.n(), |r, row| {
        let idx = ctx.modulus_index(q_rows, r);
        let q = ctx.moduli()[idx].value();
        // Stream per global modulus index: the same seed gives the same row at any level.
        match expansion {
            Expansion::ChaCha20 => {
                let mut rng = ChaCha20Rng::from_seed(*seed);
                rng.set_stream(idx as u64);
                uniform_row(&mut rng, q, row);
            }
            Expansion::ChaCha8 => {
                let mut rng = ChaCha8Rng::from_seed(*seed);
                rng.set_stream(idx as u64);
                uniform_row(&mut rng, q, row);
            }
        }
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
/// sign and the other 63 for `|x|` by a full, branch-free scan of the table (constant
/// time: the error is secret). Each table entry passes over a chunk of samples so the
/// comparisons vectorize ([`CdtScan`]).
pub fn gaussian(rng: &mut ChaCha20Rng, n: usize) -> Vec<i64> {
    // `u < 2^63` never reaches the last entry (`2^63`), and below it every entry and
    // every `u` fit an `i64`: signed comparisons, which every SIMD level has.
    let table = cdt();
    let table: Vec<i64> = table[..table.len() - 1].iter().map(|&t| t as i64).collect();
    let mut words = zeroize::Zeroizing::new(vec![0u64; n]);
    fill_words(rng, &mut words);
    let mut out = vec![0i64; n];
    pulp::Arch::new().dispatch(CdtScan {
        table: &table,
        words: &words,
        out: &mut out,
    });
    out
}

/// The table scan of [`gaussian`], compiled for the widest SIMD level the CPU has
/// (`pulp` inlines it into a function with those target features: AVX-512 compares eight
/// samples per instruction, AVX2 four). The result does not depend on the level.
struct CdtScan<'a> {
    table: &'a [i64],
    words: &'a [u64],
    out: &'a mut [i64],
}

impl pulp::WithSimd for CdtScan<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        // Magnitudes accumulate in `out` itself, one pass over a chunk of samples per
        // table entry (a compare-and-add that vectorizes at any width), the chunk small
        // enough that its words and magnitudes stay in L1 across the table.
        const CHUNK: usize = 256;
        for (out, words) in self.out.chunks_mut(CHUNK).zip(self.words.chunks(CHUNK)) {
            out.fill(0);
            for &t in self.table {
                for (m, &r) in out.iter_mut().zip(words) {
                    *m += i64::from((r & (u64::MAX >> 1)) as i64 >= t);
                }
            }
            for (o, &r) in out.iter_mut().zip(words) {
                *o *= 1 - 2 * (r >> 63) as i64;
            }
        }
    }
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

    /// The definitions the bulk samplers must reproduce word for word: one `next_u64`
    /// per draw.
    fn uniform_row_reference<R: RngCore>(rng: &mut R, q: u64, n: usize) -> Vec<u64> {
        let mask = u64::MAX >> q.leading_zeros();
        (0..n)
            .map(|_| loop {
                let v = rng.next_u64() & mask;
                if v < q {
                    break v;
                }
            })
            .collect()
    }

    fn gaussian_reference(rng: &mut ChaCha20Rng, n: usize) -> Vec<i64> {
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

    #[test]
    fn bulk_samplers_consume_the_stream_as_the_word_by_word_definitions() {
        // A prime just above a power of two rejects about half the words, one just below
        // almost none; odd lengths leave partial chunks.
        for (q, n) in [((1u64 << 40) + 1, 1001), ((1 << 54) - 33, 4096), (97, 13)] {
            let mut a = ChaCha20Rng::from_seed([3; 32]);
            let mut b = a.clone();
            let mut row = vec![0; n];
            uniform_row(&mut a, q, &mut row);
            assert_eq!(row, uniform_row_reference(&mut b, q, n), "q {q}");
            // The next word is the same: both consumed the same prefix of the stream.
            assert_eq!(a.next_u64(), b.next_u64(), "q {q}");
        }
        for n in [1, 7, 8, 9, 255, 256, 257, 1000, 4096] {
            let mut a = ChaCha20Rng::from_seed([5; 32]);
            let mut b = a.clone();
            assert_eq!(gaussian(&mut a, n), gaussian_reference(&mut b, n), "n {n}");
            assert_eq!(a.next_u64(), b.next_u64(), "n {n}");
        }
    }

    #[test]
    fn the_two_expansions_are_reproducible_uniform_and_distinct() {
        let primes = crate::ring::modulus::generate_ntt_primes(12, &[54]).unwrap();
        let ctx = RnsContext::new(12, &primes, &[]).unwrap();
        let q = primes[0];
        let a = uniform_poly_by(&ctx, &[9; 32], 0, false, Expansion::ChaCha8);
        assert_eq!(
            a,
            uniform_poly_by(&ctx, &[9; 32], 0, false, Expansion::ChaCha8)
        );
        assert_ne!(a, uniform_poly(&ctx, &[9; 32], 0, false));
        // ChaCha8's row is the accepted words of ChaCha8's stream 0.
        let mut rng = ChaCha8Rng::from_seed([9; 32]);
        rng.set_stream(0);
        assert_eq!(a.row(0), &uniform_row_reference(&mut rng, q, 4096)[..]);
        // Uniform below q: the mean of 4096 residues sits near q/2 (within 5 sigma).
        let mean = a.row(0).iter().map(|&x| x as f64).sum::<f64>() / 4096.0;
        let sigma = q as f64 / (12.0f64 * 4096.0).sqrt();
        assert!((mean - q as f64 / 2.0).abs() < 5.0 * sigma, "mean {mean}");
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
