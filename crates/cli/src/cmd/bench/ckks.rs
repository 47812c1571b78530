//! `selene bench ckks`: per-op medians on the anchor parameter sets, as
//! `../shared/anchors/bench_ckks.py` times OpenFHE and SEAL (fresh top-level ciphertexts
//! holding N/2 values uniform in [-1, 1]; one warm-up, then repeats until 1.5 s or 30
//! runs, at least 5; median).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use selene_ckks::{
    Ciphertext, Decryptor, Encoder, Encoding, Encryptor, Evaluator, ExampleParams, GaloisKey,
    GaloisKeys, Parameters, PublicKey, RelinKey, Scale, SecretKey,
};

use super::opts::BenchOpts;

/// Options of `selene bench ckks`.
#[derive(Debug, Args)]
pub struct BenchCkksOpts {
    /// Threads and JSON output.
    #[command(flatten)]
    pub common: BenchOpts,
    /// Which presets to run, by log N (13, 14, 15).
    #[arg(long, value_delimiter = ',', default_values_t = vec![13u32, 14, 15])]
    pub presets: Vec<u32>,
}

/// One JSON row.
#[derive(Debug, Serialize)]
struct Row {
    log_n: u32,
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bits: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    threads: usize,
    results: Vec<Row>,
}

/// Median wall time in ms: one warm-up, then until 1.5 s or 30 runs (at least `min`).
fn time<F: FnMut() -> anyhow::Result<()>>(min: usize, mut f: F) -> anyhow::Result<f64> {
    f()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 30
        && (samples.len() < min || start.elapsed() < Duration::from_millis(1500))
    {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Deterministic values uniform in [-1, 1] (splitmix64; benchmark data, not secrets).
fn values(n: usize, mut state: u64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn preset(log_n: u32) -> anyhow::Result<ExampleParams> {
    Ok(match log_n {
        13 => ExampleParams::Anchor13,
        14 => ExampleParams::Anchor14,
        15 => ExampleParams::Anchor15,
        other => anyhow::bail!("no anchor preset for log N = {other} (use 13, 14 or 15)"),
    })
}

/// Times every op on one preset.
fn bench_preset(p: ExampleParams, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let params: Arc<Parameters> = p.build()?;
    let log_n = params.log_n();
    let top = params.max_level();
    let scale = Scale(params.default_scale());
    let mut push = |op: &'static str, ms: f64| {
        rows.push(Row {
            log_n,
            op,
            ms: Some(ms),
            bytes: None,
            bits: None,
        });
    };
    let sk = Arc::new(SecretKey::generate(&params));
    let pk = Arc::new(PublicKey::new(&sk));
    let t = Instant::now();
    let rlk = Arc::new(RelinKey::new(&sk));
    let relin_first = t.elapsed().as_secs_f64() * 1e3;
    let steps: Vec<i64> = (1..=8).collect();
    let gks = Arc::new(GaloisKeys::new(&sk, &steps, false));
    let enc = Encoder::new(&params)?;
    let mut encryptor = Encryptor::with_public_key(pk);
    let mut sk_encryptor = Encryptor::with_secret_key(sk.clone());
    let dec = Decryptor::new(sk.clone());
    let mut eval = Evaluator::new(&params)
        .with_relin_key(rlk)
        .with_galois_keys(gks);

    let (a, b) = (values(params.slots(), 1), values(params.slots(), 2));
    let pa = enc.encode(&a, top, scale, Encoding::Slots)?;
    let pb = enc.encode(&b, top, scale, Encoding::Slots)?;
    let ca = encryptor.encrypt(&pa);
    let cb = encryptor.encrypt(&pb);

    push(
        "encode",
        time(5, || {
            enc.encode(&a, top, scale, Encoding::Slots)
                .map(drop)
                .map_err(Into::into)
        })?,
    );
    push(
        "encrypt",
        time(5, || {
            encryptor.encrypt(&pa);
            Ok(())
        })?,
    );
    push(
        "decrypt",
        time(5, || {
            enc.decode(&dec.decrypt(&ca)).map(drop).map_err(Into::into)
        })?,
    );
    let mut out = eval.add(&ca, &cb)?;
    push(
        "add",
        time(5, || eval.add_into(&ca, &cb, &mut out).map_err(Into::into))?,
    );
    push(
        "mul_plain",
        time(5, || {
            eval.mul_plain_into(&ca, &pb, &mut out).map_err(Into::into)
        })?,
    );
    let mut prod = eval.mul_relin(&ca, &cb)?;
    push(
        "mul_relin",
        time(5, || {
            eval.mul_relin_into(&ca, &cb, &mut prod).map_err(Into::into)
        })?,
    );
    push(
        "rescale",
        time(5, || eval.rescale_into(&ca, &mut out).map_err(Into::into))?,
    );
    push(
        "rotate",
        time(5, || eval.rotate_into(&ca, 1, &mut out).map_err(Into::into))?,
    );
    let mut outs: Vec<Ciphertext> = eval.rotate_hoisted(&ca, &steps)?;
    let hoisted = time(5, || {
        eval.rotate_hoisted_into(&ca, &steps, &mut outs)
            .map_err(Into::into)
    })?;
    push("rotate_hoisted", hoisted / steps.len() as f64);
    let relin = time(3, || {
        RelinKey::new(&sk);
        Ok(())
    })
    .unwrap_or(relin_first);
    push("keygen_relin", relin);
    let g = selene_ckks::ring::automorphism::galois_element(1, log_n);
    push(
        "keygen_rotation",
        time(3, || {
            GaloisKey::new(&sk, g);
            Ok(())
        })?,
    );

    let bytes = ca.encode(&params).len();
    let seeded = sk_encryptor.encrypt(&pa);
    let bytes_seeded = seeded.encode(&params).len();
    rows.push(Row {
        log_n,
        op: "ct_bytes",
        ms: None,
        bytes: Some(bytes),
        bits: None,
    });
    rows.push(Row {
        log_n,
        op: "ct_bytes_seeded",
        ms: None,
        bytes: Some(bytes_seeded),
        bits: None,
    });

    let prod = eval.mul_relin(&ca, &cb)?;
    let prod = eval.rescale(&prod)?;
    let got = enc.decode(&dec.decrypt(&prod))?;
    let err = got
        .iter()
        .zip(a.iter().zip(&b))
        .map(|(g, (x, y))| (g - x * y).abs())
        .fold(0.0, f64::max);
    rows.push(Row {
        log_n,
        op: "precision_mul_relin",
        ms: None,
        bytes: None,
        bits: Some(-err.log2()),
    });
    Ok(())
}

/// Runs the CKKS per-op benchmark.
pub fn run(opts: &BenchCkksOpts) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for &log_n in &opts.presets {
        let p = preset(log_n)?;
        eprintln!("bench ckks: N = 2^{log_n} ({p:?}), {threads} thread(s)...");
        bench_preset(p, &mut rows).with_context(|| format!("preset {p:?}"))?;
    }
    print_table(&opts.presets, &rows);
    if let Some(path) = &opts.common.json {
        let report = Report {
            threads,
            results: rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_table(presets: &[u32], rows: &[Row]) {
    let mut ops: Vec<&str> = Vec::new();
    for r in rows {
        if !ops.contains(&r.op) {
            ops.push(r.op);
        }
    }
    let header: Vec<String> = presets.iter().map(|l| format!("N=2^{l}")).collect();
    println!("| op | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(presets.len()));
    for op in ops {
        let cells: Vec<String> = presets
            .iter()
            .map(|&l| {
                rows.iter()
                    .find(|r| r.log_n == l && r.op == op)
                    .map_or(String::new(), |r| match (r.ms, r.bytes, r.bits) {
                        (Some(ms), _, _) => format!("{ms:.3} ms"),
                        (_, Some(b), _) => format!("{b} B"),
                        (_, _, Some(bits)) => format!("{bits:.1} bits"),
                        _ => String::new(),
                    })
            })
            .collect();
        println!("| {op} | {} |", cells.join(" | "));
    }
}
