//! The server's request handler, independent of any transport.

use std::sync::Arc;

use selene_ckks::GaloisKeys;
use selene_linalg::{EncryptedInput, PreparedMatrix, Server, StreamedProduct};
use selene_model::LinearStage;

use super::prepared::PreparedModel;
use crate::codec::stage::Product;
use crate::error::Result;

/// Answers encrypted product requests against a [`PreparedModel`]. It never sees a
/// plaintext activation: input and output are ciphertexts in wire form.
#[derive(Debug)]
pub struct ModelServer {
    model: Arc<PreparedModel>,
    server: Server,
}

impl ModelServer {
    /// A server for `model` (the coefficient method needs no evaluation keys).
    pub fn new(model: Arc<PreparedModel>) -> Self {
        let server = Server::new(model.params());
        Self { model, server }
    }

    /// The prepared model this server answers for.
    pub fn model(&self) -> &Arc<PreparedModel> {
        &self.model
    }

    /// Decodes `input` (the wire bytes of an encrypted `n x d_in` activation), multiplies
    /// it by `layer`'s `stage` matrix and returns the encrypted output's wire bytes.
    ///
    /// # Errors
    /// Malformed or mismatched bytes, a layer or stage that is not prepared.
    pub fn handle(&self, layer: usize, stage: LinearStage, input: &[u8]) -> Result<Vec<u8>> {
        self.handle_with_keys(layer, stage, input, None)
    }

    /// Like [`ModelServer::handle`] with the session's Galois keys, which packed layouts
    /// need to merge their outputs.
    ///
    /// # Errors
    /// As [`ModelServer::handle`]; a packed layout without keys.
    pub fn handle_with_keys(
        &self,
        layer: usize,
        stage: LinearStage,
        input: &[u8],
        keys: Option<&Arc<GaloisKeys>>,
    ) -> Result<Vec<u8>> {
        let x = EncryptedInput::from_bytes(input, self.model.params())?;
        let m = self.model.matrix_for(layer, stage, x.tag())?;
        let y = match keys {
            Some(k) => Server::new(self.model.params())
                .with_galois_keys(k.clone())
                .apply(m, &x)?,
            None => self.server.apply(m, &x)?,
        };
        Ok(y.to_bytes())
    }

    /// Like [`ModelServer::handle_with_keys`] for any product of a `Products` request: a
    /// stage's matrix or a fused one.
    ///
    /// # Errors
    /// As [`ModelServer::handle_with_keys`]; a fused matrix that is not prepared.
    pub fn handle_product(
        &self,
        layer: usize,
        product: Product,
        input: &[u8],
        keys: Option<&Arc<GaloisKeys>>,
    ) -> Result<Vec<u8>> {
        let pair = match product {
            Product::Stage(stage) => return self.handle_with_keys(layer, stage, input, keys),
            Product::Fused(pair) => pair,
        };
        let m = self.model.fused_matrix(layer, pair)?;
        let x = EncryptedInput::from_bytes(input, self.model.params())?;
        let y = match keys {
            Some(k) => Server::new(self.model.params())
                .with_galois_keys(k.clone())
                .apply(m, &x)?,
            None => self.server.apply(m, &x)?,
        };
        Ok(y.to_bytes())
    }

    /// The matrix a streamed `product` of `layer` multiplies: a fused one, or a stage's
    /// for one token group (a batched input's tag names another, and its stream is
    /// refused when the header arrives; the connection then computes it whole).
    fn streamed_matrix(&self, layer: usize, product: Product) -> Result<&PreparedMatrix> {
        match product {
            Product::Stage(stage) => self.model.matrix(layer, stage),
            Product::Fused(pair) => self.model.fused_matrix(layer, pair),
        }
    }

    /// Starts `product` of `layer` on an encrypted input of `total` bytes that will come
    /// in pieces ([`Server::stream`]): `Ok(None)` for one that does not stream.
    ///
    /// # Errors
    /// A matrix that is not prepared; as [`Server::stream`].
    pub fn stream(
        &self,
        layer: usize,
        product: Product,
        total: usize,
    ) -> Result<Option<StreamedProduct>> {
        let m = self.streamed_matrix(layer, product)?;
        Ok(self.server.stream(m, total)?)
    }

    /// Takes the input's next `bytes` ([`Server::feed`]); the session's Galois `keys`
    /// key-switch the packing's `c1` half once the input's seed table is in.
    ///
    /// # Errors
    /// As [`ModelServer::stream`] and [`Server::feed`].
    pub fn feed(
        &self,
        layer: usize,
        product: Product,
        s: &mut StreamedProduct,
        bytes: &[u8],
        keys: Option<&Arc<GaloisKeys>>,
    ) -> Result<()> {
        let m = self.streamed_matrix(layer, product)?;
        match keys {
            Some(k) => Server::new(self.model.params())
                .with_galois_keys(k.clone())
                .feed(m, s, bytes)?,
            None => self.server.feed(m, s, bytes)?,
        }
        Ok(())
    }

    /// Finishes a streamed product with the whole `input` and returns the encrypted
    /// output's wire bytes: the bytes [`ModelServer::handle_product`] gives `input`.
    ///
    /// # Errors
    /// As [`Server::finish`] (an input that does not begin with what the stream took among
    /// them) and [`ModelServer::handle_product`].
    pub fn finish_streamed(
        &self,
        layer: usize,
        product: Product,
        s: StreamedProduct,
        input: &[u8],
        keys: Option<&Arc<GaloisKeys>>,
    ) -> Result<Vec<u8>> {
        let m = self.streamed_matrix(layer, product)?;
        let y = match keys {
            Some(k) => Server::new(self.model.params())
                .with_galois_keys(k.clone())
                .finish(m, s, input)?,
            None => self.server.finish(m, s, input)?,
        };
        Ok(y.to_bytes())
    }

    /// The Galois elements the first `layers` layers' packed layouts need (batched ones
    /// included), and with `fused` those of their fused matrices too (empty when nothing
    /// is packed): exactly what a session's key upload must hold.
    pub fn galois_elements(&self, layers: usize, fused: bool) -> Vec<u64> {
        let log_n = self.model.params().log_n();
        let stages = self.model.layouts();
        let batched = self.model.batched_layouts();
        let mut fused_layouts = if fused {
            self.model.fused_layouts()
        } else {
            Vec::new()
        };
        fused_layouts.truncate(PreparedModel::fused_count(layers));
        let mut g: Vec<u64> = stages
            .iter()
            .take(layers)
            .flatten()
            .chain(batched.iter().take(layers).flatten())
            .chain(&fused_layouts)
            .flat_map(|l| l.pack_galois_elements(log_n))
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    }
}
