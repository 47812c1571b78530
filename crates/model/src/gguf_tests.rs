use super::*;

/// Writes GGUF v3 bytes for tests.
pub(crate) struct Builder {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            kv: Vec::new(),
            n_kv: 0,
            tensors: Vec::new(),
        }
    }

    /// Adds a key with a raw type id and raw value bytes.
    pub(crate) fn raw(mut self, key: &str, type_id: u32, value: &[u8]) -> Self {
        put_str(&mut self.kv, key);
        self.kv.extend_from_slice(&type_id.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }

    pub(crate) fn u32(self, key: &str, v: u32) -> Self {
        self.raw(key, 4, &v.to_le_bytes())
    }

    pub(crate) fn string(self, key: &str, v: &str) -> Self {
        let mut b = Vec::new();
        put_str(&mut b, v);
        self.raw(key, 8, &b)
    }

    pub(crate) fn strings(self, key: &str, items: &[&str]) -> Self {
        let mut b = Vec::new();
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            put_str(&mut b, s);
        }
        self.raw(key, 9, &b)
    }

    pub(crate) fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), type_id, data));
        self
    }

    pub(crate) fn f32_tensor(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, 0, data)
    }

    pub(crate) fn build(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kv);
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, type_id, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }
}

fn sample() -> Vec<u8> {
    Builder::new()
        .u32("general.alignment", 32)
        .string("general.name", "tiny")
        .strings("tokens", &["a", "b"])
        .raw("nested", 9, &{
            // an array of two arrays of u8
            let mut b = Vec::new();
            b.extend_from_slice(&9u32.to_le_bytes());
            b.extend_from_slice(&2u64.to_le_bytes());
            for n in [1u8, 2] {
                b.extend_from_slice(&0u32.to_le_bytes());
                b.extend_from_slice(&(n as u64).to_le_bytes());
                b.extend(std::iter::repeat_n(7u8, n as usize));
            }
            b
        })
        .raw("b", 7, &[1])
        .raw("f64", 12, &1.5f64.to_le_bytes())
        .raw("i64", 11, &(-3i64).to_le_bytes())
        .raw("u16", 2, &9u16.to_le_bytes())
        .f32_tensor("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .f32_tensor("v", &[4], &[7.0; 4])
        .build()
}

#[test]
fn parses_every_value_type_and_tensor_index() {
    let g = Gguf::parse(sample()).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata("general.name").unwrap().as_str(), Some("tiny"));
    assert_eq!(g.metadata("b").unwrap().as_bool(), Some(true));
    assert_eq!(g.metadata("f64").unwrap().as_f64(), Some(1.5));
    assert_eq!(g.metadata("i64").unwrap().as_f64(), Some(-3.0));
    assert_eq!(g.metadata("u16").unwrap().as_u64(), Some(9));
    let nested = g.metadata("nested").unwrap().as_array().unwrap();
    assert_eq!(nested[1], Value::Array(vec![Value::U8(7), Value::U8(7)]));
    let w = g.tensor("w").unwrap();
    assert_eq!((w.row_len(), w.n_rows()), (2, 3));
    let data = g.tensor_data("v").unwrap();
    assert_eq!(&data[..4], &7.0f32.to_le_bytes());
    assert_eq!(g.data_offset() % 32, 0);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = sample();
    for cut in 0..bytes.len() {
        let r = Gguf::parse(bytes[..cut].to_vec());
        assert!(r.is_err(), "cut at {cut} parsed");
    }
}

#[test]
fn truncated_data_names_the_offset() {
    let mut bytes = sample();
    bytes.truncate(bytes.len() - 4);
    let err = Gguf::parse(bytes).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                what: "tensor data",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("truncated at offset"));
}

#[test]
fn tensor_offset_near_u64_max_is_an_error() {
    // Found by the fuzzer: the offset plus the data start overflowed.
    let mut bytes = Builder::new().f32_tensor("t", &[8], &[0.0; 8]).build();
    // Header 24 bytes, then name (8 + 1), n_dims (4), one dim (8), type (4), offset.
    let pos = 24 + 9 + 4 + 8 + 4;
    assert_eq!(bytes[pos..pos + 8], [0; 8]);
    bytes[pos..pos + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert!(Gguf::parse(bytes).is_err());
}

#[test]
fn corrupt_header_is_rejected() {
    let mut bytes = sample();
    bytes[0] = b'X';
    assert!(matches!(
        Gguf::parse(bytes).unwrap_err(),
        Error::BadMagic { .. }
    ));
    let mut bytes = sample();
    bytes[4] = 9;
    assert!(matches!(
        Gguf::parse(bytes).unwrap_err(),
        Error::UnsupportedVersion { version: 9 }
    ));
    // A metadata count that claims far more entries than the file could hold.
    let mut bytes = sample();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        Gguf::parse(bytes).unwrap_err(),
        Error::TooLarge { .. }
    ));
    let mut bytes = sample();
    bytes[16..24].copy_from_slice(&1000u64.to_le_bytes());
    assert!(Gguf::parse(bytes).is_err());
}

#[test]
fn huge_string_length_is_refused_before_allocation() {
    let mut b = Vec::new();
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let bytes = Builder::new().raw("s", 8, &b).build();
    assert!(matches!(
        Gguf::parse(bytes).unwrap_err(),
        Error::TooLarge { .. }
    ));
}

#[test]
fn unknown_value_type_is_named() {
    let bytes = Builder::new().raw("x", 77, &[0; 8]).build();
    assert!(matches!(
        Gguf::parse(bytes).unwrap_err(),
        Error::UnknownValueType { type_id: 77, .. }
    ));
}

#[test]
fn unknown_tensor_type_is_named() {
    let bytes = Builder::new().tensor("t", &[32], 99, vec![0; 64]).build();
    let err = Gguf::parse(bytes).unwrap_err();
    assert!(matches!(err, Error::UnknownTensorType { type_id: 99, .. }));
    assert!(err
        .to_string()
        .contains("unknown tensor type 99 for tensor t"));
}

#[test]
fn missing_tensor_is_named() {
    let g = Gguf::parse(sample()).unwrap();
    let err = g.tensor("blk.0.attn_q.weight").unwrap_err();
    assert_eq!(err.to_string(), "missing tensor blk.0.attn_q.weight");
}

#[test]
fn deep_nesting_is_refused() {
    let mut v = Vec::new();
    for _ in 0..6 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    // The outer type id is written by `raw`; drop the first one here.
    let bytes = Builder::new().raw("deep", 9, &v[4..]).build();
    assert!(matches!(
        Gguf::parse(bytes).unwrap_err(),
        Error::TooLarge { .. }
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// Any corruption of a valid file parses or errors; it never panics.
    #[test]
    fn mutated_files_never_panic(flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8)) {
        let mut bytes = sample();
        for (at, v) in flips {
            let n = bytes.len();
            bytes[at % n] = v;
        }
        let _ = Gguf::parse(bytes);
    }
}

#[test]
fn config_is_read_and_validated() {
    use crate::config::Config;
    let base = || {
        Builder::new()
            .string("general.architecture", "llama")
            .u32("llama.embedding_length", 64)
            .u32("llama.feed_forward_length", 128)
            .u32("llama.block_count", 2)
            .u32("llama.context_length", 256)
            .raw(
                "llama.attention.layer_norm_rms_epsilon",
                6,
                &1e-5f32.to_le_bytes(),
            )
            .u32("llama.attention.head_count", 4)
    };
    let embd = |b: Builder| b.tensor("token_embd.weight", &[64, 10], 0, vec![0; 64 * 10 * 4]);
    let g = Gguf::parse(embd(base().u32("llama.attention.head_count_kv", 2)).build()).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!(
        (c.head_dim, c.kv_dim(), c.qkv_dim(), c.vocab_size),
        (16, 32, 128, 10)
    );
    assert_eq!(c.rope_theta, 10_000.0);
    let g = Gguf::parse(embd(base().u32("llama.attention.head_count_kv", 3)).build()).unwrap();
    assert!(matches!(
        Config::from_gguf(&g),
        Err(Error::BadConfig { .. })
    ));
    let g = Gguf::parse(embd(base()).build()).unwrap();
    assert!(matches!(
        Config::from_gguf(&g),
        Err(Error::MissingKey {
            key: "llama.attention.head_count_kv"
        })
    ));
    let g = Gguf::parse(base().u32("llama.attention.head_count_kv", 2).build()).unwrap();
    assert!(matches!(
        Config::from_gguf(&g),
        Err(Error::MissingTensor { .. })
    ));
}

#[test]
fn qwen2_keys_are_read_and_other_architectures_refused_by_name() {
    use crate::config::{Arch, Config};
    let with = |arch: &str| {
        let k = |s: &str| format!("{arch}.{s}");
        Builder::new()
            .string("general.architecture", arch)
            .u32(&k("embedding_length"), 64)
            .u32(&k("feed_forward_length"), 128)
            .u32(&k("block_count"), 2)
            .u32(&k("context_length"), 256)
            .raw(
                &k("attention.layer_norm_rms_epsilon"),
                6,
                &1e-6f32.to_le_bytes(),
            )
            .raw(&k("rope.freq_base"), 6, &1e6f32.to_le_bytes())
            .u32(&k("attention.head_count"), 4)
            .u32(&k("attention.head_count_kv"), 2)
            .tensor("token_embd.weight", &[64, 10], 0, vec![0; 64 * 10 * 4])
            .build()
    };
    let c = Config::from_gguf(&Gguf::parse(with("qwen2")).unwrap()).unwrap();
    assert_eq!((c.arch, c.rope_theta, c.head_dim), (Arch::Qwen2, 1e6, 16));
    assert!(c.arch.rope_neox() && !Arch::Llama.rope_neox());
    let err = Config::from_gguf(&Gguf::parse(with("mamba")).unwrap()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedArchitecture { ref name } if name == "mamba"));
    assert!(err.to_string().contains("\"mamba\""), "{err}");
}

#[test]
fn read_selected_reads_the_index_and_only_the_chosen_tensors() {
    let bytes = sample();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let whole = Gguf::parse(bytes.clone()).unwrap();
    // A first read of 16 bytes makes the header parse fail short and grow until it fits.
    for first in [16, 1 << 20] {
        let g = Gguf::read_selected_from(&path, &|t| t.name == "v", first).unwrap();
        assert_eq!(g.tensor_data("v").unwrap(), whole.tensor_data("v").unwrap());
        assert!(matches!(g.tensor_data("w"), Err(Error::NotLoaded { .. })));
        assert!(matches!(
            g.tensor_data("x"),
            Err(Error::MissingTensor { .. })
        ));
        assert_eq!(g.index_sha256(), whole.index_sha256());
        assert_eq!(g.metadata("general.name"), whole.metadata("general.name"));
        assert_eq!(g.file_len(), bytes.len() as u64);
        assert_eq!(g.bytes().len(), 16);
        let copy = whole.select(&|t| t.name == "v");
        assert_eq!(copy.bytes(), g.bytes());
        assert!(copy.bytes_read() <= g.bytes_read());
    }
    // A truncated file is refused as by `parse`, whatever the first read.
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    for first in [16, 1 << 20] {
        let err = Gguf::read_selected_from(&path, &|_| false, first).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
    }
    std::fs::write(&path, b"GGU").unwrap();
    assert!(Gguf::read_selected(&path, &|_| true).is_err());
}
