//! Products computed while their request still uploads. The items of a `Products`
//! request are independent, and a fused round trip sends two: the inner stage's input
//! (`a` or `m`) first, then the stacked `[stream | alpha x]`. A transport that reads a
//! frame as it arrives finds each item whose bytes are all in
//! ([`crate::wire::ready_products`]) and hands it to [`Prefetch::compute`]; the
//! connection then answers the whole frame with [`super::Connection::handle_prefetched`],
//! which checks it as any frame and uses a computed answer only for an item it decodes
//! to the same layer, product and bytes. So the first product's work overlaps the
//! second's upload, and the reply is the one the frame would get without it.

use std::sync::Arc;

use selene_ckks::GaloisKeys;
use selene_model::FusedPair;

use super::session_server::SessionServer;
use crate::codec::stage::Product;
use crate::codec::wire::ReadyProduct;

/// What computing a session's products needs, detached from its connection so another
/// thread (the transport's reader) can start them: the server, the session's model, its
/// Galois keys and its encrypted layers.
#[derive(Clone)]
pub struct Prefetch {
    server: Arc<SessionServer>,
    model: usize,
    galois: Option<Arc<GaloisKeys>>,
    encrypted_layers: usize,
}

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetch")
            .field("model", &self.model)
            .field("galois", &self.galois.is_some())
            .field("encrypted_layers", &self.encrypted_layers)
            .finish_non_exhaustive()
    }
}

/// One product computed ahead: the request item it answers and its answer's wire bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefetched {
    /// The item's position in its request.
    pub index: usize,
    /// Its layer.
    pub layer: u32,
    /// Its product.
    pub product: Product,
    /// Its input's wire bytes.
    pub input: Vec<u8>,
    /// The encrypted output's wire bytes.
    pub output: Vec<u8>,
}

impl Prefetch {
    pub(super) fn new(
        server: Arc<SessionServer>,
        model: usize,
        galois: Option<Arc<GaloisKeys>>,
        encrypted_layers: usize,
    ) -> Self {
        Self {
            server,
            model,
            galois,
            encrypted_layers,
        }
    }

    /// Computes `item`, whose ciphertext bytes are `input`, if the session may ask for
    /// it; `None` when it may not or the bytes do not decode (the connection then
    /// computes it, or refuses it, as without a prefetch).
    pub fn compute(&self, item: &ReadyProduct, input: Vec<u8>) -> Option<Prefetched> {
        if !product_allowed(item.layer, item.product, self.encrypted_layers) {
            return None;
        }
        let products = &self.server.models.get(self.model)?.products;
        let output = products
            .handle_product(
                item.layer as usize,
                item.product,
                &input,
                self.galois.as_ref(),
            )
            .ok()?;
        Some(Prefetched {
            index: item.index,
            layer: item.layer,
            product: item.product,
            input,
            output,
        })
    }
}

/// True when a session encrypting `encrypted_layers` layers may ask for `product` of
/// `layer`: a `DownQkv` pair returns the next layer's q|k|v, which must be encrypted too.
pub(super) fn product_allowed(layer: u32, product: Product, encrypted_layers: usize) -> bool {
    let last = layer as usize + usize::from(product == Product::Fused(FusedPair::DownQkv));
    last < encrypted_layers
}
