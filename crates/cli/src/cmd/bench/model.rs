//! `selene bench model`: plaintext prefill and decode speed, load time, peak memory.
//!
//! Same shape as llama.cpp's `llama-bench` pp128 / tg64: prefill of a 128-token prompt
//! from an empty context (the prompt of `scripts/model_fixtures/bench_llamacpp.py`),
//! then 64 greedy decode steps after it (EOS does not stop them).

use std::time::Instant;

use anyhow::Context;
use selene_model::{forward, KvCache, Logits, QuantLinear, Sampler, SamplingParams};

use super::opts::BenchOpts;

/// Prompt tokens for the prefill measurement.
const PREFILL_TOKENS: usize = 128;
/// Generated tokens for the decode measurement.
const DECODE_TOKENS: usize = 64;
/// The prompt llama.cpp's side of the comparison uses (`bench_llamacpp.py`), so both
/// time the same 128 ids.
const PROMPT: &str = include_str!("../../../../../scripts/model_fixtures/prompt128.txt");
/// Prefill repetitions (the median is reported).
const REPS: usize = 3;

/// Runs the plaintext model benchmark.
pub fn run(opts: &BenchOpts) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let start = Instant::now();
    let (w, t) = super::super::args::load(opts.model.as_deref())?;
    let load_s = start.elapsed().as_secs_f64();
    let mut ids = t.encode(PROMPT)?;
    let base = ids.clone();
    while ids.len() < PREFILL_TOKENS {
        ids.extend_from_slice(&base);
    }
    ids.truncate(PREFILL_TOKENS);
    let mut lin = QuantLinear::new(&w);
    let capacity = PREFILL_TOKENS + DECODE_TOKENS + 1;
    // Warm-up: page in the weights, size the scratch.
    let mut cache = KvCache::new(w.config(), capacity);
    forward(&w, &ids[..16], &mut cache, &mut lin, Logits::Last)?;
    let mut times = Vec::new();
    let mut logits = Vec::new();
    for _ in 0..REPS {
        cache.clear();
        let s = Instant::now();
        logits = forward(&w, &ids, &mut cache, &mut lin, Logits::Last)?;
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let prefill_s = times[REPS / 2];
    let mut sampler = Sampler::new(SamplingParams::default())?;
    let s = Instant::now();
    for _ in 0..DECODE_TOKENS {
        let next = sampler.sample(&logits)?;
        logits = forward(&w, &[next], &mut cache, &mut lin, Logits::Last)?;
    }
    let decode_s = s.elapsed().as_secs_f64();
    let prefill_tok_s = PREFILL_TOKENS as f64 / prefill_s;
    let decode_tok_s = DECODE_TOKENS as f64 / decode_s;
    let rss_mb = super::meter::peak_rss_mb();
    let name = selene_model::store::ModelSource::from_arg(opts.model.as_deref())?.id();
    println!("{:<28} {:>12}", "model", name);
    println!("{:<28} {:>12}", "threads", threads);
    println!("{:<28} {:>12.1}", "prefill (pp128) tok/s", prefill_tok_s);
    println!("{:<28} {:>12.1}", "decode (tg64) tok/s", decode_tok_s);
    println!("{:<28} {:>12.3}", "load s", load_s);
    println!("{:<28} {:>12.1}", "peak RSS MiB", rss_mb);
    if let Some(path) = &opts.json {
        let json = serde_json::json!({
            "model": name,
            "threads": threads,
            "prefill_tok_s": prefill_tok_s,
            "decode_tok_s": decode_tok_s,
            "load_s": load_s,
            "rss_mb": rss_mb,
        });
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}
