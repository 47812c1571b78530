//! SmolLM2-135M-Instruct (Llama architecture) in f32: model store, GGUF reader,
//! tokenizer and a forward pass exposed stage by stage. Knows nothing of HE.
//!
//! The plaintext path keeps the weights quantized in memory (Q4_1 / Q8_0, as in the
//! GGUF) and its kernels dequantize on the fly: every product is an f32 computation on
//! exactly the dequantized weights, which is what the f32 reference tests compare.

pub mod config;
pub mod error;
pub mod forward;
pub mod gguf;
pub mod kv_cache;
pub mod linear;
pub mod matmul;
pub mod quant;
pub mod simd;
pub mod tokenizer;
pub mod weights;

pub use config::Config;
pub use error::{Error, Result};
pub use forward::{forward, forward_layers, forward_observed, head, Logits};
pub use gguf::Gguf;
pub use kv_cache::KvCache;
pub use linear::{Linear, LinearStage, QuantLinear};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use weights::Weights;
