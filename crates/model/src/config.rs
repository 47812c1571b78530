//! Hyper-parameters read from the GGUF `llama.*` metadata and validated.

use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// The architecture's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Transformer blocks (`llama.block_count`).
    pub n_layers: usize,
    /// Residual width (`llama.embedding_length`).
    pub d_model: usize,
    /// Query heads (`llama.attention.head_count`).
    pub n_heads: usize,
    /// Key/value heads (`llama.attention.head_count_kv`); divides `n_heads`.
    pub n_kv_heads: usize,
    /// Width of one head (`d_model / n_heads`).
    pub head_dim: usize,
    /// SwiGLU hidden width (`llama.feed_forward_length`).
    pub d_ff: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Positions the model was trained on (`llama.context_length`).
    pub context_length: usize,
    /// RoPE base (`llama.rope.freq_base`, default 10000).
    pub rope_theta: f32,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
}

fn uint(g: &Gguf, key: &'static str) -> Result<usize> {
    let v = g.metadata(key).ok_or(Error::MissingKey { key })?;
    let n = v.as_u64().ok_or(Error::WrongType {
        key,
        expected: "an unsigned integer",
    })?;
    if n == 0 || n > 1 << 20 {
        return Err(Error::BadConfig {
            key,
            value: n as f64,
            reason: "must be in 1..=2^20",
        });
    }
    Ok(n as usize)
}

fn float(g: &Gguf, key: &'static str, default: Option<f32>) -> Result<f32> {
    let v = match (g.metadata(key), default) {
        (Some(v), _) => v.as_f64().ok_or(Error::WrongType {
            key,
            expected: "a number",
        })? as f32,
        (None, Some(d)) => d,
        (None, None) => return Err(Error::MissingKey { key }),
    };
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::BadConfig {
            key,
            value: v.into(),
            reason: "must be finite and positive",
        });
    }
    Ok(v)
}

impl Config {
    /// Reads and validates the hyper-parameters of a Llama-architecture GGUF.
    ///
    /// # Errors
    /// Missing or mistyped keys, a non-llama architecture, or inconsistent sizes
    /// (heads not dividing the width, odd head size, ...).
    pub fn from_gguf(g: &Gguf) -> Result<Config> {
        let key = "general.architecture";
        match g.metadata(key).and_then(|v| v.as_str()) {
            Some("llama") => {}
            Some(_) => {
                return Err(Error::WrongType {
                    key,
                    expected: "\"llama\"",
                })
            }
            None => return Err(Error::MissingKey { key }),
        }
        let d_model = uint(g, "llama.embedding_length")?;
        let n_heads = uint(g, "llama.attention.head_count")?;
        let n_kv_heads = uint(g, "llama.attention.head_count_kv")?;
        let embd = g.tensor("token_embd.weight")?;
        let cfg = Config {
            n_layers: uint(g, "llama.block_count")?,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim: d_model / n_heads,
            d_ff: uint(g, "llama.feed_forward_length")?,
            vocab_size: embd.n_rows(),
            context_length: uint(g, "llama.context_length")?,
            rope_theta: float(g, "llama.rope.freq_base", Some(10_000.0))?,
            rms_eps: float(g, "llama.attention.layer_norm_rms_epsilon", None)?,
        };
        let bad = |key, value: usize, reason| Error::BadConfig {
            key,
            value: value as f64,
            reason,
        };
        if d_model % n_heads != 0 || cfg.head_dim % 2 != 0 {
            return Err(bad(
                "llama.attention.head_count",
                n_heads,
                "must divide embedding_length into even head sizes",
            ));
        }
        if n_heads % n_kv_heads != 0 {
            return Err(bad(
                "llama.attention.head_count_kv",
                n_kv_heads,
                "must divide head_count",
            ));
        }
        if d_model % 32 != 0 || cfg.d_ff % 32 != 0 {
            return Err(bad(
                "llama.embedding_length",
                d_model,
                "widths must be multiples of 32 (quantization blocks)",
            ));
        }
        if let Some(rope) = g.metadata("llama.rope.dimension_count") {
            if rope.as_u64() != Some(cfg.head_dim as u64) {
                return Err(bad(
                    "llama.rope.dimension_count",
                    rope.as_u64().unwrap_or(0) as usize,
                    "partial rotary embeddings are not supported",
                ));
            }
        }
        Ok(cfg)
    }

    /// Width of the keys (and values) of one token: `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Width of the fused q|k|v output: `d_model + 2 * kv_dim`.
    pub fn qkv_dim(&self) -> usize {
        self.d_model + 2 * self.kv_dim()
    }
}
