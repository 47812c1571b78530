//! The model's tokenizer, built from the GGUF metadata with the `tokenizers` crate.
//!
//! GPT-2-style byte-level BPE from `tokenizer.ggml.tokens` and `.merges`; tokens of
//! type 3 (control) are registered as special tokens, so `<|im_start|>` in a text
//! encodes to its single id. Pre-tokenizer by `tokenizer.ggml.pre`: `qwen2` splits with
//! Qwen2's regex ([`QWEN2_PATTERN`]: single digits, letters with one leading
//! non-letter, punctuation runs, newline runs) and then maps bytes without GPT-2's
//! regex; anything else (SmolLM2's `smollm`) splits digits one by one, then applies
//! GPT-2's byte-level split without a prefix space. No BOS is added (`add_bos_token` is
//! false in both models).

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, Value};

/// GGUF token type of control (special) tokens.
const TOKEN_TYPE_CONTROL: u64 = 3;

/// Qwen2's pre-tokenizer regex (its `tokenizer.json`; llama.cpp's `qwen2`).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Encoder and decoder for the model's vocabulary.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Raw bytes of each token (byte-level alphabet undone; specials as their text).
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    eos: Vec<u32>,
    chat: ChatTemplate,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.bytes.len())
            .field("eos", &self.eos)
            .finish()
    }
}

fn strings<'a>(g: &'a Gguf, key: &'static str) -> Result<Vec<&'a str>> {
    let arr = g
        .metadata(key)
        .ok_or(Error::MissingKey { key })?
        .as_array()
        .ok_or(Error::WrongType {
            key,
            expected: "an array of strings",
        })?;
    arr.iter()
        .map(|v| {
            v.as_str().ok_or(Error::WrongType {
                key,
                expected: "an array of strings",
            })
        })
        .collect()
}

/// GPT-2's reversible byte-to-character map, inverted: the byte each alphabet
/// character stands for (Radford et al., 2019, `bytes_to_unicode`).
fn unicode_to_byte(c: char) -> Option<u8> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let cp = u32::from(c);
    if cp < 256 && printable(cp) {
        return u8::try_from(cp).ok();
    }
    // The other 68 bytes map, in increasing order, to 256, 257, ...
    let k = cp.checked_sub(256)?;
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(k as usize)
        .and_then(|b| u8::try_from(b).ok())
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF's `tokenizer.ggml.*` metadata.
    ///
    /// # Errors
    /// Missing or mistyped keys, a model other than `gpt2`, merges that are not two
    /// tokens, or an error from the `tokenizers` crate.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let key = "tokenizer.ggml.model";
        if g.metadata(key).and_then(Value::as_str) != Some("gpt2") {
            return Err(Error::WrongType {
                key,
                expected: "\"gpt2\" (byte-level BPE)",
            });
        }
        let tokens = strings(g, "tokenizer.ggml.tokens")?;
        let merges = strings(g, "tokenizer.ggml.merges")?;
        let key = "tokenizer.ggml.token_type";
        let types: Vec<u64> = match g.metadata(key).and_then(Value::as_array) {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::BadVocab {
                reason: "token_type and tokens differ in length",
                index: types.len(),
            });
        }
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or(Error::BadVocab {
                        reason: "merge is not two space-separated tokens",
                        index: i,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(Error::Tokenizer)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre = match g.metadata("tokenizer.ggml.pre").and_then(Value::as_str) {
            Some("qwen2") => Sequence::new(vec![
                PreTokenizerWrapper::Split(
                    Split::new(
                        SplitPattern::Regex(QWEN2_PATTERN.into()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(Error::Tokenizer)?,
                ),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
            ]),
            _ => Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            ]),
        };
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect();
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&special)
            .filter(|(_, &s)| s)
            .map(|(t, _)| AddedToken::from(t.to_string(), true))
            .collect();
        let _ = inner.add_special_tokens(added);
        let bytes = tokens
            .iter()
            .zip(&special)
            .map(|(t, &s)| {
                if s {
                    t.as_bytes().to_vec()
                } else {
                    // A character outside the alphabet keeps its UTF-8 bytes.
                    t.chars()
                        .flat_map(|c| match unicode_to_byte(c) {
                            Some(b) => vec![b],
                            None => c.to_string().into_bytes(),
                        })
                        .collect()
                }
            })
            .collect();
        let mut eos = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if let Some(id) = g.metadata(key).and_then(Value::as_u64) {
                eos.push(id as u32);
            }
        }
        // The instruct model ends its turns with <|im_end|>; <|endoftext|> ends documents.
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(i) = tokens.iter().position(|x| *x == t) {
                eos.push(i as u32);
            }
        }
        eos.sort_unstable();
        eos.dedup();
        Ok(Tokenizer {
            inner,
            bytes,
            special,
            eos,
            chat: ChatTemplate::from_gguf(g)?,
        })
    }

    /// The model's chat template (from the same GGUF).
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// Token ids of `text` (special tokens in the text map to their ids; no BOS).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] from the `tokenizers` crate.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(Error::Tokenizer)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The raw bytes of a token (special tokens as their text).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`].
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or(Error::TokenOutOfRange {
                id,
                vocab: self.bytes.len(),
            })
    }

    /// The text of `ids` (special tokens included as text; invalid UTF-8 replaced).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`].
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut raw = Vec::new();
        for &id in ids {
            raw.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    /// True for control tokens (`<|im_start|>`, ...).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Ids that end generation (`<|im_end|>`, `<|endoftext|>`).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// The id of a token given by its exact text, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }
}

/// Turns a stream of token ids into text without splitting a UTF-8 character: bytes
/// of an incomplete character wait for the next token.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Adds a token and returns the text that is now complete (possibly empty).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`].
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.pending.extend_from_slice(tok.token_bytes(id)?);
        Ok(self.take_complete(false))
    }

    /// Returns whatever is left, invalid bytes replaced by U+FFFD.
    pub fn finish(&mut self) -> String {
        self.take_complete(true)
    }

    fn take_complete(&mut self, flush: bool) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: from_utf8 vouched for the prefix.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // A broken sequence in the middle: replace it and go on.
                        Some(bad) => {
                            out.push('\u{fffd}');
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None if !flush => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        None => {
                            out.push('\u{fffd}');
                            self.pending.clear();
                            return out;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_inverse() {
        assert_eq!(unicode_to_byte('Ġ'), Some(b' '));
        assert_eq!(unicode_to_byte('Ċ'), Some(b'\n'));
        assert_eq!(unicode_to_byte('ĉ'), Some(b'\t'));
        assert_eq!(unicode_to_byte('A'), Some(b'A'));
        assert_eq!(unicode_to_byte('Ā'), Some(0));
        assert_eq!(unicode_to_byte('\u{4e00}'), None);
        let mut seen = [false; 256];
        for cp in 0..400u32 {
            if let Some(b) = char::from_u32(cp).and_then(unicode_to_byte) {
                assert!(!seen[b as usize]);
                seen[b as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
