//! Selective by span (ARCHITECTURE.md): a **public prefix** (a system
//! prompt, a public document) runs in plaintext on the server, batched through every
//! layer, and the server returns the keys and values the client needs for attention.
//! Every token from the first private one on runs as before (strict or selective by
//! depth), at positions `P..` where `P` is the prefix length: the cached rows already
//! carry RoPE for positions `0..P`, and the forward pass reads each layer's start
//! position from the cache, so positions continue.
//!
//! - [`crate::PublicPrefix::run`] (server): the plaintext forward pass over the prefix, keeping
//!   every layer's keys and values: a [`PrefixKv`].
//! - [`PrefixKv::to_bytes`] / [`PrefixKv::from_bytes`]: the versioned wire form (the
//!   wire protocol carries it opaquely); decoding checks every size against the model's
//!   [`Config`] and the caller's [`PrefixLimits`] before allocating.
//! - [`PrefixKv::split_at`]: in selective mode with `k` encrypted layers the client
//!   needs layers `0..k` and the server's [`crate::PlainTail`] keeps `k..` in its own
//!   cache ([`crate::PlainTail::install_prefix`], [`crate::SelectiveClient::install_prefix`]).
//! - [`PrefixKv::install`] into a client's [`KvCache`]; [`crate::generate_after_prefix`] is the
//!   strict-mode token loop over such a cache.
//!
//! # Security
//! The prefix is public by the user's choice: the server sees its tokens. Causal
//! attention makes every later position depend on the private tokens, so nothing from
//! the first private token on leaves the client in plaintext (strict mode). The server
//! learns the number of private tokens as before.

use std::ops::Range;

use selene_model::{Config, KvCache};

use crate::codec::blob::{finite_f32s, BlobHeader};
use crate::error::{Error, Result};

const PREFIX_MAGIC: &[u8; 4] = b"SELP";
const PREFIX_VERSION: u16 = 1;
/// Kind tag: keys (after RoPE) and values, f32 little-endian, layer after layer.
const PREFIX_KIND_F32: u16 = 1;
/// magic, version, kind, first layer, layer count, positions, kv width.
const PREFIX_HEADER: usize = 4 + 2 + 2 + 4 + 4 + 4 + 4;

/// Bounds a decoder applies to a [`PrefixKv`] before allocating anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixLimits {
    /// Most prefix positions accepted.
    pub max_positions: usize,
}

impl PrefixLimits {
    /// Up to the model's context length.
    pub fn for_config(c: &Config) -> Self {
        Self {
            max_positions: c.context_length,
        }
    }
}

/// Keys and values of a public prefix for a range of layers.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefixKv {
    first_layer: usize,
    positions: usize,
    kv_dim: usize,
    /// `(keys, values)` per layer, each `positions x kv_dim` row-major.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl PrefixKv {
    /// Copies `layers` of `cache` (which holds the same positions in each of them).
    pub(crate) fn from_cache(cache: &KvCache, layers: Range<usize>, kv_dim: usize) -> Self {
        let first_layer = layers.start;
        let positions = cache.layer_len(first_layer);
        let layers = layers
            .map(|l| (cache.keys(l).to_vec(), cache.values(l).to_vec()))
            .collect();
        Self {
            first_layer,
            positions,
            kv_dim,
            layers,
        }
    }

    /// Prefix positions (tokens) held.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// The layers held.
    pub fn layers(&self) -> Range<usize> {
        self.first_layer..self.first_layer + self.layers.len()
    }

    /// Keys of `layer` (`positions x kv_dim`, after RoPE); empty for a layer not held.
    pub fn keys(&self, layer: usize) -> &[f32] {
        self.layer(layer).map_or(&[], |(k, _)| k)
    }

    /// Values of `layer` (`positions x kv_dim`); empty for a layer not held.
    pub fn values(&self, layer: usize) -> &[f32] {
        self.layer(layer).map_or(&[], |(_, v)| v)
    }

    fn layer(&self, layer: usize) -> Option<&(Vec<f32>, Vec<f32>)> {
        self.layers.get(layer.checked_sub(self.first_layer)?)
    }

    /// Splits into layers `..k` (for the client in selective mode) and `k..` (for the
    /// server's plaintext tail); `k` is clamped to the layers held.
    pub fn split_at(mut self, k: usize) -> (PrefixKv, PrefixKv) {
        let at = k.saturating_sub(self.first_layer).min(self.layers.len());
        let tail = self.layers.split_off(at);
        let tail = PrefixKv {
            first_layer: self.first_layer + at,
            positions: self.positions,
            kv_dim: self.kv_dim,
            layers: tail,
        };
        (self, tail)
    }

    /// Bytes of keys and values held.
    pub fn memory_bytes(&self) -> usize {
        self.layers.len() * 2 * self.positions * self.kv_dim * 4
    }

    /// Appends every held layer to `cache`, which must hold nothing yet in those layers
    /// (the prefix takes positions `0..P`), and must cover exactly `need` layers.
    ///
    /// # Errors
    /// [`Error::PrefixLayers`] when the held layers are not `need`,
    /// [`Error::PrefixCacheNotEmpty`], and the cache's own errors (capacity, width).
    pub fn install_layers(&self, cache: &mut KvCache, need: Range<usize>) -> Result<()> {
        if self.layers() != need {
            return Err(Error::PrefixLayers {
                have: self.layers(),
                need,
            });
        }
        for l in need {
            let len = cache.layer_len(l);
            if len != 0 {
                return Err(Error::PrefixCacheNotEmpty { layer: l, len });
            }
            cache.append(l, self.keys(l), self.values(l))?;
        }
        Ok(())
    }

    /// [`PrefixKv::install_layers`] for every layer of the model (strict mode).
    ///
    /// # Errors
    /// As [`PrefixKv::install_layers`].
    pub fn install(&self, cache: &mut KvCache, c: &Config) -> Result<()> {
        self.install_layers(cache, 0..c.n_layers)
    }

    /// The versioned wire form: magic `SELP`, version, kind, first layer, layer count,
    /// positions, kv width (little-endian), then per layer the keys and the values as
    /// f32.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_HEADER + self.memory_bytes());
        out.extend_from_slice(PREFIX_MAGIC);
        out.extend_from_slice(&PREFIX_VERSION.to_le_bytes());
        out.extend_from_slice(&PREFIX_KIND_F32.to_le_bytes());
        // All four are bounded by the model's layer count, context length and width.
        for v in [
            self.first_layer,
            self.layers.len(),
            self.positions,
            self.kv_dim,
        ] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for (k, v) in &self.layers {
            for x in k.iter().chain(v) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out
    }

    /// Decodes the wire form for a model `c`, checking magic, version, kind, the layer
    /// range, the width, the positions against `limits` and the exact length before
    /// allocating, and every value for finiteness.
    ///
    /// # Errors
    /// [`Error::MalformedPrefix`] naming what is wrong.
    pub fn from_bytes(bytes: &[u8], c: &Config, limits: &PrefixLimits) -> Result<Self> {
        let bad = |what: &'static str| Error::MalformedPrefix { what };
        let header =
            BlobHeader::read(bytes, PREFIX_HEADER, PREFIX_MAGIC, PREFIX_VERSION).map_err(bad)?;
        let u32_at = |i: usize| header.u32_at(i).ok_or(bad("truncated header"));
        if header.u16_at(6) != Some(PREFIX_KIND_F32) {
            return Err(bad("unknown kind"));
        }
        let (first_layer, count) = (u32_at(8)?, u32_at(12)?);
        let (positions, kv_dim) = (u32_at(16)?, u32_at(20)?);
        if count == 0
            || first_layer
                .checked_add(count)
                .is_none_or(|e| e > c.n_layers)
        {
            return Err(bad("layer range outside the model"));
        }
        if kv_dim != c.kv_dim() {
            return Err(bad("kv width differs from the model's"));
        }
        if positions == 0 || positions > limits.max_positions.min(c.context_length) {
            return Err(bad("positions out of range"));
        }
        let per_tensor = positions * kv_dim;
        let body = bytes.get(PREFIX_HEADER..).ok_or(bad("truncated header"))?;
        // Bounded: count <= n_layers, positions <= context length, kv_dim = the model's.
        if body.len() != count * 2 * per_tensor * 4 {
            return Err(bad("length does not match layers x positions x kv width"));
        }
        let mut floats = finite_f32s(body)
            .ok_or(bad("non-finite value"))?
            .into_iter();
        let mut layers = Vec::with_capacity(count);
        for _ in 0..count {
            let k: Vec<f32> = floats.by_ref().take(per_tensor).collect();
            let v: Vec<f32> = floats.by_ref().take(per_tensor).collect();
            layers.push((k, v));
        }
        Ok(Self {
            first_layer,
            positions,
            kv_dim,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selene_model::Arch;

    fn config() -> Config {
        Config {
            arch: Arch::Llama,
            n_layers: 4,
            d_model: 16,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 4,
            d_ff: 32,
            vocab_size: 10,
            context_length: 64,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
        }
    }

    fn sample(c: &Config, positions: usize) -> PrefixKv {
        let kv = c.kv_dim();
        let layers = (0..c.n_layers)
            .map(|l| {
                let k = (0..positions * kv)
                    .map(|i| (l * 1000 + i) as f32 * 0.5)
                    .collect();
                let v = (0..positions * kv)
                    .map(|i| -((l * 1000 + i) as f32))
                    .collect();
                (k, v)
            })
            .collect();
        PrefixKv {
            first_layer: 0,
            positions,
            kv_dim: kv,
            layers,
        }
    }

    #[test]
    fn wire_form_round_trips_and_rejects_malformed_bytes() {
        let c = config();
        let lim = PrefixLimits::for_config(&c);
        let kv = sample(&c, 3);
        let bytes = kv.to_bytes();
        assert_eq!(PrefixKv::from_bytes(&bytes, &c, &lim).unwrap(), kv);
        for cut in 0..bytes.len() {
            assert!(
                PrefixKv::from_bytes(&bytes[..cut], &c, &lim).is_err(),
                "prefix {cut}"
            );
        }
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(PrefixKv::from_bytes(&long, &c, &lim).is_err());
        let tight = PrefixLimits { max_positions: 2 };
        assert!(PrefixKv::from_bytes(&bytes, &c, &tight).is_err());
        let mut wide = c.clone();
        wide.n_kv_heads = 4;
        assert!(PrefixKv::from_bytes(&bytes, &wide, &lim).is_err());
        let mut shallow = c.clone();
        shallow.n_layers = 3;
        assert!(PrefixKv::from_bytes(&bytes, &shallow, &lim).is_err());
        // Each header field corrupted alone; a huge announced size must not allocate.
        for (at, what) in [
            (0, "bad magic"),
            (4, "unknown version"),
            (6, "unknown kind"),
            (8, "layer range"),
            (12, "layer range"),
            (16, "positions"),
            (20, "kv width"),
        ] {
            let mut b = bytes.clone();
            b[at..at + 2].copy_from_slice(&[0xff, 0xff]);
            let e = PrefixKv::from_bytes(&b, &c, &lim).unwrap_err().to_string();
            assert!(e.contains(what), "field at {at}: {e}");
        }
        let mut nan = bytes.clone();
        nan[PREFIX_HEADER..PREFIX_HEADER + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(PrefixKv::from_bytes(&nan, &c, &lim).is_err());
    }

    #[test]
    fn split_and_install_put_each_layer_in_place() {
        let c = config();
        let kv = sample(&c, 3);
        let (head, tail) = kv.clone().split_at(1);
        assert_eq!((head.layers(), tail.layers()), (0..1, 1..4));
        assert_eq!(tail.keys(2), kv.keys(2));
        assert!(head.keys(2).is_empty());
        let lim = PrefixLimits::for_config(&c);
        let tail = PrefixKv::from_bytes(&tail.to_bytes(), &c, &lim).unwrap();
        let mut cache = KvCache::new(&c, 5);
        assert!(matches!(
            tail.install(&mut cache, &c),
            Err(Error::PrefixLayers { .. })
        ));
        tail.install_layers(&mut cache, 1..4).unwrap();
        assert_eq!(cache.layer_len(0), 0);
        assert_eq!(cache.layer_len(3), 3);
        assert_eq!(cache.values(3), kv.values(3));
        assert!(matches!(
            tail.install_layers(&mut cache, 1..4),
            Err(Error::PrefixCacheNotEmpty { layer: 1, len: 3 })
        ));
        let mut small = KvCache::new(&c, 2);
        assert!(kv.install(&mut small, &c).is_err());
    }
}
