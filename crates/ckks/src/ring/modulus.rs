//! One RNS prime and its precomputed reduction constants.
//!
//! Products are reduced with a 128-bit Barrett reduction (the `floor(2^128 / q)` ratio, as
//! SEAL's `barrett_reduce_128`), fixed multiplicands use Shoup's precomputed quotient
//! (`floor(w * 2^64 / q)`), so no `%` ever runs in a hot loop.

/// A prime modulus `q < 2^61` with its Barrett ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modulus {
    q: u64,
    /// `floor(2^128 / q)` as (low, high) 64-bit words.
    ratio: (u64, u64),
    /// `floor(2^64 / q)`, for single-word Barrett reduction.
    ratio64: u64,
    /// `bits - 2` and `floor(2^(bits + 62) / q)`: Barrett for products `< q^2`.
    shift: u32,
    mu: u64,
}

/// Largest modulus supported: lazy sums of up to 64 products of residues fit in a `u128`.
pub const MAX_MODULUS_BITS: u32 = 61;

impl Modulus {
    /// Precomputes the constants of `q` (an odd number with `2 < q < 2^61`).
    pub fn new(q: u64) -> Self {
        // Internal invariant: callers only build moduli from generated primes.
        debug_assert!(q > 2 && q < (1u64 << MAX_MODULUS_BITS) && q % 2 == 1);
        // q is odd, so it does not divide 2^128 and floor((2^128 - 1) / q) = floor(2^128 / q).
        let ratio = u128::MAX / q as u128;
        let bits = 64 - q.leading_zeros();
        Self {
            q,
            ratio: (ratio as u64, (ratio >> 64) as u64),
            ratio64: (ratio >> 64) as u64,
            shift: bits - 2,
            mu: ((1u128 << (bits + 62)) / q as u128) as u64,
        }
    }

    /// The prime itself.
    #[inline(always)]
    pub fn value(&self) -> u64 {
        self.q
    }

    /// Bit width of the prime (`ceil(log2(q+1))`).
    pub fn bits(&self) -> u32 {
        64 - self.q.leading_zeros()
    }

    /// `a + b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        // Branch-free: a + b < 2q < 2^62, so `s - q` wraps above `s` exactly when s < q.
        let s = a + b;
        s.min(s.wrapping_sub(self.q))
    }

    /// `a - b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        // Branch-free: when a < b the difference wraps and adding q brings it back below q.
        let d = a.wrapping_sub(b);
        d.min(d.wrapping_add(self.q))
    }

    /// `-a mod q` for `a < q`.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        self.sub(0, a)
    }

    /// `x mod q` for any `x < 2^128` (Barrett with the 128-bit ratio; at most two
    /// corrections because the quotient estimate is short by at most 2).
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let (x0, x1) = (x as u64, (x >> 64) as u64);
        let (r0, r1) = self.ratio;
        let carry = ((x0 as u128 * r0 as u128) >> 64) as u64;
        let t = x0 as u128 * r1 as u128 + carry as u128;
        let (t_lo, t_hi) = (t as u64, (t >> 64) as u64);
        let u = x1 as u128 * r0 as u128 + t_lo as u128;
        let est = x1
            .wrapping_mul(r1)
            .wrapping_add(t_hi)
            .wrapping_add((u >> 64) as u64);
        let r = x0.wrapping_sub(est.wrapping_mul(self.q));
        let r = r.min(r.wrapping_sub(self.q));
        r.min(r.wrapping_sub(self.q))
    }

    /// `x mod q` for any `x: u64`.
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        // Single-word Barrett: the estimate is short by at most one q.
        let est = ((x as u128 * self.ratio64 as u128) >> 64) as u64;
        let r = x.wrapping_sub(est.wrapping_mul(self.q));
        r.min(r.wrapping_sub(self.q))
    }

    /// `x mod q` for a signed `x`, as a residue in `[0, q)`.
    #[inline(always)]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        let r = self.reduce(x.unsigned_abs());
        if x < 0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// `x mod q` for a signed 128-bit `x`.
    #[inline]
    pub fn reduce_i128(&self, x: i128) -> u64 {
        let r = self.reduce_u128(x.unsigned_abs());
        if x < 0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// `a * b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        // Barrett for x = ab < q^2 < 2^(2 beta), beta = bits(q) <= 61: with
        // y = floor(x / 2^(beta-2)) < 2^63 and mu = floor(2^(beta+62) / q) < 2^63, the
        // estimate floor(y mu / 2^64) is short of floor(x / q) by less than 2, so two
        // corrections suffice. Three multiplications instead of five.
        let x = a as u128 * b as u128;
        let y = (x >> self.shift) as u64;
        let est = ((y as u128 * self.mu as u128) >> 64) as u64;
        let r = (x as u64).wrapping_sub(est.wrapping_mul(self.q));
        let r = r.min(r.wrapping_sub(self.q));
        r.min(r.wrapping_sub(self.q))
    }

    /// Shoup's precomputed quotient `floor(w * 2^64 / q)` of a fixed multiplicand `w < q`.
    #[inline]
    pub fn shoup(&self, w: u64) -> u64 {
        (((w as u128) << 64) / self.q as u128) as u64
    }

    /// `x * w mod q` with `w_shoup = self.shoup(w)`, for any `x < 2^64`, reduced to
    /// `[0, q)`. Shoup (2001 NTL), as in Harvey "Faster arithmetic for NTTs" (2014), Alg. 2.
    #[inline(always)]
    pub fn mul_shoup(&self, x: u64, w: u64, w_shoup: u64) -> u64 {
        let hi = ((x as u128 * w_shoup as u128) >> 64) as u64;
        let r = x.wrapping_mul(w).wrapping_sub(hi.wrapping_mul(self.q));
        r.min(r.wrapping_sub(self.q))
    }

    /// `a^e mod q`.
    pub fn pow(&self, mut a: u64, mut e: u64) -> u64 {
        let mut r = 1 % self.q;
        a = self.reduce(a);
        while e > 0 {
            if e & 1 == 1 {
                r = self.mul(r, a);
            }
            a = self.mul(a, a);
            e >>= 1;
        }
        r
    }

    /// Inverse of `a` modulo the prime `q` (Fermat), `None` for `a = 0 mod q`.
    pub fn inv(&self, a: u64) -> Option<u64> {
        let a = self.reduce(a);
        (a != 0).then(|| self.pow(a, self.q - 2))
    }

    /// Centered representative of a residue: the integer in `(-q/2, q/2]`.
    #[inline(always)]
    pub fn center(&self, a: u64) -> i64 {
        if a > self.q / 2 {
            a as i64 - self.q as i64
        } else {
            a as i64
        }
    }
}

/// Deterministic Miller-Rabin primality test for 64-bit integers (the first 12 primes
/// as bases are a proven witness set below 3.3 * 10^24).
pub fn is_prime(n: u64) -> bool {
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for p in BASES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mulmod = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let powmod = |mut a: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, a);
            }
            a = mulmod(a, a);
            e >>= 1;
        }
        r
    };
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'outer: for a in BASES {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// Generates distinct NTT-friendly primes (`p = 1 mod 2N`), one per entry of `bits`, each
/// the closest unused prime to `2^bits`, alternating above and below `2^bits` among primes
/// of the same size (so products of consecutive primes stay close to powers of two and a
/// fixed scale drifts least after rescaling). Deterministic. `None` if some size has no
/// prime left below `2^61`.
pub fn generate_ntt_primes(log_n: u32, bits: &[u32]) -> Option<Vec<u64>> {
    let two_n = 2u64 << log_n;
    // Per bit size: (next k above, next k below, take above next).
    let mut state: std::collections::BTreeMap<u32, (u64, u64, bool)> = Default::default();
    let mut out: Vec<u64> = Vec::with_capacity(bits.len());
    for &b in bits {
        if !(2..MAX_MODULUS_BITS).contains(&b) || (1u64 << b) <= two_n {
            return None;
        }
        let base = (1u64 << b) + 1;
        let st = state.entry(b).or_insert((0, 1, true));
        let prime = loop {
            let up = base.checked_add(st.0.checked_mul(two_n)?)?;
            let down = base.checked_sub(st.1.checked_mul(two_n)?)?;
            if up >= (1u64 << MAX_MODULUS_BITS) || down <= two_n {
                return None;
            }
            let (cand, above) = if st.2 { (up, true) } else { (down, false) };
            if above {
                st.0 += 1;
            } else {
                st.1 += 1;
            }
            if is_prime(cand) && !out.contains(&cand) {
                st.2 = !above;
                break cand;
            }
        };
        out.push(prime);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn primality_known_answers() {
        assert!(is_prime(2) && is_prime(3) && is_prime(65537));
        assert!(!is_prime(1) && !is_prime(561) && !is_prime(3215031751));
        assert!(is_prime(2305843009213693951)); // 2^61 - 1
        assert!(!is_prime((1u64 << 61) + 1));
    }

    #[test]
    fn generated_primes_are_distinct_ntt_friendly_and_alternate() {
        let p = generate_ntt_primes(13, &[36, 30, 30, 30, 30, 60]).unwrap();
        assert_eq!(p.len(), 6);
        for (i, &x) in p.iter().enumerate() {
            assert!(is_prime(x) && x % (1 << 14) == 1);
            assert!(!p[..i].contains(&x));
        }
        assert!(p[1] > 1 << 30 && p[2] < 1 << 30 && p[3] > 1 << 30 && p[4] < 1 << 30);
        assert_eq!(
            p,
            generate_ntt_primes(13, &[36, 30, 30, 30, 30, 60]).unwrap()
        );
        assert!(generate_ntt_primes(13, &[61]).is_none());
    }

    proptest! {
        #[test]
        fn arithmetic_matches_u128(a: u64, b: u64, x: u128, idx in 0usize..4) {
            let q = [65537, generate_ntt_primes(10, &[30]).unwrap()[0], generate_ntt_primes(10, &[50]).unwrap()[0], generate_ntt_primes(10, &[60]).unwrap()[0]][idx];
            let m = Modulus::new(q);
            let (a, b) = (a % q, b % q);
            prop_assert_eq!(m.reduce_u128(x), (x % q as u128) as u64);
            prop_assert_eq!(m.reduce(x as u64), (x as u64) % q);
            prop_assert_eq!(m.reduce(u64::MAX - (x as u64 % 5)), (u64::MAX - (x as u64 % 5)) % q);
            prop_assert_eq!(m.mul(a, b), ((a as u128 * b as u128) % q as u128) as u64);
            prop_assert_eq!(m.add(a, b), ((a as u128 + b as u128) % q as u128) as u64);
            prop_assert_eq!(m.add(m.sub(a, b), b), a);
            let bs = m.shoup(b);
            prop_assert_eq!(m.mul_shoup(a, b, bs), m.mul(a, b));
            prop_assert_eq!(m.reduce_i64(-(a as i64 >> 2)), m.neg(m.reduce(a >> 2)));
            if a != 0 {
                let inv = m.inv(a).unwrap();
                prop_assert_eq!(m.mul(a, inv), 1);
            }
        }
    }
}
