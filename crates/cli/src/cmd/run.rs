//! `selene run`: private generation with client and server in one process.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use selene_audit::view::DEFAULT_FLOOD_SIGMA;
use selene_linalg::LinalgPreset;
use selene_protocol::{
    generate_selective, InProcess, ModelServer, PlainTail, PreparedModel, SelectiveClient,
    StrictLinear, ENCRYPTED_STAGES,
};

use super::model::{load, stream_generation, stream_with, GenerationArgs};

/// CKKS parameter sets for the encrypted products.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// N = 2^12, one 41-bit prime: about 15 bits of precision per product (default).
    Coeff12,
    /// N = 2^11, one 39-bit prime: less traffic, about 14 bits.
    Coeff11,
}

/// Arguments of `selene run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    gen: GenerationArgs,
    /// CKKS parameter set of the encrypted products (both are 128-bit secure).
    #[arg(long, value_enum, default_value = "coeff12")]
    preset: Preset,
    /// Worker threads (rayon); default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Layers run under encryption before the hidden state would be released to the
    /// server (selective mode). 30, all layers, is strict mode: nothing is released.
    #[arg(long, value_name = "K", default_value_t = 30)]
    encrypted_layers: usize,
}

/// Runs `selene run`: in strict mode (the default) every layer's weight products on
/// CKKS ciphertexts (the embedded server), everything else and the LM head on the
/// client; with `--encrypted-layers K` below the model's depth, selective mode. Text goes
/// to stdout; progress, per-token timing, traffic and the policy's measured leakage to
/// stderr.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    super::threads::init(args.threads)?;
    let (w, t) = load(args.gen.model.model.as_deref())?;
    let layers = w.config().n_layers;
    let k = args.encrypted_layers;
    anyhow::ensure!(
        k <= layers,
        "--encrypted-layers {k} is out of range: the model has {layers} layers (use {layers} \
         for strict mode)"
    );
    if k < layers {
        // Say what the chosen policy leaks before anything else (issue 8).
        if let Some(row) = selene_audit::measured::measured_leak(k, DEFAULT_FLOOD_SIGMA)? {
            let fields = row
                .field_recovery
                .map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f));
            eprintln!(
                "[selective mode, K = {k}: the server receives the hidden states after the first \
                 {k} layers; from them an attacker holding the weights recovered {:.1}% of prompt \
                 tokens and {fields} of sensitive fields (audit at K = {}, flooding sigma {}; \
                 docs/audit.md). This is not private.]",
                100.0 * row.token_recovery,
                row.k,
                row.flood_sigma
            );
        }
    }
    let preset = match args.preset {
        Preset::Coeff12 => LinalgPreset::Coeff12,
        Preset::Coeff11 => LinalgPreset::Coeff11,
    };
    let params = preset.build()?;

    let start = Instant::now();
    let bar = ProgressBar::new((k * ENCRYPTED_STAGES.len()) as u64).with_style(
        ProgressStyle::with_template(
            "server: encoding weights {bar:30} {pos}/{len} matrices [{elapsed}]",
        )?,
    );
    let model = PreparedModel::new(&params, &w, k, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    eprintln!(
        "[server: {} layers x {} products encoded for CKKS N = {} in {:.1} s, {:.0} MiB]",
        k,
        ENCRYPTED_STAGES.len(),
        params.n(),
        start.elapsed().as_secs_f64(),
        model.memory_bytes() as f64 / (1 << 20) as f64
    );
    if k == layers {
        eprintln!(
            "[strict mode: all {layers} layers encrypted; the server sees ciphertexts, their \
             sizes and timing (so the token count), never a token, activation or logit]"
        );
    }
    let model = Arc::new(model);
    let layouts = model.layouts();
    let strict = StrictLinear::new(
        &w,
        &params,
        layouts,
        InProcess::new(ModelServer::new(model)),
    )?;

    // A spinner while the prompt runs (no text yet); then the text streams on stdout
    // and the spinner is gone, so the two never share a line.
    let status = ProgressBar::new_spinner()
        .with_message(format!("prefill: the prompt through {k} encrypted layers"));
    status.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut last = Instant::now();
    let mut token_s = Vec::new();
    let mut on_token = |i: usize| {
        if i == 1 {
            status.finish_and_clear();
        }
        token_s.push(last.elapsed().as_secs_f64());
        last = Instant::now();
    };
    let (gen_run, stats, server_s, releases) = if k == layers {
        let mut linear = strict;
        let run = stream_generation(&args.gen, &w, &t, &mut linear, &mut on_token)?;
        (run, linear.stats(), linear.server_time().as_secs_f64(), 0)
    } else {
        let mut strict = Some(strict);
        let mut done = None;
        let run = stream_with(
            &args.gen,
            &w,
            &t,
            &mut on_token,
            &mut |ids, max, sampler, cb| {
                let strict = strict.take().context("the token loop runs once")?;
                let capacity = ids.len() + max;
                // Without decryption flooding: Coeff12 cannot carry what the LMSS22 bound
                // asks for (docs/hardening.md), so SelectiveClient::new would refuse.
                let mut client =
                    SelectiveClient::new_dangerous(&w, k, strict, DEFAULT_FLOOD_SIGMA, capacity)?;
                let mut server = PlainTail::new(&w, k, capacity);
                let out = generate_selective(
                    &mut client,
                    &mut server,
                    ids,
                    max,
                    t.eos_ids(),
                    sampler,
                    cb,
                )?;
                done = Some((
                    client.strict().stats(),
                    client.strict().server_time().as_secs_f64(),
                    client.releases(),
                ));
                Ok(out)
            },
        )?;
        let (stats, server_s, releases) = done.context("the token loop did not run")?;
        (run, stats, server_s, releases)
    };
    status.finish_and_clear();
    let s = stats;
    let tokens = gen_run.prompt_tokens + gen_run.generated.saturating_sub(1);
    let decode: Vec<String> = token_s.iter().skip(1).map(|t| format!("{t:.2}")).collect();
    if releases > 0 {
        eprintln!(
            "[released {releases} hidden-state rows after layer {k}, flooded with sigma \
             {DEFAULT_FLOOD_SIGMA}]"
        );
    }
    eprintln!(
        "[{} prompt tokens: prefill {:.2} s; {} generated, {:.2} s/token decode \
         (per token: {}); encrypted-layer server compute {:.2} s, client HE {:.2} s; \
         {:.2} MB up, {:.2} MB down ({:.2} MB per token processed)]",
        gen_run.prompt_tokens,
        gen_run.prefill_s,
        gen_run.generated,
        1.0 / gen_run.decode_tok_s().max(1e-9),
        decode.join(" "),
        server_s,
        s.client_time.as_secs_f64(),
        s.bytes_up as f64 / 1e6,
        s.bytes_down as f64 / 1e6,
        (s.bytes_up + s.bytes_down) as f64 / 1e6 / tokens.max(1) as f64
    );
    Ok(())
}
