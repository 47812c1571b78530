//! The server: applies prepared matrices to encrypted inputs.

use std::sync::Arc;

use selene_ckks::{Encoding, GaloisKeys, Parameters};

use crate::client::{check_count, check_len};
use crate::error::{Error, Result};
use crate::matrix::{Encoded, LayoutKind, PreparedMatrix};
use crate::message::{EncryptedInput, EncryptedOutput, InputBody, OutputBody};
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

    /// Installs the client's Galois keys (the slot method's rotations).
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
        crate::check_header(
            layout,
            input.fingerprint,
            input.method,
            input.shape,
            input.tag,
        )?;
        let (n, shape, rn) = (input.n, layout.shape, self.params.n());
        let (body, down_bits) = match (&layout.kind, &m.encoded, &input.body) {
            (
                LayoutKind::Coefficients(l),
                Encoded::Coefficients(w),
                InputBody::Coefficients(cts),
            ) => {
                let t = l.tiling;
                check_count("input", cts.len(), t.groups(n) * t.in_blocks(shape.d_in))?;
                for ct in cts {
                    check_len("input c0", ct.c0.data().len(), rn)?;
                }
                let out = coeff::apply(&self.params, w, l, cts, n, shape);
                (OutputBody::Coefficients(out), l.down_bits)
            }
            (LayoutKind::Slots(l), Encoded::Slots(w), InputBody::Slots(cts)) => {
                check_count("input", cts.len(), n.div_ceil(l.tokens_per_ct))?;
                for ct in cts {
                    check_len("input c0", ct.components().0.data().len(), rn)?;
                    if ct.encoding() != Encoding::Slots {
                        return Err(Error::MethodMismatch {
                            expected: crate::Method::Slots,
                            found: crate::Method::Coefficients,
                        });
                    }
                }
                let gks = self.gks.as_ref().ok_or(Error::MissingGaloisKeys)?;
                let out = slots::apply(&self.params, gks, w, l, cts)?;
                (OutputBody::Slots(out), l.down_bits)
            }
            _ => {
                return Err(Error::MethodMismatch {
                    expected: layout.method(),
                    found: input.method,
                })
            }
        };
        Ok(EncryptedOutput {
            fingerprint: layout.fingerprint,
            method: layout.method(),
            shape,
            tag: input.tag,
            n,
            down_bits,
            body,
        })
    }
}
