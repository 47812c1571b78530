//! `selene run`: private generation with client and server in one process, and the
//! generation driver `selene client` shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngCore;
use selene_audit::view::DEFAULT_FLOOD_SIGMA;
use selene_ckks::Parameters;
use selene_linalg::LinalgPreset;
use selene_model::{Tokenizer, Weights};
use selene_protocol::policy::FloodSigma;
use selene_protocol::{
    generate_after_prefix, generate_session, ClientSession, InProcess, Limits, PaddedLinear,
    Policy, PolicyGuard, PreparedModel, ReleaseGuard, SelectiveClient, SessionServer, StrictLinear,
    Transport, ENCRYPTED_STAGES,
};
use sha2::{Digest, Sha256};

use super::model::{load, GenerationArgs};
use super::public_context::{self, PublicContext};

/// CKKS parameter sets for the encrypted products.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// N = 2^12, one 41-bit prime: about 15 bits of precision per product (default).
    Coeff12,
    /// N = 2^11, one 39-bit prime: less traffic, about 14 bits.
    Coeff11,
}

impl Preset {
    /// The linalg preset.
    pub fn linalg(self) -> LinalgPreset {
        match self {
            Preset::Coeff12 => LinalgPreset::Coeff12,
            Preset::Coeff11 => LinalgPreset::Coeff11,
        }
    }

    /// The name a policy uses.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Coeff12 => "coeff12",
            Preset::Coeff11 => "coeff11",
        }
    }

    /// The preset a policy names.
    pub fn from_name(name: &str) -> anyhow::Result<Self> {
        match name {
            "coeff12" => Ok(Preset::Coeff12),
            "coeff11" => Ok(Preset::Coeff11),
            _ => anyhow::bail!("unknown preset {name:?}"),
        }
    }
}

/// The policy flags shared by `run` and `client`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// CKKS parameter set of the encrypted products (both are 128-bit secure); a
    /// `--policy` file's preset takes precedence.
    #[arg(long, value_enum, default_value = "coeff12")]
    preset: Preset,
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
        p.preset = self.preset.name().to_string();
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
    let params = Preset::from_name(&policy.preset)?.linalg().build()?;
    let model = prepare(&params, &w, policy.encrypted_layers)?;
    let mut token = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token);
    let server = SessionServer::new(model, w.clone(), Limits::default()).with_token(&token);
    let transport = InProcess::connect(&Arc::new(server), &token);
    let context = args.policy.public_context.as_deref();
    drive(&args.gen, &w, &t, &params, policy, context, transport)
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
    let k = policy.encrypted_layers;
    let sigma = match policy.release.map(|r| r.flood_sigma) {
        Some(FloodSigma::Fixed(s)) => s,
        _ => DEFAULT_FLOOD_SIGMA,
    };
    let cap = policy.release.map_or(0, |r| r.max_per_session);
    let pad_to = policy.pad_to.unwrap_or(1);
    if k < layers {
        // Say what the chosen policy leaks before anything else (issue 8).
        if let Some(row) = selene_audit::measured::measured_leak(k, sigma)? {
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
    } else {
        eprintln!(
            "[strict mode: all {layers} layers encrypted; the server sees ciphertexts, their \
             sizes and timing (so the token count), never a token, activation or logit]"
        );
    }
    // The keystore's session key and release guard if one exists, else ephemeral keys.
    let preset = Preset::from_name(&policy.preset)?.linalg();
    let keys = selene_keys::open_or_ephemeral(&selene_keys::default_dir(), preset)?;
    let mut guard = keys.guard;
    let session = ClientSession::open(transport, params, policy, w.config().context_length)
        .context("the server refused the session")?;
    let fp = session.welcome().model.fingerprint;
    if fp != [0; 32] && fp != <[u8; 32]>::from(Sha256::digest(w.gguf().bytes())) {
        anyhow::bail!("the server runs another model than this client's (fingerprints differ)");
    }
    let mut strict = StrictLinear::from_session(w, keys.key.client()?, session)?;
    let prefix = public_context
        .map(|path| {
            public_context::prepare(path, &gen.prompt, gen.chat, w, t, k, &mut |ids| {
                Ok(strict.session_mut().public_prefix(ids, w.config())?)
            })
        })
        .transpose()?;
    let p = prefix.as_ref().map_or(0, PublicContext::positions);
    // Generated tokens fit after the prefix and the prompt.
    let room =
        |prompt: usize, max: usize| max.min(w.config().context_length.saturating_sub(p + prompt));

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
        let mut linear = PaddedLinear::new(strict, w.config(), pad_to)?;
        let run = public_context::stream(
            gen,
            prefix.as_ref(),
            w,
            t,
            &mut on_token,
            &mut |ids, max, sampler, cb| {
                Ok(generate_after_prefix(
                    w,
                    prefix.as_ref().map(|pc| &pc.client),
                    ids,
                    room(ids.len(), max),
                    t.eos_ids(),
                    sampler,
                    &mut linear,
                    cb,
                )?)
            },
        )?;
        let mut linear = linear.into_inner();
        let _ = linear.session_mut().close();
        (run, linear.stats(), linear.server_time().as_secs_f64(), 0)
    } else {
        let mut strict = Some(strict);
        let mut done = None;
        let run = public_context::stream(
            gen,
            prefix.as_ref(),
            w,
            t,
            &mut on_token,
            &mut |ids, max, sampler, cb| {
                let strict = strict.take().context("the token loop runs once")?;
                let max = room(ids.len(), max);
                let capacity = p + ids.len() + max;
                // The keystore's guard checks the owner's signed policy and logs; without a
                // keystore the session policy's own cap and flooding level are enforced.
                let guard: Box<dyn ReleaseGuard + Send> = match guard.take() {
                    Some(g) => Box::new(g),
                    None => Box::new(PolicyGuard::new(k, sigma, cap)),
                };
                let mut client =
                    SelectiveClient::new(w, k, strict, sigma, capacity)?.with_guard(guard);
                if let Some(pc) = &prefix {
                    client.install_prefix(&pc.client)?;
                }
                let out = generate_session(&mut client, ids, max, t.eos_ids(), sampler, cb)?;
                let _ = client.strict_mut().session_mut().close();
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
