//! The client bundle against the full model: what it reads from the file, and that what
//! it holds is bit-identical to the full load's.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use selene_model::store::{self, MODEL_FINGERPRINT};
use selene_model::*;

/// Serializes the tests: the first counts this process's reads, the other reads the
/// whole file.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Bytes this process has read through `read` system calls (Linux `/proc/self/io`
/// `rchar`), if the kernel says.
fn rchar() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Most of the model file a client bundle may read (issue 17: the embedding, Q8_0,
/// is about 30.6% of SmolLM2's file; the header and index about 2%).
const MAX_READ_FRACTION: f64 = 0.35;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn client_bundle_reads_no_layer_matrix_and_equals_the_full_load() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let path = store::home().join(store::MODEL_FILE);
    store::locate_in(&store::home(), std::ffi::OsStr::new("python3")).unwrap();
    let before = rchar();
    let bundle = Weights::load_client(&path).unwrap();
    let after = rchar();
    let full = store::load(None).expect("model through the store");

    let g = bundle.gguf();
    // The kernel's count of the bytes read agrees with the loader's own, up to the
    // first `/proc/self/io` read itself (about 100 bytes, counted once it returns).
    if let (Some(a), Some(b)) = (before, after) {
        eprintln!("rchar: {} bytes read by load_client", b - a);
        assert!(
            (g.bytes_read()..g.bytes_read() + 4096).contains(&(b - a)),
            "the kernel counted {} bytes, the loader {}",
            b - a,
            g.bytes_read()
        );
    }
    let fraction = g.bytes_read() as f64 / g.file_len() as f64;
    eprintln!(
        "client bundle: read {} of {} bytes ({:.1}%), holds {} bytes of tensor data",
        g.bytes_read(),
        g.file_len(),
        100.0 * fraction,
        g.bytes().len()
    );
    assert!(
        fraction <= MAX_READ_FRACTION,
        "read {fraction:.3} of the file"
    );
    assert_eq!(g.file_len(), full.gguf().bytes().len() as u64);
    assert!(full.has_layer_matrices());
    assert!(!bundle.has_layer_matrices());

    // Every layer matrix is absent, every client tensor present and bit-identical.
    for t in g.tensors() {
        let name = t.name.as_str();
        let client = is_client_tensor(t);
        match g.tensor_data(name) {
            Ok(data) => {
                assert!(client, "{name} was read");
                assert_eq!(data, full.gguf().tensor_data(name).unwrap(), "{name}");
            }
            Err(Error::NotLoaded { .. }) => assert!(!client, "{name} missing"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let c = full.config();
    assert_eq!(bundle.config(), c);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for l in 0..c.n_layers {
        assert_eq!(
            bits(bundle.attn_norm(l).unwrap()),
            bits(full.attn_norm(l).unwrap())
        );
        assert_eq!(
            bits(bundle.ffn_norm(l).unwrap()),
            bits(full.ffn_norm(l).unwrap())
        );
        for stage in [LinearStage::Qkv, LinearStage::Down] {
            let err = bundle.stage_matrices(l, stage).unwrap_err();
            assert!(matches!(err, Error::NotLoaded { .. }), "{err}");
        }
    }
    assert_eq!(bits(bundle.output_norm()), bits(full.output_norm()));
    let head = |w: &Weights| w.stage_weight_f32(0, LinearStage::LmHead).unwrap();
    assert_eq!(bits(&head(&bundle)), bits(&head(&full)));
    let tokens: Vec<u32> = vec![0, 1, 504, 12_345, c.vocab_size as u32 - 1];
    let embed = |w: &Weights| {
        let mut x = vec![0.0; tokens.len() * c.d_model];
        w.embed(&tokens, &mut x).unwrap();
        x
    };
    assert_eq!(bits(&embed(&bundle)), bits(&embed(&full)));

    // Same fingerprint from the file, from memory and from the full model; the store's
    // client path checks it against the pinned value.
    assert_eq!(bundle.fingerprint(), full.fingerprint());
    let copied = full.client_bundle().unwrap();
    assert_eq!(copied.fingerprint(), full.fingerprint());
    assert!(!copied.has_layer_matrices());
    assert_eq!(copied.gguf().bytes(), g.bytes());
    assert_eq!(hex(&full.fingerprint()), MODEL_FINGERPRINT);
    let stored = store::load_client(None).unwrap();
    assert_eq!(stored.fingerprint(), full.fingerprint());
}

#[test]
fn bundle_of_a_changed_file_has_another_fingerprint() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // One byte of the embedding flipped in a copy of the file: the bundle's fingerprint
    // changes; one byte of a layer matrix flipped: it does not (not covered).
    let path = store::home().join(store::MODEL_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let g = Gguf::parse(bytes.clone()).unwrap();
    let at = |name: &str| g.data_offset() + g.tensor(name).unwrap().offset as usize + 7;
    let reference = Weights::load_client(&path).unwrap().fingerprint();
    let dir = tempfile::tempdir().unwrap();
    let fp_with_flip = |offset: usize| {
        let mut b = bytes.clone();
        b[offset] ^= 1;
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, &b).unwrap();
        Weights::load_client(&p).unwrap().fingerprint()
    };
    assert_ne!(fp_with_flip(at("token_embd.weight")), reference);
    assert_ne!(fp_with_flip(at("blk.3.ffn_norm.weight")), reference);
    assert_eq!(fp_with_flip(at("blk.3.ffn_down.weight")), reference);
}
