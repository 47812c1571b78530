//! Prompt-lookup drafts on the real model: the drafted token loop produces exactly the
//! greedy tokens of one token per pass, on the extraction workload whose answers quote
//! their inputs, and it does use the drafts there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;

use selene_model::draft::workload_prompts;
use selene_model::*;

const WORKLOAD: &str = include_str!("../../../testdata/extraction.txt");
const TOKENS: usize = 40;

#[test]
fn drafted_greedy_generation_equals_plain_greedy_generation() {
    let w = store::load(None).expect("model through the store");
    let t = Tokenizer::from_gguf(w.gguf()).unwrap();
    let c = w.config();
    let lookup = PromptLookup::new(4).unwrap();
    let mut total = DraftStats::default();
    let mut generated = 0;
    for prompt in workload_prompts(WORKLOAD) {
        let text = apply_chat_template(&[Message::new(Role::User, prompt.as_str())], true);
        let ids = t.encode(&text).unwrap();
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        let plain = generate(
            &w,
            &ids,
            TOKENS,
            t.eos_ids(),
            &mut s,
            &mut QuantLinear::new(&w),
            &mut |_| Ok(ControlFlow::Continue(())),
        )
        .unwrap();
        let mut cache = KvCache::new(c, ids.len() + TOKENS + lookup.k());
        let mut linear = QuantLinear::new(&w);
        let mut target = CachedModel {
            w: &w,
            cache: &mut cache,
            linear: &mut linear,
        };
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        let mut seen = Vec::new();
        let (drafted, stats) = generate_drafted(
            &ids,
            TOKENS,
            t.eos_ids(),
            &mut s,
            &lookup,
            c.vocab_size,
            &mut target,
            &mut |id| -> Result<ControlFlow<()>> {
                seen.push(id);
                Ok(ControlFlow::Continue(()))
            },
        )
        .unwrap();
        assert_eq!(drafted, plain, "prompt {prompt:?}");
        assert_eq!(seen, plain, "the callback sees every token once, in order");
        // Every pass after the first token emits at least one token.
        assert!(stats.passes < plain.len().max(1), "{stats:?}");
        eprintln!(
            "{} tokens in {} passes after the prompt's, {} of {} drafted accepted",
            plain.len(),
            stats.passes,
            stats.accepted,
            stats.drafted
        );
        generated += plain.len();
        total.passes += stats.passes;
        total.drafted += stats.drafted;
        total.accepted += stats.accepted;
    }
    // Quoting workloads must gain: fewer passes than tokens after the first.
    let after_first = generated - workload_prompts(WORKLOAD).len();
    assert!(
        total.passes * 5 < after_first * 4,
        "{total:?} for {after_first} tokens after the first: drafts barely help"
    );
}
