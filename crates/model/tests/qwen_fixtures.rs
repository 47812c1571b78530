//! Qwen2.5-Coder-0.5B-Instruct (qwen2: q/k/v biases, NEOX RoPE, untied LM head, Q5_0 /
//! Q8_0 / Q4_K / Q6_K weights, the qwen2 pre-tokenizer) against Hugging Face
//! transformers in float32 on the same GGUF: `tests/fixtures/qwen2.5-coder-0.5b/`, made
//! by `scripts/model_fixtures/make_fixtures.py --model qwen2.5-coder-0.5b`.
//!
//! The model (491 MB) comes from the store. Outside CI a machine without it skips these
//! tests with a printed reason rather than downloading it; with `CI` set it is fetched
//! (and cached in `$SELENE_HOME`).

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use selene_model::store::{self, ModelSource, QWEN_CODER_05B};
use selene_model::*;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2.5-coder-0.5b")
}

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let text = std::fs::read_to_string(dir().join("reference.json")).expect("reference.json");
        serde_json::from_str(&text).expect("valid JSON")
    })
}

/// The model, or `None` (with the reason printed) when it is not in the store and this
/// is not CI.
fn weights() -> Option<&'static Weights> {
    static W: OnceLock<Option<Weights>> = OnceLock::new();
    W.get_or_init(|| {
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
        Some(store::load_source(&ModelSource::Known(&QWEN_CODER_05B)).expect("the 0.5B model"))
    })
    .as_ref()
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(weights().unwrap().gguf()).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn array(key: &str) -> &'static Vec<Value> {
    reference()[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} array"))
}

fn read_logits(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir().join(name)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn qwen_fixtures_were_made_from_the_stored_file() {
    assert_eq!(
        reference()["gguf_sha256"].as_str(),
        Some(QWEN_CODER_05B.sha256)
    );
}

#[test]
fn qwen_config_is_read_from_the_qwen2_metadata() {
    let Some(w) = weights() else { return };
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
        (24, 896, 4864, 14, 2, 64)
    );
    assert_eq!((c.vocab_size, c.rope_theta), (151_936, 1e6));
    assert!((c.rms_eps - 1e-6).abs() < 1e-12);
    assert_eq!(w.qkv_bias(0).unwrap().map(<[f32]>::len), Some(c.qkv_dim()));
    assert_eq!(
        tokenizer().chat_template().default_system(),
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    );
    let im_end = tokenizer().encode("<|im_end|>").unwrap();
    assert_eq!(im_end, [151_645]);
    assert!(tokenizer().eos_ids().contains(&151_645));
}

#[test]
fn qwen_token_ids_and_chat_template_match_transformers() {
    if weights().is_none() {
        return;
    }
    for case in array("tokenizer_cases") {
        let text = case["text"].as_str().unwrap();
        let ours = tokenizer().encode(text).unwrap();
        assert_eq!(ours, ids(&case["ids_hf"]), "HF ids for {text:?}");
        if !case["ids_llamacpp"].is_null() {
            assert_eq!(
                ours,
                ids(&case["ids_llamacpp"]),
                "llama.cpp ids for {text:?}"
            );
        }
        assert_eq!(tokenizer().decode(&ours).unwrap(), text);
    }
    for case in array("chat_cases") {
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
        let text = tokenizer().chat_template().render(&messages, true);
        assert_eq!(text, case["text"].as_str().unwrap());
        assert_eq!(tokenizer().encode(&text).unwrap(), ids(&case["ids"]));
    }
}

/// Max |ours - HF| over the fixture's logits (every `stride`-th id) and its top 20.
fn logit_diff(logits: &[f32], p: &Value) -> f32 {
    let stride = reference()["logits_stride"].as_u64().unwrap() as usize;
    let expected = read_logits(p["logits_file"].as_str().unwrap());
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

/// Tolerance on the logits against HF f32: see `qwen_logits_and_greedy_ids_match`.
const LOGIT_TOLERANCE: f32 = 1e-3;

#[test]
fn qwen_logits_and_greedy_ids_match_transformers_f32() {
    let Some(w) = weights() else { return };
    let c = w.config();
    for (i, p) in array("prompts").iter().enumerate() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["ids"]);
        assert_eq!(
            tokenizer().encode(p["text"].as_str().unwrap()).unwrap(),
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
        let max_diff = logit_diff(&logits, p);
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
        // Greedy: all 24 reference tokens for the first two prompts, the first 8 for the
        // others (decoding is the slow part of this file on a 2-core CI runner).
        let mut hf = ids(&p["greedy_hf"]);
        if i >= 2 {
            hf.truncate(8);
        }
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        let eos = [reference()["eos_id"].as_u64().unwrap() as u32];
        let ours = generate(w, &prompt, hf.len(), &eos, &mut s, &mut lin, &mut |_| {
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(ours, hf, "{name}: greedy continuation vs HF");
    }
}

#[test]
fn qwen_decode_path_logits_match_transformers_f32_too() {
    // One token at a time: the direct dot products (scalar for Q5_0 / Q4_K / Q6_K).
    let Some(w) = weights() else { return };
    let p = &array("prompts")[0];
    let prompt = ids(&p["ids"]);
    let mut lin = QuantLinear::new(w);
    let mut cache = KvCache::new(w.config(), prompt.len());
    let mut logits = Vec::new();
    for &id in &prompt {
        logits = forward(w, &[id], &mut cache, &mut lin, Logits::Last).unwrap();
    }
    let max_diff = logit_diff(&logits, p);
    eprintln!(
        "{}: token-by-token max |logit - HF f32| = {max_diff:.2e}",
        p["name"]
    );
    assert!(max_diff < LOGIT_TOLERANCE);
}

#[test]
fn qwen_client_bundle_has_the_pinned_fingerprint() {
    let Some(w) = weights() else { return };
    let hex = |f: [u8; 32]| -> String { f.iter().map(|b| format!("{b:02x}")).collect() };
    let bundle = Weights::load_client(&store::home().join(QWEN_CODER_05B.file)).unwrap();
    assert!(!bundle.has_layer_matrices());
    // The biases travel in the bundle: the client adds them after decryption.
    assert_eq!(bundle.qkv_bias(3).unwrap(), w.qkv_bias(3).unwrap());
    assert_eq!(hex(bundle.fingerprint()), hex(w.fingerprint()));
    assert_eq!(
        Some(hex(w.fingerprint()).as_str()),
        QWEN_CODER_05B.fingerprint
    );
    let stored = store::load_client_source(&ModelSource::Known(&QWEN_CODER_05B)).unwrap();
    assert_eq!(stored.fingerprint(), w.fingerprint());
}

/// Opt-in (`SELENE_TEST_QWEN15=1`; fetches 1.1 GB on first use): the 1.5B loads as
/// qwen2 with head size 128, its client bundle matches the pinned fingerprint, and it
/// continues a function signature with code.
#[test]
fn qwen_1_5b_opt_in() {
    use selene_model::store::QWEN_CODER_15B;
    if std::env::var_os("SELENE_TEST_QWEN15").is_none() {
        eprintln!(
            "skipped: set SELENE_TEST_QWEN15=1 to test {}",
            QWEN_CODER_15B.name
        );
        return;
    }
    let w = store::load_source(&ModelSource::Known(&QWEN_CODER_15B)).unwrap();
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
        (28, 1536, 8960, 12, 2, 128)
    );
    let hex: String = w.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(Some(hex.as_str()), QWEN_CODER_15B.fingerprint);
    let t = Tokenizer::from_gguf(w.gguf()).unwrap();
    let prompt = t.encode("def fibonacci(n):").unwrap();
    let mut s = Sampler::new(SamplingParams::default()).unwrap();
    let mut lin = QuantLinear::new(&w);
    let out = generate(&w, &prompt, 8, t.eos_ids(), &mut s, &mut lin, &mut |_| {
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .unwrap();
    let text = t.decode(&out).unwrap();
    assert!(text.contains("if n"), "{text:?}");
}
