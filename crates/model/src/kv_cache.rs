//! Keys and values of past positions, per layer, for incremental decoding.

use crate::config::Config;
use crate::error::{Error, Result};

/// Per-layer keys and values (after RoPE), `positions x kv_dim` row-major, grown as
/// tokens arrive up to a fixed capacity. Layers fill independently, so a caller can run
/// some layers here and others elsewhere.
#[derive(Debug, Clone)]
pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvCache {
    /// An empty cache for `config`'s layers holding up to `capacity` positions.
    pub fn new(config: &Config, capacity: usize) -> KvCache {
        KvCache {
            kv_dim: config.kv_dim(),
            capacity,
            keys: vec![Vec::new(); config.n_layers],
            values: vec![Vec::new(); config.n_layers],
        }
    }

    /// Positions cached in layer 0 (the sequence length seen so far).
    pub fn len(&self) -> usize {
        self.layer_len(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions cached in `layer` (0 for a layer out of range).
    pub fn layer_len(&self, layer: usize) -> usize {
        self.keys
            .get(layer)
            .map_or(0, |k| k.len() / self.kv_dim.max(1))
    }

    /// The most positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps only the first `len` positions of every layer.
    pub fn truncate(&mut self, len: usize) {
        for v in self.keys.iter_mut().chain(self.values.iter_mut()) {
            v.truncate(len * self.kv_dim);
        }
    }

    /// Appends `n` positions of keys and values (`n x kv_dim` each) to `layer`.
    ///
    /// # Errors
    /// [`Error::ContextFull`], [`Error::LayerOutOfRange`], [`Error::Shape`].
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) -> Result<()> {
        let n_layers = self.keys.len();
        let len = self.layer_len(layer);
        let (k, v) = match (self.keys.get_mut(layer), self.values.get_mut(layer)) {
            (Some(k), Some(v)) => (k, v),
            _ => return Err(Error::LayerOutOfRange { layer, n_layers }),
        };
        if keys.len() != values.len() || !keys.len().is_multiple_of(self.kv_dim) {
            return Err(Error::Shape {
                what: "cached keys and values (n x kv_dim)",
                found: values.len(),
                expected: keys.len(),
            });
        }
        let adding = keys.len() / self.kv_dim;
        if len + adding > self.capacity {
            return Err(Error::ContextFull {
                len,
                adding,
                capacity: self.capacity,
            });
        }
        k.extend_from_slice(keys);
        v.extend_from_slice(values);
        Ok(())
    }

    /// All cached keys of `layer` (`positions x kv_dim`).
    pub fn keys(&self, layer: usize) -> &[f32] {
        self.keys.get(layer).map_or(&[], |k| k)
    }

    /// All cached values of `layer` (`positions x kv_dim`).
    pub fn values(&self, layer: usize) -> &[f32] {
        self.values.get(layer).map_or(&[], |v| v)
    }
}
