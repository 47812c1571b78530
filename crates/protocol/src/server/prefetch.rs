//! Products computed while their request still uploads. The items of a `Products`
//! request are independent, and a fused round trip sends two: the stacked
//! `[stream | alpha x]` and the inner stage's input (`a` or `m`), the stacked first where
//! its layout streams (`selene_linalg::Layout::streams`). A transport
//! that reads a frame as it arrives finds each item whose bytes are all in
//! ([`crate::wire::ready_products`]) and hands it to [`Prefetch::compute`]; the
//! connection then answers the whole frame with [`super::Connection::handle_prefetched`],
//! which checks it as any frame and uses a computed answer only for an item it decodes
//! to the same layer, product and bytes. So one product's work overlaps the next one's
//! upload, and the reply is the one the frame would get without it.
//!
//! An item whose bytes arrive over several reads is itself computed as it arrives
//! ([`Prefetch::stream`], [`selene_linalg::Server::stream`]): its input's seed table
//! comes first, so the `c1` half of the product, with every key switch of the packing,
//! runs while the `c0`s upload, and each `c0` is multiplied in once its bytes are in.
//! Sent first, the stacked product's key switches, the most, start with the frame. When the frame ends, only the last `c0`s' multiply-accumulates, the
//! packing's linear steps on `c0` and the switch remain. The connection finishes a
//! stream only for an item of the same index, layer and product whose bytes begin with
//! those the stream took ([`selene_linalg::Server::finish`] checks), and computes it
//! whole otherwise.

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
/// that were whole early, and those streamed as they arrived.
#[derive(Debug, Default)]
pub struct EarlyWork {
    /// Products computed whole ([`Prefetch::compute`]).
    pub prefetched: Vec<Prefetched>,
    /// Products streamed ([`Prefetch::stream`]).
    pub streamed: Vec<Streamed>,
}

impl Prefetch {
    /// Whether `item` may be streamed: a product the session may ask for.
    pub fn streams(&self, item: &ReadyProduct) -> bool {
        product_allowed(item.layer, item.product, self.encrypted_layers)
    }

    /// Computes `item`'s product as its bytes arrive: each message on `pieces` is the
    /// next bytes of the item. Runs until the sender hangs up, then returns what it did:
    /// the product streamed, or, for one that does not stream (strict mode's folded
    /// merge levels, several token groups, a batched stage input), computed whole from
    /// its bytes as [`Prefetch::compute`] does; `None` when the item may not stream, or
    /// its bytes do not decode or were not all sent: the connection then computes it
    /// whole, or refuses it.
    ///
    /// Every piece goes in until the input's header and seed table have, so that the
    /// product's `c1` half, with every key switch of its packing, starts the moment it
    /// can. A pass over the output blocks' `c0` sums then reads and writes them all, so
    /// the rest is taken in a few batches, not per read: up to a third of the item, whose
    /// arrival measures the link, then a sixth at a time. Over a link faster than
    /// 40 MB/s (`STREAM_MAX_RATE`) the rest is in before a pass would end, so it is left
    /// whole to the connection's [`selene_linalg::Server::finish`], as is what remains
    /// when the frame ends.
    pub fn stream(&self, item: &ReadyProduct, pieces: &Receiver<Vec<u8>>) -> Option<EarlyItem> {
        if !self.streams(item) {
            return None;
        }
        let products = &self.server.models.get(self.model)?.products;
        let (layer, product, total) = (item.layer as usize, item.product, item.ciphertext.len());
        let keys = self.galois.as_ref();
        // One job in rayon's pool, as a frame's answer is (`rayon::scope`).
        let feed = |state: &mut StreamedProduct, bytes: &[u8]| {
            rayon::scope(|_| products.feed(layer, product, state, bytes, keys))
        };
        let mut state = products.stream(layer, product, total).ok().flatten();
        // The bytes until the stream starts: a product that turns out not to stream is
        // computed from them once they are all in.
        let mut copy = Vec::new();
        let began = Instant::now();
        let (mut received, mut measured, mut fast, mut waiting) = (0, false, false, Vec::new());
        let (third, sixth) = (total.div_ceil(3), total.div_ceil(6));
        while let Ok(bytes) = pieces.recv() {
            received += bytes.len();
            let Some(st) = &mut state else {
                copy.extend_from_slice(&bytes);
                continue;
            };
            if !st.started() {
                copy.extend_from_slice(&bytes);
                if feed(st, &bytes).is_err() {
                    state = None;
                } else if st.started() {
                    copy = Vec::new();
                }
                continue;
            }
            waiting.extend_from_slice(&bytes);
            if !measured {
                if received < third {
                    continue;
                }
                measured = true;
                let secs = began.elapsed().as_secs_f64().max(1e-6);
                if received as f64 / secs > STREAM_MAX_RATE {
                    fast = true;
                    break;
                }
            } else if waiting.len() < sixth {
                continue;
            }
            feed(st, &waiting).ok()?;
            waiting.clear();
        }
        let Some(mut state) = state.filter(StreamedProduct::started) else {
            return rayon::scope(|_| self.compute(item, copy)).map(EarlyItem::Whole);
        };
        // The item is whole (or the frame over): what waited goes in now, while the rest
        // of the frame may still upload (over a fast link it all goes to `finish`, in
        // one pass).
        if !waiting.is_empty() && !fast {
            feed(&mut state, &waiting).ok()?;
        }
        Some(EarlyItem::Streamed(Streamed {
            index: item.index,
            layer: item.layer,
            product,
            state,
        }))
    }
}

/// What [`Prefetch::stream`] made of an item.
#[derive(Debug)]
pub enum EarlyItem {
    /// Its product computed whole once its bytes were in.
    Whole(Prefetched),
    /// Its product streamed.
    Streamed(Streamed),
}

/// The fastest arrival (bytes per second) at which a product's `c0`s are multiplied in
/// as they arrive: a pass of multiply-accumulates takes an input ciphertext (31 KB at the
/// flooded preset) in about a millisecond on two threads, so over links faster than this
/// the input is in before the passes could overlap it (measured: on the 1 Gbit/s `lan`
/// profile streaming every read added a quarter to the server's CPU per token).
const STREAM_MAX_RATE: f64 = 40e6;

/// True when a session encrypting `encrypted_layers` layers may ask for `product` of
/// `layer`: a `DownQkv` pair returns the next layer's q|k|v, which must be encrypted too.
pub(super) fn product_allowed(layer: u32, product: Product, encrypted_layers: usize) -> bool {
    let last = layer as usize + usize::from(product == Product::Fused(FusedPair::DownQkv));
    last < encrypted_layers
}
