//! RNS polynomial arithmetic: primes, NTT (tfhe-ntt), basis conversion, rescaling,
//! automorphisms and samplers. Knows nothing of keys or encodings.

pub mod automorphism;
pub mod basis;
pub mod crt;
pub mod modulus;
pub mod ntt;
pub mod poly;
pub mod sampler;

pub use modulus::Modulus;
pub use ntt::NttPlan;
pub use poly::{Coeff, Ntt, Poly};

/// The RNS basis `q_0..q_L, p_0..p_K` of one parameter set with an NTT plan per prime.
#[derive(Clone, Debug)]
pub struct RnsContext {
    log_n: u32,
    n: usize,
    /// `Q` primes first, then the special `P` primes.
    moduli: Vec<Modulus>,
    plans: Vec<NttPlan>,
    nq: usize,
    /// `q_l^-1 mod q_i` for every `i < l`, indexed `[l][i]`.
    inv_last_q: Vec<Vec<u64>>,
}

impl RnsContext {
    /// Builds the context; `None` if some prime does not admit a size-`N` negacyclic NTT.
    pub fn new(log_n: u32, q: &[u64], p: &[u64]) -> Option<Self> {
        let n = 1usize << log_n;
        let moduli: Vec<Modulus> = q.iter().chain(p).map(|&x| Modulus::new(x)).collect();
        let plans = q
            .iter()
            .chain(p)
            .map(|&x| NttPlan::new(n, x))
            .collect::<Option<Vec<_>>>()?;
        let inv_last_q = (0..q.len())
            .map(|l| (0..l).map(|i| moduli[i].inv(q[l]).unwrap_or(0)).collect())
            .collect();
        Some(Self {
            log_n,
            n,
            moduli,
            plans,
            nq: q.len(),
            inv_last_q,
        })
    }

    /// `log2 N`.
    pub fn log_n(&self) -> u32 {
        self.log_n
    }

    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of `Q` primes (`L + 1`).
    pub fn nq(&self) -> usize {
        self.nq
    }

    /// Number of special primes.
    pub fn np(&self) -> usize {
        self.moduli.len() - self.nq
    }

    /// The top level `L`.
    pub fn max_level(&self) -> usize {
        self.nq - 1
    }

    /// All moduli, `Q` first.
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    /// The `Q` primes.
    pub fn q(&self) -> &[Modulus] {
        &self.moduli[..self.nq]
    }

    /// The special primes.
    pub fn p(&self) -> &[Modulus] {
        &self.moduli[self.nq..]
    }

    /// Global modulus index of row `r` of a polynomial with `q_rows` rows over `Q`.
    #[inline]
    pub fn modulus_index(&self, q_rows: usize, r: usize) -> usize {
        if r < q_rows {
            r
        } else {
            self.nq + r - q_rows
        }
    }

    /// The NTT plan of global modulus `i`.
    pub fn plan(&self, i: usize) -> &NttPlan {
        &self.plans[i]
    }

    /// `q_l^-1 mod q_i` for `i < l`.
    pub fn inv_last_q(&self, l: usize) -> &[u64] {
        &self.inv_last_q[l]
    }
}
