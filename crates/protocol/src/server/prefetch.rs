//! Products computed while their request still uploads. The items of a `Products`
//! request are independent, and a fused round trip sends two: the inner stage's input
//! (`a` or `m`) first, then the stacked `[stream | alpha x]`. A transport that reads a
//! frame as it arrives finds each item whose bytes are all in
//! ([`crate::wire::ready_products`]) and hands it to [`Prefetch::compute`]; the
//! connection then answers the whole frame with [`super::Connection::handle_prefetched`],
//! which checks it as any frame and uses a computed answer only for an item it decodes
//! to the same layer, product and bytes. So the first product's work overlaps the
//! second's upload, and the reply is the one the frame would get without it.
//!
//! The last item, the stacked product, is itself multiplied in as it arrives
//! ([`Prefetch::stream`]): each of its input ciphertexts once its bytes are in
//! ([`selene_linalg::Server::stream`]), so that only the last one's multiply-accumulates,
//! the packing and the switch remain when the frame ends. The connection finishes it
//! only for an item of the same index, layer and product whose bytes begin with those
//! the stream took ([`selene_linalg::Server::finish`] checks), and computes it whole
//! otherwise.

use std::sync::Arc;

use std::sync::mpsc::Receiver;
use std::time::Instant;

use selene_ckks::GaloisKeys;
use selene_linalg::StreamedProduct;
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

/// A request's last product multiplied in while it uploaded ([`Prefetch::stream`]).
#[derive(Debug)]
pub struct Streamed {
    /// The item's position in its request.
    pub index: usize,
    /// Its layer.
    pub layer: u32,
    /// Its product.
    pub product: Product,
    pub(super) state: StreamedProduct,
}

impl Streamed {
    /// Input ciphertexts multiplied in before the frame ended.
    pub fn absorbed(&self) -> usize {
        self.state.absorbed()
    }
}

/// What a transport computed of a frame before all of it arrived: the products of items
/// that were whole early, and the last item streamed.
#[derive(Debug, Default)]
pub struct EarlyWork {
    /// Products computed whole ([`Prefetch::compute`]).
    pub prefetched: Vec<Prefetched>,
    /// The last product, streamed ([`Prefetch::stream`]).
    pub streamed: Option<Streamed>,
}

impl Prefetch {
    /// Whether `item` may be streamed: a fused product the session may ask for.
    pub fn streams(&self, item: &ReadyProduct) -> bool {
        matches!(item.product, Product::Fused(_))
            && product_allowed(item.layer, item.product, self.encrypted_layers)
    }

    /// Multiplies in `item`'s input ciphertexts as its bytes arrive: each message on
    /// `pieces` is the next bytes of the item. Runs until the sender hangs up, then
    /// returns what it took; `None` when the item may not stream, its product does not,
    /// its bytes do not decode, or they arrive faster than 40 MB/s (`STREAM_MAX_RATE`):
    /// the connection then computes it whole, or refuses it.
    ///
    /// A pass over the output blocks reads and writes every block's sums, so the bytes
    /// are taken in a few batches, not per read: the first third of the item, whose
    /// arrival also measures the link, then a sixth at a time; what is left when the
    /// frame ends goes to the connection's [`selene_linalg::Server::finish`].
    pub fn stream(&self, item: &ReadyProduct, pieces: &Receiver<Vec<u8>>) -> Option<Streamed> {
        if !self.streams(item) {
            return None;
        }
        let products = &self.server.models.get(self.model)?.products;
        let (layer, product, total) = (item.layer as usize, item.product, item.ciphertext.len());
        let mut state = products.stream(layer, product, total).ok()??;
        let (third, sixth) = (total.div_ceil(3), total.div_ceil(6));
        let (mut waiting, mut first, mut batch) = (Vec::new(), None, third);
        while let Ok(bytes) = pieces.recv() {
            let since = *first.get_or_insert_with(Instant::now);
            waiting.extend_from_slice(&bytes);
            if waiting.len() < batch {
                continue;
            }
            if batch == third {
                // The first third: at a fast link's rate the rest is in before a pass
                // would end, and the passes would only add to the server's work.
                let secs = since.elapsed().as_secs_f64().max(1e-6);
                if waiting.len() as f64 / secs > STREAM_MAX_RATE {
                    return None;
                }
                batch = sixth;
            }
            // One job in rayon's pool, as a frame's answer is (`rayon::scope`).
            rayon::scope(|_| products.feed(layer, product, &mut state, &waiting)).ok()?;
            waiting.clear();
        }
        Some(Streamed {
            index: item.index,
            layer: item.layer,
            product,
            state,
        })
    }
}

/// The fastest arrival (bytes per second) at which a product is streamed: a pass of
/// multiply-accumulates takes an input ciphertext (31 KB at the flooded preset) in about
/// a millisecond on two threads, so over links faster than this the input is in before
/// the passes could overlap it (measured: on the 1 Gbit/s `lan` profile streaming every
/// read added a quarter to the server's CPU per token).
const STREAM_MAX_RATE: f64 = 40e6;

/// True when a session encrypting `encrypted_layers` layers may ask for `product` of
/// `layer`: a `DownQkv` pair returns the next layer's q|k|v, which must be encrypted too.
pub(super) fn product_allowed(layer: u32, product: Product, encrypted_layers: usize) -> bool {
    let last = layer as usize + usize::from(product == Product::Fused(FusedPair::DownQkv));
    last < encrypted_layers
}
