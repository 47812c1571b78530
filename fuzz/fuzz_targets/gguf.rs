//! GGUF reader: any bytes parse or fail with an error, never a panic or an abort; a
//! file that parses also survives the model and tokenizer constructors.
//!
//! (GGUF has no encoder in Selene, so there is no round trip to check.) Run with
//! `scripts/fuzz/smoke.sh` or `scripts/fuzz/long.sh` (docs/hardening.md); the seed is a
//! small synthetic GGUF from `fuzz/examples/seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(g) = selene_model::Gguf::parse(data.to_vec()) {
        let _ = selene_model::Tokenizer::from_gguf(&g);
        let _ = selene_model::Weights::from_gguf(g);
    }
});
