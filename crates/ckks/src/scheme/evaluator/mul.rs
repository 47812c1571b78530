//! Ciphertext-ciphertext multiplication with relinearization.

use crate::error::{Error, Result};
use crate::ring::Poly;
use crate::rlwe::keyswitch::{apply_into, decompose_into};
use crate::scheme::ciphertext::Ciphertext;
use crate::scheme::{check_encoding, check_level, Scale};

use super::Evaluator;

impl Evaluator {
    /// `out = relin(a * b)`: the tensor product `(a0 b0, a0 b1 + a1 b0, a1 b1)` in NTT form,
    /// then `a1 b1` (a polynomial under `s^2`) key-switched back under `s`. The scale of
    /// `out` is the product of the scales; rescale afterwards.
    pub fn mul_relin_into(
        &mut self,
        a: &Ciphertext,
        b: &Ciphertext,
        out: &mut Ciphertext,
    ) -> Result<()> {
        check_level(a.level(), b.level())?;
        check_encoding(a.encoding, b.encoding)?;
        let Some(rlk) = self.rlk.clone() else {
            return Err(Error::MissingRelinKey);
        };
        let level = a.level();
        let ring = self.params.ring();
        let n = ring.n();
        self.shape(out, level);
        let mut d2 = self
            .scratch
            .k0
            .take()
            .filter(|p| p.level() == level)
            .unwrap_or_else(|| Poly::zero(ring, level, false));
        {
            let (o0, o1) = (out.c0.data_mut(), out.c1.data_mut());
            // Row r of (d0, d1, d2): one pass over the four inputs; d1 takes one reduction.
            let rows = o0
                .chunks_exact_mut(n)
                .zip(o1.chunks_exact_mut(n))
                .zip(d2.data_mut().chunks_exact_mut(n))
                .enumerate();
            let tensor = |r: usize, d0: &mut [u64], d1: &mut [u64], d2: &mut [u64]| {
                let plan = ring.plan(r);
                let (a0, a1, b0, b1) = (a.c0.row(r), a.c1.row(r), b.c0.row(r), b.c1.row(r));
                for d in [&mut *d0, &mut *d1, &mut *d2] {
                    d.fill(0);
                }
                plan.mul_add(d0, a0, b0);
                plan.mul_add(d1, a0, b1);
                plan.mul_add(d1, a1, b0);
                plan.mul_add(d2, a1, b1);
            };
            if crate::ring::poly::parallel() {
                use rayon::prelude::*;
                rows.collect::<Vec<_>>()
                    .into_par_iter()
                    .for_each(|(r, ((d0, d1), d2))| tensor(r, d0, d1, d2));
            } else {
                rows.for_each(|(r, ((d0, d1), d2))| tensor(r, d0, d1, d2));
            }
        }
        decompose_into(&self.params, &d2, &mut self.scratch.dec);
        let mut acc = self
            .scratch
            .acc
            .take()
            .unwrap_or_else(|| [Poly::zero(ring, level, true), Poly::zero(ring, level, true)]);
        let mut k1 = self
            .scratch
            .k1
            .take()
            .unwrap_or_else(|| Poly::zero(ring, level, false));
        let mut k0 = d2;
        apply_into(
            &self.params,
            &self.scratch.dec,
            &rlk.ksk,
            None,
            &mut acc,
            &mut k0,
            &mut k1,
        );
        out.c0.add_assign(ring, &k0);
        out.c1.add_assign(ring, &k1);
        out.scale = Scale(a.scale.0 * b.scale.0);
        out.encoding = a.encoding;
        self.scratch.acc = Some(acc);
        self.scratch.k0 = Some(k0);
        self.scratch.k1 = Some(k1);
        Ok(())
    }

    /// `relin(a * b)`.
    pub fn mul_relin(&mut self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut out = self.blank(a.level());
        self.mul_relin_into(a, b, &mut out)?;
        Ok(out)
    }
}
