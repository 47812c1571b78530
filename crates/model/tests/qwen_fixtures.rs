//! Qwen2.5-Coder-0.5B-Instruct and -1.5B-Instruct (qwen2: q/k/v biases, NEOX RoPE,
//! untied LM head, Q5_0 / Q8_0 / Q4_K / Q6_K weights, the qwen2 pre-tokenizer) against
//! Hugging Face transformers in float32 on the same GGUF: `tests/fixtures/<model>/`,
//! made by `scripts/model_fixtures/make_fixtures.py --model <model>`.
//!
//! The 0.5B (491 MB) comes from the store. Outside CI a machine without it skips these
//! tests with a printed reason rather than downloading it; with `CI` set it is fetched
//! (and cached in `$SELENE_HOME`). The 1.5B (1.1 GB) is opt-in everywhere:
//! `SELENE_TEST_QWEN15=1` runs the same checks on it.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use selene_model::store::{self, KnownModel, ModelSource, QWEN_CODER_05B, QWEN_CODER_15B};
use selene_model::*;

/// One model with its committed fixtures, loaded once per test binary.
struct Fixture {
    spec: &'static KnownModel,
    reference: Value,
    weights: Weights,
    tokenizer: Tokenizer,
}

fn dir(spec: &KnownModel) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(spec.name)
}

fn reference(spec: &KnownModel) -> Value {
    let text = std::fs::read_to_string(dir(spec).join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("valid JSON")
}

/// The 0.5B with its fixtures, or `None` (with the reason printed) when the model is not
/// in the store and this is not CI.
fn small() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let stored = store::home().join(QWEN_CODER_05B.file).exists();
        if !stored && std::env::var_os("CI").is_none() {
            eprintln!(
                "skipped: {} is not in {} and CI is not set (run `selene plain --model {} \
                 hi` once to fetch it)",
                QWEN_CODER_05B.file,
                store::home().display(),
                QWEN_CODER_05B.name
            );
            return None;
        }
        Some(load(&QWEN_CODER_05B))
    })
    .as_ref()
}

/// The 1.5B with its fixtures when `SELENE_TEST_QWEN15` is set (fetched on first use),
/// else `None` with the reason printed.
fn large() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        if std::env::var_os("SELENE_TEST_QWEN15").is_none() {
            eprintln!(
                "skipped: set SELENE_TEST_QWEN15=1 to test {}",
                QWEN_CODER_15B.name
            );
            return None;
        }
        Some(load(&QWEN_CODER_15B))
    })
    .as_ref()
}

fn load(spec: &'static KnownModel) -> Fixture {
    let weights = store::load_source(&ModelSource::Known(spec)).expect("the model");
    let tokenizer = Tokenizer::from_gguf(weights.gguf()).unwrap();
    Fixture {
        spec,
        reference: reference(spec),
        weights,
        tokenizer,
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn array<'a>(f: &'a Fixture, key: &str) -> &'a Vec<Value> {
    f.reference[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} array"))
}

fn read_logits(f: &Fixture, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir(f.spec).join(name)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn qwen_fixtures_were_made_from_the_stored_files() {
    for spec in [&QWEN_CODER_05B, &QWEN_CODER_15B] {
        assert_eq!(
            reference(spec)["gguf_sha256"].as_str(),
            Some(spec.sha256),
            "{}",
            spec.name
        );
    }
}

/// Shape and metadata of the qwen2 config: (layers, width, FFN, heads, KV heads, head
/// size).
fn check_config(f: &Fixture, shape: (usize, usize, usize, usize, usize, usize)) {
    let (w, t) = (&f.weights, &f.tokenizer);
    let c = w.config();
    assert_eq!(c.arch, Arch::Qwen2);
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.d_ff,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim
        ),
        shape
    );
    assert_eq!((c.vocab_size, c.rope_theta), (151_936, 1e6));
    assert!((c.rms_eps - 1e-6).abs() < 1e-12);
    assert_eq!(w.qkv_bias(0).unwrap().map(<[f32]>::len), Some(c.qkv_dim()));
    assert_eq!(
        t.chat_template().default_system(),
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    );
    assert_eq!(t.encode("<|im_end|>").unwrap(), [151_645]);
    assert!(t.eos_ids().contains(&151_645));
}

#[test]
fn qwen_config_is_read_from_the_qwen2_metadata() {
    let Some(f) = small() else { return };
    check_config(f, (24, 896, 4864, 14, 2, 64));
}

/// Token ids against HF (and llama.cpp where the fixture has them), decoding back, and
/// the chat template's renderings.
fn check_token_ids(f: &Fixture) {
    let t = &f.tokenizer;
    for case in array(f, "tokenizer_cases") {
        let text = case["text"].as_str().unwrap();
        let ours = t.encode(text).unwrap();
        assert_eq!(ours, ids(&case["ids_hf"]), "HF ids for {text:?}");
        if !case["ids_llamacpp"].is_null() {
            assert_eq!(
                ours,
                ids(&case["ids_llamacpp"]),
                "llama.cpp ids for {text:?}"
            );
        }
        assert_eq!(t.decode(&ours).unwrap(), text);
    }
    for case in array(f, "chat_cases") {
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                Message::new(
                    Role::parse(m["role"].as_str().unwrap()).unwrap(),
                    m["content"].as_str().unwrap(),
                )
            })
            .collect();
        let text = t.chat_template().render(&messages, true);
        assert_eq!(text, case["text"].as_str().unwrap());
        assert_eq!(t.encode(&text).unwrap(), ids(&case["ids"]));
    }
}

#[test]
fn qwen_token_ids_and_chat_template_match_transformers() {
    if let Some(f) = small() {
        check_token_ids(f);
    }
}

/// Max |ours - HF| over the fixture's logits (every `stride`-th id) and its top 20.
fn logit_diff(f: &Fixture, logits: &[f32], p: &Value) -> f32 {
    let stride = f.reference["logits_stride"].as_u64().unwrap() as usize;
    let expected = read_logits(f, p["logits_file"].as_str().unwrap());
    assert_eq!(expected.len(), logits.len().div_ceil(stride));
    let strided = logits
        .iter()
        .step_by(stride)
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    p["top_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let id = pair[0].as_u64().unwrap() as usize;
            (f64::from(logits[id]) - pair[1].as_f64().unwrap()).abs() as f32
        })
        .fold(strided, f32::max)
}

/// Tolerance on the logits against HF f32 (the bound; measured spreads are in
/// docs/models.md).
const LOGIT_TOLERANCE: f32 = 1e-3;

/// Prompt logits (batched path) within [`LOGIT_TOLERANCE`] of HF f32, per-layer residual
/// norms within 1e-4 relative, and greedy continuations identical: all reference tokens
/// for the first `full` prompts, the first 8 for the others (decoding is the slow part
/// on a 2-core CI runner).
fn check_logits_and_greedy(f: &Fixture, full: usize) {
    let (w, t) = (&f.weights, &f.tokenizer);
    let c = w.config();
    for (i, p) in array(f, "prompts").iter().enumerate() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["ids"]);
        assert_eq!(
            t.encode(p["text"].as_str().unwrap()).unwrap(),
            prompt,
            "{name}"
        );
        let mut lin = QuantLinear::new(w);
        let mut cache = KvCache::new(c, prompt.len() + 32);
        let mut norms = Vec::new();
        let logits = forward_observed(
            w,
            &prompt,
            &mut cache,
            &mut lin,
            Logits::Last,
            &mut |_, x| {
                let last = &x[x.len() - c.d_model..];
                norms.push(
                    last.iter()
                        .map(|v| f64::from(*v).powi(2))
                        .sum::<f64>()
                        .sqrt(),
                );
            },
        )
        .unwrap();
        let max_diff = logit_diff(f, &logits, p);
        eprintln!("{name}: max |logit - HF f32| = {max_diff:.2e}");
        assert!(
            max_diff < LOGIT_TOLERANCE,
            "{name}: max logit diff {max_diff}"
        );
        for (l, (ours, theirs)) in norms
            .iter()
            .zip(p["hidden_last_l2"].as_array().unwrap())
            .enumerate()
        {
            let theirs = theirs.as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= 1e-4 * theirs.max(1.0),
                "{name}: layer {l} residual L2 {ours} vs {theirs}"
            );
        }
        let mut hf = ids(&p["greedy_hf"]);
        if i >= full {
            hf.truncate(8);
        }
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        let eos = [f.reference["eos_id"].as_u64().unwrap() as u32];
        let ours = generate(w, &prompt, hf.len(), &eos, &mut s, &mut lin, &mut |_| {
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(ours, hf, "{name}: greedy continuation vs HF");
    }
}

#[test]
fn qwen_logits_and_greedy_ids_match_transformers_f32() {
    if let Some(f) = small() {
        check_logits_and_greedy(f, 2);
    }
}

/// The first prompt one token at a time: the decode path's direct quantized dot
/// products (AVX2 kernels where the CPU has them) instead of the batched tiles.
fn check_decode_path(f: &Fixture) {
    let w = &f.weights;
    let p = &array(f, "prompts")[0];
    let prompt = ids(&p["ids"]);
    let mut lin = QuantLinear::new(w);
    let mut cache = KvCache::new(w.config(), prompt.len());
    let mut logits = Vec::new();
    for &id in &prompt {
        logits = forward(w, &[id], &mut cache, &mut lin, Logits::Last).unwrap();
    }
    let max_diff = logit_diff(f, &logits, p);
    eprintln!(
        "{}: token-by-token max |logit - HF f32| = {max_diff:.2e}",
        p["name"]
    );
    assert!(max_diff < LOGIT_TOLERANCE);
}

#[test]
fn qwen_decode_path_logits_match_transformers_f32_too() {
    if let Some(f) = small() {
        check_decode_path(f);
    }
}

/// The client bundle (no layer matrices) has the full model's fingerprint, the pinned
/// one, and carries the biases the client adds after decryption.
fn check_client_bundle(f: &Fixture) {
    let w = &f.weights;
    let hex = |f: [u8; 32]| -> String { f.iter().map(|b| format!("{b:02x}")).collect() };
    let bundle = Weights::load_client(&store::home().join(f.spec.file)).unwrap();
    assert!(!bundle.has_layer_matrices());
    assert_eq!(bundle.qkv_bias(3).unwrap(), w.qkv_bias(3).unwrap());
    assert_eq!(hex(bundle.fingerprint()), hex(w.fingerprint()));
    assert_eq!(Some(hex(w.fingerprint()).as_str()), f.spec.fingerprint);
    let stored = store::load_client_source(&ModelSource::Known(f.spec)).unwrap();
    assert_eq!(stored.fingerprint(), w.fingerprint());
}

#[test]
fn qwen_client_bundle_has_the_pinned_fingerprint() {
    if let Some(f) = small() {
        check_client_bundle(f);
    }
}

/// Opt-in (`SELENE_TEST_QWEN15=1`; fetches 1.1 GB on first use, about 3 minutes on two
/// cores): every check above on the 1.5B (head size 128, Q4_K / Q6_K only) against its
/// own fixtures.
#[test]
fn qwen_1_5b_opt_in() {
    let Some(f) = large() else { return };
    check_config(f, (28, 1536, 8960, 12, 2, 128));
    check_token_ids(f);
    check_client_bundle(f);
    check_decode_path(f);
    check_logits_and_greedy(f, 1);
}
