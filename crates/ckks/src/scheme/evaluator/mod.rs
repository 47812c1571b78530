//! Homomorphic operations on ciphertexts in NTT form. Every op checks level, scale and
//! encoding of its operands and returns `Err` on a mismatch.
//!
//! API shape (STYLE.md 3): `op_into(.., out)` is the hot-path primitive, `*_add_into`
//! accumulates, `op(..) -> Result<T>` allocates. The evaluator owns its key-switching
//! scratch behind `&mut self`; keys are shared via `Arc`.
//!
//! Threads: with more than one rayon thread, key switching (relinearization, rotations)
//! runs ModUp per digit and inner products/ModDown per prime in parallel; rescale, NTTs
//! and element-wise ops split across primes. One thread gives bit-identical results.

mod arith;
mod mul;
mod pack;
mod pack_split;

pub use pack::pack_galois_elements;
pub use pack_split::PackedMasks;
mod rescale;
mod rotate;

use std::sync::Arc;

use crate::params::Parameters;
use crate::ring::{Ntt, Poly};
use crate::rlwe::{Decomposition, GaloisKeys, RelinKey};

use super::ciphertext::Ciphertext;

/// Reusable key-switching buffers.
#[derive(Debug, Default)]
struct Scratch {
    dec: Decomposition,
    acc: Option<[Poly<Ntt>; 2]>,
    k0: Option<Poly<Ntt>>,
    k1: Option<Poly<Ntt>>,
}

/// Evaluates homomorphic operations for one parameter set.
#[derive(Debug)]
pub struct Evaluator {
    params: Arc<Parameters>,
    rlk: Option<Arc<RelinKey>>,
    gks: Option<Arc<GaloisKeys>>,
    scratch: Scratch,
}

impl Evaluator {
    /// An evaluator without keys (linear ops, plaintext ops, rescale).
    pub fn new(params: &Arc<Parameters>) -> Self {
        Self {
            params: params.clone(),
            rlk: None,
            gks: None,
            scratch: Scratch::default(),
        }
    }

    /// Adds the relinearization key (needed by `mul_relin`).
    pub fn with_relin_key(mut self, rlk: Arc<RelinKey>) -> Self {
        self.rlk = Some(rlk);
        self
    }

    /// Adds Galois keys (needed by rotations and conjugation).
    pub fn with_galois_keys(mut self, gks: Arc<GaloisKeys>) -> Self {
        self.gks = Some(gks);
        self
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// Ensures `out` has two components at `level` (reusing its buffers when it can).
    fn shape(&self, out: &mut Ciphertext, level: usize) {
        let ring = self.params.ring();
        for c in [&mut out.c0, &mut out.c1] {
            if c.level() != level || c.p_rows() != 0 {
                *c = Poly::zero(ring, level, false);
            }
        }
        out.seed = None;
    }

    /// A zero ciphertext at `level`, as an `_into` output.
    fn blank(&self, level: usize) -> Ciphertext {
        Ciphertext::zero_like(&self.params, level)
    }
}
