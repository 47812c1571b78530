//! CKKS canonical embedding: slot vectors <-> real polynomial coefficients, in f64.
//!
//! A plaintext polynomial m in R[X]/(X^N + 1) holds the N/2 complex slots
//! m(zeta^(5^j)), j = 0..N/2, with zeta = exp(i*pi/N) (Cheon, Kim, Kim, Song, ASIACRYPT
//! 2017, sec. 3.1-3.2). The other N/2 primitive 2N-th roots zeta^(-5^j) carry the
//! conjugates, which is why the coefficients are real. With this ordering the ring
//! automorphism X -> X^(5^k) rotates the slots left by k and X -> X^(2N-1) conjugates
//! them. [`SlotFft`] evaluates the embedding and its inverse in O(N log N) with the
//! "special FFT" of Cheon, Han, Kim, Kim, Song (SAC 2018, sec. 4, Alg. 1).
//!
//! This module is pure f64 math: no scaling by Delta, no rounding, no RNS.

mod error;
mod slot_fft;

pub use error::{EmbeddingError, Result};
pub use num_complex::Complex64;
pub use slot_fft::SlotFft;
