//! `selene run`: private generation with client and server in one process, and the
//! generation driver `selene client` shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngCore;
use selene_ckks::Parameters;
use selene_linalg::LinalgPreset;
use selene_model::{Tokenizer, Weights};
use selene_protocol::policy::{POLICY_PRESETS, SELECTIVE_PRESET};
use selene_protocol::{
    model_fingerprint, InProcess, Limits, Policy, PreparedModel, SessionServer, Terms, Transport,
    ENCRYPTED_STAGES,
};

use super::generation::{open, policy_notice};
use super::model::{load, GenerationArgs};
use super::public_context;

/// The parser of `--preset`: the presets a policy may name
/// ([`selene_protocol::policy::POLICY_PRESETS`]), each listed in `--help` with its
/// description.
pub fn preset_parser() -> impl TypedValueParser<Value = LinalgPreset> {
    PossibleValuesParser::new(
        POLICY_PRESETS.map(|p| PossibleValue::new(p.name()).help(p.description())),
    )
    .try_map(|name| name.parse::<LinalgPreset>())
}

/// The policy flags shared by `run` and `client`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// CKKS parameter set of the encrypted products (all 128-bit secure); default coeff12
    /// in strict mode and coeff12wide, the only one that floods, in selective mode. A
    /// `--policy` file's preset takes precedence.
    #[arg(long, value_parser = preset_parser())]
    preset: Option<LinalgPreset>,
    /// Layers run under encryption before the hidden state would be released to the
    /// server (selective mode). 30, all layers, is strict mode: nothing is released.
    #[arg(long, value_name = "K", default_value_t = 30)]
    encrypted_layers: usize,
    /// A policy file (TOML, see the protocol crate's policy docs) instead of
    /// `--encrypted-layers` and `--preset`.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Pad the prompt's encrypted products to a multiple of N tokens, so the server learns
    /// only the length bucket (strict mode only; a policy file's `pad_to` otherwise).
    #[arg(long, value_name = "N")]
    pad_to: Option<usize>,
    /// A public text (system prompt, public document) that the server runs in plaintext
    /// before the prompt; with --chat it is the system message. Only the prompt after it
    /// is private.
    #[arg(long, value_name = "FILE")]
    pub public_context: Option<PathBuf>,
}

impl PolicyArgs {
    /// The validated policy for a model of `layers` layers.
    pub fn policy(&self, layers: usize) -> anyhow::Result<Policy> {
        if let Some(path) = &self.policy {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let mut p = Policy::from_toml(&text, layers)?;
            if self.pad_to.is_some() {
                p.pad_to = self.pad_to;
                p.validate(layers)?;
            }
            return Ok(p);
        }
        let k = self.encrypted_layers;
        anyhow::ensure!(
            k <= layers,
            "--encrypted-layers {k} is out of range: the model has {layers} layers (use \
             {layers} for strict mode)"
        );
        if let (Some(n), true) = (self.pad_to, k < layers) {
            anyhow::bail!(
                "--pad-to {n} with --encrypted-layers {k}: padding hides nothing in selective \
                 mode (the release shows the prompt length); use strict mode"
            );
        }
        let mut p = Policy::selective(layers, k);
        if let Some(preset) = self.preset {
            p.preset = preset;
        }
        p.pad_to = self.pad_to;
        p.validate(layers)?;
        Ok(p)
    }
}

/// Arguments of `selene run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    gen: GenerationArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Worker threads (rayon); default: one per core.
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `selene run`: in strict mode (the default) every layer's weight products on
/// CKKS ciphertexts (the embedded server), everything else and the LM head on the
/// client; with `--encrypted-layers K` below the model's depth, selective mode. The
/// embedded server is the same session server `selene serve` runs, reached through the
/// same wire bytes. Text goes to stdout; progress, per-token timing, traffic and the
/// policy's measured leakage to stderr.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    super::threads::init(args.threads)?;
    let (w, t) = load(args.gen.model.model.as_deref())?;
    let w = Arc::new(w);
    let policy = args.policy.policy(w.config().n_layers)?;
    let params = policy.preset.build()?;
    let (server, token) = embedded_server(&params, &w, policy.encrypted_layers)?;
    let transport = InProcess::connect(&server, &token);
    let context = args.policy.public_context.as_deref();
    drive(&args.gen, &w, &t, &params, policy, context, transport)
}

/// The embedded default's server: layers `0..layers` prepared, the same session server
/// `selene serve` runs, accepting one random in-process token (returned with it).
///
/// # Errors
/// Encoding failures.
pub fn embedded_server(
    params: &Arc<Parameters>,
    w: &Arc<Weights>,
    layers: usize,
) -> anyhow::Result<(Arc<SessionServer>, Vec<u8>)> {
    let server = session_server(params, w, layers, 0)?;
    let mut token = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token);
    Ok((Arc::new(server.with_token(&token)), token))
}

/// A session server with layers `0..layers` prepared for `params` and, when
/// `selective_layers > 0`, also the first `selective_layers` layers at `coeff12wide`
/// for selective sessions (which only need the layers they encrypt, so the full depth
/// is not prepared twice).
///
/// # Errors
/// Encoding failures.
pub fn session_server(
    params: &Arc<Parameters>,
    w: &Arc<Weights>,
    layers: usize,
    selective_layers: usize,
) -> anyhow::Result<SessionServer> {
    let model = prepare(params, w, layers)?;
    let mut server = SessionServer::new(model, Arc::clone(w), Limits::default());
    if selective_layers > 0 && LinalgPreset::of(params) != Some(SELECTIVE_PRESET) {
        let wide_params = SELECTIVE_PRESET.build()?;
        server = server.with_model(prepare(&wide_params, w, selective_layers)?);
    }
    Ok(server)
}

/// Encodes layers `0..layers` of `w` for `params`, with a progress bar and a summary on
/// stderr.
pub fn prepare(
    params: &Arc<Parameters>,
    w: &Weights,
    layers: usize,
) -> anyhow::Result<Arc<PreparedModel>> {
    let start = Instant::now();
    let bar = ProgressBar::new((layers * ENCRYPTED_STAGES.len()) as u64).with_style(
        ProgressStyle::with_template(
            "server: encoding weights {bar:30} {pos}/{len} matrices [{elapsed}]",
        )?,
    );
    let model = PreparedModel::new(params, w, layers, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    eprintln!(
        "[server: {} layers x {} products encoded for CKKS N = {} in {:.1} s, {:.0} MiB]",
        layers,
        ENCRYPTED_STAGES.len(),
        params.n(),
        start.elapsed().as_secs_f64(),
        model.memory_bytes() as f64 / (1 << 20) as f64
    );
    Ok(Arc::new(model))
}

/// The generation driver shared by `run` (embedded transport) and `client` (TLS): opens
/// a session under `policy` over `transport`, has the server run `public_context` in
/// plaintext if one is given, generates, streams the text to stdout and reports timing
/// and traffic on stderr.
pub fn drive<T: Transport>(
    gen: &GenerationArgs,
    w: &Weights,
    t: &Tokenizer,
    params: &Arc<Parameters>,
    policy: Policy,
    public_context: Option<&std::path::Path>,
    transport: T,
) -> anyhow::Result<()> {
    let layers = w.config().n_layers;
    let terms = Terms::of(&policy);
    let k = terms.k;
    // Say what the chosen policy leaks before anything else, while the user can still
    // stop before the prompt leaves the machine.
    if let Some(notice) = policy_notice(terms, layers)? {
        eprintln!("{notice}");
    }
    let mut session = open(w, &model_fingerprint(w), params, policy, transport)?;
    let prefix = public_context
        .map(|path| {
            public_context::prepare(path, &gen.prompt, gen.chat, w, t, k, &mut |ids| {
                Ok(session.session_mut().public_prefix(ids, w.config())?)
            })
        })
        .transpose()?;

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
    let mut session = Some(session);
    let mut done = None;
    let prefix_kv = prefix.as_ref().map(|pc| &pc.client);
    let gen_run = public_context::stream(
        gen,
        prefix.as_ref(),
        w,
        t,
        &mut on_token,
        &mut |ids, max, sampler, cb| {
            let session = session.take().context("the token loop runs once")?;
            let (out, stats) = session.generate(prefix_kv, ids, max, t.eos_ids(), sampler, cb)?;
            done = Some(stats);
            Ok(out)
        },
    )?;
    let stats = done.context("the token loop did not run")?;
    status.finish_and_clear();
    let s = stats.traffic;
    let (server_s, releases, sigma) = (stats.server_s, stats.releases, terms.sigma);
    let tokens = gen_run.prompt_tokens + gen_run.generated.saturating_sub(1);
    let decode: Vec<String> = token_s.iter().skip(1).map(|t| format!("{t:.2}")).collect();
    if releases > 0 {
        eprintln!(
            "[released {releases} hidden-state rows after layer {k}, flooded with sigma \
             {sigma}]"
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        policy: PolicyArgs,
    }

    #[test]
    fn preset_flag_takes_the_policy_presets_by_name() {
        let names: Vec<_> = preset_parser()
            .possible_values()
            .into_iter()
            .flatten()
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(names, ["coeff12", "coeff11", "coeff12wide"]);
        for p in POLICY_PRESETS {
            let f = Flags::try_parse_from(["selene", "--preset", p.name()]).unwrap();
            assert_eq!(f.policy.preset, Some(p));
            assert_eq!(f.policy.policy(30).unwrap().preset, p);
        }
        let f = Flags::try_parse_from(["selene", "--encrypted-layers", "4"]).unwrap();
        assert_eq!(f.policy.policy(30).unwrap().preset, SELECTIVE_PRESET);
        for bad in ["slots13", "Coeff12", "coeff99"] {
            let e = Flags::try_parse_from(["selene", "--preset", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{bad}");
        }
    }
}
