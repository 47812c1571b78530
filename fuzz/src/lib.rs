//! What the fuzz targets and the seed generator share: the parameter sets the decoders
//! are fuzzed under, chosen by the first input byte.

use std::sync::{Arc, OnceLock};

use selene_ckks::{ExampleParams, Parameters};
use selene_linalg::LinalgPreset;

/// The parameter sets: a one-prime linear-algebra preset (what the protocol ships, small
/// ring) and a three-prime engine preset (levels, several RNS rows, `dnum = 3`).
pub fn params(selector: u8) -> Option<&'static Arc<Parameters>> {
    static SETS: OnceLock<Option<[Arc<Parameters>; 2]>> = OnceLock::new();
    let sets = SETS
        .get_or_init(|| {
            Some([
                LinalgPreset::Coeff11.build().ok()?,
                ExampleParams::Test12.build().ok()?,
            ])
        })
        .as_ref()?;
    sets.get(usize::from(selector & 1))
}

/// Splits a fuzz input into the parameter selector and the bytes to decode.
pub fn split(data: &[u8]) -> Option<(&'static Arc<Parameters>, &[u8])> {
    let (&sel, rest) = data.split_first()?;
    Some((params(sel)?, rest))
}

/// Limits of the `wire` target: the frame cap is `64 * (first byte + 1)` bytes (64 B to
/// 16 KiB), small enough that the fuzzer reaches the size checks on either side of it.
pub fn wire_limits(selector: u8) -> selene_protocol::Limits {
    selene_protocol::Limits {
        max_message_bytes: 64 * (usize::from(selector) + 1),
        ..selene_protocol::Limits::default()
    }
}

/// SmolLM2-135M's shape (its GGUF's `llama.*` metadata), written out so the `prefix_kv`
/// target needs no model file.
pub fn smollm2_config() -> selene_model::Config {
    selene_model::Config {
        arch: selene_model::Arch::Llama,
        n_layers: 30,
        d_model: 576,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        d_ff: 1536,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 100_000.0,
        rms_eps: 1e-5,
    }
}

/// Limits of the `prefix_kv` target: 4 positions (one position of one layer is already
/// 1.5 KB of keys and values at SmolLM2's width, so more only slows each run).
pub const PREFIX_MAX_POSITIONS: usize = 4;

/// Keystore id the `keystore` target checks release logs against (the seeds' logs are
/// chained from it, so their lines pass the chain check).
pub const LOG_KEYSTORE_ID: [u8; 16] = *b"selene fuzz log!";

/// Key and associated data of the `keystore` target's envelopes (the seeds are sealed
/// with them, so a mutated seed exercises the tag check).
pub const ENVELOPE_KEY: [u8; 32] = *b"selene fuzz envelope key, public";
/// See [`ENVELOPE_KEY`].
pub const ENVELOPE_AAD: &[u8] = b"selene fuzz envelope";

/// The `keystore` target's formats, picked by `first byte % 5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeystoreFormat {
    /// `keystore.bin`.
    File = 0,
    /// `releases.log`.
    Log = 1,
    /// `releases.head`.
    Head = 2,
    /// The owner policy's TOML.
    OwnerPolicy = 3,
    /// A wrapped secret (XChaCha20-Poly1305 envelope).
    Envelope = 4,
}

impl KeystoreFormat {
    /// The format a selector byte picks.
    pub fn from_selector(b: u8) -> Self {
        match b % 5 {
            0 => Self::File,
            1 => Self::Log,
            2 => Self::Head,
            3 => Self::OwnerPolicy,
            _ => Self::Envelope,
        }
    }
}

/// The Galois elements the `galois_key_set` target expects: those packing 2^3 blocks on a
/// grid of 2^3 needs (three keys keep each run short).
pub fn pack_elements(params: &Parameters) -> Vec<u64> {
    selene_ckks::scheme::pack_galois_elements(params.log_n(), 3, 3)
}

/// The product the `linalg_stream` target streams inputs into: the seed generator's
/// 16 x 8 coefficient matrix at `Coeff11` (selector 0), so its seeds' headers match.
pub fn stream_matrix() -> Option<&'static (Arc<Parameters>, selene_linalg::PreparedMatrix)> {
    static MATRIX: OnceLock<Option<(Arc<Parameters>, selene_linalg::PreparedMatrix)>> =
        OnceLock::new();
    MATRIX
        .get_or_init(|| {
            let params = params(0)?.clone();
            let shape = selene_linalg::MatrixShape::new(16, 8);
            let m = selene_linalg::PreparedMatrix::new(
                &params,
                &stream_weights(),
                shape,
                selene_linalg::Method::Coefficients,
                1,
            )
            .ok()?;
            Some((params, m))
        })
        .as_ref()
}

/// The weights of [`stream_matrix`] (and of the seed generator's linear-algebra seeds).
pub fn stream_weights() -> Vec<f32> {
    (0..16 * 8)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect()
}
