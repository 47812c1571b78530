//! The server: applies prepared matrices to encrypted inputs.

use std::sync::Arc;

use selene_ckks::{Ciphertext, Encoding, GaloisKeys, Parameters};

use crate::client::{check_count, check_len};
use crate::error::{Error, Result};
use crate::matrix::{Encoded, LayoutKind, PreparedMatrix};
use crate::message::{EncryptedInput, EncryptedOutput, InputReader};
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

/// A coefficient product started on the first bytes of its input ([`Server::stream`]):
/// the ciphertexts whole so far multiplied in; the rest, the packing and the switch wait
/// for [`Server::finish`].
#[derive(Debug)]
pub struct StreamedProduct {
    reader: InputReader,
    acc: coeff::Accumulation,
    /// The input's bytes multiplied in so far: [`Server::finish`] checks that the whole
    /// input begins with them.
    taken: Vec<u8>,
}

impl StreamedProduct {
    /// Input ciphertexts multiplied in so far.
    pub fn absorbed(&self) -> usize {
        self.reader.read
    }
}

impl Server {
    /// Starts `m`'s product on `prefix`, the first bytes of an encrypted input of `total`
    /// bytes (its wire form, [`EncryptedInput::to_bytes`]), multiplying in every input
    /// ciphertext whole in it, so that a transport can overlap a product with its upload.
    /// `Ok(None)` when the header has not all arrived, or for a product that does not
    /// stream: the slot method, merge levels folded into the weights, or more than one
    /// token group (whose sums would not fit in memory at once).
    ///
    /// # Errors
    /// As [`Server::apply`] for an input that does not fit `m`, and malformed bytes.
    pub fn stream(
        &self,
        m: &PreparedMatrix,
        prefix: &[u8],
        total: usize,
    ) -> Result<Option<StreamedProduct>> {
        let layout = &m.layout;
        layout.check_params(&self.params)?;
        let LayoutKind::Coefficients(l) = &layout.kind else {
            return Ok(None);
        };
        let Some(reader) = InputReader::start(prefix, total, &self.params)? else {
            return Ok(None);
        };
        crate::check_header(layout, &reader.header)?;
        let (t, n, shape) = (l.tiling, reader.header.n, layout.shape);
        check_count("input", reader.count, t.groups(n) * t.in_blocks(shape.d_in))?;
        if t.groups(n) != 1 {
            return Ok(None);
        }
        let Some(acc) = coeff::Accumulation::new(&self.params, l, n, shape) else {
            return Ok(None);
        };
        let mut s = StreamedProduct {
            reader,
            acc,
            taken: Vec::new(),
        };
        self.feed(m, &mut s, prefix)?;
        Ok(Some(s))
    }

    /// Multiplies in the input ciphertexts whole in `prefix` (longer first bytes of the
    /// input `s` was started on) that were not yet.
    ///
    /// # Errors
    /// Malformed bytes, ciphertexts of the wrong size or encoding, or `m` not the matrix
    /// `s` was started for.
    pub fn feed(&self, m: &PreparedMatrix, s: &mut StreamedProduct, prefix: &[u8]) -> Result<()> {
        let (LayoutKind::Coefficients(l), Encoded::Coefficients(w)) = (&m.layout.kind, &m.encoded)
        else {
            return Err(Error::MethodMismatch {
                expected: m.layout.method(),
                found: crate::Method::Coefficients,
            });
        };
        crate::check_header(&m.layout, &s.reader.header)?;
        let first = s.reader.read;
        let (cts, end) = s.reader.next_whole(prefix, &self.params)?;
        check_cts(&cts, self.params.n(), Encoding::Coefficients)?;
        s.acc
            .absorb(&self.params, w, l, m.layout.shape, first, &cts);
        s.taken.extend_from_slice(&prefix[s.taken.len()..end]);
        Ok(())
    }

    /// Finishes `s` with the whole `input`: the ciphertexts not yet multiplied in, then
    /// the packing and the switch. The output is the one [`Server::apply`] gives the
    /// parsed input (the sums are exact mod `q`, whatever the order).
    ///
    /// # Errors
    /// An input that does not begin with the bytes `s` took or whose ciphertexts do not
    /// end it exactly; as [`Server::feed`] and [`Server::apply`].
    pub fn finish(
        &self,
        m: &PreparedMatrix,
        mut s: StreamedProduct,
        input: &[u8],
    ) -> Result<EncryptedOutput> {
        if !input.starts_with(&s.taken) {
            return Err(Error::Malformed {
                what: "streamed input",
                offset: 0,
            });
        }
        self.feed(m, &mut s, input)?;
        s.reader.check_end()?;
        let LayoutKind::Coefficients(l) = &m.layout.kind else {
            return Err(Error::MethodMismatch {
                expected: m.layout.method(),
                found: crate::Method::Coefficients,
            });
        };
        let header = s.reader.header;
        let cts = s
            .acc
            .finish(&self.params, l, header.n, m.layout.shape, self.gks.as_ref())?;
        Ok(EncryptedOutput {
            header,
            down_bits: l.down_bits,
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
