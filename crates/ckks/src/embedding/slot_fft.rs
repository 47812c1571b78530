//! The special FFT between CKKS slots and real polynomial coefficients.
//!
//! Packing (Cheon, Han, Kim, Kim, Song, SAC 2018, sec. 4): with n slots and
//! gap = N / (2n), a plaintext lies in the subring R[Y], Y = X^gap, of degree 2n, and
//! zeta^gap is a primitive 4n-th root of unity. Writing m = sum_i a_i Y^i + b_i Y^(n+i)
//! (i < n) and using (zeta^(gap*5^j))^n = i (because 5^j = 1 mod 4), every slot is
//! m(zeta^(5^j)) = p(w_j), where p(x) = sum_i (a_i + i*b_i) x^i and
//! w_j = exp(2*pi*i * 5^j / 4n). So a_i is the coefficient of X^(i*gap), b_i that of
//! X^(N/2 + i*gap), and the slots are p evaluated at the n roots w_j.
//!
//! In the full ring the slot vector is the n-slot vector repeated gap times (5 has order
//! n modulo 4n), so X -> X^(5^k) still rotates left by k (modulo n): sparse packing keeps
//! the rotation structure of the N/2-slot case.
//!
//! Evaluating p at w_j is a Cooley-Tukey recursion (SAC 2018, Alg. 1): split
//! p(x) = E(x^2) + x O(x^2), where E, O have half the length L/2 and w^2 are the roots of
//! the half-size problem; because 5^(L/2) = 1 + 2L mod 4L, the root for output j + L/2 is
//! minus the root for j, which gives the butterfly
//! out_j = E_j + t_j O_j, out_(j+L/2) = E_j - t_j O_j, t_j = exp(2*pi*i * (5^j mod 4L) / 4L).

use super::error::{EmbeddingError, Result};
use num_complex::Complex64;

/// Smallest supported log2 ring degree.
const MIN_LOG_N: u32 = 1;
/// Largest supported log2 ring degree (far above the HE standard's 2^16).
const MAX_LOG_N: u32 = 20;

/// Precomputed roots for the canonical embedding of one (N, slot count) pair.
///
/// The rotation group 5^j enters through the twiddles: stage L uses 5^j mod 4L.
#[derive(Debug, Clone)]
pub struct SlotFft {
    log_n: u32,
    log_slots: u32,
    /// Twiddles of all butterfly stages, stage with half-length h at offset h - 1.
    twiddles: Vec<Complex64>,
}

impl SlotFft {
    /// Builds the roots for ring degree N = 2^log_n and 2^log_slots slots.
    ///
    /// log_slots <= log_n - 1; fewer slots = sparse packing (slot vector replicated /
    /// gapped so that the rotation structure of the N/2-slot case is preserved).
    ///
    /// # Errors
    /// [`EmbeddingError::LogNOutOfRange`] unless 1 <= log_n <= 20, and
    /// [`EmbeddingError::LogSlotsTooLarge`] if log_slots > log_n - 1.
    pub fn new(log_n: u32, log_slots: u32) -> Result<SlotFft> {
        if !(MIN_LOG_N..=MAX_LOG_N).contains(&log_n) {
            return Err(EmbeddingError::LogNOutOfRange {
                log_n,
                min: MIN_LOG_N,
                max: MAX_LOG_N,
            });
        }
        if log_slots > log_n - 1 {
            return Err(EmbeddingError::LogSlotsTooLarge {
                log_slots,
                max: log_n - 1,
                log_n,
            });
        }
        let n = 1usize << log_slots;
        let mut twiddles = Vec::with_capacity(n.saturating_sub(1));
        let mut half = 1;
        while half < n {
            // Stage L = 2 * half: t_j = exp(2*pi*i * (5^j mod 4L) / 4L).
            let modulus = 8 * half as u64;
            let mut power = 1u64;
            for _ in 0..half {
                twiddles.push(root_of_unity(power, modulus));
                power = power * 5 % modulus;
            }
            half *= 2;
        }
        Ok(SlotFft {
            log_n,
            log_slots,
            twiddles,
        })
    }

    /// log2 of the ring degree N.
    pub fn log_n(&self) -> u32 {
        self.log_n
    }

    /// Number of slots n = 2^log_slots (at most N/2).
    pub fn slots(&self) -> usize {
        1 << self.log_slots
    }

    /// Ring degree N.
    fn degree(&self) -> usize {
        1 << self.log_n
    }

    /// Inverse canonical embedding: N real polynomial coefficients (NOT scaled by Delta)
    /// whose evaluations at the primitive 2N-th roots zeta^(5^j) are the slots.
    ///
    /// Slots beyond `slots.len()` are zero. Allocation-free: the transform runs in `coeffs`.
    ///
    /// # Errors
    /// [`EmbeddingError::SlotCount`] if `slots.len() > self.slots()`,
    /// [`EmbeddingError::CoeffLength`] unless `coeffs.len() == N`,
    /// [`EmbeddingError::NonFiniteSlot`] on NaN or infinite input, and
    /// [`EmbeddingError::Overflow`] if finite inputs near f64::MAX overflow.
    pub fn encode(&self, slots: &[Complex64], coeffs: &mut [f64]) -> Result<()> {
        self.check_slot_len(slots.len())?;
        if let Some(index) = slots
            .iter()
            .position(|z| !(z.re.is_finite() && z.im.is_finite()))
        {
            return Err(EmbeddingError::NonFiniteSlot { index });
        }
        self.encode_from(|i| slots.get(i).copied().unwrap_or_default(), coeffs)
    }

    /// Canonical embedding: slots from N real coefficients (already divided by Delta).
    ///
    /// Writes the first `slots.len()` slots. Under sparse packing only the coefficients of
    /// X^(k*gap) are read, which equals the mean of the gap replicas of each slot in the
    /// full ring (the projection onto the subring), so off-subring noise averages out.
    /// Allocation-free when `slots.len() == self.slots()`; a shorter buffer costs one
    /// temporary vector of `self.slots()` values.
    ///
    /// # Errors
    /// [`EmbeddingError::SlotCount`] if `slots.len() > self.slots()`,
    /// [`EmbeddingError::CoeffLength`] unless `coeffs.len() == N`,
    /// [`EmbeddingError::NonFiniteCoeff`] on NaN or infinite input, and
    /// [`EmbeddingError::Overflow`] if finite inputs near f64::MAX overflow.
    pub fn decode(&self, coeffs: &[f64], slots: &mut [Complex64]) -> Result<()> {
        self.check_decode_args(coeffs, slots.len())?;
        if slots.len() == self.slots() {
            self.decode_full(coeffs, slots)
        } else {
            let mut full = vec![Complex64::default(); self.slots()];
            self.decode_full(coeffs, &mut full)?;
            slots.copy_from_slice(&full[..slots.len()]);
            Ok(())
        }
    }

    /// Real-valued [`SlotFft::encode`]: slot imaginary parts are zero.
    ///
    /// # Errors
    /// As [`SlotFft::encode`].
    pub fn encode_real(&self, values: &[f64], coeffs: &mut [f64]) -> Result<()> {
        self.check_slot_len(values.len())?;
        if let Some(index) = values.iter().position(|x| !x.is_finite()) {
            return Err(EmbeddingError::NonFiniteSlot { index });
        }
        self.encode_from(
            |i| Complex64::new(values.get(i).copied().unwrap_or_default(), 0.0),
            coeffs,
        )
    }

    /// Real-valued [`SlotFft::decode`]: slot imaginary parts are dropped.
    ///
    /// Allocates one temporary vector of `self.slots()` complex values.
    ///
    /// # Errors
    /// As [`SlotFft::decode`].
    pub fn decode_real(&self, coeffs: &[f64], values: &mut [f64]) -> Result<()> {
        self.check_decode_args(coeffs, values.len())?;
        let mut full = vec![Complex64::default(); self.slots()];
        self.decode_full(coeffs, &mut full)?;
        for (v, z) in values.iter_mut().zip(&full) {
            *v = z.re;
        }
        Ok(())
    }

    fn check_slot_len(&self, got: usize) -> Result<()> {
        if got > self.slots() {
            return Err(EmbeddingError::SlotCount {
                got,
                max: self.slots(),
            });
        }
        Ok(())
    }

    fn check_coeff_len(&self, got: usize) -> Result<()> {
        if got != self.degree() {
            return Err(EmbeddingError::CoeffLength {
                got,
                expected: self.degree(),
            });
        }
        Ok(())
    }

    fn check_decode_args(&self, coeffs: &[f64], slot_len: usize) -> Result<()> {
        self.check_slot_len(slot_len)?;
        self.check_coeff_len(coeffs.len())?;
        match coeffs.iter().position(|x| !x.is_finite()) {
            Some(index) => Err(EmbeddingError::NonFiniteCoeff { index }),
            None => Ok(()),
        }
    }

    /// Encodes the slots `slot(0..n)` (validated by the caller) into `coeffs`.
    fn encode_from(&self, slot: impl Fn(usize) -> Complex64, coeffs: &mut [f64]) -> Result<()> {
        self.check_coeff_len(coeffs.len())?;
        let n = self.slots();
        // Run the inverse transform in place on coeffs[0..n] (real parts) and
        // coeffs[n..2n] (imaginary parts); 2n <= N always.
        let (re, rest) = coeffs.split_at_mut(n);
        let mut lanes = SplitLanes {
            re,
            im: &mut rest[..n],
        };
        for i in 0..n {
            lanes.set(i, slot(i));
        }
        self.inverse(&mut lanes);
        self.spread(coeffs);
        match coeffs.iter().position(|x| !x.is_finite()) {
            Some(index) => Err(EmbeddingError::Overflow { index }),
            None => Ok(()),
        }
    }

    /// Moves the compact layout [a (n) | b (n) | junk] to a_i at X^(i*gap) and b_i at
    /// X^(N/2 + i*gap), zeroing every other coefficient.
    fn spread(&self, coeffs: &mut [f64]) {
        let n = self.slots();
        let half = self.degree() / 2;
        let gap = half / n;
        if gap == 1 {
            return; // the compact layout is already the final one
        }
        // Descending order never overwrites an unread source: the destination of entry i
        // is >= its source, and sources below it have smaller indices.
        for i in (0..n).rev() {
            coeffs[half + i * gap] = coeffs[n + i];
        }
        for i in (0..n).rev() {
            coeffs[i * gap] = coeffs[i];
        }
        for chunk in coeffs.chunks_exact_mut(gap) {
            chunk[1..].fill(0.0);
        }
    }

    /// Decodes into `out`, whose length is exactly `self.slots()`.
    fn decode_full(&self, coeffs: &[f64], out: &mut [Complex64]) -> Result<()> {
        let half = self.degree() / 2;
        let gap = half / self.slots();
        for (i, z) in out.iter_mut().enumerate() {
            *z = Complex64::new(coeffs[i * gap], coeffs[half + i * gap]);
        }
        self.forward(out);
        match out
            .iter()
            .position(|z| !(z.re.is_finite() && z.im.is_finite()))
        {
            Some(index) => Err(EmbeddingError::Overflow { index }),
            None => Ok(()),
        }
    }

    /// Evaluates p(x) = sum_i a[i] x^i at w_j = exp(2*pi*i * 5^j / 4n), in place.
    fn forward<L: ComplexLanes + ?Sized>(&self, a: &mut L) {
        let n = self.slots();
        bit_reverse(a, self.log_slots);
        let mut half = 1;
        while half < n {
            let tw = &self.twiddles[half - 1..2 * half - 1];
            for start in (0..n).step_by(2 * half) {
                for (j, t) in tw.iter().enumerate() {
                    let u = a.get(start + j);
                    let v = a.get(start + j + half) * t;
                    a.set(start + j, u + v);
                    a.set(start + j + half, u - v);
                }
            }
            half *= 2;
        }
    }

    /// Inverse of [`Self::forward`]: each butterfly undone as E = (x + y) / 2,
    /// O = conj(t) (x - y) / 2 (|t| = 1), stages in reverse order.
    fn inverse<L: ComplexLanes + ?Sized>(&self, a: &mut L) {
        let n = self.slots();
        let mut half = n / 2;
        while half >= 1 {
            let tw = &self.twiddles[half - 1..2 * half - 1];
            for start in (0..n).step_by(2 * half) {
                for (j, t) in tw.iter().enumerate() {
                    let x = a.get(start + j);
                    let y = a.get(start + j + half);
                    a.set(start + j, (x + y) * 0.5);
                    a.set(start + j + half, (x - y) * t.conj() * 0.5);
                }
            }
            half /= 2;
        }
        bit_reverse(a, self.log_slots);
    }
}

/// exp(2*pi*i * k / m), computed directly from the reduced exact fraction k/m.
fn root_of_unity(k: u64, m: u64) -> Complex64 {
    let k = k % m;
    // Take the angle in (-pi, pi] so its magnitude, and hence its rounding error, is small.
    let signed = if 2 * k > m {
        -((m - k) as f64)
    } else {
        k as f64
    };
    let (sin, cos) = (2.0 * std::f64::consts::PI * signed / m as f64).sin_cos();
    Complex64::new(cos, sin)
}

/// Permutes `a` (length 2^log_len) into bit-reversed index order.
fn bit_reverse<L: ComplexLanes + ?Sized>(a: &mut L, log_len: u32) {
    if log_len == 0 {
        return;
    }
    let shift = usize::BITS - log_len;
    for i in 0..1usize << log_len {
        let j = i.reverse_bits() >> shift;
        if i < j {
            a.swap(i, j);
        }
    }
}

/// A complex vector the FFT runs on, stored interleaved or as split real/imaginary parts.
trait ComplexLanes {
    fn get(&self, i: usize) -> Complex64;
    fn set(&mut self, i: usize, z: Complex64);
    fn swap(&mut self, i: usize, j: usize);
}

impl ComplexLanes for [Complex64] {
    #[inline(always)]
    fn get(&self, i: usize) -> Complex64 {
        self[i]
    }
    #[inline(always)]
    fn set(&mut self, i: usize, z: Complex64) {
        self[i] = z;
    }
    fn swap(&mut self, i: usize, j: usize) {
        <[Complex64]>::swap(self, i, j);
    }
}

/// Real and imaginary parts in two f64 slices of equal length (the coefficient buffer).
struct SplitLanes<'a> {
    re: &'a mut [f64],
    im: &'a mut [f64],
}

impl ComplexLanes for SplitLanes<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> Complex64 {
        Complex64::new(self.re[i], self.im[i])
    }
    #[inline(always)]
    fn set(&mut self, i: usize, z: Complex64) {
        self.re[i] = z.re;
        self.im[i] = z.im;
    }
    fn swap(&mut self, i: usize, j: usize) {
        self.re.swap(i, j);
        self.im.swap(i, j);
    }
}

#[cfg(test)]
mod tests;
