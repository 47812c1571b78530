//! The client: holds the secret key, encodes and encrypts `X` in a matrix's layout, and
//! decrypts and decodes `Y`.

use std::sync::Arc;

use selene_ckks::rlwe::{Decryptor, Encryptor, GaloisKeys, SecretKey};
use selene_ckks::Parameters;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::matrix::{Layout, LayoutKind};
use crate::message::{EncryptedInput, EncryptedOutput, InputBody, OutputBody};
use crate::{coeff, slots};

/// The client's private per-token scales of one encrypted input, needed to decode its
/// output. Never sent: the scales are the norms of the client's activations, so they are
/// zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TokenScales {
    scales: Vec<f64>,
}

impl std::fmt::Debug for TokenScales {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenScales {{ tokens: {}, scales: [redacted] }}",
            self.scales.len()
        )
    }
}

/// The key holder's side of the protocol.
pub struct Client {
    params: Arc<Parameters>,
    sk: Arc<SecretKey>,
    enc: Encryptor,
    dec: Decryptor,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Client {{ params: {:02x?}, key: [redacted] }}",
            self.params.fingerprint()
        )
    }
}

impl Client {
    /// A client with a fresh secret key for `params`.
    pub fn new(params: &Arc<Parameters>) -> Self {
        let sk = Arc::new(SecretKey::generate(params));
        Self {
            params: params.clone(),
            enc: Encryptor::with_secret_key(sk.clone()),
            dec: Decryptor::new(sk.clone()),
            sk,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// Galois keys for exactly the rotation steps the given layouts need (none for the
    /// coefficient method); uploaded once per session.
    pub fn galois_keys(&self, layouts: &[&Layout]) -> GaloisKeys {
        let mut steps: Vec<i64> = layouts.iter().flat_map(|l| l.rotation_steps()).collect();
        steps.sort_unstable();
        steps.dedup();
        GaloisKeys::new(&self.sk, &steps, false)
    }

    /// Encodes `x` (`n x d_in`, row-major) for `layout` and encrypts it.
    ///
    /// # Errors
    /// Wrong length, non-finite values, `n = 0`, a layout for other parameters.
    pub fn encode_encrypt(
        &mut self,
        x: &[f32],
        n: usize,
        layout: &Layout,
    ) -> Result<(EncryptedInput, TokenScales)> {
        layout.check_params(&self.params)?;
        let d_in = layout.shape.d_in;
        if n == 0 {
            return Err(Error::Length {
                what: "tokens",
                found: 0,
                expected: 1,
            });
        }
        crate::check_values("input X", x, n * d_in)?;
        let (body, scales) = match &layout.kind {
            LayoutKind::Coefficients(l) => {
                let (cts, s) = coeff::encrypt(&self.params, &mut self.enc, l, x, n, d_in);
                (InputBody::Coefficients(cts), s)
            }
            LayoutKind::Slots(l) => {
                let (cts, s) = slots::encrypt(&self.params, &mut self.enc, l, x, n, d_in)?;
                (InputBody::Slots(cts), s)
            }
        };
        let input = EncryptedInput {
            fingerprint: layout.fingerprint,
            method: layout.method(),
            shape: layout.shape,
            tag: layout.tag(),
            n,
            q_bits: self.params.ring().moduli()[0].bits(),
            body,
        };
        Ok((input, TokenScales { scales }))
    }

    /// Decrypts `out` and decodes `Y` (`n x d_out`, row-major).
    ///
    /// # Errors
    /// An output for another matrix, method, parameter set or token count; ciphertexts
    /// of the wrong number or size.
    pub fn decrypt_decode(
        &self,
        out: &EncryptedOutput,
        scales: &TokenScales,
        layout: &Layout,
    ) -> Result<Vec<f64>> {
        layout.check_params(&self.params)?;
        crate::check_header(layout, out.fingerprint, out.method, out.shape, out.tag)?;
        if scales.scales.len() != out.n {
            return Err(Error::Length {
                what: "token scales",
                found: scales.scales.len(),
                expected: out.n,
            });
        }
        let (n, shape, rn) = (out.n, layout.shape, self.params.n());
        match (&layout.kind, &out.body) {
            (LayoutKind::Coefficients(l), OutputBody::Coefficients(cts)) => {
                let t = l.tiling;
                let bo = t.out_blocks(shape.d_out);
                check_count("output", cts.len(), t.groups(n) * bo)?;
                if out.down_bits != l.down_bits {
                    return Err(Error::Length {
                        what: "download modulus bits",
                        found: out.down_bits as usize,
                        expected: l.down_bits as usize,
                    });
                }
                for (idx, ct) in cts.iter().enumerate() {
                    let (g, o) = (idx / bo, idx % bo);
                    let used = t.n_b.min(n - g * t.n_b) * t.k_o.min(shape.d_out - o * t.k_o);
                    check_len("output c0", ct.c0.len(), used)?;
                    check_len("output c1", ct.c1.len(), rn)?;
                }
                Ok(coeff::decrypt(
                    &self.params,
                    &self.dec,
                    l,
                    cts,
                    n,
                    shape,
                    &scales.scales,
                ))
            }
            (LayoutKind::Slots(l), OutputBody::Slots(cts)) => {
                check_count("output", cts.len(), n.div_ceil(l.tokens_per_ct))?;
                for (c0, c1) in cts {
                    check_len("output c0", c0.len(), rn)?;
                    check_len("output c1", c1.len(), rn)?;
                }
                slots::decrypt(&self.params, &self.dec, l, cts, n, shape, &scales.scales)
            }
            _ => Err(Error::MethodMismatch {
                expected: layout.method(),
                found: out.method,
            }),
        }
    }
}

/// Errors unless `found == expected` ciphertexts.
pub(crate) fn check_count(what: &'static str, found: usize, expected: usize) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::CiphertextCount {
            what,
            found,
            expected,
        })
    }
}

/// Errors unless a component has `expected` values.
pub(crate) fn check_len(what: &'static str, found: usize, expected: usize) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::Length {
            what,
            found,
            expected,
        })
    }
}
