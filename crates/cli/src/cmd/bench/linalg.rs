//! `selene bench linalg`: encrypted matrix products for one SmolLM2 layer (the fused
//! q/k/v, attention output, fused gate/up and down projections), per method, for one
//! token and for a 64-token prefill: client encrypt, server and client decrypt times,
//! bytes each way, the per-layer totals, Galois keys and the server memory of all 30
//! layers' prepared weights. Compare side by side with
//! `../shared/anchors/bench_matvec.py --smollm2`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use selene_linalg::{
    Client, EncryptedInput, EncryptedOutput, LinalgPreset, Link, MatrixShape, PreparedMatrix,
    Server,
};
use selene_model::LinearStage;
use serde::Serialize;

use super::opts::BenchOpts;

/// The layer whose weights are used (all layers have the same shapes).
const LAYER: usize = 14;
/// Plaintext f32 values crossing the wire per layer per token (inputs + outputs).
const F32_VALUES_PER_LAYER: usize = 8448;
/// The configurations measured: preset, tokens per ciphertext (the coefficient
/// method's `n_b`; server memory grows with it), token counts, label.
/// Packed presets' tilings are chosen for the link named (others ignore it).
const CONFIGS: [(LinalgPreset, usize, &[usize], &str, Link); 7] = [
    (LinalgPreset::Coeff12, 1, &[1, 64], "coeff", Link::LAN),
    (LinalgPreset::Coeff12, 4, &[64], "coeff-nb4", Link::LAN),
    (LinalgPreset::Coeff11, 1, &[1, 64], "coeff-n11", Link::LAN),
    (LinalgPreset::Slots13, 1, &[1, 64], "slots", Link::LAN),
    (
        LinalgPreset::Coeff12Pack,
        1,
        &[1, 16],
        "pack-lan",
        Link::LAN,
    ),
    (
        LinalgPreset::Coeff12Pack,
        1,
        &[1, 16],
        "pack-wan",
        Link::WAN,
    ),
    (
        LinalgPreset::Coeff12Pack,
        1,
        &[1, 16],
        "pack-home",
        Link::HOME,
    ),
];

const STAGES: [(LinearStage, &str); 4] = [
    (LinearStage::Qkv, "qkv"),
    (LinearStage::AttnOut, "o"),
    (LinearStage::GateUp, "gate_up"),
    (LinearStage::Down, "down"),
];

/// One measured cell.
#[derive(Debug, Serialize)]
struct Row {
    method: String,
    preset: LinalgPreset,
    proj: String,
    n: usize,
    client_ms: f64,
    client_encrypt_ms: f64,
    client_decrypt_ms: f64,
    server_ms: f64,
    bytes_up: usize,
    bytes_down: usize,
}

/// Per method: the layer totals, memory and keys.
#[derive(Debug, Serialize)]
struct Summary {
    method: String,
    preset: LinalgPreset,
    n: usize,
    layer_server_ms: f64,
    layer_client_ms: f64,
    layer_bytes_up: usize,
    layer_bytes_down: usize,
    server_ms_per_token: f64,
    bytes_per_token: f64,
    expansion_over_f32: f64,
    wire_ms_per_token_at_1gbps: f64,
}

/// Memory and keys per method.
#[derive(Debug, Serialize)]
struct Setup {
    method: String,
    preset: LinalgPreset,
    prepare_layer_s: f64,
    server_memory_30_layers_bytes: usize,
    galois_keys: usize,
    galois_key_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    threads: usize,
    results: Vec<Row>,
    layers: Vec<Summary>,
    setup: Vec<Setup>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Activations with a few outliers, like the residual stream (timings do not depend on
/// the values).
fn activations(n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|k| {
            let v = ((k * 2654435761) % 2001) as f32 / 1000.0 - 1.0;
            if k % 97 == 0 {
                v * 40.0
            } else {
                v
            }
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(opts: &BenchOpts) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let (w, _) = super::super::args::load(opts.model.as_deref())?;
    let c = w.config();
    let mut report = Report {
        threads,
        results: Vec::new(),
        layers: Vec::new(),
        setup: Vec::new(),
    };
    println!("selene bench linalg: SmolLM2-135M layer {LAYER}, {threads} thread(s)");
    for (preset, n_b, tokens, label, link) in CONFIGS {
        let params = preset.build().context("parameters")?;
        let method = preset.method();
        let started = Instant::now();
        let mut mats = Vec::new();
        for (stage, name) in STAGES {
            let (d_in, d_out) = stage.dims(c);
            let rows = w.stage_weight_f32(LAYER, stage)?;
            let shape = MatrixShape::new(d_in, d_out);
            let m = PreparedMatrix::for_link(&params, &rows, shape, method, n_b, &link)?;
            mats.push((name, d_in, m));
        }
        let prepare_s = started.elapsed().as_secs_f64();
        let memory: usize = mats.iter().map(|(_, _, m)| m.memory_bytes()).sum();
        let mut client = Client::new(&params);
        let layouts: Vec<_> = mats.iter().map(|(_, _, m)| m.layout()).collect();
        let gks = client.galois_keys(&layouts);
        let n_keys = gks.elements().count();
        // Serialized through the engine (seed-compressed).
        let key_bytes: usize = gks
            .elements()
            .filter_map(|g| gks.get(g).map(|k| k.encode().len()))
            .sum();
        let server = Server::new(&params).with_galois_keys(Arc::new(gks));
        let setup = Setup {
            method: label.into(),
            preset,
            prepare_layer_s: prepare_s,
            server_memory_30_layers_bytes: memory * c.n_layers,
            galois_keys: n_keys,
            galois_key_bytes: key_bytes,
        };
        println!(
            "\n{label} ({}, N = {}, {} token(s) per ciphertext): prepare one layer {:.2} s, \
             server memory for 30 layers {:.2} GiB, {} Galois keys ({:.1} MB)",
            preset,
            params.n(),
            mats[0].2.layout().tokens_per_ct(),
            prepare_s,
            setup.server_memory_30_layers_bytes as f64 / (1u64 << 30) as f64,
            n_keys,
            setup.galois_key_bytes as f64 / 1e6
        );
        report.setup.push(setup);
        let plan: Vec<String> = mats
            .iter()
            .map(|(name, _, m)| match m.layout().kind() {
                selene_linalg::LayoutKind::Coefficients(l) => format!(
                    "{name} n_b,k_i,k_o = {:?}, {} merge levels",
                    l.tiling.as_tuple(),
                    l.pack_levels
                ),
                selene_linalg::LayoutKind::Slots(_) => format!("{name} slots"),
            })
            .collect();
        println!("plan for {link}: {}", plan.join("; "));
        println!(
            "{:<8} {:>3} {:>10} {:>10} {:>10} {:>11} {:>11}",
            "proj", "n", "enc ms", "server ms", "dec ms", "bytes up", "bytes down"
        );
        for &n in tokens {
            let reps = if n == 1 { 5 } else { 1 };
            let mut total = (0.0, 0.0, 0usize, 0usize);
            for (name, d_in, m) in &mats {
                let x = activations(n, *d_in);
                let (mut enc, mut srv, mut dec) = (Vec::new(), Vec::new(), Vec::new());
                let (mut up, mut down) = (0, 0);
                for _ in 0..reps {
                    // Each side's time includes its (de)serialization: what a real wire costs.
                    let s = Instant::now();
                    let (input, scales) = client.encode_encrypt(&x, n, m.layout())?;
                    let up_bytes = input.to_bytes(&params);
                    enc.push(s.elapsed().as_secs_f64() * 1e3);
                    let s = Instant::now();
                    let input = EncryptedInput::from_bytes(&up_bytes, &params)?;
                    let down_bytes = server.apply(m, &input)?.to_bytes();
                    srv.push(s.elapsed().as_secs_f64() * 1e3);
                    let s = Instant::now();
                    let out = EncryptedOutput::from_bytes(&down_bytes, &params)?;
                    let y = client.decrypt_decode(&out, &scales, m.layout())?;
                    dec.push(s.elapsed().as_secs_f64() * 1e3);
                    anyhow::ensure!(y.iter().all(|v| v.is_finite()), "non-finite output");
                    (up, down) = (up_bytes.len(), down_bytes.len());
                }
                let (e, s, d) = (median(enc), median(srv), median(dec));
                println!("{name:<8} {n:>3} {e:>10.2} {s:>10.2} {d:>10.2} {up:>11} {down:>11}");
                total.0 += e + d;
                total.1 += s;
                total.2 += up;
                total.3 += down;
                report.results.push(Row {
                    method: label.into(),
                    preset,
                    proj: (*name).into(),
                    n,
                    client_ms: e + d,
                    client_encrypt_ms: e,
                    client_decrypt_ms: d,
                    server_ms: s,
                    bytes_up: up,
                    bytes_down: down,
                });
            }
            let bytes_per_token = (total.2 + total.3) as f64 / n as f64;
            let sum = Summary {
                method: label.into(),
                preset,
                n,
                layer_server_ms: total.1,
                layer_client_ms: total.0,
                layer_bytes_up: total.2,
                layer_bytes_down: total.3,
                server_ms_per_token: total.1 / n as f64,
                bytes_per_token,
                expansion_over_f32: bytes_per_token / (4 * F32_VALUES_PER_LAYER) as f64,
                wire_ms_per_token_at_1gbps: bytes_per_token * 8.0 / 1e6,
            };
            println!(
                "layer    {n:>3} client {:.1} ms, server {:.1} ms ({:.2} ms/token), {} B up, {} B down \
                 ({:.0} KB/token, {:.0}x over f32, {:.2} ms/token on the wire at 1 Gbit/s)",
                sum.layer_client_ms,
                sum.layer_server_ms,
                sum.server_ms_per_token,
                sum.layer_bytes_up,
                sum.layer_bytes_down,
                bytes_per_token / 1e3,
                sum.expansion_over_f32,
                sum.wire_ms_per_token_at_1gbps
            );
            report.layers.push(sum);
        }
    }
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("could not write {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}
