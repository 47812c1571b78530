//! The server: applies prepared matrices to encrypted inputs.

use std::sync::Arc;

use selene_ckks::{Ciphertext, Encoding, GaloisKeys, Parameters};

use crate::client::{check_count, check_len};
use crate::error::{Error, Result};
use crate::matrix::{Encoded, LayoutKind, PreparedMatrix};
use crate::message::{EncryptedInput, EncryptedOutput, InputReader};
use crate::streamed::{Accumulation, Product};
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

/// A coefficient product taken while its input arrives ([`Server::stream`]): the bytes
/// so far; once the input's seed table is in, the `c1` half with every key switch of
/// the packing; and the `c0` of the input ciphertexts whole among the bytes multiplied
/// in. The rest of the `c0`s and the packing's linear steps on them wait for
/// [`Server::finish`] (see `crate::streamed`).
#[derive(Debug)]
pub struct StreamedProduct {
    /// The input's announced size.
    total: usize,
    /// Its bytes so far.
    bytes: Vec<u8>,
    /// Set once the header, count and seed table are in, with the sums.
    started: Option<(InputReader, Accumulation)>,
}

impl StreamedProduct {
    /// Whether the header and seed table are in, and the `c1` half computed.
    pub fn started(&self) -> bool {
        self.started.is_some()
    }

    /// Input ciphertexts multiplied in so far.
    pub fn absorbed(&self) -> usize {
        self.started.as_ref().map_or(0, |(r, _)| r.read)
    }
}

impl Server {
    /// Starts `m`'s product on an encrypted input of `total` bytes (its wire form,
    /// [`EncryptedInput::to_bytes`]) whose bytes will come in pieces ([`Server::feed`]),
    /// so that a transport can overlap the product with its upload; `None` for a product
    /// that does not stream: the slot method, or merge levels folded into the weights
    /// (their images are computed per input by key switches of whole ciphertexts).
    ///
    /// # Errors
    /// Parameters other than `m`'s.
    pub fn stream(&self, m: &PreparedMatrix, total: usize) -> Result<Option<StreamedProduct>> {
        m.layout.check_params(&self.params)?;
        Ok(m.layout.streams().then(|| StreamedProduct {
            total,
            bytes: Vec::new(),
            started: None,
        }))
    }

    /// Takes the input's next `bytes`. Once the header, count and seed table are in (checked
    /// against `m` as [`Server::apply`] checks them), computes the `c1` half of the
    /// product, every key switch of its packing included (this call then takes as long as
    /// those); then multiplies in the `c0` of every input ciphertext the bytes complete.
    ///
    /// # Errors
    /// More bytes than announced, malformed bytes, an input that does not fit `m`,
    /// ciphertexts of the wrong size or encoding or other than their seed table entry, a
    /// packed layout without Galois keys, or [`Error::NotStreamable`] for an input of
    /// several token groups (their sums would all be held at once) or without a seed
    /// table.
    pub fn feed(&self, m: &PreparedMatrix, s: &mut StreamedProduct, bytes: &[u8]) -> Result<()> {
        let (LayoutKind::Coefficients(l), Encoded::Coefficients(w)) = (&m.layout.kind, &m.encoded)
        else {
            return Err(Error::NotStreamable {
                reason: "the slot method",
            });
        };
        if bytes.len() > s.total - s.bytes.len() {
            return Err(Error::Malformed {
                what: "bytes past a streamed input's size",
                offset: s.total,
            });
        }
        s.bytes.extend_from_slice(bytes);
        // The header is checked against `m` once per call: here when it has just arrived,
        // below when an earlier call read it.
        let fresh = s.started.is_none();
        if fresh {
            let Some(reader) = InputReader::start(&s.bytes, s.total, &self.params)? else {
                return Ok(());
            };
            crate::check_header(&m.layout, &reader.header)?;
            let (t, n, shape) = (l.tiling, reader.header.n, m.layout.shape);
            check_count("input", reader.count, t.groups(n) * t.in_blocks(shape.d_in))?;
            if t.groups(n) != 1 {
                return Err(Error::NotStreamable {
                    reason: "an input of several token groups",
                });
            }
            let product = Product {
                params: &self.params,
                m: w,
                layout: l,
                n,
                shape,
            };
            let acc = Accumulation::new(&product, &reader.seeds, self.gks.as_ref())?;
            s.started = Some((reader, acc));
        }
        let Some((reader, acc)) = &mut s.started else {
            return Ok(());
        };
        if !fresh {
            crate::check_header(&m.layout, &reader.header)?;
        }
        let first = reader.read;
        let cts = reader.next_whole(&s.bytes, &self.params)?;
        check_cts(&cts, self.params.n(), Encoding::Coefficients)?;
        acc.absorb(&self.params, w, l, m.layout.shape, first, &cts);
        Ok(())
    }

    /// Finishes `s` with the whole `input`: the ciphertexts not yet multiplied in, then
    /// the packing and the switch. The output is the one [`Server::apply`] gives the
    /// parsed input (the sums are exact mod `q`, whatever the order).
    ///
    /// # Errors
    /// An input of another size, or that does not begin with the bytes `s` took; as
    /// [`Server::feed`] and [`Server::apply`].
    pub fn finish(
        &self,
        m: &PreparedMatrix,
        mut s: StreamedProduct,
        input: &[u8],
    ) -> Result<EncryptedOutput> {
        if input.len() != s.total || !input.starts_with(&s.bytes) {
            return Err(Error::Malformed {
                what: "an input other than the one streamed",
                offset: 0,
            });
        }
        let taken = s.bytes.len();
        self.feed(m, &mut s, &input[taken..])?;
        let (Some((reader, acc)), LayoutKind::Coefficients(l)) = (s.started, &m.layout.kind) else {
            return Err(Error::Malformed {
                what: "a streamed input's header",
                offset: 0,
            });
        };
        reader.check_end()?;
        let header = reader.header;
        let cts = acc.finish(&self.params, l, header.n, m.layout.shape)?;
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
