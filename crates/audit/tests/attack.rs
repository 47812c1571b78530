//! The attacks on the real model (fetched through the store on first use).
//!
//! They check what the audit's table rests on: exact inversion recovers a known prompt from
//! its layer-1 states; the probe beats chance by a wide margin at K = 0; the view
//! applies the protocol's default flooding. They train probes at K <= 2 only, so the
//! whole file runs in well under a minute.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selene_audit::candidates::{run_candidates, CandidateStates};
use selene_audit::corpus::evaluation_prompts;
use selene_audit::dense::DenseLinear;
use selene_audit::inversion::{invert, InversionConfig};
use selene_audit::probe::{EmbeddingTable, ProbeTrainer, Similarity};
use selene_audit::runner::{tokenize, train_probes};
use selene_audit::view::{clean_states, observe, AttackerView, DEFAULT_FLOOD_SIGMA};
use selene_model::{store, KvCache, Tokenizer, Weights};

const KNOWN: &str = "Patient Maria Keller, born 14 March 1962, was diagnosed with type 2 diabetes.";

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| store::load(None).expect("model through the store"))
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(weights().gguf()).expect("tokenizer"))
}

fn embeddings() -> &'static EmbeddingTable {
    static E: OnceLock<EmbeddingTable> = OnceLock::new();
    E.get_or_init(|| EmbeddingTable::from_weights(weights()).expect("embedding table"))
}

/// Probes for K = 0, 1, 2 trained on the repo's training corpus (shared by the tests).
fn trainer() -> &'static ProbeTrainer {
    static P: OnceLock<ProbeTrainer> = OnceLock::new();
    P.get_or_init(|| {
        let w = weights();
        let mut dense = DenseLinear::new(w, 2).unwrap();
        train_probes(
            w,
            tokenizer(),
            &mut dense,
            embeddings(),
            &[0, 1, 2],
            &mut |_| {},
        )
        .unwrap()
    })
}

#[test]
fn exact_inversion_recovers_a_known_prompt_from_layer_1_states() {
    let w = weights();
    let tokens = tokenizer().encode(KNOWN).unwrap();
    let mut dense = DenseLinear::new(w, 1).unwrap();
    for sigma in [0.0, DEFAULT_FLOOD_SIGMA] {
        let probe = trainer().probe(1, 1e-3, sigma, Similarity::Cosine).unwrap();
        let view = observe(w, &tokens, 1, sigma, &mut ChaCha8Rng::seed_from_u64(11)).unwrap();
        let inv = invert(
            w,
            &mut dense,
            &probe,
            embeddings(),
            &view,
            &InversionConfig::default(),
        )
        .unwrap();
        assert_eq!(
            inv.tokens, tokens,
            "sigma {sigma}: every token must come back"
        );
        assert!(
            inv.matched.iter().all(|&m| m),
            "sigma {sigma}: every position matched within the bound"
        );
        assert_eq!(tokenizer().decode(&inv.tokens).unwrap(), KNOWN);
    }
}

#[test]
fn probe_beats_chance_by_a_wide_margin_at_layer_0() {
    let w = weights();
    let prompts = tokenize(tokenizer(), &evaluation_prompts()[..30]).unwrap();
    let probe = trainer().probe(0, 1e-3, 0.0, Similarity::Cosine).unwrap();
    let (mut hits, mut n) = (0usize, 0usize);
    for p in &prompts {
        let states = clean_states(w, &p.tokens, &[0]).unwrap();
        let ranks = probe.rank(&states[0], embeddings(), 1).unwrap();
        hits += ranks
            .iter()
            .zip(&p.tokens)
            .filter(|(r, t)| r[0] == **t)
            .count();
        n += p.tokens.len();
    }
    let rate = hits as f64 / n as f64;
    // Chance is 1 / 49,152 ~ 2e-5; the probe (trained on disjoint text) gets ~100%.
    assert!(n > 500, "{n} tokens scored");
    assert!(
        rate > 0.95,
        "probe top-1 at K = 0: {rate:.4} over {n} tokens"
    );
}

#[test]
fn the_view_applies_the_default_flooding() {
    let w = weights();
    let tokens = tokenizer().encode(KNOWN).unwrap();
    let clean = clean_states(w, &tokens, &[1]).unwrap().remove(0);
    let view = observe(
        w,
        &tokens,
        1,
        DEFAULT_FLOOD_SIGMA,
        &mut ChaCha8Rng::seed_from_u64(5),
    )
    .unwrap();
    assert_eq!(view.n_tokens, tokens.len());
    assert_eq!(view.flood_sigma, DEFAULT_FLOOD_SIGMA);
    assert_eq!(view.hidden.len(), clean.len());
    let diffs: Vec<f64> = view
        .hidden
        .iter()
        .zip(&clean)
        .map(|(a, b)| f64::from(a - b))
        .collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    // n ~ 14,000 values: the sample sd is within ~1% of sigma, the mean within ~1e-4.
    assert!(
        (sd / DEFAULT_FLOOD_SIGMA - 1.0).abs() < 0.05,
        "noise sd {sd}"
    );
    assert!(mean.abs() < 5e-4, "noise mean {mean}");
    assert!(
        diffs.iter().filter(|d| **d == 0.0).count() < 20,
        "every value must be flooded"
    );
    // Without flooding the view is exactly the model's residual stream.
    let plain =
        AttackerView::from_clean(&clean, 576, 1, 0.0, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    assert_eq!(plain.hidden, clean);
}

/// The attacker's batched, prefix-cached evaluation must agree with the model's causal
/// forward pass, or exact matching could not work: the true token among decoys matches
/// its clean state at every position, the decoys do not.
fn check_candidates_reproduce_states(w: &Weights, t: &Tokenizer, k: usize) {
    let tokens = t.encode(KNOWN).unwrap();
    let (d, vocab) = (w.config().d_model, w.config().vocab_size as u32);
    let clean = clean_states(w, &tokens, &[k]).unwrap().remove(0);
    let mut dense = DenseLinear::new(w, k).unwrap();
    let mut cache = KvCache::new(w.config(), tokens.len());
    let mut states = CandidateStates::default();
    for (t, &tok) in tokens.iter().enumerate() {
        let batch = [tok, (tok + 1) % vocab, (tok + 977) % vocab];
        run_candidates(
            w,
            &mut dense,
            &cache,
            k,
            &batch,
            &mut states,
            &mut |_, _| {},
        )
        .unwrap();
        let obs = &clean[t * d..(t + 1) * d];
        let norm = obs
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        let rel = |i: usize| {
            states
                .hidden(i)
                .iter()
                .zip(obs)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt()
                / norm
        };
        assert!(
            rel(0) < 1e-5,
            "position {t}: true token differs by {:.2e}",
            rel(0)
        );
        assert!(
            rel(1) > 1e-3 && rel(2) > 1e-3,
            "position {t}: decoys too close ({:.2e}, {:.2e})",
            rel(1),
            rel(2)
        );
        states.kv_of(0).unwrap().append_to(&mut cache).unwrap();
    }
}

#[test]
fn candidate_batches_reproduce_the_models_own_states() {
    check_candidates_reproduce_states(weights(), tokenizer(), 2);
}

#[test]
fn candidate_batches_reproduce_qwen2_states_too() {
    // qwen2 adds q/k/v biases and rotates halves (NEOX RoPE): the attacker's evaluation
    // must follow the architecture, or the audit's exact inversion never matches on it.
    use selene_model::store::{ModelSource, QWEN_CODER_05B};
    if !store::home().join(QWEN_CODER_05B.file).exists() && std::env::var_os("CI").is_none() {
        eprintln!(
            "skipped: {} is not in the store and CI is not set",
            QWEN_CODER_05B.name
        );
        return;
    }
    let w = store::load_source(&ModelSource::Known(&QWEN_CODER_05B)).unwrap();
    let t = Tokenizer::from_gguf(w.gguf()).unwrap();
    check_candidates_reproduce_states(&w, &t, 2);
}
