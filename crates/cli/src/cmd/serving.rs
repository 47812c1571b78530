//! The server side every serving subcommand shares (`run` embedded, `serve`, `openai`):
//! the weights encoded once per preset and the session server over them.

use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::RngCore;
use selene_ckks::Parameters;
use selene_linalg::{LayoutKind, LinalgPreset, Link};
use selene_model::Weights;
use selene_protocol::policy::{SELECTIVE_PACKED_PRESET, SELECTIVE_PRESET};
use selene_protocol::{EncodedBytes, Limits, PreparedModel, SessionServer, ENCRYPTED_STAGES};

/// What a server holds beyond the stages' matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// The fused matrices of fused sessions (`--fuse`).
    pub fused: bool,
    /// The stages again, tiled for this many rows per ciphertext, for prompts'
    /// passes (`--prefill-rows`; 0 or 1: none).
    pub prefill_rows: usize,
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
    link: &Link,
    extras: Extras,
) -> anyhow::Result<(Arc<SessionServer>, Vec<u8>)> {
    let server = session_server(params, w, layers, 0, link, extras, Limits::default())?;
    let mut token = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token);
    Ok((Arc::new(server.with_token(&token)), token))
}

/// A session server with layers `0..layers` prepared for `params` and, when
/// `selective_layers > 0`, also the first `selective_layers` layers at each preset that
/// floods (`coeff12wide`, and `coeff12widepack` with its plan for `link`) for selective
/// sessions (which only need the layers they encrypt, so the full depth is not prepared
/// twice), with the `extras` of the main preset (and the fused matrices of the selective
/// layers too, with `extras.fused`).
///
/// # Errors
/// Encoding failures.
pub fn session_server(
    params: &Arc<Parameters>,
    w: &Arc<Weights>,
    layers: usize,
    selective_layers: usize,
    link: &Link,
    extras: Extras,
    limits: Limits,
) -> anyhow::Result<SessionServer> {
    let main_preset = LinalgPreset::of(params);
    let selective_params = [SELECTIVE_PRESET, SELECTIVE_PACKED_PRESET]
        .into_iter()
        .filter(|&p| selective_layers > 0 && main_preset != Some(p))
        .map(LinalgPreset::build)
        .collect::<Result<Vec<_>, _>>()?;
    let c = w.config();
    let main = PreparedModel::estimate(params, c, layers, link, extras.prefill_rows, extras.fused)?;
    let selective_extras = Extras {
        fused: extras.fused,
        prefill_rows: 0,
    };
    let selective = selective_params
        .iter()
        .map(|p| {
            let b = PreparedModel::estimate(p, c, selective_layers, link, 0, extras.fused)?;
            Ok(b.stages + b.fused)
        })
        .sum::<anyhow::Result<usize>>()?;
    check_memory(&main, selective, available_memory_bytes())?;
    let model = prepare(params, w, layers, link, extras)?;
    let mut server = SessionServer::new(model, Arc::clone(w), limits);
    for p in &selective_params {
        server = server.with_model(prepare(p, w, selective_layers, link, selective_extras)?);
    }
    Ok(server)
}

/// Bytes this machine can still give a new allocation: `MemAvailable` plus `SwapFree`
/// from `/proc/meminfo`, or `None` where that file does not say (then nothing is checked).
pub fn available_memory_bytes() -> Option<u64> {
    let field = |name| super::report::proc_kib("/proc/meminfo", name);
    Some((field("MemAvailable:")? + field("SwapFree:").unwrap_or(0)) * 1024)
}

/// Refuses, before any encoding, a server whose encoded weights (`main`, plus `selective`
/// bytes of selective mode's own layers) would not fit in `available` bytes: a clear
/// error naming what to drop, instead of minutes of encoding and then the kernel's OOM
/// killer.
///
/// # Errors
/// The estimate above `available`.
pub fn check_memory(
    main: &EncodedBytes,
    selective: usize,
    available: Option<u64>,
) -> anyhow::Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let need = main.total() + selective;
    if need as u64 <= available {
        return Ok(());
    }
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let mut parts = vec![format!("stages {:.1} GiB", gib(main.stages))];
    let mut drop = Vec::new();
    if main.fused > 0 {
        parts.push(format!("fused matrices {:.1} GiB", gib(main.fused)));
        drop.push(format!("--fuse ({:.1} GiB)", gib(main.fused)));
    }
    if main.batched > 0 {
        parts.push(format!("batched stages {:.1} GiB", gib(main.batched)));
        drop.push(format!("--prefill-rows ({:.1} GiB)", gib(main.batched)));
    }
    if selective > 0 {
        parts.push(format!("selective layers {:.1} GiB", gib(selective)));
        drop.push(format!("--selective-layers ({:.1} GiB)", gib(selective)));
    }
    let drop = if drop.is_empty() {
        String::new()
    } else {
        format!("drop {}, or ", drop.join(" or "))
    };
    anyhow::bail!(
        "the encoded weights need about {:.1} GiB ({}) but this machine has {:.1} GiB \
         available (memory and swap): {drop}choose a smaller model or run the server on a \
         machine with more memory",
        gib(need),
        parts.join(", "),
        available as f64 / (1u64 << 30) as f64,
    )
}

/// Encodes layers `0..layers` of `w` for `params` (a packing preset's tilings chosen for
/// `link`), and the `extras` (fused matrices, `selene_model::fused`; batched stages),
/// with a progress bar and a summary on stderr.
pub fn prepare(
    params: &Arc<Parameters>,
    w: &Weights,
    layers: usize,
    link: &Link,
    extras: Extras,
) -> anyhow::Result<Arc<PreparedModel>> {
    let start = Instant::now();
    let bar = ProgressBar::new((layers * ENCRYPTED_STAGES.len()) as u64).with_style(
        ProgressStyle::with_template(
            "server: encoding weights {bar:30} {pos}/{len} matrices [{elapsed}]",
        )?,
    );
    let model = PreparedModel::for_link(params, w, layers, link, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    eprintln!(
        "[server: {} layers x {} products encoded for CKKS N = {} in {:.1} s, {:.0} MiB]",
        layers,
        ENCRYPTED_STAGES.len(),
        params.n(),
        start.elapsed().as_secs_f64(),
        model.memory_bytes() as f64 / (1 << 20) as f64
    );
    if let Some(plan) = plan_line(&model, link) {
        eprintln!("{plan}");
    }
    let model = if extras.prefill_rows > 1 {
        let start = Instant::now();
        let before = model.memory_bytes();
        let model = model.with_batched(w, extras.prefill_rows, &mut || {})?;
        eprintln!(
            "[server: the stages again for {} rows per ciphertext (prompts' passes) in {:.1} s, \
             {:.0} MiB more]",
            extras.prefill_rows,
            start.elapsed().as_secs_f64(),
            (model.memory_bytes() - before) as f64 / (1 << 20) as f64
        );
        model
    } else {
        model
    };
    let model = if extras.fused {
        let start = Instant::now();
        let model = model.with_fused(w, &mut || {})?;
        eprintln!(
            "[server: fused matrices W' Wo and W'' Wdown encoded in {:.1} s, {:.0} MiB more]",
            start.elapsed().as_secs_f64(),
            model.fused_memory_bytes() as f64 / (1 << 20) as f64
        );
        model
    } else {
        model
    };
    Ok(Arc::new(model))
}

/// The packed plan of one layer (every layer has the same shapes), for a packing preset:
/// per product, the ciphertexts each way per token and the key switches.
fn plan_line(model: &PreparedModel, link: &Link) -> Option<String> {
    let layer = model.layouts().into_iter().next()?;
    let names = ["qkv", "o", "gate|up", "down"];
    let parts: Vec<String> = layer
        .iter()
        .zip(names)
        .filter_map(|(l, name)| match l.kind() {
            LayoutKind::Coefficients(c) if c.pack_levels > 0 => {
                let t = c.tiling;
                let s = l.shape();
                Some(format!(
                    "{name} k_i {}: {} up, {} down, {} merge levels ({} folded)",
                    t.k_i,
                    t.in_blocks(s.d_in),
                    t.packed_cts(s.d_out),
                    c.pack_levels,
                    c.hoist_levels
                ))
            }
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "[server: packed plan for link {link}: {}]",
            parts.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_check_names_what_to_drop() {
        const GIB: usize = 1 << 30;
        let main = EncodedBytes {
            stages: 12 * GIB,
            batched: 0,
            fused: 3 * GIB,
        };
        // Fits, or nothing known about the machine: no error.
        assert!(check_memory(&main, GIB, Some(16 * GIB as u64)).is_ok());
        assert!(check_memory(&main, 100 * GIB, None).is_ok());
        let e = check_memory(&main, GIB, Some(10 * GIB as u64))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the encoded weights need about 16.0 GiB (stages 12.0 GiB, fused matrices 3.0 GiB, \
             selective layers 1.0 GiB) but this machine has 10.0 GiB available (memory and \
             swap): drop --fuse (3.0 GiB) or --selective-layers (1.0 GiB), or choose a smaller \
             model or run the server on a machine with more memory"
        );
        let bare = EncodedBytes {
            stages: 12 * GIB,
            ..EncodedBytes::default()
        };
        let e = check_memory(&bare, 0, Some(GIB as u64))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(stages 12.0 GiB) but") && e.contains(": choose a smaller"),
            "{e}"
        );
    }

    #[test]
    fn available_memory_is_read_where_linux_says_it() {
        if std::path::Path::new("/proc/meminfo").exists() {
            let b = available_memory_bytes().expect("MemAvailable in /proc/meminfo");
            assert!(b > 1 << 20, "{b}");
        }
    }
}
