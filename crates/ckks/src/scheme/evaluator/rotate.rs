//! Rotations and conjugation by Galois automorphisms, with hoisting.
//!
//! `rotate(ct, k)` maps `(c0, c1)` to `(phi(c0) + k0, k1)` where `(k0, k1)` key-switches
//! `phi(c1)` from `phi(s)` to `s`. Hoisting (Halevi-Shoup, CRYPTO 2018, Sec. 5): the
//! decomposition (ModUp) of `c1` commutes with `phi` (a permutation of NTT slots), so it is
//! computed once and each rotation only permutes the digits inside the inner product.

use crate::error::{Error, Result};
use crate::ring::automorphism::{conjugation_element, galois_element};
use crate::ring::Poly;
use crate::rlwe::keyswitch::{apply_into, decompose_into};
use crate::rlwe::GaloisKey;
use crate::scheme::ciphertext::Ciphertext;

use super::Evaluator;

impl Evaluator {
    pub(super) fn galois_key(&self, g: u64) -> Result<std::sync::Arc<GaloisKey>> {
        self.gks
            .as_ref()
            .and_then(|k| k.get(g))
            .cloned()
            .ok_or(Error::MissingGaloisKey { galois_element: g })
    }

    /// Applies the automorphism of one Galois key to `ct` using the decomposition of `c1`
    /// already in the scratch.
    fn apply_galois_decomposed(&mut self, ct: &Ciphertext, key: &GaloisKey, out: &mut Ciphertext) {
        let ring = self.params.ring();
        let level = ct.level();
        self.shape(out, level);
        let mut acc = self
            .scratch
            .acc
            .take()
            .unwrap_or_else(|| [Poly::zero(ring, level, true), Poly::zero(ring, level, true)]);
        apply_into(
            &self.params,
            &self.scratch.dec,
            &key.ksk,
            Some(&key.auto),
            &mut acc,
            &mut out.c0,
            &mut out.c1,
        );
        self.scratch.acc = Some(acc);
        let n = ring.n();
        let perm = key.auto.permutation();
        crate::ring::poly::for_each_row(out.c0.data_mut(), n, |r, row| {
            let m = ring.moduli()[r];
            let src = ct.c0.row(r);
            for (o, &p) in row.iter_mut().zip(perm) {
                *o = m.add(*o, src[p as usize]);
            }
        });
        out.scale = ct.scale;
        out.encoding = ct.encoding;
    }

    /// `out = phi_g(ct)` for Galois element `g`.
    pub fn apply_galois_into(
        &mut self,
        ct: &Ciphertext,
        g: u64,
        out: &mut Ciphertext,
    ) -> Result<()> {
        if g == 1 {
            out.clone_from(ct);
            out.seed = None;
            return Ok(());
        }
        let key = self.galois_key(g)?;
        decompose_into(&self.params, &ct.c1, &mut self.scratch.dec);
        self.apply_galois_decomposed(ct, &key, out);
        Ok(())
    }

    /// `out = ct` rotated left by `step` slots (`Slots` encoding; for `Coefficients` it is
    /// the automorphism `X -> X^(5^step)`).
    pub fn rotate_into(&mut self, ct: &Ciphertext, step: i64, out: &mut Ciphertext) -> Result<()> {
        self.apply_galois_into(ct, galois_element(step, self.params.log_n()), out)
    }

    /// `ct` rotated left by `step` slots.
    pub fn rotate(&mut self, ct: &Ciphertext, step: i64) -> Result<Ciphertext> {
        let mut out = self.blank(ct.level());
        self.rotate_into(ct, step, &mut out)?;
        Ok(out)
    }

    /// Complex conjugation of every slot.
    pub fn conjugate(&mut self, ct: &Ciphertext) -> Result<Ciphertext> {
        let mut out = self.blank(ct.level());
        self.apply_galois_into(ct, conjugation_element(self.params.log_n()), &mut out)?;
        Ok(out)
    }

    /// Rotations of one ciphertext by each of `steps`, sharing one decomposition of `c1`
    /// (hoisting). `outs` must have one entry per step.
    pub fn rotate_hoisted_into(
        &mut self,
        ct: &Ciphertext,
        steps: &[i64],
        outs: &mut [Ciphertext],
    ) -> Result<()> {
        if outs.len() != steps.len() {
            return Err(Error::TooManyValues {
                got: steps.len(),
                max: outs.len(),
            });
        }
        let log_n = self.params.log_n();
        let keys = steps
            .iter()
            .map(|&s| {
                let g = galois_element(s, log_n);
                if g == 1 {
                    Ok(None)
                } else {
                    self.galois_key(g).map(Some)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        decompose_into(&self.params, &ct.c1, &mut self.scratch.dec);
        for (key, out) in keys.iter().zip(outs.iter_mut()) {
            match key {
                Some(key) => self.apply_galois_decomposed(ct, key, out),
                None => {
                    out.clone_from(ct);
                    out.seed = None;
                }
            }
        }
        Ok(())
    }

    /// `phi_g(ct)` for each Galois element of `elements` (1 gives `ct` itself), sharing
    /// one decomposition of `c1` (hoisting).
    ///
    /// # Errors
    /// A missing Galois key.
    pub fn apply_galois_hoisted(
        &mut self,
        ct: &Ciphertext,
        elements: &[u64],
    ) -> Result<Vec<Ciphertext>> {
        let keys = elements
            .iter()
            .map(|&g| {
                if g == 1 {
                    Ok(None)
                } else {
                    self.galois_key(g).map(Some)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if keys.iter().any(Option::is_some) {
            decompose_into(&self.params, &ct.c1, &mut self.scratch.dec);
        }
        let mut outs = Vec::with_capacity(keys.len());
        for key in &keys {
            let mut out = self.blank(ct.level());
            match key {
                Some(key) => self.apply_galois_decomposed(ct, key, &mut out),
                None => {
                    out.clone_from(ct);
                    out.seed = None;
                }
            }
            outs.push(out);
        }
        Ok(outs)
    }

    /// Hoisted rotations of `ct` by each of `steps`.
    pub fn rotate_hoisted(&mut self, ct: &Ciphertext, steps: &[i64]) -> Result<Vec<Ciphertext>> {
        let mut outs: Vec<Ciphertext> = steps.iter().map(|_| self.blank(ct.level())).collect();
        self.rotate_hoisted_into(ct, steps, &mut outs)?;
        Ok(outs)
    }
}
