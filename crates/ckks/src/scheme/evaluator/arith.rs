//! Additions, negation, plaintext and constant operations.

use crate::error::{Error, Result};
use crate::ring::Poly;
use crate::scheme::ciphertext::Ciphertext;
use crate::scheme::plaintext::{Plaintext, PreparedPlaintext};
use crate::scheme::{check_encoding, check_level, Encoding, Scale};

use super::Evaluator;

impl Evaluator {
    fn check_same(a: &Ciphertext, b: &Ciphertext) -> Result<()> {
        check_level(a.level(), b.level())?;
        check_encoding(a.encoding, b.encoding)?;
        a.scale.check_same(b.scale)
    }

    fn check_plain(ct: &Ciphertext, pt: &Plaintext) -> Result<()> {
        check_level(ct.level(), pt.level())?;
        check_encoding(ct.encoding, pt.encoding)
    }

    /// `out = a + b`.
    pub fn add_into(&self, a: &Ciphertext, b: &Ciphertext, out: &mut Ciphertext) -> Result<()> {
        Self::check_same(a, b)?;
        let ring = self.params.ring();
        out.clone_from(a);
        out.seed = None;
        out.c0.add_assign(ring, &b.c0);
        out.c1.add_assign(ring, &b.c1);
        Ok(())
    }

    /// `a + b`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut out = self.blank(a.level());
        self.add_into(a, b, &mut out)?;
        Ok(out)
    }

    /// `acc += a`.
    pub fn add_assign(&self, acc: &mut Ciphertext, a: &Ciphertext) -> Result<()> {
        Self::check_same(acc, a)?;
        let ring = self.params.ring();
        acc.seed = None;
        acc.c0.add_assign(ring, &a.c0);
        acc.c1.add_assign(ring, &a.c1);
        Ok(())
    }

    /// `out = a - b`.
    pub fn sub_into(&self, a: &Ciphertext, b: &Ciphertext, out: &mut Ciphertext) -> Result<()> {
        Self::check_same(a, b)?;
        let ring = self.params.ring();
        out.clone_from(a);
        out.seed = None;
        out.c0.sub_assign(ring, &b.c0);
        out.c1.sub_assign(ring, &b.c1);
        Ok(())
    }

    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut out = self.blank(a.level());
        self.sub_into(a, b, &mut out)?;
        Ok(out)
    }

    /// `-a`.
    pub fn neg(&self, a: &Ciphertext) -> Ciphertext {
        let ring = self.params.ring();
        let mut out = a.clone();
        out.seed = None;
        out.c0.neg_assign(ring);
        out.c1.neg_assign(ring);
        out
    }

    /// `out = ct + pt` (same level, scale and encoding).
    pub fn add_plain_into(
        &self,
        ct: &Ciphertext,
        pt: &Plaintext,
        out: &mut Ciphertext,
    ) -> Result<()> {
        Self::check_plain(ct, pt)?;
        ct.scale.check_same(pt.scale)?;
        out.clone_from(ct);
        out.seed = None;
        out.c0.add_assign(self.params.ring(), &pt.poly);
        Ok(())
    }

    /// `ct + pt`.
    pub fn add_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut out = self.blank(ct.level());
        self.add_plain_into(ct, pt, &mut out)?;
        Ok(out)
    }

    /// `ct - pt`.
    pub fn sub_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        Self::check_plain(ct, pt)?;
        ct.scale.check_same(pt.scale)?;
        let mut out = ct.clone();
        out.seed = None;
        out.c0.sub_assign(self.params.ring(), &pt.poly);
        Ok(out)
    }

    /// `out = ct * pt`; the scale of `out` is the product of the scales.
    pub fn mul_plain_into(
        &self,
        ct: &Ciphertext,
        pt: &Plaintext,
        out: &mut Ciphertext,
    ) -> Result<()> {
        Self::check_plain(ct, pt)?;
        let ring = self.params.ring();
        self.shape(out, ct.level());
        let n = ring.n();
        for (src, dst) in [(&ct.c0, &mut out.c0), (&ct.c1, &mut out.c1)] {
            crate::ring::poly::for_each_row_seq(dst.data_mut(), n, |r, row| {
                row.fill(0);
                ring.plan(r).mul_add(row, src.row(r), pt.poly.row(r));
            });
        }
        out.scale = Scale(ct.scale.0 * pt.scale.0);
        out.encoding = ct.encoding;
        Ok(())
    }

    /// `ct * pt`.
    pub fn mul_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut out = self.blank(ct.level());
        self.mul_plain_into(ct, pt, &mut out)?;
        Ok(out)
    }

    /// `acc += ct * pt`: accumulating plaintext product (for matrix products with
    /// unprepared diagonals). `acc` must already have the product's level, scale and
    /// encoding.
    pub fn mul_plain_add_into(
        &self,
        ct: &Ciphertext,
        pt: &Plaintext,
        acc: &mut Ciphertext,
    ) -> Result<()> {
        Self::check_plain(ct, pt)?;
        check_level(ct.level(), acc.level())?;
        check_encoding(ct.encoding, acc.encoding)?;
        Scale(ct.scale.0 * pt.scale.0).check_same(acc.scale)?;
        acc.seed = None;
        let ring = self.params.ring();
        let n = ring.n();
        for (src, dst) in [(&ct.c0, &mut acc.c0), (&ct.c1, &mut acc.c1)] {
            crate::ring::poly::for_each_row_seq(dst.data_mut(), n, |r, row| {
                ring.plan(r).mul_add(row, src.row(r), pt.poly.row(r));
            });
        }
        Ok(())
    }

    /// `out = ct * pt` with a prepared operand.
    pub fn mul_prepared_into(
        &self,
        ct: &Ciphertext,
        pt: &PreparedPlaintext,
        out: &mut Ciphertext,
    ) -> Result<()> {
        Self::check_plain(ct, &pt.pt)?;
        self.shape(out, ct.level());
        out.c0.data_mut().fill(0);
        out.c1.data_mut().fill(0);
        out.scale = Scale(ct.scale.0 * pt.pt.scale.0);
        out.encoding = ct.encoding;
        self.mul_prepared_add_into(ct, pt, out)
    }

    /// `acc += ct * pt` with a prepared operand: the accumulating primitive of
    /// ciphertext x plaintext matrix products. `acc` must already have the product's
    /// level, scale and encoding.
    pub fn mul_prepared_add_into(
        &self,
        ct: &Ciphertext,
        pt: &PreparedPlaintext,
        acc: &mut Ciphertext,
    ) -> Result<()> {
        self.mul_plain_add_into(ct, &pt.pt, acc)
    }

    /// `ct * pt` with a prepared operand.
    pub fn mul_prepared(&self, ct: &Ciphertext, pt: &PreparedPlaintext) -> Result<Ciphertext> {
        let mut out = self.blank(ct.level());
        self.mul_prepared_into(ct, pt, &mut out)?;
        Ok(out)
    }

    /// Adds the constant `c` to every slot (`Slots`) or every coefficient
    /// (`Coefficients`), at the ciphertext's scale.
    pub fn add_const(&self, ct: &Ciphertext, c: f64) -> Result<Ciphertext> {
        let ring = self.params.ring();
        let v = (c * ct.scale.0).round();
        if !v.is_finite() || v.abs() > 1.7e38 {
            return Err(Error::ValueOutOfRange {
                value: c,
                log_scale: ct.scale.log2(),
            });
        }
        let v = v as i128;
        let mut out = ct.clone();
        out.seed = None;
        match ct.encoding {
            Encoding::Slots => {
                // A constant polynomial evaluates to itself at every root: add it to all
                // NTT slots.
                for r in 0..out.c0.rows() {
                    let m = ring.moduli()[r];
                    let k = m.reduce_i128(v);
                    out.c0.row_mut(r).iter_mut().for_each(|x| *x = m.add(*x, k));
                }
            }
            Encoding::Coefficients => {
                let mut coeffs = Poly::<crate::ring::Coeff>::zero(ring, ct.level(), false);
                for r in 0..coeffs.rows() {
                    let k = ring.moduli()[r].reduce_i128(v);
                    coeffs.row_mut(r).fill(k);
                }
                out.c0.add_assign(ring, &coeffs.into_ntt(ring));
            }
        }
        Ok(out)
    }

    /// Multiplies by the constant `c`, encoded as `round(c * const_scale)`; the result's
    /// scale is `ct.scale * const_scale` (rescale afterwards to return near `Delta`).
    pub fn mul_const(&self, ct: &Ciphertext, c: f64, const_scale: Scale) -> Result<Ciphertext> {
        let v = (c * const_scale.0).round();
        if !v.is_finite() || v.abs() > 1.7e38 {
            return Err(Error::ValueOutOfRange {
                value: c,
                log_scale: const_scale.log2(),
            });
        }
        let mut out = self.mul_int(ct, v as i128);
        out.scale = Scale(ct.scale.0 * const_scale.0);
        Ok(out)
    }

    /// Multiplies by an integer; the scale is unchanged.
    pub fn mul_int(&self, ct: &Ciphertext, k: i128) -> Ciphertext {
        let ring = self.params.ring();
        let ks: Vec<u64> = (0..=ct.level())
            .map(|r| ring.moduli()[r].reduce_i128(k))
            .collect();
        let mut out = ct.clone();
        out.seed = None;
        out.c0.mul_scalar_assign(ring, &ks);
        out.c1.mul_scalar_assign(ring, &ks);
        out
    }
}
