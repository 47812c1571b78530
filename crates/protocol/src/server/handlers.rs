//! One handler per message kind a session answers after `Hello` (which
//! [`super::hello`] handles): each receives the decoded value, checks it against the
//! session's policy and returns the reply message or a refusal.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use selene_model::{LinearStage, Logits};

use selene_linalg::StreamedProduct;

use super::prefetch::{product_allowed, EarlyWork};
use super::prefix::PublicPrefix;
use super::session::{reject, Reject, Session};
use super::session_server::SessionServer;
use super::tail::{TailOutput, TailState};
use crate::codec::keys::decode_galois_keys;
use crate::codec::release::decode_release;
use crate::codec::wire::{ErrorCode, Message, ProductRequest, AHEAD_WIRE_VERSION};
use crate::policy::HeadSide;

/// Answers a `Product` request: the layer must be one the session's policy encrypts.
pub(super) fn product(
    server: &SessionServer,
    s: &mut Session,
    layer: u32,
    stage: LinearStage,
    ciphertext: &[u8],
) -> std::result::Result<Message, Reject> {
    let layer = layer as usize;
    if layer >= s.policy.encrypted_layers {
        return Err(reject(
            ErrorCode::NotAllowed,
            format!(
                "layer {layer} is not encrypted under this session's policy (layers 0..{})",
                s.policy.encrypted_layers
            ),
        ));
    }
    let products = &server
        .models
        .get(s.model)
        .ok_or_else(|| reject(ErrorCode::Internal, "session model missing"))?
        .products;
    let out = products
        .handle_with_keys(layer, stage, ciphertext, s.galois.as_ref())
        .map_err(|e| reject(ErrorCode::BadPayload, e))?;
    Ok(Message::ProductResult { ciphertext: out })
}

/// Answers a `Products` request (a fused session's one round trip per fused pair): every
/// item's layer must be encrypted, and the fused matrices need a fused session. An item
/// that equals one of `early.prefetched` (computed while the frame uploaded) takes its
/// answer; an item one of `early.streamed` began on is finished from it.
pub(super) fn products(
    server: &SessionServer,
    s: &mut Session,
    items: &[ProductRequest],
    early: EarlyWork,
) -> std::result::Result<Message, Reject> {
    if !s.policy.fused {
        return Err(reject(
            ErrorCode::NotAllowed,
            "Products needs a session whose policy says fused = true",
        ));
    }
    let products = &server
        .models
        .get(s.model)
        .ok_or_else(|| reject(ErrorCode::Internal, "session model missing"))?
        .products;
    if let Some(it) = items
        .iter()
        .find(|it| !product_allowed(it.layer, it.product, s.policy.encrypted_layers))
    {
        return Err(reject(
            ErrorCode::NotAllowed,
            format!(
                "layer {} is not encrypted under this session's policy (layers 0..{})",
                it.layer, s.policy.encrypted_layers
            ),
        ));
    }
    let mut done: Vec<Option<Vec<u8>>> = vec![None; items.len()];
    for p in early.prefetched {
        let same = items.get(p.index).is_some_and(|it| {
            (it.layer, it.product, &it.ciphertext) == (p.layer, p.product, &p.input)
        });
        if same {
            done[p.index] = Some(p.output);
        }
    }
    let reused = done.iter().flatten().count() as u64;
    // The streamed items, where nothing computed whole answers them.
    let mut streams: Vec<Option<StreamedProduct>> = items.iter().map(|_| None).collect();
    for st in early.streamed {
        let same = items
            .get(st.index)
            .is_some_and(|it| (it.layer, it.product) == (st.layer, st.product));
        if same && done[st.index].is_none() {
            streams[st.index] = Some(st.state);
        }
    }
    let streamed = AtomicU64::new(0);
    // The items are independent: computed side by side, one product's sequential tail
    // (the last merges of its packing tree) overlaps the other's work.
    let galois = s.galois.as_ref();
    let ciphertexts = items
        .par_iter()
        .zip(done)
        .zip(streams)
        .map(|((it, done), stream)| {
            let (layer, product) = (it.layer as usize, it.product);
            let finished = stream.and_then(|s| {
                // An input that is not the one the stream began is computed whole.
                let out = products.finish_streamed(layer, product, s, &it.ciphertext, galois);
                out.ok().inspect(|_| {
                    streamed.fetch_add(1, Ordering::Relaxed);
                })
            });
            match done.or(finished) {
                Some(output) => Ok(output),
                None => products
                    .handle_product(layer, product, &it.ciphertext, galois)
                    .map_err(|e| reject(ErrorCode::BadPayload, e)),
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    server.prefetched.fetch_add(reused, Ordering::Relaxed);
    server
        .streamed
        .fetch_add(streamed.into_inner(), Ordering::Relaxed);
    Ok(Message::ProductResults { ciphertexts })
}

/// Answers a `GaloisKeys` upload: decodes exactly the elements the session's packed
/// layouts need and installs them; once per session.
pub(super) fn galois_keys(
    server: &SessionServer,
    s: &mut Session,
    bytes: &[u8],
) -> std::result::Result<Message, Reject> {
    if s.galois.is_some() {
        return Err(reject(
            ErrorCode::KeysRejected,
            "this session already has its Galois keys",
        ));
    }
    let model = server
        .models
        .get(s.model)
        .ok_or_else(|| reject(ErrorCode::Internal, "session model missing"))?;
    let expected = model
        .products
        .galois_elements(s.policy.encrypted_layers, s.policy.fused);
    if expected.is_empty() {
        return Err(reject(
            ErrorCode::KeysRejected,
            "this session's layouts are not packed: it needs no Galois keys",
        ));
    }
    let keys = decode_galois_keys(bytes, model.products.model().params(), &expected)
        .map_err(|e| reject(ErrorCode::KeysRejected, e))?;
    s.galois = Some(std::sync::Arc::new(keys));
    Ok(Message::KeysAccepted)
}

/// Answers a `PublicPrefix` request: runs it in plaintext, keeps layers `k..` in the
/// session's tail (selective mode) and returns the client's layers.
pub(super) fn public_prefix(
    server: &SessionServer,
    s: &mut Session,
    tokens: &[u32],
) -> std::result::Result<Message, Reject> {
    let Some(w) = &server.weights else {
        return Err(reject(
            ErrorCode::NotAllowed,
            "this server holds no plaintext weights to run a public prefix",
        ));
    };
    // Only the session's first request may be a prefix: it fills positions 0..P of every
    // cache, so nothing private may have run before it. (`requests` counts Hello too, so
    // the prefix is request 2, or 3 after a packed session's Galois keys, which run
    // nothing.)
    if s.requests != 2 + u64::from(s.galois.is_some()) {
        return Err(reject(
            ErrorCode::NotAllowed,
            "a public prefix must be the session's first request after Hello",
        ));
    }
    // Checked before the run: a prefix costs about 3 x 46 KB per position while it runs
    // (limits.rs), so one longer than the session may hold is refused unrun.
    let limit = s
        .tail
        .as_ref()
        .map_or(server.context_length, TailState::capacity)
        .min(server.context_length)
        .min(server.limits.max_positions);
    if tokens.len() > limit {
        return Err(reject(
            ErrorCode::NotAllowed,
            format!(
                "a public prefix of {} positions passes this session's limit of {limit}",
                tokens.len()
            ),
        ));
    }
    let kv = PublicPrefix::run(w, tokens).map_err(|e| reject(ErrorCode::BadPayload, e))?;
    let k = s.policy.encrypted_layers;
    let client = match &mut s.tail {
        Some(tail) => {
            let (client, rest) = kv.split_at(k);
            tail.install_prefix(w, &rest)
                .map_err(|e| reject(ErrorCode::BadPayload, e))?;
            client
        }
        None => kv,
    };
    Ok(Message::PrefixKv {
        bytes: client.to_bytes(),
    })
}

/// Answers a `Release` request: decodes it once, checks the policy's cap on released
/// rows, runs it through the tail and returns logits or the final hidden state, by where
/// the policy runs the LM head.
pub(super) fn release(
    server: &SessionServer,
    s: &mut Session,
    bytes: &[u8],
) -> std::result::Result<Message, Reject> {
    let (Some(tail), Some(w), Some(r)) = (&mut s.tail, &server.weights, &s.policy.release) else {
        return Err(reject(
            ErrorCode::NotAllowed,
            "no release under this session's policy, or no plaintext tail on this server",
        ));
    };
    let d = w.config().d_model;
    let values = decode_release(bytes, d).map_err(|e| reject(ErrorCode::BadPayload, e))?;
    let rows = values.len() / d;
    let total = s.released_rows.saturating_add(rows as u64);
    if total > r.max_per_session {
        return Err(reject(
            ErrorCode::NotAllowed,
            format!(
                "release of {rows} rows passes the policy's cap of {}",
                r.max_per_session
            ),
        ));
    }
    let held = tail.positions().saturating_add(rows);
    if held > server.limits.max_positions {
        return Err(reject(
            ErrorCode::NotAllowed,
            format!(
                "release of {rows} rows passes the server's {} positions per session",
                server.limits.max_positions
            ),
        ));
    }
    let with_head = s.policy.lm_head == HeadSide::Server;
    let out = if with_head {
        TailOutput::Logits(Logits::Last)
    } else {
        TailOutput::Hidden
    };
    let values = tail
        .run(w, values, out)
        .map_err(|e| reject(ErrorCode::BadPayload, e))?;
    s.released_rows = total;
    if s.protocol < AHEAD_WIRE_VERSION {
        return Ok(if with_head {
            Message::Logits { values }
        } else {
            Message::HiddenState { values }
        });
    }
    let ahead = TailState::ahead(w, &values, out).map_err(|e| reject(ErrorCode::Internal, e))?;
    Ok(if with_head {
        Message::LogitsAhead { values, ahead }
    } else {
        Message::HiddenAhead { values, ahead }
    })
}
