//! The scheme-level encoder: values -> scaled integers -> RNS -> NTT, at a chosen level,
//! scale and encoding, and back (exact CRT reconstruction at any level).
//!
//! `Encoding::Coefficients` puts value `i` in coefficient `i`; `Encoding::Slots` goes
//! through the canonical embedding (`embedding::SlotFft`).

use std::sync::Arc;

use crate::embedding::{Complex64, SlotFft};
use crate::error::{Error, Result};
use crate::params::Parameters;
use crate::ring::crt::reconstruct_f64;
use crate::ring::{Coeff, Poly};

use super::plaintext::Plaintext;
use super::{Encoding, Scale};

/// Largest `|value * scale|` the encoder accepts (residues are taken from an `i128`).
const MAX_SCALED: f64 = 1.7e38; // < 2^127

/// Encodes and decodes plaintexts for one parameter set.
#[derive(Debug, Clone)]
pub struct Encoder {
    params: Arc<Parameters>,
    /// Full packing: `N/2` slots.
    fft: SlotFft,
}

impl Encoder {
    /// An encoder for `params`.
    pub fn new(params: &Arc<Parameters>) -> Result<Self> {
        Ok(Self {
            params: params.clone(),
            fft: SlotFft::new(params.log_n(), params.log_n() - 1)?,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// Rounds `coeffs * scale` to integers and reduces them into an NTT-form plaintext.
    pub fn encode_coefficients(
        &self,
        coeffs: &[f64],
        level: usize,
        scale: Scale,
    ) -> Result<Plaintext> {
        self.encode_raw(coeffs, level, scale, Encoding::Coefficients)
    }

    /// Scales, rounds and reduces real polynomial coefficients, tagging the result.
    fn encode_raw(
        &self,
        coeffs: &[f64],
        level: usize,
        scale: Scale,
        encoding: Encoding,
    ) -> Result<Plaintext> {
        self.params.check_level(level)?;
        let n = self.params.n();
        if coeffs.len() > n {
            return Err(Error::TooManyValues {
                got: coeffs.len(),
                max: n,
            });
        }
        let ring = self.params.ring();
        let mut scaled = vec![0i128; n];
        let mut small = true;
        for (o, &v) in scaled.iter_mut().zip(coeffs) {
            let x = (v * scale.0).round();
            if !x.is_finite() || x.abs() > MAX_SCALED {
                return Err(Error::ValueOutOfRange {
                    value: v,
                    log_scale: scale.log2(),
                });
            }
            *o = x as i128;
            small &= x.abs() < 4.6e18; // < 2^62
        }
        let mut poly = Poly::<Coeff>::zero(ring, level, false);
        for r in 0..=level {
            let m = ring.moduli()[r];
            let row = poly.row_mut(r);
            if small {
                for (x, &v) in row.iter_mut().zip(&scaled) {
                    *x = m.reduce_i64(v as i64);
                }
            } else {
                for (x, &v) in row.iter_mut().zip(&scaled) {
                    *x = m.reduce_i128(v);
                }
            }
        }
        Ok(Plaintext::from_poly(poly.into_ntt(ring), scale, encoding))
    }

    /// Encodes real values with the given encoding (up to `N/2` slots or `N`
    /// coefficients; missing values are zero).
    pub fn encode(
        &self,
        values: &[f64],
        level: usize,
        scale: Scale,
        encoding: Encoding,
    ) -> Result<Plaintext> {
        match encoding {
            Encoding::Coefficients => self.encode_coefficients(values, level, scale),
            Encoding::Slots => {
                self.check_slots(values.len())?;
                let mut coeffs = vec![0.0; self.params.n()];
                self.fft.encode_real(values, &mut coeffs)?;
                self.encode_raw(&coeffs, level, scale, Encoding::Slots)
            }
        }
    }

    /// Encodes up to `N/2` complex slot values.
    pub fn encode_complex(
        &self,
        values: &[Complex64],
        level: usize,
        scale: Scale,
    ) -> Result<Plaintext> {
        self.check_slots(values.len())?;
        let mut coeffs = vec![0.0; self.params.n()];
        self.fft.encode(values, &mut coeffs)?;
        self.encode_raw(&coeffs, level, scale, Encoding::Slots)
    }

    fn check_slots(&self, len: usize) -> Result<()> {
        if len > self.fft.slots() {
            return Err(Error::TooManyValues {
                got: len,
                max: self.fft.slots(),
            });
        }
        Ok(())
    }

    /// The `N` coefficients of a plaintext divided by its scale, exact at any level.
    pub fn decode_coefficients(&self, pt: &Plaintext) -> Vec<f64> {
        let ring = self.params.ring();
        let coeff = pt.poly.clone().into_coeff(ring);
        let mut out = vec![0.0; ring.n()];
        reconstruct_f64(ring, &coeff, 1.0 / pt.scale.0, &mut out);
        out
    }

    /// Decodes real values: the `N` coefficients, or the real parts of the `N/2` slots.
    pub fn decode(&self, pt: &Plaintext) -> Result<Vec<f64>> {
        let coeffs = self.decode_coefficients(pt);
        match pt.encoding {
            Encoding::Coefficients => Ok(coeffs),
            Encoding::Slots => {
                let mut out = vec![0.0; self.fft.slots()];
                self.fft.decode_real(&coeffs, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Decodes the `N/2` complex slots of a slot-encoded plaintext.
    pub fn decode_complex(&self, pt: &Plaintext) -> Result<Vec<Complex64>> {
        crate::scheme::check_encoding(pt.encoding, Encoding::Slots)?;
        let coeffs = self.decode_coefficients(pt);
        let mut out = vec![Complex64::new(0.0, 0.0); self.fft.slots()];
        self.fft.decode(&coeffs, &mut out)?;
        Ok(out)
    }
}
