//! The client: holds the secret key, encodes and encrypts `X` in a matrix's layout, and
//! decrypts and decodes `Y`.

use std::sync::Arc;

use selene_ckks::rlwe::{Decryptor, Encryptor, GaloisKeys, SecretKey};
use selene_ckks::Parameters;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::matrix::{Layout, LayoutKind};
use crate::message::{EncryptedInput, EncryptedOutput, Header};
use crate::{coeff, flooding, slots};

/// Relative slack of the output bound `|y_tj| <= (1 + slack) ||x_t|| ||w_j||`: it covers
/// the rounding of the encoded weights and inputs (at most `sqrt(d_in) 2^-(w_bits + 1)`
/// relative, under 0.5% at every preset for SmolLM2's widths) with room to spare; the
/// ring and flooding noise get their own margin.
pub const OUTPUT_BOUND_SLACK: f64 = 1.0 / 16.0;

/// Flooding standard deviations in the bound's noise margin (a Gaussian passes 9 sigma
/// with probability about `2^-62`).
const BOUND_FLOOD_SIGMAS: f64 = 9.0;

/// The client's private per-token scales of one encrypted input, needed to decode its
/// output. Never sent: the scales are the norms of the client's activations, so they are
/// zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TokenScales {
    pub(crate) scales: Vec<f64>,
    /// `||x_t||` of each token row, for the output bound.
    pub(crate) norms: Vec<f64>,
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
        Self::from_secret_key(SecretKey::generate(params))
    }

    /// A client holding a given secret key (e.g. a session key unwrapped from a
    /// keystore, `SecretKey::from_seed`); its parameters are the key's.
    pub fn from_secret_key(sk: SecretKey) -> Self {
        let sk = Arc::new(sk);
        Self {
            params: sk.params().clone(),
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
        let mut keys = GaloisKeys::new(&self.sk, &steps, false);
        let log_n = self.params.log_n();
        let mut elements: Vec<u64> = layouts
            .iter()
            .flat_map(|l| l.pack_galois_elements(log_n))
            .collect();
        elements.sort_unstable();
        elements.dedup();
        for g in elements {
            if keys.get(g).is_none() {
                keys.insert(selene_ckks::GaloisKey::new(&self.sk, g));
            }
        }
        keys
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
        let norms = x
            .chunks_exact(d_in)
            .map(|row| {
                row.iter()
                    .map(|&v| f64::from(v).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let (cts, scales) = match &layout.kind {
            LayoutKind::Coefficients(l) => {
                coeff::encrypt(&self.params, &mut self.enc, l, x, n, d_in)?
            }
            LayoutKind::Slots(l) => slots::encrypt(&self.params, &mut self.enc, l, x, n, d_in)?,
        };
        let header = Header {
            fingerprint: layout.fingerprint,
            method: layout.method(),
            shape: layout.shape,
            tag: layout.tag(),
            n,
        };
        let drop_bits = match &layout.kind {
            LayoutKind::Coefficients(l) => l.upload_drop_bits(&self.params),
            LayoutKind::Slots(_) => 0,
        };
        Ok((
            EncryptedInput {
                header,
                cts,
                drop_bits,
            },
            TokenScales { scales, norms },
        ))
    }

    /// Decrypts `out` and decodes `Y` (`n x d_out`, row-major). Keep the result on the
    /// client: values derived from it that reach the server need
    /// [`Client::decrypt_decode_flooded`] (see [`crate::flooding`]).
    ///
    /// Every value is checked against its bound `||x_t|| ||w_j||` (see
    /// [`OUTPUT_BOUND_SLACK`]).
    ///
    /// # Errors
    /// An output for another matrix, method, parameter set or token count; ciphertexts
    /// of the wrong number or size; [`Error::OutputOutOfBound`] for a value above its bound.
    pub fn decrypt_decode(
        &self,
        out: &EncryptedOutput,
        scales: &TokenScales,
        layout: &Layout,
    ) -> Result<Vec<f64>> {
        self.decrypt_with(out, scales, layout, 0.0)
    }

    /// Decrypts `out` with noise flooding and decodes `Y`: every decrypted coefficient
    /// gets a fresh rounded Gaussian of standard deviation `sigma` (units of the download
    /// modulus) before decoding, the form fit for values that reach another party (Li,
    /// Micciancio, Schultz, Sorrell, CRYPTO 2022). Choose `sigma` with
    /// [`crate::flooding::decryption_flooding_sigma`]: it is derived from the bound on the
    /// product output's ring noise for this layout and the number of decrypted
    /// coefficients the key will release. [`crate::flooding::flooded_precision_bits`] says what it costs.
    ///
    /// # Errors
    /// As [`Client::decrypt_decode`]; [`Error::InvalidFloodingSigma`] for a negative,
    /// non-finite or over-`2^60` sigma; [`Error::FloodingUnsupported`] for the slot method.
    pub fn decrypt_decode_flooded(
        &self,
        out: &EncryptedOutput,
        scales: &TokenScales,
        layout: &Layout,
        sigma: f64,
    ) -> Result<Vec<f64>> {
        if !sigma.is_finite() || !(0.0..=crate::flooding::MAX_FLOODING_SIGMA).contains(&sigma) {
            return Err(Error::InvalidFloodingSigma { sigma });
        }
        if let LayoutKind::Slots(_) = layout.kind {
            return Err(Error::FloodingUnsupported {
                method: layout.method(),
            });
        }
        self.decrypt_with(out, scales, layout, sigma)
    }

    /// Errors unless `out` fits `layout` and `n_scales` tokens.
    fn check_output(&self, out: &EncryptedOutput, n_scales: usize, layout: &Layout) -> Result<()> {
        layout.check_params(&self.params)?;
        crate::check_header(layout, &out.header)?;
        let (n, shape, rn, cts) = (out.header.n, layout.shape, self.params.n(), &out.cts);
        if n_scales != n {
            return Err(Error::Length {
                what: "token scales",
                found: n_scales,
                expected: n,
            });
        }
        let down_bits = match &layout.kind {
            LayoutKind::Coefficients(l) => l.down_bits,
            LayoutKind::Slots(l) => l.down_bits,
        };
        if out.down_bits != down_bits {
            return Err(Error::Length {
                what: "download modulus bits",
                found: out.down_bits as usize,
                expected: down_bits as usize,
            });
        }
        match &layout.kind {
            LayoutKind::Coefficients(l) => {
                let lens = l.output_lens(n, shape.d_out);
                check_count("output", cts.len(), lens.len())?;
                for (ct, &len) in cts.iter().zip(&lens) {
                    check_len("output c0", ct.c0.len(), len)?;
                    check_len("output c1", ct.c1.len(), rn)?;
                }
            }
            LayoutKind::Slots(l) => {
                check_count("output", cts.len(), n.div_ceil(l.tokens_per_ct))?;
                for ct in cts {
                    check_len("output c0", ct.c0.len(), rn)?;
                    check_len("output c1", ct.c1.len(), rn)?;
                }
            }
        }
        Ok(())
    }

    /// Errors unless every decoded output `y_tj` is within its Cauchy-Schwarz bound
    /// `(1 + OUTPUT_BOUND_SLACK) ||x_t|| ||w_j||` plus the noise margin (the product's ring
    /// noise bound and 9 flooding sigmas, decoded like a value): an honest product never
    /// passes it, so a value above it was not computed from this input. `||w_j||` comes
    /// from the layout's scales, so the bound means something only once the caller has
    /// pinned them ([`Layout::check_column_norms`]).
    fn check_bound(
        &self,
        y: &[f64],
        scales: &TokenScales,
        layout: &Layout,
        sigma: f64,
    ) -> Result<()> {
        let d_out = layout.shape.d_out;
        let w_norms = layout.column_norms();
        let col_scale = layout.column_scales();
        // The margin in the decrypted integers (units of the download modulus) and the
        // value of one such unit before the token and column scales.
        let (noise, unit) = match &layout.kind {
            LayoutKind::Coefficients(l) => {
                let q = coeff::ring_prime(&self.params).value() as f64;
                (
                    flooding::product_noise_bound(&self.params, layout)?
                        + BOUND_FLOOD_SIGMAS * sigma,
                    l.unit(q),
                )
            }
            // Unflooded, with noise far below the slack.
            LayoutKind::Slots(_) => (0.0, 0.0),
        };
        for (token, row) in y.chunks(d_out).enumerate() {
            let (x_norm, x_scale) = match (scales.norms.get(token), scales.scales.get(token)) {
                (Some(n), Some(s)) => (*n, *s),
                _ => {
                    return Err(Error::Length {
                        what: "token scales",
                        found: scales.scales.len(),
                        expected: token + 1,
                    })
                }
            };
            for (column, &value) in row.iter().enumerate() {
                let (w_norm, w_scale) = (w_norms[column], col_scale[column]);
                let bound = (1.0 + OUTPUT_BOUND_SLACK) * x_norm * w_norm
                    + noise * unit / (x_scale * w_scale);
                if value.abs() > bound || value.is_nan() {
                    return Err(Error::OutputOutOfBound {
                        token,
                        column,
                        value,
                        bound,
                    });
                }
            }
        }
        Ok(())
    }

    fn decrypt_with(
        &self,
        out: &EncryptedOutput,
        scales: &TokenScales,
        layout: &Layout,
        sigma: f64,
    ) -> Result<Vec<f64>> {
        let y = self.decrypt_unchecked(out, scales, layout, sigma)?;
        self.check_bound(&y, scales, layout, sigma)?;
        Ok(y)
    }

    fn decrypt_unchecked(
        &self,
        out: &EncryptedOutput,
        scales: &TokenScales,
        layout: &Layout,
        sigma: f64,
    ) -> Result<Vec<f64>> {
        self.check_output(out, scales.scales.len(), layout)?;
        let (n, shape, cts) = (out.header.n, layout.shape, &out.cts);
        match &layout.kind {
            LayoutKind::Coefficients(l) => coeff::decrypt(
                &self.params,
                &self.dec,
                l,
                cts,
                n,
                shape,
                &scales.scales,
                sigma,
            ),
            LayoutKind::Slots(l) => {
                slots::decrypt(&self.params, &self.dec, l, cts, n, shape, &scales.scales)
            }
        }
    }

    /// The decrypted, centred integers mod `2^down_bits` of a coefficient-method output
    /// (no decoding): what the noise test compares with the exact product.
    #[cfg(test)]
    pub(crate) fn decrypt_raw(&self, out: &EncryptedOutput, layout: &Layout) -> Result<Vec<i64>> {
        self.check_output(out, out.header.n, layout)?;
        match &layout.kind {
            LayoutKind::Coefficients(l) => {
                coeff::decrypt_ints(&self.dec, l, &out.cts, out.header.n, layout.shape, 0.0)
            }
            LayoutKind::Slots(_) => Err(Error::FloodingUnsupported {
                method: layout.method(),
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
