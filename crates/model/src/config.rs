//! Hyper-parameters read from the GGUF `ARCH.*` metadata (`llama.*` or `qwen2.*`) and
//! validated.

use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// The architectures this crate runs (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama (SmolLM2): RoPE on adjacent pairs (GGUF permuted the q/k rows for it).
    Llama,
    /// Qwen2: q/k/v biases, RoPE on the two halves of each head (NEOX style), and in
    /// the Qwen2.5 files a separate `output.weight`.
    Qwen2,
}

impl Arch {
    /// The metadata prefix and `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// True when RoPE rotates element `i` with `i + head_dim / 2` (NEOX style) rather
    /// than `2i` with `2i + 1`.
    pub fn rope_neox(self) -> bool {
        self == Arch::Qwen2
    }

    fn keys(self) -> &'static Keys {
        match self {
            Arch::Llama => &LLAMA_KEYS,
            Arch::Qwen2 => &QWEN2_KEYS,
        }
    }
}

/// The metadata keys of one architecture (static, so errors can name them).
struct Keys {
    block_count: &'static str,
    embedding_length: &'static str,
    head_count: &'static str,
    head_count_kv: &'static str,
    feed_forward_length: &'static str,
    context_length: &'static str,
    freq_base: &'static str,
    rms_eps: &'static str,
    rope_dimension_count: &'static str,
}

macro_rules! keys {
    ($p:literal) => {
        Keys {
            block_count: concat!($p, ".block_count"),
            embedding_length: concat!($p, ".embedding_length"),
            head_count: concat!($p, ".attention.head_count"),
            head_count_kv: concat!($p, ".attention.head_count_kv"),
            feed_forward_length: concat!($p, ".feed_forward_length"),
            context_length: concat!($p, ".context_length"),
            freq_base: concat!($p, ".rope.freq_base"),
            rms_eps: concat!($p, ".attention.layer_norm_rms_epsilon"),
            rope_dimension_count: concat!($p, ".rope.dimension_count"),
        }
    };
}

const LLAMA_KEYS: Keys = keys!("llama");
const QWEN2_KEYS: Keys = keys!("qwen2");

/// The architecture's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The architecture (`general.architecture`).
    pub arch: Arch,
    /// Transformer blocks (`ARCH.block_count`).
    pub n_layers: usize,
    /// Residual width (`ARCH.embedding_length`).
    pub d_model: usize,
    /// Query heads (`ARCH.attention.head_count`).
    pub n_heads: usize,
    /// Key/value heads (`ARCH.attention.head_count_kv`); divides `n_heads`.
    pub n_kv_heads: usize,
    /// Width of one head (`d_model / n_heads`).
    pub head_dim: usize,
    /// SwiGLU hidden width (`ARCH.feed_forward_length`).
    pub d_ff: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Positions the model was trained on (`ARCH.context_length`).
    pub context_length: usize,
    /// RoPE base (`ARCH.rope.freq_base`, default 10000).
    pub rope_theta: f32,
    /// RMSNorm epsilon (`ARCH.attention.layer_norm_rms_epsilon`).
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
    /// Reads and validates the hyper-parameters of a llama or qwen2 GGUF.
    ///
    /// # Errors
    /// Missing or mistyped keys, [`Error::UnsupportedArchitecture`], or inconsistent
    /// sizes (heads not dividing the width, odd head size, ...).
    pub fn from_gguf(g: &Gguf) -> Result<Config> {
        let key = "general.architecture";
        let arch = match g.metadata(key) {
            None => return Err(Error::MissingKey { key }),
            Some(v) => match v.as_str() {
                Some("llama") => Arch::Llama,
                Some("qwen2") => Arch::Qwen2,
                Some(other) => {
                    return Err(Error::UnsupportedArchitecture {
                        name: other.to_string(),
                    })
                }
                None => {
                    return Err(Error::WrongType {
                        key,
                        expected: "a string",
                    })
                }
            },
        };
        let k = arch.keys();
        let d_model = uint(g, k.embedding_length)?;
        let n_heads = uint(g, k.head_count)?;
        let n_kv_heads = uint(g, k.head_count_kv)?;
        let embd = g.tensor("token_embd.weight")?;
        let cfg = Config {
            arch,
            n_layers: uint(g, k.block_count)?,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim: d_model / n_heads,
            d_ff: uint(g, k.feed_forward_length)?,
            vocab_size: embd.n_rows(),
            context_length: uint(g, k.context_length)?,
            rope_theta: float(g, k.freq_base, Some(10_000.0))?,
            rms_eps: float(g, k.rms_eps, None)?,
        };
        let bad = |key, value: usize, reason| Error::BadConfig {
            key,
            value: value as f64,
            reason,
        };
        if d_model % n_heads != 0 || !cfg.head_dim.is_multiple_of(2) {
            return Err(bad(
                k.head_count,
                n_heads,
                "must divide embedding_length into even head sizes",
            ));
        }
        if n_heads % n_kv_heads != 0 {
            return Err(bad(k.head_count_kv, n_kv_heads, "must divide head_count"));
        }
        if d_model % 32 != 0 || !cfg.d_ff.is_multiple_of(32) {
            return Err(bad(
                k.embedding_length,
                d_model,
                "widths must be multiples of 32 (quantization blocks)",
            ));
        }
        if let Some(rope) = g.metadata(k.rope_dimension_count) {
            if rope.as_u64() != Some(cfg.head_dim as u64) {
                return Err(bad(
                    k.rope_dimension_count,
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
