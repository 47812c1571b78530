//! GGUF reader: any bytes parse or fail with an error, never a panic or an abort; a
//! file that parses also survives the model and tokenizer constructors.
//!
//! Run: `cargo +nightly fuzz run gguf` from `fuzz/`; seed `fuzz/corpus/gguf/` with small
//! valid files (e.g. the unit tests' synthetic GGUFs, or a real header cut after the
//! tensor index).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(g) = selene_model::Gguf::parse(data.to_vec()) {
        let _ = selene_model::Tokenizer::from_gguf(&g);
        let _ = selene_model::Weights::from_gguf(g);
    }
});
