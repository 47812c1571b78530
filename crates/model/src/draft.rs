//! Several tokens per model pass without a second model: prompt-lookup drafting.
//!
//! The draft is the text that followed the most recent earlier occurrence of the longest
//! n-gram ending the sequence so far (prompt and generated text): extraction and
//! summarisation quote their input, so the model's next tokens are often a copy
//! (Saxena, "Prompt lookup decoding", 2023). One pass runs the last token and the
//! `k` drafted ones; position `i`'s logits check draft token `i` ([`Sampler::verify`]),
//! the longest accepted prefix is kept plus one token from the first rejected position
//! (or one after the last draft), and the cache forgets the rest. Greedy output is
//! identical to one token per pass; sampled output has the same distribution.
//!
//! Every pass has exactly `k + 1` rows (a short or missing draft is padded with the
//! last token and its rows discarded), so whoever runs the products learns the number
//! of passes and nothing about how much of each draft was accepted.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::forward::{forward, Logits};
use crate::generate::OnToken;
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::sampling::Sampler;
use crate::weights::Weights;

/// Longest n-gram the lookup tries to match (then shorter ones, down to one token).
pub const MAX_NGRAM: usize = 3;
/// Most tokens a draft may hold.
pub const MAX_DRAFT: usize = 16;

/// Prompt-lookup drafting of up to `k` tokens per pass (`--draft prompt-lookup:K`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptLookup {
    k: usize,
}

impl PromptLookup {
    /// Drafts of up to `k` tokens (1 to [`MAX_DRAFT`]).
    ///
    /// # Errors
    /// [`Error::BadDraft`] for `k` out of range.
    pub fn new(k: usize) -> Result<Self> {
        if !(1..=MAX_DRAFT).contains(&k) {
            return Err(Error::BadDraft {
                draft: format!("prompt-lookup:{k}"),
                why: "K must be 1 to 16",
            });
        }
        Ok(Self { k })
    }

    /// Most drafted tokens per pass (the pass has `k + 1` rows).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Up to `max` tokens that followed the most recent earlier occurrence of the
    /// longest suffix n-gram of `history` (n = [`MAX_NGRAM`] down to 1); empty when
    /// nothing matches.
    pub fn propose(&self, history: &[u32], max: usize) -> Vec<u32> {
        let len = history.len();
        let max = max.min(self.k);
        if max == 0 {
            return Vec::new();
        }
        for n in (1..=MAX_NGRAM.min(len.saturating_sub(1))).rev() {
            let suffix = &history[len - n..];
            // Earlier starts only, most recent first; a match must be followed by at
            // least one token.
            let found = (0..len - n).rev().find(|&i| &history[i..i + n] == suffix);
            if let Some(i) = found {
                let from = i + n;
                return history[from..(from + max).min(len)].to_vec();
            }
        }
        Vec::new()
    }
}

impl FromStr for PromptLookup {
    type Err = Error;

    /// `prompt-lookup:K`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why| Error::BadDraft {
            draft: s.chars().take(64).collect(),
            why,
        };
        let k = s
            .strip_prefix("prompt-lookup:")
            .ok_or_else(|| bad("expected prompt-lookup:K"))?
            .parse::<usize>()
            .map_err(|_| bad("K must be a whole number"))?;
        Self::new(k)
    }
}

/// What drafting achieved in one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DraftStats {
    /// Model passes after the prompt's (each produced at least one token).
    pub passes: usize,
    /// Drafted tokens checked.
    pub drafted: usize,
    /// Drafted tokens accepted.
    pub accepted: usize,
    /// Padding rows run and discarded (a short or missing draft).
    pub padding: usize,
}

/// What a drafted generation runs on: new positions in, their logits out, and a way to
/// forget positions a rejected draft occupied.
pub trait DraftTarget<E> {
    /// Runs `ids` as the next positions; `Logits::Last` returns one row, `Logits::All`
    /// one per id (row-major).
    ///
    /// # Errors
    /// Whatever the model fails with.
    fn run(&mut self, ids: &[u32], logits: Logits) -> std::result::Result<Vec<f32>, E>;

    /// Forgets the last `n` positions run.
    fn forget(&mut self, n: usize);
}

/// The plain model over a KV cache and any [`Linear`]: the target of `selene plain` and
/// of strict mode (whose server keeps no per-position state, so forgetting is local).
pub struct CachedModel<'a> {
    /// The weights the client computes with.
    pub w: &'a Weights,
    /// The cache positions go to.
    pub cache: &'a mut KvCache,
    /// Where the products run.
    pub linear: &'a mut dyn Linear,
}

impl DraftTarget<Error> for CachedModel<'_> {
    fn run(&mut self, ids: &[u32], logits: Logits) -> Result<Vec<f32>> {
        forward(self.w, ids, self.cache, self.linear, logits)
    }

    fn forget(&mut self, n: usize) {
        let len = self.cache.len().saturating_sub(n);
        self.cache.truncate(len);
    }
}

/// The token loop with prompt-lookup drafts: as [`crate::generate_with`] (same
/// stopping, same callback per token), each pass running the last token and a padded
/// draft of `lookup.k()` tokens. The target must hold `lookup.k()` positions beyond
/// `prompt.len() + max_tokens`.
///
/// # Errors
/// [`Error::Empty`] for an empty prompt, and whatever the target or `on_token` return.
#[allow(
    clippy::too_many_arguments,
    reason = "the token loop's inputs and the draft's, each needed"
)]
pub fn generate_drafted<E: From<Error>>(
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    lookup: &PromptLookup,
    vocab: usize,
    target: &mut dyn DraftTarget<E>,
    on_token: &mut OnToken<'_, E>,
) -> std::result::Result<(Vec<u32>, DraftStats), E> {
    if prompt.is_empty() {
        return Err(Error::Empty { what: "prompt" }.into());
    }
    let mut stats = DraftStats::default();
    let mut out = Vec::with_capacity(max_tokens);
    if max_tokens == 0 {
        return Ok((out, stats));
    }
    let mut history = prompt.to_vec();
    let logits = target.run(prompt, Logits::Last)?;
    let mut next = sampler.sample(&logits)?;
    loop {
        out.push(next);
        history.push(next);
        if on_token(next)?.is_break() || out.len() >= max_tokens || stop.contains(&next) {
            return Ok((out, stats));
        }
        // The pass emits at most draft + 1 tokens; never draft past max_tokens.
        let draft = lookup.propose(&history, max_tokens - out.len() - 1);
        let mut rows = Vec::with_capacity(lookup.k() + 1);
        rows.push(next);
        rows.extend_from_slice(&draft);
        let padding = lookup.k() - draft.len();
        rows.resize(lookup.k() + 1, next);
        let logits = target.run(&rows, Logits::All)?;
        if logits.len() != rows.len() * vocab {
            return Err(Error::Shape {
                what: "drafted pass logits",
                found: logits.len(),
                expected: rows.len() * vocab,
            }
            .into());
        }
        stats.passes += 1;
        stats.drafted += draft.len();
        stats.padding += padding;
        // Row i predicts the token after rows[i]; it checks draft[i].
        let mut accepted = 0;
        let mut emit = Vec::with_capacity(draft.len() + 1);
        for (i, row) in logits.chunks_exact(vocab).take(draft.len() + 1).enumerate() {
            match draft.get(i) {
                Some(&d) => {
                    let (tok, ok) = sampler.verify(row, d)?;
                    emit.push(tok);
                    if !ok {
                        break;
                    }
                    accepted += 1;
                }
                None => emit.push(sampler.sample(row)?),
            }
        }
        stats.accepted += accepted;
        // Keep the last token's row and the accepted drafts' rows.
        target.forget(rows.len() - 1 - accepted);
        let (last, accepted_tokens) = emit.split_last().ok_or(Error::Empty { what: "pass" })?;
        for &tok in accepted_tokens {
            out.push(tok);
            history.push(tok);
            if on_token(tok)?.is_break() || out.len() >= max_tokens || stop.contains(&tok) {
                return Ok((out, stats));
            }
        }
        next = *last;
    }
}

/// The prompts of a workload file like `testdata/extraction.txt`: separated by lines
/// holding only `---`, with `#` comment lines before the first prompt.
pub fn workload_prompts(text: &str) -> Vec<String> {
    let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with('#')).collect();
    body.split(|l| l.trim() == "---")
        .map(|p| p.join("\n").trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_copies_what_followed_the_longest_recent_match() {
        let d = PromptLookup::new(3).unwrap();
        // ... 7 8 9 | 1 2 7 8 -> the bigram 7 8 matched at 0: 9 1 2.
        assert_eq!(d.propose(&[7, 8, 9, 1, 2, 7, 8], 3), vec![9, 1, 2]);
        // The most recent match wins: 5 follows the later 4.
        assert_eq!(d.propose(&[4, 1, 4, 5, 4], 3), vec![5, 4]);
        // Capped by max and by k.
        assert_eq!(d.propose(&[7, 8, 9, 1, 2, 7, 8], 1), vec![9]);
        assert!(d.propose(&[1, 2, 3], 3).is_empty());
        assert!(d.propose(&[1], 3).is_empty());
        assert!(d.propose(&[1, 1], 0).is_empty());
    }

    #[test]
    fn workload_files_split_into_prompts() {
        let p = workload_prompts("# c\n# c2\nfirst\nline\n---\nsecond\n---\n\n");
        assert_eq!(p, vec!["first\nline".to_string(), "second".to_string()]);
    }

    #[test]
    fn the_flag_parses_and_bad_ones_are_refused() {
        assert_eq!("prompt-lookup:4".parse::<PromptLookup>().unwrap().k(), 4);
        for bad in [
            "prompt-lookup:0",
            "prompt-lookup:17",
            "prompt-lookup:x",
            "ngram:3",
        ] {
            assert!(bad.parse::<PromptLookup>().is_err(), "{bad}");
        }
    }
}
