//! The server: applies prepared matrices to encrypted inputs.

use std::sync::Arc;

use selene_ckks::{Ciphertext, Encoding, GaloisKeys, Parameters};

use crate::client::{check_count, check_len};
use crate::error::{Error, Result};
use crate::matrix::{Encoded, LayoutKind, PreparedMatrix};
use crate::message::{EncryptedInput, EncryptedOutput};
use crate::{coeff, slots};

/// The weight holder's side: parameters and, for the slot method, the client's Galois
/// keys.
#[derive(Debug)]
pub struct Server {
    params: Arc<Parameters>,
    gks: Option<Arc<GaloisKeys>>,
}

impl Server {
    /// A server for `params` without Galois keys (enough for the coefficient method).
    pub fn new(params: &Arc<Parameters>) -> Self {
        Self {
            params: params.clone(),
            gks: None,
        }
    }

    /// Installs the client's Galois keys (the slot method's rotations, or the merges of
    /// packed coefficient outputs).
    pub fn with_galois_keys(mut self, gks: Arc<GaloisKeys>) -> Self {
        self.gks = Some(gks);
        self
    }

    /// `Enc(X) -> Enc(X W)`, switched to the download modulus.
    ///
    /// # Errors
    /// An input for another matrix, method, parameter set or tiling; ciphertexts of the
    /// wrong number, level or encoding; missing Galois keys; engine errors.
    pub fn apply(&self, m: &PreparedMatrix, input: &EncryptedInput) -> Result<EncryptedOutput> {
        let layout = &m.layout;
        layout.check_params(&self.params)?;
        crate::check_header(layout, &input.header)?;
        let (n, shape, rn, cts) = (input.header.n, layout.shape, self.params.n(), &input.cts);
        let (cts, down_bits) = match (&layout.kind, &m.encoded) {
            (LayoutKind::Coefficients(l), Encoded::Coefficients(w)) => {
                let t = l.tiling;
                check_count("input", cts.len(), t.groups(n) * t.in_blocks(shape.d_in))?;
                check_cts(cts, rn, Encoding::Coefficients)?;
                (
                    coeff::apply(&self.params, w, l, cts, n, shape, self.gks.as_ref())?,
                    l.down_bits,
                )
            }
            (LayoutKind::Slots(l), Encoded::Slots(w)) => {
                check_count("input", cts.len(), n.div_ceil(l.tokens_per_ct))?;
                check_cts(cts, rn, Encoding::Slots)?;
                let gks = self.gks.as_ref().ok_or(Error::MissingGaloisKeys)?;
                (slots::apply(&self.params, gks, w, l, cts)?, l.down_bits)
            }
            // `PreparedMatrix::new` builds the layout and the encoding from one method.
            _ => {
                return Err(Error::MethodMismatch {
                    expected: layout.method(),
                    found: input.header.method,
                })
            }
        };
        Ok(EncryptedOutput {
            header: input.header,
            down_bits,
            cts,
        })
    }
}

/// Errors unless every ciphertext is at level 0 (one prime of `rn` residues per
/// component) with the method's encoding.
fn check_cts(cts: &[Ciphertext], rn: usize, encoding: Encoding) -> Result<()> {
    let method = |e| match e {
        Encoding::Slots => crate::Method::Slots,
        Encoding::Coefficients => crate::Method::Coefficients,
    };
    for ct in cts {
        let (c0, c1) = ct.components();
        check_len("input c0", c0.data().len(), rn)?;
        check_len("input c1", c1.data().len(), rn)?;
        if ct.encoding() != encoding {
            return Err(Error::MethodMismatch {
                expected: method(encoding),
                found: method(ct.encoding()),
            });
        }
    }
    Ok(())
}
