//! Correctness against the independent references in `tests/fixtures/`: Hugging Face
//! transformers in float32 (logits, greedy ids, hidden-state norms, chat template) and
//! llama.cpp (token ids; its greedy ids are reported, not required, because it
//! quantizes activations to 8 bits inside its matmuls).

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use selene_model::*;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let text = std::fs::read_to_string(dir().join("reference.json")).expect("reference.json");
        serde_json::from_str(&text).expect("valid JSON")
    })
}

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| store::load(None).expect("model through the store"))
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(weights().gguf()).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn array<'a>(key: &str) -> &'a Vec<Value> {
    reference()[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} array"))
}

#[test]
fn fixtures_were_made_from_this_gguf() {
    assert_eq!(
        reference()["gguf_sha256"].as_str(),
        Some(store::MODEL_SHA256)
    );
}

#[test]
fn token_ids_match_llama_cpp_for_every_case() {
    let mut hf_agree = 0;
    let cases = array("tokenizer_cases");
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ours = tokenizer().encode(text).unwrap();
        assert_eq!(
            ours,
            ids(&case["ids_llamacpp"]),
            "llama.cpp ids for {text:?}"
        );
        if ours == ids(&case["ids_hf"]) {
            hf_agree += 1;
        }
        assert_eq!(tokenizer().decode(&ours).unwrap(), text);
    }
    eprintln!(
        "tokenizer: {} cases match llama.cpp, {hf_agree} also match HF",
        cases.len()
    );
}

#[test]
fn chat_template_matches_hugging_face() {
    let cases = array("chat_cases");
    assert!(!cases.is_empty());
    for case in cases {
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
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let text = apply_chat_template(&messages, add);
        assert_eq!(text, case["text"].as_str().unwrap());
        // The template read from the GGUF renders the same.
        assert_eq!(tokenizer().chat_template().render(&messages, add), text);
        assert_eq!(tokenizer().encode(&text).unwrap(), ids(&case["ids"]));
    }
}

fn read_logits(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir().join(name)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn logits_hidden_states_and_greedy_ids_match_transformers_f32() {
    let w = weights();
    let c = w.config();
    let prompts = array("prompts");
    assert!(!prompts.is_empty());
    for p in prompts {
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
        let expected = read_logits(p["logits_file"].as_str().unwrap());
        assert_eq!(expected.len(), c.vocab_size);
        let max_diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: max |logit - HF f32| over the vocabulary = {max_diff:.2e}");
        assert!(max_diff < 1e-3, "{name}: max logit diff {max_diff}");
        for pair in p["top_logits"].as_array().unwrap() {
            let (id, v) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap(),
            );
            assert!(
                (f64::from(logits[id]) - v).abs() < 1e-3,
                "{name}: top logit {id}"
            );
        }
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
        let hf = ids(&p["greedy_hf"]);
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        let eos = [reference()["eos_id"].as_u64().unwrap() as u32];
        let ours = generate(w, &prompt, hf.len(), &eos, &mut s, &mut lin, &mut |_| {
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(ours, hf, "{name}: greedy continuation vs HF");
        let cpp = ids(&p["greedy_llamacpp"]);
        let agree = ours.iter().zip(&cpp).take_while(|(a, b)| a == b).count();
        eprintln!(
            "{name}: greedy agrees with llama.cpp for {agree} of {} tokens (its max logit diff {})",
            cpp.len(),
            p["llamacpp_max_abs_logit_diff"]
        );
    }
}

#[test]
fn decode_path_logits_match_transformers_f32_too() {
    // The prompt one token at a time: the direct quantized dot products, not the tiles.
    let w = weights();
    let p = &array("prompts")[0];
    let prompt = ids(&p["ids"]);
    let mut lin = QuantLinear::new(w);
    let mut cache = KvCache::new(w.config(), prompt.len());
    let mut logits = Vec::new();
    for &id in &prompt {
        logits = forward(w, &[id], &mut cache, &mut lin, Logits::Last).unwrap();
    }
    let expected = read_logits(p["logits_file"].as_str().unwrap());
    let max_diff = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "{}: token-by-token max |logit - HF f32| = {max_diff:.2e}",
        p["name"]
    );
    assert!(max_diff < 1e-3);
}
