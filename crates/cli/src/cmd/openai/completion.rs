//! From generated token ids to the text a client receives: UTF-8-safe decoding, stop
//! sequences that cut the text, token counts and the finish reason.
//!
//! A stop sequence may span several tokens, so while streaming, text that could be the
//! start of one is held back until the next token shows whether it is; the stop
//! sequence itself is never sent.

use selene_model::{StreamDecoder, Tokenizer};
use serde::Serialize;

/// Why a completion ended, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn token or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens of the templated prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, the end-of-turn token or the one completing a stop sequence
    /// included.
    pub completion_tokens: usize,
    /// The sum.
    pub total_tokens: usize,
}

/// What one token adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Text now safe to send (possibly empty).
    pub delta: String,
    /// Set once the completion has ended; later tokens are ignored.
    pub finished: Option<FinishReason>,
}

/// The state of one completion: feed it ids with [`Completion::push`].
#[derive(Debug)]
pub struct Completion<'t> {
    tokenizer: &'t Tokenizer,
    decoder: StreamDecoder,
    stops: Vec<String>,
    prompt_tokens: usize,
    max_tokens: usize,
    tokens: usize,
    text: String,
    emitted: usize,
    finished: Option<FinishReason>,
}

impl<'t> Completion<'t> {
    /// A completion of at most `max_tokens` tokens after a `prompt_tokens`-token
    /// prompt, ending at the tokenizer's end-of-sequence ids or any of `stops` (empty
    /// strings are ignored).
    pub fn new(
        tokenizer: &'t Tokenizer,
        stops: Vec<String>,
        prompt_tokens: usize,
        max_tokens: usize,
    ) -> Self {
        Self {
            tokenizer,
            decoder: StreamDecoder::new(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            prompt_tokens,
            max_tokens,
            tokens: 0,
            text: String::new(),
            emitted: 0,
            finished: None,
        }
    }

    /// Adds the next generated id.
    ///
    /// # Errors
    /// An id outside the vocabulary.
    pub fn push(&mut self, id: u32) -> selene_model::Result<Step> {
        if self.finished.is_some() {
            return Ok(self.step(String::new()));
        }
        self.tokens += 1;
        if self.tokenizer.eos_ids().contains(&id) {
            return Ok(self.end(FinishReason::Stop));
        }
        let piece = self.decoder.push(self.tokenizer, id)?;
        self.text.push_str(&piece);
        if let Some(at) = self.find_stop() {
            let delta = self.text[self.emitted..at].to_string();
            self.emitted = at;
            self.finished = Some(FinishReason::Stop);
            return Ok(self.step(delta));
        }
        if self.tokens >= self.max_tokens {
            return Ok(self.end(FinishReason::Length));
        }
        let safe = self.safe_end();
        let delta = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        Ok(self.step(delta))
    }

    /// Ends a completion the generator stopped without an end-of-sequence id, a stop
    /// sequence or `max_tokens` (counted as `length`), releasing held-back text.
    pub fn end_early(&mut self) -> Step {
        if self.finished.is_some() {
            return self.step(String::new());
        }
        self.end(FinishReason::Length)
    }

    /// The token counts so far.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.tokens,
            total_tokens: self.prompt_tokens + self.tokens,
        }
    }

    fn step(&self, delta: String) -> Step {
        Step {
            delta,
            finished: self.finished,
        }
    }

    /// Flushes the decoder and everything held back, still cutting at a stop sequence.
    fn end(&mut self, reason: FinishReason) -> Step {
        let rest = self.decoder.finish();
        self.text.push_str(&rest);
        let (at, reason) = match self.find_stop() {
            Some(at) => (at, FinishReason::Stop),
            None => (self.text.len(), reason),
        };
        let delta = self.text[self.emitted..at].to_string();
        self.emitted = at;
        self.finished = Some(reason);
        self.step(delta)
    }

    /// Where the first stop sequence begins in the text not yet sent. Held-back text
    /// always covers any partial match, so no match can begin before `emitted`.
    fn find_stop(&self) -> Option<usize> {
        let pending = &self.text[self.emitted..];
        self.stops
            .iter()
            .filter_map(|s| pending.find(s.as_str()))
            .min()
            .map(|at| self.emitted + at)
    }

    /// The end of the text that can be sent: before the longest pending suffix that is
    /// a proper start of some stop sequence.
    fn safe_end(&self) -> usize {
        let pending = &self.text[self.emitted..];
        pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&pending[i..])))
            .map_or(self.text.len(), |i| self.emitted + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let (_, t) = crate::cmd::args::load(None).unwrap();
        t
    }

    /// Feeds the tokens of `text` (then an end-of-sequence id when `eos`) and returns
    /// the concatenated deltas, the finish reason and the usage.
    fn run(
        t: &Tokenizer,
        text: &str,
        eos: bool,
        stops: &[&str],
        max: usize,
    ) -> (String, Vec<String>, Option<FinishReason>, Usage) {
        let mut ids = t.encode(text).unwrap();
        if eos {
            ids.push(t.eos_ids()[0]);
        }
        let stops = stops.iter().map(|s| s.to_string()).collect();
        let mut c = Completion::new(t, stops, 7, max);
        let mut deltas = Vec::new();
        let mut finished = None;
        for id in ids {
            let step = c.push(id).unwrap();
            if finished.is_none() {
                deltas.push(step.delta);
            }
            finished = finished.or(step.finished);
        }
        if finished.is_none() {
            let step = c.end_early();
            deltas.push(step.delta);
            finished = step.finished;
        }
        (deltas.concat(), deltas, finished, c.usage())
    }

    #[test]
    fn stop_sequences_cut_the_text_even_across_tokens() {
        let t = tokenizer();
        let text = "Paris is the capital of France. It is large.";
        let (out, _, why, usage) = run(&t, text, true, &[], 100);
        assert_eq!((out.as_str(), why), (text, Some(FinishReason::Stop)));
        let n = t.encode(text).unwrap().len();
        assert_eq!(usage.completion_tokens, n + 1, "the end token counts");
        assert_eq!(usage.total_tokens, n + 1 + 7);

        // "capital of" spans tokens; the text stops right before it.
        let (out, deltas, why, usage) = run(&t, text, true, &["capital of", "zzz"], 100);
        assert_eq!(
            (out.as_str(), why),
            ("Paris is the ", Some(FinishReason::Stop))
        );
        assert!(usage.completion_tokens < n, "{usage:?}");
        assert!(deltas.iter().all(|d| !d.contains("capital")), "{deltas:?}");

        // The earliest of several stops wins; one never completed is released at the end.
        let (out, ..) = run(&t, text, true, &["large", "is"], 100);
        assert_eq!(out, "Par", "a stop inside a word cuts there too");
        let (out, ..) = run(&t, text, true, &["large", " is"], 100);
        assert_eq!(out, "Paris");
        let (out, _, why, _) = run(&t, text, true, &["large!"], 100);
        assert_eq!((out.as_str(), why), (text, Some(FinishReason::Stop)));
    }

    #[test]
    fn max_tokens_ends_with_length_and_flushes_held_text() {
        let t = tokenizer();
        let text = "One two three four five six";
        let ids = t.encode(text).unwrap();
        let (out, deltas, why, usage) = run(&t, text, false, &["three!"], 4);
        assert_eq!(
            (out, why),
            (t.decode(&ids[..4]).unwrap(), Some(FinishReason::Length))
        );
        assert_eq!(usage.completion_tokens, 4);
        // "three" could begin "three!": held back after the third token, sent with the
        // fourth once it could not.
        assert!(!deltas[..3].concat().contains("three"), "{deltas:?}");
        assert!(deltas[3].starts_with("three"), "{deltas:?}");
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let t = tokenizer();
        let text = "Grüße 東京 🙂 done";
        let (out, deltas, ..) = run(&t, text, true, &["🙂 d"], 100);
        assert_eq!(out, "Grüße 東京 ");
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
    }
}
