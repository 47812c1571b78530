//! `selene bench e2e`: private generation end to end, in process.
//!
//! Per mode (strict, K = 30; selective, K = 1 and 4): the committed 32-token prompt
//! (`testdata/prompt32.txt`) and 16 greedy tokens (one prefill pass, then 15 one-token
//! decode passes), against the plaintext model on the same positions. Then a public
//! prefix row (512 tokens of `testdata/public_context.txt` run in plaintext on the
//! server, then `testdata/private16.txt` in strict mode) and the perplexity of
//! `testdata/quality.txt` (256 tokens) in plaintext, strict mode and K = 4.
//!
//! Measurement (the table's footnote says the same):
//! - CPU time: process CPU time (`CLOCK_PROCESS_CPUTIME_ID`) around every server handler
//!   call (encrypted products, the selective tail, the prefix pass); client and server
//!   never run at the same time in process, so the rest of the generation's process CPU
//!   time is the client's and the split is exact.
//! - Memory: the server's is what it must hold: the prepared (encoded) weights, the
//!   largest request plus answer, and in selective mode the quantized weights its tail
//!   runs on (the whole GGUF held in memory, a slight overcount) plus the tail's KV cache.
//!   The client's is the process's peak resident memory during the mode (`VmHWM`, reset
//!   through `/proc/self/clear_refs` before each mode) minus the prepared weights and the
//!   largest request/answer; the quantized weights, mapped once, count on the client's
//!   side (it needs the embedding table and, in strict mode, nothing else of them).
//!   The reset sets the peak to the current resident size, which still holds heap the
//!   allocator kept from an earlier mode, so the client's figure is an upper bound.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use selene_ckks::Parameters;
use selene_linalg::LinalgPreset;
use selene_model::{
    forward, generate_with, KvCache, Logits, QuantLinear, Sampler, SamplingParams, Tokenizer,
    Weights,
};
use selene_protocol::policy::{SELECTIVE_PRESET, STRICT_PRESET};
use selene_protocol::{
    compare_logits, InProcess, ModelServer, PlainTail, PrefixKv, PrefixLimits, PreparedModel,
    PublicPrefix, SelectiveClient, StrictLinear,
};
use serde_json::{json, Value};

use super::meter::{peak_rss_mb, process_cpu_s, reset_peak_rss, Metered, ServerMeter};
use super::opts::BenchOpts;

const PROMPT: &str = include_str!("../../../../../testdata/prompt32.txt");
const PUBLIC: &str = include_str!("../../../../../testdata/public_context.txt");
const PRIVATE: &str = include_str!("../../../../../testdata/private16.txt");
const QUALITY: &str = include_str!("../../../../../testdata/quality.txt");
const PUBLIC_TOKENS: usize = 512;
const PRIVATE_TOKENS: usize = 16;
const QUALITY_TOKENS: usize = 256;
/// Options of `selene bench e2e`.
#[derive(Debug, clap::Args)]
pub struct E2eOpts {
    #[command(flatten)]
    pub common: BenchOpts,
    /// Rows to run (repeat the flag; default: all). The bigger models take minutes per
    /// row: `--model qwen2.5-coder-1.5b --row strict --row strict-packed --prompt-tokens 8
    /// --tokens 4` measures the thin client's ratio in a few minutes per row.
    #[arg(long = "row", value_enum)]
    pub rows: Vec<Row>,
    /// Tokens of testdata/prompt32.txt to prefill (at most 32).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub prompt_tokens: u16,
    /// Greedy tokens generated per row (the first ends the prefill; the rest are decode).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..=256))]
    pub tokens: u16,
}

/// The rows `selene bench e2e` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Row {
    /// Strict mode at `coeff12`.
    Strict,
    /// Strict mode with packed outputs at `coeff12pack` (the thin client's preset).
    StrictPacked,
    /// Selective mode, K = 1, at `coeff12wide`.
    Selective1,
    /// Selective mode, K = 4, at `coeff12wide`.
    Selective4,
    /// A 512-token public prefix, then 16 private tokens in strict mode.
    PublicPrefix,
    /// Perplexity of testdata/quality.txt in plaintext, strict and K = 4.
    Perplexity,
    /// The LM head on the client in plaintext against the server under encryption with
    /// packed logits (`coeff12pack`, the link's plan), and which one the link favours.
    LmHead,
}

/// The release flooding `selene run` uses (the audit's default).
const SIGMA: f64 = selene_audit::view::DEFAULT_FLOOD_SIGMA;

/// Plaintext values that cross per layer and token in strict mode: every product's input
/// and output (576 + 960, 576 + 576, 576 + 3072, 1536 + 576 for SmolLM2).
fn f32_values_per_token(c: &selene_model::Config) -> usize {
    let (d, kv, f) = (c.d_model, c.kv_dim(), c.d_ff);
    c.n_layers * ((d + d + 2 * kv) + (d + d) + (d + 2 * f) + (f + d))
}

/// Everything one mode's run measured.
struct ModeRun {
    /// Client CPU seconds of the prefill pass alone.
    client_cpu_prefill_s: f64,
    /// Server CPU seconds of the prefill pass alone.
    server_cpu_prefill_s: f64,
    /// Tokens of the prompt (the prefill pass).
    prompt_tokens: usize,
    /// Galois keys uploaded (count, bytes, client seconds to make them).
    galois: (usize, usize, f64),
    tokens: Vec<u32>,
    step_logits: Vec<Vec<f32>>,
    step_s: Vec<f64>,
    /// (bytes up, bytes down) after the prefill pass and at the end.
    bytes_prefill: (usize, usize),
    bytes_total: (usize, usize),
    /// The client's HE seconds (encrypt, decrypt, encode, decode; wall time) after the
    /// prefill pass and at the end.
    client_he: (f64, f64),
    client_cpu_s: f64,
    server_cpu_s: f64,
    client_peak_mb: f64,
    server_peak_mb: f64,
}

struct Ctx<'a> {
    w: &'a Weights,
    /// Strict mode's preset (`coeff12`).
    params: Arc<Parameters>,
    /// Selective mode's preset (`coeff12wide`, decryptions flooded).
    wide: Arc<Parameters>,
    /// The packed strict preset (`coeff12pack`) and the link its plan is made for.
    packed: Arc<Parameters>,
    link: selene_linalg::Link,
}

impl Ctx<'_> {
    /// The parameters `k` encrypted layers run on: strict mode at `coeff12`, selective
    /// mode at `coeff12wide`.
    fn params_for(&self, k: usize) -> &Arc<Parameters> {
        if k < self.w.config().n_layers {
            &self.wide
        } else {
            &self.params
        }
    }
}

fn greedy() -> anyhow::Result<Sampler> {
    Ok(Sampler::new(SamplingParams::default())?)
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Plaintext greedy generation, keeping each pass's logits.
fn plain_run(w: &Weights, ids: &[u32], max: usize) -> anyhow::Result<(Vec<u32>, Vec<Vec<f32>>)> {
    let mut cache = KvCache::new(w.config(), ids.len() + max);
    let mut lin = QuantLinear::new(w);
    let mut logits = Vec::new();
    let tokens = generate_with(
        ids,
        max,
        &[],
        &mut greedy()?,
        &mut |x| {
            let l = forward(w, x, &mut cache, &mut lin, Logits::Last)?;
            logits.push(l.clone());
            Ok::<_, selene_model::Error>(l)
        },
        &mut |_| Ok(std::ops::ControlFlow::Continue(())),
    )?;
    Ok((tokens, logits))
}

/// One mode (`k` encrypted layers; the model's depth is strict mode), with an optional
/// public prefix already run by the server (its rows, and the tail's).
#[allow(
    clippy::too_many_arguments,
    reason = "one benchmark mode, all inputs needed"
)]
fn mode_run(
    cx: &Ctx<'_>,
    k: usize,
    packed: bool,
    ids: &[u32],
    max: usize,
    prefix: Option<(&PrefixKv, Option<&PrefixKv>)>,
    meter: &Rc<ServerMeter>,
) -> anyhow::Result<ModeRun> {
    let w = cx.w;
    let c = w.config();
    let params = if packed { &cx.packed } else { cx.params_for(k) };
    let model = Arc::new(PreparedModel::for_link(params, w, k, &cx.link, &mut || {})?);
    let prepared = model.memory_bytes();
    let layouts = model.layouts();
    let transport = Metered {
        inner: InProcess::new(ModelServer::new(model)),
        meter: meter.clone(),
        requests: Default::default(),
    };
    let mut strict = StrictLinear::new(w, params, layouts, transport)?;
    let st = strict.stats();
    let galois = (
        st.galois_keys,
        st.galois_key_bytes,
        st.galois_keygen.as_secs_f64(),
    );
    reset_peak_rss();
    let p = prefix.map_or(0, |(kv, _)| kv.positions());
    let capacity = p + ids.len() + max;
    let (cpu0, server0) = (process_cpu_s(), meter.cpu_s.get());
    let mut step_logits = Vec::new();
    let mut step_s = Vec::new();
    let mut bytes_prefill = (0, 0);
    let mut he_prefill = 0.0;
    let mut client_cpu_prefill_s = 0.0;
    let mut server_cpu_prefill_s = 0.0;
    let client_cpu = || (process_cpu_s() - cpu0) - (meter.cpu_s.get() - server0);
    let mut extra = (0usize, 0usize);
    let mut tail_bytes = 0usize;
    let tokens = if k == c.n_layers {
        let mut cache = KvCache::new(c, capacity);
        if let Some((kv, _)) = prefix {
            kv.install(&mut cache, c)?;
        }
        let t = generate_with(
            ids,
            max,
            &[],
            &mut greedy()?,
            &mut |x| {
                let s = Instant::now();
                let l = forward(w, x, &mut cache, &mut strict, Logits::Last)?;
                step_s.push(s.elapsed().as_secs_f64());
                if step_logits.is_empty() {
                    bytes_prefill = (strict.stats().bytes_up, strict.stats().bytes_down);
                    he_prefill = strict.stats().client_time.as_secs_f64();
                    client_cpu_prefill_s = client_cpu();
                    server_cpu_prefill_s = meter.cpu_s.get() - server0;
                }
                step_logits.push(l.clone());
                Ok::<_, selene_protocol::Error>(l)
            },
            &mut |_| Ok(std::ops::ControlFlow::Continue(())),
        )?;
        let s = strict.stats();
        (t, (s.bytes_up, s.bytes_down), s.client_time.as_secs_f64())
    } else {
        let mut client = SelectiveClient::new(w, k, strict, SIGMA, capacity)?;
        let mut tail = PlainTail::new(w, k, capacity);
        if let Some((head, tail_kv)) = prefix {
            client.install_prefix(head)?;
            if let Some(tk) = tail_kv {
                tail.install_prefix(tk)?;
            }
        }
        let t = generate_with(
            ids,
            max,
            &[],
            &mut greedy()?,
            &mut |x| {
                let s = Instant::now();
                let release = client.step(x)?;
                let l = meter.time(|| tail.handle(&release))?;
                step_s.push(s.elapsed().as_secs_f64());
                // What crosses besides the products: the release up, the logits down.
                extra.0 += release.len();
                extra.1 += 4 * l.len();
                meter.working(release.len() + 4 * l.len());
                if step_logits.is_empty() {
                    let st = client.strict().stats();
                    bytes_prefill = (st.bytes_up + extra.0, st.bytes_down + extra.1);
                    he_prefill = st.client_time.as_secs_f64();
                    client_cpu_prefill_s = client_cpu();
                    server_cpu_prefill_s = meter.cpu_s.get() - server0;
                }
                step_logits.push(l.clone());
                Ok::<_, selene_protocol::Error>(l)
            },
            &mut |_| Ok(std::ops::ControlFlow::Continue(())),
        )?;
        let s = client.strict().stats();
        // The tail's KV cache: layers k.. at `capacity` positions, keys and values.
        tail_bytes = (c.n_layers - k) * capacity * c.kv_dim() * 2 * 4;
        (
            t,
            (s.bytes_up + extra.0, s.bytes_down + extra.1),
            s.client_time.as_secs_f64(),
        )
    };
    let (tokens, bytes_total, he_total) = tokens;
    let total_cpu = process_cpu_s() - cpu0;
    let server_cpu_s = meter.cpu_s.get() - server0;
    let working = meter.max_working.get();
    let tail_weights = if k < c.n_layers {
        w.gguf().bytes().len() + tail_bytes
    } else {
        0
    };
    let server_mem = prepared + working + tail_weights;
    Ok(ModeRun {
        client_cpu_prefill_s,
        server_cpu_prefill_s,
        prompt_tokens: ids.len(),
        galois,
        tokens,
        step_logits,
        step_s,
        bytes_prefill,
        bytes_total,
        client_he: (he_prefill, he_total),
        client_cpu_s: total_cpu - server_cpu_s,
        server_cpu_s,
        client_peak_mb: peak_rss_mb() - mb(prepared + working),
        server_peak_mb: mb(server_mem),
    })
}

/// True when `e` is the flooding's refusal of a session longer than the preset's
/// precision allows (selective mode's key caps positions; the bench reports it).
fn refused_by_flooding(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<selene_protocol::Error>(),
            Some(selene_protocol::Error::FloodingTooWide { .. })
        )
    })
}

/// The plaintext model's process CPU for the prefill of `ids` and per decode pass after
/// it (`max` tokens), measured pass by pass.
fn plain_cpu(w: &Weights, ids: &[u32], max: usize) -> anyhow::Result<PlainCpu> {
    let mut cache = KvCache::new(w.config(), ids.len() + max);
    let mut lin = QuantLinear::new(w);
    let mut passes = Vec::new();
    generate_with(
        ids,
        max,
        &[],
        &mut greedy()?,
        &mut |x| {
            let c0 = process_cpu_s();
            let l = forward(w, x, &mut cache, &mut lin, Logits::Last)?;
            passes.push(process_cpu_s() - c0);
            Ok::<_, selene_model::Error>(l)
        },
        &mut |_| Ok(std::ops::ControlFlow::Continue(())),
    )?;
    let decode = &passes[1.min(passes.len())..];
    Ok(PlainCpu {
        prefill_s: passes.first().copied().unwrap_or(f64::NAN),
        decode_s_per_token: decode.iter().sum::<f64>() / decode.len().max(1) as f64,
    })
}

/// Largest |logit difference| over the passes both runs made on the same positions
/// (they agree while the tokens agree).
fn max_logit_err(run: &ModeRun, plain_tokens: &[u32], plain_logits: &[Vec<f32>]) -> f32 {
    let mut err = 0.0f32;
    for (i, (a, b)) in run.step_logits.iter().zip(plain_logits).enumerate() {
        if i > 0 && run.tokens.get(i - 1) != plain_tokens.get(i - 1) {
            break;
        }
        for (x, y) in a.iter().zip(b) {
            err = err.max((x - y).abs());
        }
    }
    err
}

/// The plaintext model's CPU per pass, measured in the same run: the prefill pass and
/// the mean decode pass.
#[derive(Clone, Copy)]
struct PlainCpu {
    prefill_s: f64,
    decode_s_per_token: f64,
}

/// What one row needs besides the run: the plaintext anchors and the link.
struct RowCtx<'a> {
    plain: &'a (Vec<u32>, Vec<Vec<f32>>),
    plain_cpu: PlainCpu,
    link: selene_linalg::Link,
    f32_values_per_token: usize,
    /// Round trips per token (one per encrypted product).
    trips_per_token: usize,
}

fn generation_row(
    mode: &str,
    k: usize,
    preset: &str,
    run: &ModeRun,
    rc: &RowCtx<'_>,
    t: &Tokenizer,
) -> anyhow::Result<Value> {
    let decode_steps = run.step_s.len().saturating_sub(1).max(1);
    let decode_s: f64 = run.step_s.iter().skip(1).sum();
    let up = run.bytes_total.0 - run.bytes_prefill.0;
    let down = run.bytes_total.1 - run.bytes_prefill.1;
    let (up_t, down_t) = (
        up as f64 / decode_steps as f64,
        down as f64 / decode_steps as f64,
    );
    let client_decode_cpu = (run.client_cpu_s - run.client_cpu_prefill_s) / decode_steps as f64;
    let server_decode_cpu = (run.server_cpu_s - run.server_cpu_prefill_s) / decode_steps as f64;
    let prompt_tokens = (run.prompt_tokens as f64).max(1.0);
    Ok(json!({
        "mode": mode,
        "k": k,
        "preset": preset,
        "link": rc.link.to_string(),
        "client_cpu_decode_s_per_token": client_decode_cpu,
        "client_he_decode_s_per_token": (run.client_he.1 - run.client_he.0) / decode_steps as f64,
        "plain_cpu_decode_s_per_token": rc.plain_cpu.decode_s_per_token,
        "plain_cpu_prefill_s": rc.plain_cpu.prefill_s,
        "client_cpu_over_plain": client_decode_cpu / rc.plain_cpu.decode_s_per_token,
        "server_cpu_decode_s_per_token": server_decode_cpu,
        "client_cpu_prefill_s": run.client_cpu_prefill_s,
        "server_cpu_prefill_s": run.server_cpu_prefill_s,
        "mb_per_decoded_token": (up_t + down_t) / 1e6,
        "expansion_over_f32": (up_t + down_t) / (4.0 * rc.f32_values_per_token as f64),
        "prefill_mb_per_prompt_token": (run.bytes_prefill.0 + run.bytes_prefill.1) as f64
            / 1e6
            / prompt_tokens,
        "galois_keys": run.galois.0,
        "galois_key_bytes": run.galois.1,
        "galois_keygen_s": run.galois.2,
        "link_s_per_token": decode_s / decode_steps as f64
            + rc.link.seconds(up_t, down_t, rc.trips_per_token as f64),
        "prefill_s": run.step_s.first().copied().unwrap_or(f64::NAN),
        "decode_s_per_token": decode_s / decode_steps as f64,
        "bytes_up_per_token": up as f64 / decode_steps as f64,
        "bytes_down_per_token": down as f64 / decode_steps as f64,
        "prefill_bytes_up": run.bytes_prefill.0,
        "prefill_bytes_down": run.bytes_prefill.1,
        "client_cpu_s": run.client_cpu_s,
        "server_cpu_s": run.server_cpu_s,
        "client_peak_mb": run.client_peak_mb,
        "server_peak_mb": run.server_peak_mb,
        "max_logit_err": max_logit_err(run, &rc.plain.0, &rc.plain.1),
        "tokens_equal_plain": run.tokens == rc.plain.0,
        "generated": t.decode(&run.tokens)?,
    }))
}

/// Runs the end-to-end benchmark.
pub fn run(e2e: &E2eOpts) -> anyhow::Result<()> {
    let opts = &e2e.common;
    let wants = |row: Row| e2e.rows.is_empty() || e2e.rows.contains(&row);
    let prompt_tokens = usize::from(e2e.prompt_tokens);
    let decode_tokens = usize::from(e2e.tokens);
    let threads = rayon::current_num_threads();
    let (w, t) = super::super::args::load(opts.model.as_deref())?;
    let c = w.config().clone();
    let cx = Ctx {
        w: &w,
        params: STRICT_PRESET.build()?,
        wide: SELECTIVE_PRESET.build()?,
        packed: LinalgPreset::Coeff12Pack.build()?,
        link: opts.link,
    };
    let take = |text: &str, n: usize, what: &str| -> anyhow::Result<Vec<u32>> {
        let ids = t.encode(text.trim_end())?;
        anyhow::ensure!(
            ids.len() >= n,
            "{what} has {} tokens, {n} needed",
            ids.len()
        );
        Ok(ids[..n].to_vec())
    };
    let prompt = take(PROMPT, prompt_tokens, "testdata/prompt32.txt")?;
    let meter = Rc::new(ServerMeter::default());
    let mut results = Vec::new();

    let plain = plain_run(&w, &prompt, decode_tokens)?;
    let plain_cpu = plain_cpu(&w, &prompt, decode_tokens)?;
    let rc = RowCtx {
        plain: &plain,
        plain_cpu,
        link: opts.link,
        f32_values_per_token: f32_values_per_token(&c),
        trips_per_token: 4 * c.n_layers,
    };
    for (row, mode, k, packed) in [
        (Row::Strict, "strict", c.n_layers, false),
        (Row::StrictPacked, "strict_packed", c.n_layers, true),
        (Row::Selective1, "selective", 1, false),
        (Row::Selective4, "selective", 4, false),
    ] {
        if !wants(row) {
            continue;
        }
        eprintln!("[bench e2e: {mode}, K = {k}]");
        let r = match mode_run(&cx, k, packed, &prompt, decode_tokens, None, &meter) {
            Ok(r) => r,
            Err(e) if refused_by_flooding(&e) => {
                eprintln!("[bench e2e: {mode}, K = {k} refused: {e:#}]");
                results.push(json!({ "mode": mode, "k": k, "refused": format!("{e:#}") }));
                continue;
            }
            Err(e) => return Err(e),
        };
        let preset = if packed {
            LinalgPreset::Coeff12Pack
        } else if k < c.n_layers {
            SELECTIVE_PRESET
        } else {
            STRICT_PRESET
        };
        let trips = 4 * k + usize::from(k < c.n_layers);
        let rc = RowCtx {
            trips_per_token: trips,
            ..rc
        };
        results.push(generation_row(mode, k, preset.name(), &r, &rc, &t)?);
    }

    if wants(Row::PublicPrefix) {
        // Public prefix: the server's plaintext pass, the rows to the client as bytes, then
        // the private prompt in strict mode at positions 512.. .
        eprintln!("[bench e2e: public prefix, {PUBLIC_TOKENS} + {PRIVATE_TOKENS} tokens]");
        let public = take(PUBLIC, PUBLIC_TOKENS, "testdata/public_context.txt")?;
        let private = take(PRIVATE, PRIVATE_TOKENS, "testdata/private16.txt")?;
        let s = Instant::now();
        let kv = meter.time(|| PublicPrefix::run(&w, &public))?;
        let kv_bytes = kv.to_bytes();
        let kv = PrefixKv::from_bytes(&kv_bytes, &c, &PrefixLimits::for_config(&c))?;
        let prefix_s = s.elapsed().as_secs_f64();
        let r = mode_run(
            &cx,
            c.n_layers,
            false,
            &private,
            decode_tokens,
            Some((&kv, None)),
            &meter,
        )?;
        let plain_pp = plain_run(
            &w,
            &[public.clone(), private.clone()].concat(),
            decode_tokens,
        )?;
        let rc_pp = RowCtx {
            plain: &plain_pp,
            ..rc
        };
        let mut row = generation_row(
            "public_prefix",
            c.n_layers,
            STRICT_PRESET.name(),
            &r,
            &rc_pp,
            &t,
        )?;
        let private_prefill = r.step_s.first().copied().unwrap_or(f64::NAN);
        row["public_tokens"] = json!(PUBLIC_TOKENS);
        row["private_tokens"] = json!(PRIVATE_TOKENS);
        row["prefix_server_s"] = json!(prefix_s);
        row["prefix_bytes_down"] = json!(kv_bytes.len());
        row["private_prefill_s"] = json!(private_prefill);
        row["prefill_s"] = json!(prefix_s + private_prefill);
        results.push(row);
    }

    if wants(Row::Perplexity) {
        // Perplexity of the committed text.
        let text = take(QUALITY, QUALITY_TOKENS, "testdata/quality.txt")?;
        let n = text.len();
        let s = Instant::now();
        let plain_logits = forward(
            &w,
            &text,
            &mut KvCache::new(&c, n),
            &mut QuantLinear::new(&w),
            Logits::All,
        )?;
        let plain_s = s.elapsed().as_secs_f64();
        let q = compare_logits(&plain_logits, &plain_logits, c.vocab_size, &text)?;
        results.push(json!({
            "mode": "perplexity_plain", "k": 0, "tokens": n, "perplexity": q.ppl_reference,
            "ppl_rel_err": 0.0, "max_logit_err": 0.0, "argmax_flips": 0, "s": plain_s,
        }));
        for k in [c.n_layers, 4] {
            eprintln!("[bench e2e: perplexity, K = {k}]");
            let params = cx.params_for(k);
            let model = Arc::new(PreparedModel::new(params, &w, k, &mut || {})?);
            let layouts = model.layouts();
            let server = InProcess::new(ModelServer::new(model));
            let mut strict = StrictLinear::new(&w, params, layouts, server)?;
            let s = Instant::now();
            let logits = if k == c.n_layers {
                forward(
                    &w,
                    &text,
                    &mut KvCache::new(&c, n),
                    &mut strict,
                    Logits::All,
                )?
            } else {
                match SelectiveClient::new(&w, k, strict, SIGMA, n) {
                    Ok(mut client) => PlainTail::new(&w, k, n).handle_all(&client.step(&text)?)?,
                    Err(e @ selene_protocol::Error::FloodingTooWide { .. }) => {
                        eprintln!("[bench e2e: perplexity, K = {k} refused: {e}]");
                        results.push(json!({
                            "mode": "perplexity_selective", "k": k, "tokens": n,
                            "refused": e.to_string(),
                        }));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let secs = s.elapsed().as_secs_f64();
            let q = compare_logits(&plain_logits, &logits, c.vocab_size, &text)?;
            let gaps: Vec<f32> = q.flips.iter().map(|f| f.gap).collect();
            results.push(json!({
            "mode": if k == c.n_layers { "perplexity_strict" } else { "perplexity_selective" },
            "k": k, "tokens": n, "perplexity": q.ppl_encrypted, "perplexity_plain": q.ppl_reference,
            "ppl_rel_err": q.ppl_rel_err(), "max_logit_err": q.max_logit_err,
            "argmax_flips": q.flips.len(), "flip_gaps": gaps, "s": secs,
        }));
        }
    }
    if wants(Row::LmHead) {
        eprintln!("[bench e2e: LM head placement]");
        results.push(super::lm_head::row(&w, &prompt, &opts.link)?);
    }
    print_table(&results, threads, decode_tokens);
    for r in results.iter().filter(|r| r["mode"] == "lm_head") {
        super::lm_head::print(r);
    }
    if let Some(path) = &opts.json {
        let doc = json!({ "threads": threads, "results": results });
        std::fs::write(path, format!("{doc:#}\n"))
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}

fn print_table(results: &[Value], threads: usize, tokens: usize) {
    let f = |r: &Value, key: &str| r[key].as_f64().unwrap_or(f64::NAN);
    let has = |key: &str| results.iter().any(|r| r.get(key).is_some());
    if has("decode_s_per_token") {
        print_generation_tables(results);
    }
    if has("perplexity") {
        println!();
        println!(
            "{:<22} {:>3} {:>7} {:>11} {:>10} {:>10} {:>6} {:>8}",
            "perplexity", "K", "tokens", "perplexity", "rel err", "max err", "flips", "time s"
        );
    }
    for r in results.iter().filter(|r| r.get("perplexity").is_some()) {
        println!(
            "{:<22} {:>3} {:>7} {:>11.4} {:>9.3}% {:>10.2e} {:>6} {:>8.1}",
            r["mode"].as_str().unwrap_or("?"),
            r["k"],
            r["tokens"],
            f(r, "perplexity"),
            100.0 * f(r, "ppl_rel_err"),
            f(r, "max_logit_err"),
            r["argmax_flips"],
            f(r, "s"),
        );
    }
    for r in results.iter().filter(|r| r.get("refused").is_some()) {
        println!(
            "{} K = {}: refused: {}",
            r["mode"].as_str().unwrap_or("?"),
            r["k"],
            r["refused"].as_str().unwrap_or("?")
        );
    }
    if has("decode_s_per_token") {
        println!(
            "\n{threads} threads, in process. Decode: {} one-token passes after the prefill \
             ({tokens} tokens). Bytes per token: decode passes only (selective adds the release \
             up and the f32 logits down). CPU: process CPU time measured around every server \
             handler call; client and server never run at once in process, so the rest is the \
             client's. Memory: server = encoded weights + largest request/answer (+ quantized \
             weights and tail KV cache in selective mode); client = process peak RSS during the \
             mode minus encoded weights and largest request/answer (an upper bound: heap the \
             allocator kept from an earlier mode counts). public_prefix prefill = server prefix \
             pass + private prefill.",
            tokens - 1
        );
    }
}

/// The per-mode generation tables (rows with decode figures).
fn print_generation_tables(results: &[Value]) {
    let f = |r: &Value, key: &str| r[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "{:<14} {:>3} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "mode",
        "K",
        "prefill s",
        "decode s/t",
        "KB up/t",
        "KB down/t",
        "cli cpu",
        "srv cpu",
        "cli MB",
        "srv MB",
        "max err",
        "=plain"
    );
    for r in results
        .iter()
        .filter(|r| r.get("decode_s_per_token").is_some())
    {
        println!(
            "{:<14} {:>3} {:>9.2} {:>10.3} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>9.0} {:>9.0} {:>9.2e} {:>6}",
            r["mode"].as_str().unwrap_or("?"),
            r["k"],
            f(r, "prefill_s"),
            f(r, "decode_s_per_token"),
            f(r, "bytes_up_per_token") / 1e3,
            f(r, "bytes_down_per_token") / 1e3,
            f(r, "client_cpu_s"),
            f(r, "server_cpu_s"),
            f(r, "client_peak_mb"),
            f(r, "server_peak_mb"),
            f(r, "max_logit_err"),
            r["tokens_equal_plain"],
        );
    }
    println!();
    println!(
        "{:<14} {:>3} {:>12} {:>10} {:>8} {:>11} {:>7} {:>7} {:>7} {:>10} {:>9} {:>10} {:>12}",
        "mode",
        "K",
        "preset",
        "cli ms/t",
        "HE ms/t",
        "plain ms/t",
        "ratio",
        "MB/t",
        "x f32",
        "MB/prompt",
        "srv s/t",
        "link s/t",
        "keys (MB)"
    );
    for r in results
        .iter()
        .filter(|r| r.get("client_cpu_over_plain").is_some())
    {
        println!(
            "{:<14} {:>3} {:>12} {:>10.1} {:>8.1} {:>11.1} {:>7.2} {:>7.2} {:>7.2} {:>10.3} {:>9.3} {:>10.2} {:>5} ({:.2})",
            r["mode"].as_str().unwrap_or("?"),
            r["k"],
            r["preset"].as_str().unwrap_or("?"),
            1e3 * f(r, "client_cpu_decode_s_per_token"),
            1e3 * f(r, "client_he_decode_s_per_token"),
            1e3 * f(r, "plain_cpu_decode_s_per_token"),
            f(r, "client_cpu_over_plain"),
            f(r, "mb_per_decoded_token"),
            f(r, "expansion_over_f32"),
            f(r, "prefill_mb_per_prompt_token"),
            f(r, "server_cpu_decode_s_per_token"),
            f(r, "link_s_per_token"),
            r["galois_keys"],
            f(r, "galois_key_bytes") / 1e6,
        );
    }
    if let Some(link) = results.first().and_then(|r| r["link"].as_str()) {
        println!(
            "client CPU per decoded token against the plaintext model's (same run); HE: the \
             client's encryption, decryption and their encoding (wall time) within it; MB/t: \
             both ways per decoded token; x f32: over the f32 values that cross; srv s/t: \
             server CPU per decoded token; link s/t: decode time plus the bytes and one round trip \
             per product on the link {link} (no overlap)."
        );
    }
}
