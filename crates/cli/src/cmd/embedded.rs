//! The embedded default, shared by `selene run` and `selene openai`: the server's model
//! prepared once for CKKS, and one private generation against it in this process, with
//! a fresh client key each time.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use selene_audit::view::DEFAULT_FLOOD_SIGMA;
use selene_ckks::Parameters;
use selene_linalg::LinalgPreset;
use selene_model::{Sampler, Weights};
use selene_protocol::{
    generate_selective, InProcess, ModelServer, PlainTail, PreparedModel, SelectiveClient,
    StrictLinear, TrafficStats, ENCRYPTED_STAGES,
};

/// CKKS parameter sets for the encrypted products.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// N = 2^12, one 41-bit prime: about 15 bits of precision per product (default).
    Coeff12,
    /// N = 2^11, one 39-bit prime: less traffic, about 14 bits.
    Coeff11,
}

impl Preset {
    /// The linear-algebra preset this names.
    pub fn linalg(self) -> LinalgPreset {
        match self {
            Preset::Coeff12 => LinalgPreset::Coeff12,
            Preset::Coeff11 => LinalgPreset::Coeff11,
        }
    }
}

/// The server half of the embedded default: parameters and the encoded weights.
#[derive(Debug)]
pub struct Embedded {
    /// The CKKS parameters every client key is made for.
    pub params: Arc<Parameters>,
    /// The first layers' weight products, encoded once.
    pub model: Arc<PreparedModel>,
}

/// Encodes the weight products of the first `k` layers for `preset`, with a progress bar
/// and a one-line report on stderr.
///
/// # Errors
/// Parameter or encoding failures.
pub fn prepare(w: &Weights, preset: Preset, k: usize) -> anyhow::Result<Embedded> {
    let params = preset.linalg().build()?;
    let start = Instant::now();
    let bar = ProgressBar::new((k * ENCRYPTED_STAGES.len()) as u64).with_style(
        ProgressStyle::with_template(
            "server: encoding weights {bar:30} {pos}/{len} matrices [{elapsed}]",
        )?,
    );
    let model = PreparedModel::new(&params, w, k, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    eprintln!(
        "[server: {} layers x {} products encoded for CKKS N = {} in {:.1} s, {:.0} MiB]",
        k,
        ENCRYPTED_STAGES.len(),
        params.n(),
        start.elapsed().as_secs_f64(),
        model.memory_bytes() as f64 / (1 << 20) as f64
    );
    Ok(Embedded {
        params,
        model: Arc::new(model),
    })
}

/// The sentence `selene run` prints about what selective mode with `k` encrypted layers
/// leaks, from the audit's shipped table (issue 8); `None` for strict mode or when the
/// table has no row at or below `k`.
///
/// # Errors
/// The shipped table does not parse.
pub fn leak_notice(k: usize, n_layers: usize) -> anyhow::Result<Option<String>> {
    if k >= n_layers {
        return Ok(None);
    }
    let Some(row) = selene_audit::measured::measured_leak(k, DEFAULT_FLOOD_SIGMA)? else {
        return Ok(None);
    };
    let fields = row
        .field_recovery
        .map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f));
    Ok(Some(format!(
        "[selective mode, K = {k}: the server receives the hidden states after the first {k} \
         layers; from them an attacker holding the weights recovered {:.1}% of prompt tokens \
         and {fields} of sensitive fields (audit at K = {}, flooding sigma {}; docs/audit.md). \
         This is not private.]",
        100.0 * row.token_recovery,
        row.k,
        row.flood_sigma
    )))
}

/// What one private generation cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivateStats {
    /// Traffic and client HE time of the encrypted layers.
    pub traffic: TrafficStats,
    /// Server compute time of the encrypted layers, in seconds.
    pub server_s: f64,
    /// Hidden-state rows released to the server (selective mode; 0 in strict mode).
    pub releases: usize,
}

/// Generates up to `max_tokens` tokens after `prompt` with a fresh client key: strict
/// mode when `k` is the model's depth (every layer encrypted, LM head on the client),
/// selective mode below it (layers `0..k` encrypted, then a release flooded with
/// [`DEFAULT_FLOOD_SIGMA`] to the plaintext tail). Stops after an id in `stop` or when
/// `on_token` breaks, as [`selene_model::generate`] does.
///
/// # Errors
/// `k` past the prepared layers, a full context, and whatever the protocol or
/// `on_token` fails with.
#[allow(clippy::too_many_arguments)] // one call's inputs, none of which belong together
pub fn generate(
    w: &Weights,
    server: &Embedded,
    k: usize,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
) -> anyhow::Result<(Vec<u32>, PrivateStats)> {
    let layers = w.config().n_layers;
    let prepared = server.model.layers();
    anyhow::ensure!(
        k <= prepared,
        "{k} encrypted layers asked for, but the server prepared only {prepared}"
    );
    let transport = InProcess::new(ModelServer::new(Arc::clone(&server.model)));
    let strict = StrictLinear::new(w, &server.params, server.model.layouts(), transport)?;
    if k == layers {
        let mut linear = strict;
        let ids =
            selene_model::generate(w, prompt, max_tokens, stop, sampler, &mut linear, on_token)?;
        let stats = PrivateStats {
            traffic: linear.stats(),
            server_s: linear.server_time().as_secs_f64(),
            releases: 0,
        };
        return Ok((ids, stats));
    }
    let capacity = prompt.len().saturating_add(max_tokens);
    let context = w.config().context_length;
    anyhow::ensure!(
        capacity <= context,
        "{} prompt tokens plus {max_tokens} new ones exceed the context of {context}",
        prompt.len()
    );
    let mut client = SelectiveClient::new(w, k, strict, DEFAULT_FLOOD_SIGMA, capacity)?;
    let mut tail = PlainTail::new(w, k, capacity);
    let ids = generate_selective(
        &mut client,
        &mut tail,
        prompt,
        max_tokens,
        stop,
        sampler,
        on_token,
    )
    .context("selective generation failed")?;
    let stats = PrivateStats {
        traffic: client.strict().stats(),
        server_s: client.strict().server_time().as_secs_f64(),
        releases: client.releases(),
    };
    Ok((ids, stats))
}
