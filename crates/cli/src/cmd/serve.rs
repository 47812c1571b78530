//! `selene serve`: the session server over TLS.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use selene_linalg::LinalgPreset;
use selene_protocol::net::{to_hex, Identity, TlsServer};
use selene_protocol::{check_token_strength, new_token, Limits};
use sha2::{Digest, Sha256};

use super::args::{load, preset_parser, token_from, ModelArg};
use super::serving::{session_server, Extras};

/// Arguments of `selene serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    listen: String,
    /// Certificate chain (PEM); with --key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        conflicts_with = "self_signed"
    )]
    cert: Option<PathBuf>,
    /// Private key (PEM); with --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Make a development certificate and print its SHA-256 for clients to pin.
    #[arg(long)]
    self_signed: bool,
    /// Also write the self-signed certificate (PEM) here, for a client's --ca.
    #[arg(long, value_name = "FILE", requires = "self_signed")]
    write_cert: Option<PathBuf>,
    /// Environment variable holding the bearer token clients must present: hex or
    /// base64 of at least 16 random bytes (see --new-token).
    #[arg(
        long,
        value_name = "VAR",
        required_unless_present_any = ["token", "new_token"]
    )]
    token_env: Option<String>,
    /// The bearer token itself (visible in the process list: prefer --token-env); only
    /// its SHA-256 is kept.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_env")]
    token: Option<String>,
    /// Print a fresh random token (32 bytes from the OS generator, hex) and exit.
    #[arg(long, exclusive = true)]
    new_token: bool,
    /// CKKS parameter set the server prepares every layer for (strict sessions).
    #[arg(long, value_parser = preset_parser(), default_value = "coeff12")]
    preset: LinalgPreset,
    /// Layers also prepared at coeff12wide and coeff12widepack (its plan made for
    /// `--link`) for selective sessions, which encrypt at most this many layers (0:
    /// strict sessions only).
    #[arg(long, value_name = "K", default_value_t = 4)]
    selective_layers: usize,
    /// Sessions open at once, at most.
    #[arg(long, default_value_t = Limits::default().max_sessions)]
    max_sessions: usize,
    /// Largest frame accepted, in MiB.
    #[arg(long, default_value_t = Limits::default().max_message_bytes >> 20)]
    max_message_mib: usize,
    /// Worker threads (rayon); default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// The clients' link the plan is made for: lan, wan, home or RTT_MS,UP_MBIT,DOWN_MBIT.
    /// It chooses the tiling of a packing preset (--preset coeff12pack).
    #[arg(long, default_value = "lan", value_parser = super::args::link_parser)]
    link: selene_linalg::Link,
    /// Also hold the stacked fused matrices (`[W' | W' Wo]` and `[W'' | W'' Wdown]` per
    /// layer), so clients can run fused sessions (`--fuse`: two round trips per layer
    /// instead of four per generated token), for 1.2x (coeff12pack) to 1.6x (coeff12)
    /// more encoded weights.
    #[arg(long)]
    fuse: bool,
    /// Also hold every layer's matrices tiled for N rows (tokens) per ciphertext: a
    /// prompt of at least N/2 tokens then runs N rows per ciphertext, with fewer uploads,
    /// downloads and packing merges per token than row by row. Costs several times the
    /// stages' encoded weights (SmolLM2 at coeff12pack: 5 GiB more at N = 4, 16 GiB at
    /// N = 16; 0: off).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = prefill_rows_parser)]
    prefill_rows: usize,
    #[command(flatten)]
    model: ModelArg,
}

/// Parses `--prefill-rows`: 0 (off) or a power of two from 2 to 64.
pub fn prefill_rows_parser(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n == 0 || (n.is_power_of_two() && (2..=64).contains(&n)) {
        Ok(n)
    } else {
        Err(format!("{n}: give 0 (off) or a power of two from 2 to 64"))
    }
}

/// Runs `selene serve` until killed.
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    if args.new_token {
        println!("{}", new_token());
        return Ok(());
    }
    super::threads::init(args.threads)?;
    anyhow::ensure!(args.max_sessions >= 1, "--max-sessions must be at least 1");
    let hash: [u8; 32] = {
        let token = token_from(args.token_env.as_deref(), args.token.as_deref())?;
        check_token_strength(&token)?;
        Sha256::digest(&token).into()
    };
    let identity = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Identity::from_pem_files(c, k)?,
        _ if args.self_signed => {
            let host = args.listen.rsplit_once(':').map_or("localhost", |(h, _)| h);
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !host.is_empty() && !names.iter().any(|n| n == host) && host != "0.0.0.0" {
                names.push(host.to_string());
            }
            let id = Identity::self_signed(&names)?;
            if let Some(path) = &args.write_cert {
                std::fs::write(path, id.cert_pem())
                    .with_context(|| format!("could not write {}", path.display()))?;
            }
            id
        }
        _ => anyhow::bail!("give --cert FILE --key FILE, or --self-signed"),
    };
    let (w, _) = load(args.model.model.as_deref())?;
    let w = Arc::new(w);
    let params = args.preset.build()?;
    let layers = w.config().n_layers;
    anyhow::ensure!(
        args.selective_layers < layers,
        "--selective-layers {} must be below the model's {layers} layers",
        args.selective_layers
    );
    let extras = Extras {
        fused: args.fuse,
        prefill_rows: args.prefill_rows,
    };
    let limits = Limits {
        max_sessions: args.max_sessions,
        max_message_bytes: args.max_message_mib.saturating_mul(1 << 20),
        ..Limits::default()
    };
    let sessions = session_server(
        &params,
        &w,
        layers,
        args.selective_layers,
        &args.link,
        extras,
        limits,
    )?;
    let sessions = sessions
        .with_token_hash(hash)
        .with_events(|e| eprintln!("[{e}]"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        let server = TlsServer::bind(&args.listen, &identity, Arc::new(sessions)).await?;
        eprintln!("[serve: listening on {}]", server.local_addr()?);
        if args.self_signed {
            eprintln!(
                "[serve: self-signed certificate, SHA-256 fingerprint {}]",
                to_hex(&identity.fingerprint())
            );
        }
        server.run().await;
        Ok(())
    })
}
