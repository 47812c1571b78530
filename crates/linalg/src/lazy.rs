//! Lazy NTT-domain multiply-accumulate: the server's hot loop (`sum ct_i * w_i` over both
//! components of every output block or folded item), reduced mod `q` only every so many
//! products. [`LazyAcc`] picks the representation from the prime.
//!
//! # On 27- and 28-bit limbs, for primes below `2^55`
//! With `x = x1 2^27 + x0` and `w = w1 2^27 + w0` (`x0, w0 < 2^27` and `x1, w1 < 2^28`
//! because `x, w < q < 2^55`), `x w = x1 w1 2^54 + (x0 w1 + x1 w0) 2^27 + x0 w0`, and each
//! limb product fits 56 bits: three `u64` sums per coefficient (`lo`, `mid`, `hi`) take
//! it, with 32-bit multiplies that every SIMD level has (`vpmuludq`), where a `u128` sum
//! needs a scalar 64 x 64 multiply and a carry chain per coefficient.
//!
//! Bounds: after a reduction `lo < 2^55` and `mid = hi = 0`. Each product adds less than
//! `2^54` to `lo` and less than `2^56` to `mid` and `hi`, so [`SPLIT_LAZY`] `= 255`
//! products keep each below `2^64`; the combined value `hi 2^54 + mid 2^27 + lo` stays
//! below `2^119`, which a `u128` reduction takes.
//!
//! # On `u128`, for wider primes
//! After a reduction a sum holds less than `q < 2^q_bits`, and each product adds less than
//! `2^(2 q_bits)`, so `2^(128 - 2 q_bits) - 1` of them stay below
//! `2^128 - 2^(2 q_bits) + 2^q_bits < 2^128` (63 at the wide preset's 61-bit prime).

use selene_ckks::ring::{Modulus, Ntt, Poly};
use selene_ckks::{Ciphertext, Encoding, Scale};

/// Bits of the low limb.
const LIMB_BITS: u32 = 27;
/// The mask of the low limb.
const LIMB: u64 = (1 << LIMB_BITS) - 1;
/// The mask of the high limb (one bit wider: `q` may pass `2^54`).
const HIGH: u64 = (1 << (LIMB_BITS + 1)) - 1;
/// Widest prime the limbs carry, in bits (`q < 2^55`).
const SPLIT_MAX_Q_BITS: u32 = 2 * LIMB_BITS + 1;
/// Products between reductions on limbs (module docs).
const SPLIT_LAZY: usize = 255;

/// `sum ct_i * w_i` over both components of `N` coefficients, lazily reduced mod `q`:
/// on limbs when `q` has at most [`SPLIT_MAX_Q_BITS`] bits, on `u128` otherwise.
#[derive(Debug)]
pub(crate) enum LazyAcc {
    /// Three limb sums.
    Limbs(SplitAcc),
    /// One `u128` per coefficient (`c0` then `c1`) and the products since a reduction.
    Wide { acc: Vec<u128>, count: usize },
}

impl LazyAcc {
    /// An empty accumulator for the prime `q`.
    pub(crate) fn new(q: &Modulus) -> Self {
        if q.bits() <= SPLIT_MAX_Q_BITS {
            LazyAcc::Limbs(SplitAcc::default())
        } else {
            LazyAcc::Wide {
                acc: Vec::new(),
                count: 0,
            }
        }
    }

    /// Zero for ciphertexts of `rn` coefficients per component.
    pub(crate) fn reset(&mut self, rn: usize) {
        match self {
            LazyAcc::Limbs(l) => l.reset(rn),
            LazyAcc::Wide { acc, count } => {
                acc.clear();
                acc.resize(2 * rn, 0);
                *count = 0;
            }
        }
    }

    /// `self += ct * w` over both components (`w` one NTT-form row; every value below
    /// `q`, the prime this accumulator was made for), reduced when the sums are full.
    pub(crate) fn mul_acc(&mut self, q: &Modulus, ct: &Ciphertext, w: &[u64]) {
        match self {
            LazyAcc::Limbs(l) => l.mul_acc(q, ct, w),
            LazyAcc::Wide { acc, count } => {
                if *count == wide_lazy(q.bits()) {
                    for a in acc.iter_mut() {
                        *a = u128::from(q.reduce_u128(*a));
                    }
                    *count = 0;
                }
                let (c0, c1) = ct.components();
                let (x0, x1) = (c0.row(0), c1.row(0));
                let (a0, a1) = acc.split_at_mut(w.len());
                for s in 0..w.len() {
                    a0[s] += u128::from(x0[s]) * u128::from(w[s]);
                    a1[s] += u128::from(x1[s]) * u128::from(w[s]);
                }
                *count += 1;
            }
        }
    }

    /// The ciphertext the sums stand for, reduced mod `q`.
    pub(crate) fn ciphertext(&self, q: &Modulus) -> Ciphertext {
        match self {
            LazyAcc::Limbs(l) => l.ciphertext(q),
            LazyAcc::Wide { acc, .. } => {
                let rn = acc.len() / 2;
                let poly = |acc: &[u128]| {
                    let data = acc.iter().map(|&a| q.reduce_u128(a)).collect();
                    Poly::<Ntt>::from_raw(data, rn, 1, 0)
                };
                Ciphertext::from_components(
                    poly(&acc[..rn]),
                    poly(&acc[rn..]),
                    Scale(1.0),
                    Encoding::Coefficients,
                )
            }
        }
    }
}

/// Products a `u128` sum takes between reductions for a prime of `q_bits` bits (module
/// docs), capped at `2^20 - 1` for narrow primes, where the cap never binds.
fn wide_lazy(q_bits: u32) -> usize {
    // Modulus keeps q below 2^61, so 128 - 2 q_bits >= 6.
    (1usize << (128 - 2 * q_bits.min(61)).min(20)) - 1
}

/// `sum ct_i * w_i` over both components of `N` coefficients, as three limb sums.
#[derive(Debug, Default)]
pub(crate) struct SplitAcc {
    /// `lo`, `mid` and `hi`, each `c0` then `c1` (`2 N` words).
    lo: Vec<u64>,
    mid: Vec<u64>,
    hi: Vec<u64>,
    /// Products since the last reduction.
    count: usize,
}

impl SplitAcc {
    /// Zero for ciphertexts of `rn` coefficients per component.
    fn reset(&mut self, rn: usize) {
        for v in [&mut self.lo, &mut self.mid, &mut self.hi] {
            v.clear();
            v.resize(2 * rn, 0);
        }
        self.count = 0;
    }

    /// `self += ct * w` over both components (`w`: one NTT-form row, `N` values below
    /// `q`; `ct`'s rows below `q`; `q` of at most [`SPLIT_MAX_Q_BITS`] bits), reduced mod
    /// `q` when [`SPLIT_LAZY`] products have accumulated.
    fn mul_acc(&mut self, q: &Modulus, ct: &Ciphertext, w: &[u64]) {
        debug_assert!(q.bits() <= SPLIT_MAX_Q_BITS);
        if self.count == SPLIT_LAZY {
            self.reduce(q);
        }
        let rn = w.len();
        let (c0, c1) = ct.components();
        for (half, x) in [c0.row(0), c1.row(0)].into_iter().enumerate() {
            let at = half * rn..(half + 1) * rn;
            pulp::Arch::new().dispatch(LimbMac {
                lo: &mut self.lo[at.clone()],
                mid: &mut self.mid[at.clone()],
                hi: &mut self.hi[at],
                x,
                w,
            });
        }
        self.count += 1;
    }

    /// The exact sum at coefficient `i`.
    fn value(&self, i: usize) -> u128 {
        (u128::from(self.hi[i]) << (2 * LIMB_BITS))
            + (u128::from(self.mid[i]) << LIMB_BITS)
            + u128::from(self.lo[i])
    }

    /// Reduces every sum mod `q` into `lo`.
    fn reduce(&mut self, q: &Modulus) {
        for i in 0..self.lo.len() {
            self.lo[i] = q.reduce_u128(self.value(i));
        }
        self.mid.fill(0);
        self.hi.fill(0);
        self.count = 0;
    }

    /// The ciphertext the sums stand for, reduced mod `q`.
    fn ciphertext(&self, q: &Modulus) -> Ciphertext {
        let rn = self.lo.len() / 2;
        let poly = |range: std::ops::Range<usize>| {
            let data = range.map(|i| q.reduce_u128(self.value(i))).collect();
            Poly::<Ntt>::from_raw(data, rn, 1, 0)
        };
        Ciphertext::from_components(
            poly(0..rn),
            poly(rn..2 * rn),
            Scale(1.0),
            Encoding::Coefficients,
        )
    }
}

/// One component's limb products, compiled for the CPU's widest SIMD level by `pulp`
/// (the masks let the compiler use 32-bit multiplies).
struct LimbMac<'a> {
    lo: &'a mut [u64],
    mid: &'a mut [u64],
    hi: &'a mut [u64],
    x: &'a [u64],
    w: &'a [u64],
}

impl pulp::WithSimd for LimbMac<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let terms = self
            .lo
            .iter_mut()
            .zip(self.mid.iter_mut())
            .zip(self.hi.iter_mut());
        for (((lo, mid), hi), (&x, &w)) in terms.zip(self.x.iter().zip(self.w)) {
            let (x0, x1) = (x & LIMB, (x >> LIMB_BITS) & HIGH);
            let (w0, w1) = (w & LIMB, (w >> LIMB_BITS) & HIGH);
            *lo += x0 * w0;
            *mid += x0 * w1 + x1 * w0;
            *hi += x1 * w1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;
    use selene_ckks::ring::modulus::generate_ntt_primes;

    /// SplitMix64: reproducible test values without a generator crate.
    struct Mix(u64);

    impl Mix {
        fn below(&mut self, q: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % q
        }
    }

    fn ct_of(rn: usize, q: u64, rng: &mut Mix) -> Ciphertext {
        let mut row = || -> Vec<u64> { (0..rn).map(|_| rng.below(q)).collect() };
        let (c0, c1) = (row(), row());
        Ciphertext::from_components(
            Poly::<Ntt>::from_raw(c0, rn, 1, 0),
            Poly::<Ntt>::from_raw(c1, rn, 1, 0),
            Scale(1.0),
            Encoding::Coefficients,
        )
    }

    #[test]
    fn lazy_sums_equal_the_sums_mod_q_across_reductions() {
        // The packed preset's prime (just above 2^54, the widest the limbs carry) and a
        // 41-bit one on limbs, the wide preset's 61-bit one on u128; values up to q - 1
        // (the worst case for every limb), and more products than one lazy run of either
        // representation so reductions happen inside.
        let mut rng = Mix(17);
        let rn = 16;
        for (bits, limbs) in [(54, true), (41, true), (60, false)] {
            let q = Modulus::new(generate_ntt_primes(4, &[bits]).unwrap()[0]);
            let mut acc = LazyAcc::new(&q);
            assert_eq!(matches!(acc, LazyAcc::Limbs(_)), limbs, "{}", q.value());
            acc.reset(rn);
            let mut want = vec![0u64; 2 * rn];
            for k in 0..(2 * SPLIT_LAZY + 7) {
                let ct = if k % 3 == 0 {
                    let top = vec![q.value() - 1; rn];
                    Ciphertext::from_components(
                        Poly::<Ntt>::from_raw(top.clone(), rn, 1, 0),
                        Poly::<Ntt>::from_raw(top, rn, 1, 0),
                        Scale(1.0),
                        Encoding::Coefficients,
                    )
                } else {
                    ct_of(rn, q.value(), &mut rng)
                };
                let w: Vec<u64> = (0..rn)
                    .map(|i| {
                        if i % 2 == 0 {
                            q.value() - 1
                        } else {
                            rng.below(q.value())
                        }
                    })
                    .collect();
                acc.mul_acc(&q, &ct, &w);
                let (c0, c1) = ct.components();
                for (half, x) in [c0.row(0), c1.row(0)].into_iter().enumerate() {
                    for i in 0..rn {
                        let p = q.reduce_u128(u128::from(x[i]) * u128::from(w[i]));
                        want[half * rn + i] = (want[half * rn + i] + p) % q.value();
                    }
                }
            }
            let got = acc.ciphertext(&q);
            let (g0, g1) = got.components();
            assert_eq!(g0.row(0), &want[..rn], "c0, {bits}-bit prime");
            assert_eq!(g1.row(0), &want[rn..], "c1, {bits}-bit prime");
        }
    }
}
