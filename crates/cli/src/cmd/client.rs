//! `selene client`: private generation against a `selene serve` server over TLS.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use selene_protocol::net::{TlsTransport, DEFAULT_TIMEOUT};

use super::args::{load, load_client, token_from, trust_from, GenerationArgs, PolicyArgs};
use super::drive::drive;

/// Arguments of `selene client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    gen: GenerationArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The server, `host:port`.
    #[arg(long, value_name = "ADDR")]
    server: String,
    /// SHA-256 of the server's certificate (as `selene serve --self-signed` prints it).
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "ca",
        conflicts_with = "ca"
    )]
    fingerprint: Option<String>,
    /// CA certificate(s) (PEM) the server's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    #[arg(long, value_name = "VAR", required_unless_present = "token")]
    token_env: Option<String>,
    /// The bearer token itself (visible in the process list: prefer --token-env).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_env")]
    token: Option<String>,
    /// Seconds to wait for the server: the connection, and each read or write of a
    /// request or reply.
    #[arg(long, value_name = "S", default_value_t = DEFAULT_TIMEOUT.as_secs())]
    timeout_s: u64,
    /// The link to the server, for the client's own plan (`--fuse auto`): lan (1 Gbit/s,
    /// 1 ms), wan (100 Mbit/s, 20 ms), home (20 Mbit/s up, 100 down, 30 ms) or
    /// RTT_MS,UP_MBIT,DOWN_MBIT. The tilings are the server's (`selene serve --link`).
    #[arg(long, default_value = "lan", value_parser = super::args::link_parser)]
    link: selene_linalg::Link,
    /// Worker threads (rayon); default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Load the whole model (layer matrices included) instead of the client bundle, as
    /// --verify-rate needs to recompute products.
    #[arg(long)]
    full_model: bool,
}

/// Runs `selene client`: the same generation as `selene run`, with the server remote.
pub fn client(args: &ClientArgs) -> anyhow::Result<()> {
    super::threads::init_on_main(args.threads)?;
    let token = token_from(args.token_env.as_deref(), args.token.as_deref())?;
    let trust = trust_from(args.fingerprint.as_deref(), args.ca.as_deref())?;
    let verify_rate = args.policy.verify_rate;
    anyhow::ensure!(
        verify_rate == 0.0 || args.full_model,
        "--verify-rate {verify_rate} recomputes products from the layer matrices, which the \
         thin client does not hold: add --full-model to load them"
    );
    let (w, t) = if args.full_model {
        load(args.gen.model.model.as_deref())?
    } else {
        // The server computes every layer's products: the client keeps only its bundle.
        let (w, t) = load_client(args.gen.model.model.as_deref())?;
        let g = w.gguf();
        eprintln!(
            "[client: model bundle (tokenizer, embedding = LM head, norms) read: {:.1} of \
             {:.1} MB of the model file, no layer matrix kept]",
            g.bytes_read() as f64 / 1e6,
            g.file_len() as f64 / 1e6
        );
        (w, t)
    };
    let mut policy = args.policy.policy(w.config().n_layers)?;
    let params = policy.preset.build()?;
    let drafts = args.gen.draft.is_some();
    args.policy.resolve_fusion(
        &mut policy,
        w.config(),
        &params,
        &args.link,
        (drafts, args.full_model),
    );
    anyhow::ensure!(
        !policy.fused || args.full_model,
        "--fuse pins the fused matrices' scales to norms computed from the layer matrices, \
         which the thin client does not hold: add --full-model to load them"
    );
    anyhow::ensure!(args.timeout_s > 0, "--timeout-s must be above 0");
    let timeout = Duration::from_secs(args.timeout_s);
    let transport = TlsTransport::connect_with(&args.server, &trust, &token, timeout)?;
    eprintln!("[client: connected to {} over TLS]", args.server);
    let context = args.policy.public_context.as_deref();
    drive(
        &args.gen,
        &w,
        &t,
        &params,
        policy,
        context,
        verify_rate,
        transport,
    )
}
