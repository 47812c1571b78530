//! The server's request handler, independent of any transport.

use std::sync::Arc;

use selene_linalg::{EncryptedInput, Server};
use selene_model::LinearStage;

use super::prepared::PreparedModel;
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
        let m = self.model.matrix(layer, stage)?;
        let x = EncryptedInput::from_bytes(input, self.model.params())?;
        let y = self.server.apply(m, &x)?;
        Ok(y.to_bytes())
    }
}
