//! `selene run`: private generation with client and server in one process.

use std::time::Instant;

use clap::Args;
use indicatif::ProgressBar;
use selene_audit::view::DEFAULT_FLOOD_SIGMA;

use super::embedded::{self, Preset};
use super::model::{load, stream_with, GenerationArgs};

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
    // Say what the chosen policy leaks before anything else (issue 8).
    if let Some(notice) = embedded::leak_notice(k, layers)? {
        eprintln!("{notice}");
    }
    let server = embedded::prepare(&w, args.preset, k)?;
    if k == layers {
        eprintln!(
            "[strict mode: all {layers} layers encrypted; the server sees ciphertexts, their \
             sizes and timing (so the token count), never a token, activation or logit]"
        );
    }

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
    let mut done = None;
    let gen_run = stream_with(
        &args.gen,
        &w,
        &t,
        &mut on_token,
        &mut |ids, max, sampler, cb| {
            let (out, stats) =
                embedded::generate(&w, &server, k, ids, max, t.eos_ids(), sampler, cb)?;
            done = Some(stats);
            Ok(out)
        },
    )?;
    let stats = done.unwrap_or_default();
    status.finish_and_clear();
    let s = stats.traffic;
    let (server_s, releases) = (stats.server_s, stats.releases);
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
