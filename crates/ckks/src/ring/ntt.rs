//! Negacyclic NTT over one prime: the only door to `tfhe-ntt`.
//!
//! `tfhe_ntt::prime64::Plan::fwd` leaves the evaluations in bit-reversed order: slot `k`
//! holds `a(psi^(2*brev(k)+1))` for the primitive `2N`-th root `psi` the plan chose (checked
//! in the tests below against a slow reference). `inv` returns `N * a`, so `backward` calls
//! `normalize` to multiply by `N^-1`.

use tfhe_ntt::prime64::Plan;

/// A forward/backward negacyclic NTT of size `N` modulo one prime.
#[derive(Clone, Debug)]
pub struct NttPlan {
    plan: Plan,
    /// Ring degree `N`.
    n: usize,
}

impl NttPlan {
    /// Builds the plan; `None` when `q` is not a prime `= 1 mod 2N` or `N < 16`.
    pub fn new(n: usize, q: u64) -> Option<Self> {
        Plan::try_new(n, q).map(|plan| Self { plan, n })
    }

    /// Ring degree.
    pub fn n(&self) -> usize {
        self.n
    }

    /// In-place forward NTT: coefficients (standard order, `< q`) to evaluations
    /// (bit-reversed order, `< q`).
    #[inline]
    pub fn forward(&self, a: &mut [u64]) {
        self.plan.fwd(a);
    }

    /// `acc += a * b` element-wise, reduced to `[0, q)` (SIMD, IFMA below 2^50): the
    /// hot loop of every NTT-domain product. Inputs must be `< q`.
    #[inline]
    pub fn mul_add(&self, acc: &mut [u64], a: &[u64], b: &[u64]) {
        self.plan.mul_accumulate(acc, a, b);
    }

    /// `a <- INTT(a * b)`: the element-wise product (inputs `< q`, evaluations) taken back
    /// to coefficients, with `N^-1` folded into the product's SIMD pass instead of a
    /// separate normalisation.
    #[inline]
    pub fn mul_backward(&self, a: &mut [u64], b: &[u64]) {
        self.plan.mul_assign_normalize(a, b);
        self.plan.inv(a);
    }

    /// `a <- a * b * N^-1` element-wise (inputs `< q`), in one SIMD pass: with `b` a
    /// constant `c N` it multiplies by `c`.
    #[inline]
    pub fn mul_normalize(&self, a: &mut [u64], b: &[u64]) {
        self.plan.mul_assign_normalize(a, b);
    }

    /// In-place inverse NTT: evaluations (bit-reversed order) back to coefficients.
    #[inline]
    pub fn backward(&self, a: &mut [u64]) {
        self.plan.inv(a);
        self.plan.normalize(a);
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index-based reference math
mod tests {
    use super::*;
    use crate::ring::modulus::Modulus;
    use rand::Rng;

    /// Schoolbook negacyclic product: the O(N^2) oracle.
    fn negacyclic_mul(m: &Modulus, a: &[u64], b: &[u64]) -> Vec<u64> {
        let n = a.len();
        let mut c = vec![0u64; n];
        for i in 0..n {
            for j in 0..n {
                let p = m.mul(a[i], b[j]);
                let k = i + j;
                if k < n {
                    c[k] = m.add(c[k], p);
                } else {
                    c[k - n] = m.sub(c[k - n], p);
                }
            }
        }
        c
    }

    /// Reference evaluation `a(x) mod q` by Horner.
    fn eval(m: &Modulus, a: &[u64], x: u64) -> u64 {
        a.iter().rev().fold(0, |acc, &c| m.add(m.mul(acc, x), c))
    }

    #[test]
    fn ntt_matches_schoolbook_and_bit_reversed_order() {
        let mut rng = rand::thread_rng();
        for (n, q) in [
            (16usize, 97u64),
            (64, 7681),
            (256, 1152921504606584833),
            (128, 1 << 36 | 257),
        ] {
            let m = Modulus::new(q);
            let Some(plan) = NttPlan::new(n, q) else {
                assert!(!crate::ring::modulus::is_prime(q) || (q - 1) % (2 * n as u64) != 0);
                continue;
            };
            let a: Vec<u64> = (0..n).map(|_| rng.gen_range(0..q)).collect();
            let b: Vec<u64> = (0..n).map(|_| rng.gen_range(0..q)).collect();
            let (mut fa, mut fb) = (a.clone(), b.clone());
            plan.forward(&mut fa);
            plan.forward(&mut fb);
            assert!(fa.iter().all(|&x| x < q));
            let mut prod: Vec<u64> = fa.iter().zip(&fb).map(|(&x, &y)| m.mul(x, y)).collect();
            plan.backward(&mut prod);
            assert_eq!(prod, negacyclic_mul(&m, &a, &b), "n={n} q={q}");
            // Slot order: the NTT of X gives psi^(2 brev(k) + 1) in slot k.
            let mut x = vec![0u64; n];
            x[1] = 1;
            plan.forward(&mut x);
            let log_n = n.trailing_zeros();
            let psi = x[0];
            for (k, &root) in x.iter().enumerate() {
                let e = 2 * (k.reverse_bits() >> (usize::BITS - log_n)) as u64 + 1;
                assert_eq!(root, m.pow(psi, e), "slot {k}");
                assert_eq!(fa[k], eval(&m, &a, root));
            }
            assert_eq!(m.pow(psi, n as u64), q - 1);
            let mut acc: Vec<u64> = b.iter().map(|&x| q - 1 - x).collect();
            let want: Vec<u64> = acc
                .iter()
                .zip(&a)
                .zip(&b)
                .map(|((&c, &x), &y)| m.add(c, m.mul(x, y)))
                .collect();
            plan.mul_add(&mut acc, &a, &b);
            assert_eq!(acc, want, "mul_add n={n} q={q}");
            let mut fused = fa.clone();
            plan.mul_backward(&mut fused, &fb);
            assert_eq!(
                fused,
                negacyclic_mul(&m, &a, &b),
                "mul_backward n={n} q={q}"
            );
        }
    }
}
