//! `selene run`: private generation with client and server in one process, and the
//! generation driver `selene client` shares.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use selene_protocol::InProcess;

use super::args::{link_parser, load, GenerationArgs, PolicyArgs};
use super::drive::drive;
use super::serving::{embedded_server, Extras};

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
    /// The link the plan is made for: lan (1 Gbit/s, 1 ms), wan (100 Mbit/s, 20 ms),
    /// home (20 Mbit/s up, 100 down, 30 ms) or RTT_MS,UP_MBIT,DOWN_MBIT. It chooses the
    /// tiling of a packing preset (--preset coeff12pack); the process itself has no link.
    #[arg(long, default_value = "lan", value_parser = link_parser)]
    link: selene_linalg::Link,
    /// Also encode every layer's matrices for N rows (tokens) per ciphertext, for the
    /// prompt's pass (as `selene serve --prefill-rows`; 0: off).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = super::serve::prefill_rows_parser)]
    prefill_rows: usize,
}

/// Runs `selene run`: in strict mode (the default) every layer's weight products on
/// CKKS ciphertexts (the embedded server), everything else and the LM head on the
/// client; with `--encrypted-layers K` below the model's depth, selective mode. The
/// embedded server is the same session server `selene serve` runs, reached through the
/// same wire bytes. Text goes to stdout; progress, per-token timing, traffic and the
/// policy's measured leakage to stderr.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    super::threads::init_on_main(args.threads)?;
    let (w, t) = load(args.gen.model.model.as_deref())?;
    let w = Arc::new(w);
    let mut policy = args.policy.policy(w.config().n_layers)?;
    let params = policy.preset.build()?;
    let drafts = args.gen.draft.is_some();
    args.policy
        .resolve_fusion(&mut policy, w.config(), &params, &args.link, (drafts, true));
    let (server, token) = embedded_server(
        &params,
        &w,
        policy.encrypted_layers,
        &args.link,
        Extras {
            fused: policy.fused,
            prefill_rows: args.prefill_rows,
        },
    )?;
    // One process, the same split as `selene client`: the client half computes with the
    // client bundle only (copied from memory, its column norms with it), the embedded
    // server with the full model. Spot checks need the layer matrices: with
    // --verify-rate the client half holds the full model, and so do fused sessions (the
    // fused matrices' scales are pinned to norms computed from the layer matrices).
    let verify_rate = args.policy.verify_rate;
    let bundle;
    let client: &selene_model::Weights = if verify_rate > 0.0 || policy.fused {
        &w
    } else {
        bundle = w
            .client_bundle()
            .context("could not extract the client bundle")?;
        &bundle
    };
    let transport = InProcess::connect(&server, &token);
    let context = args.policy.public_context.as_deref();
    drive(
        &args.gen,
        client,
        &t,
        &params,
        policy,
        context,
        verify_rate,
        transport,
    )
}
