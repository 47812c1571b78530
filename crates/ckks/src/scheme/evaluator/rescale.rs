//! Rescaling and level dropping.

use crate::error::{Error, Result};
use crate::ring::basis::rescale;
use crate::scheme::ciphertext::Ciphertext;
use crate::scheme::Scale;

use super::Evaluator;

impl Evaluator {
    /// Divides by the last prime `q_l` with rounding: one level down, scale `/ q_l`.
    pub fn rescale_assign(&self, ct: &mut Ciphertext) -> Result<()> {
        let level = ct.level();
        if level == 0 {
            return Err(Error::InvalidLevel {
                level,
                min: 1,
                max: self.params.max_level(),
            });
        }
        let ring = self.params.ring();
        let q_last = ring.moduli()[level].value() as f64;
        ct.seed = None;
        crate::ring::poly::join(|| rescale(ring, &mut ct.c0), || rescale(ring, &mut ct.c1));
        ct.scale = Scale(ct.scale.0 / q_last);
        Ok(())
    }

    /// `out = rescale(ct)`.
    pub fn rescale_into(&self, ct: &Ciphertext, out: &mut Ciphertext) -> Result<()> {
        out.clone_from(ct);
        self.rescale_assign(out)
    }

    /// `rescale(ct)`.
    pub fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        let mut out = ct.clone();
        self.rescale_assign(&mut out)?;
        Ok(out)
    }

    /// Drops primes down to `level` without changing the scale (the message is unchanged;
    /// only the modulus shrinks).
    pub fn drop_to_level(&self, ct: &mut Ciphertext, level: usize) -> Result<()> {
        self.params.check_level(level)?;
        if level > ct.level() {
            return Err(Error::InvalidLevel {
                level,
                min: 0,
                max: ct.level(),
            });
        }
        ct.seed = None;
        ct.c0.drop_to_level(level);
        ct.c1.drop_to_level(level);
        Ok(())
    }
}
