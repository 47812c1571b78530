//! SmolLM2-135M-Instruct (Llama architecture) in f32: model store, GGUF reader,
//! tokenizer and a forward pass exposed stage by stage. Knows nothing of HE.
