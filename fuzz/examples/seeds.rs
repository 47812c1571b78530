//! Writes seed corpora for every fuzz target from real encodings:
//! `cargo run --release --example seeds -- DIR` fills `DIR/<target>/`. The committed
//! `fuzz/seeds/` holds the small ones (scripts/fuzz/seeds.sh).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use selene_ckks::{
    Encoder, Encoding, Encryptor, Evaluator, GaloisKeys, Parameters, PublicKey, RelinKey, Scale,
    SecretKey,
};
use selene_keys::log::{LogEntry, ReleaseLog};
use selene_keys::{
    envelope, KdfParams, KeyBytes, Keystore, OwnerPolicy, PassphraseRoot, SessionKey,
};
use selene_linalg::{Client, LinalgPreset, MatrixShape, Method, PreparedMatrix, Server};
use selene_model::{FusedPair, LinearStage};
use selene_protocol::policy::Tensor;
use selene_protocol::wire::{
    self, Ahead, ErrorCode, EvalKey, Frame, Hello, Message, ModelFacts, ProductRequest,
    SessionLimits, Welcome, WIRE_VERSION,
};
use selene_protocol::{encode_release, Policy, PrefixKv, PrefixLimits, Product};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> Res<()> {
    let d = dir.join(target);
    fs::create_dir_all(&d)?;
    fs::write(d.join(name), bytes)?;
    Ok(())
}

/// `selector` byte then the object's bytes (the targets' input form).
fn with_selector(selector: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend_from_slice(bytes);
    v
}

fn ckks(dir: &Path, selector: u8, params: &Arc<Parameters>) -> Res<()> {
    let sk = Arc::new(SecretKey::from_seed(params, &[selector + 1; 32]));
    let pk = PublicKey::new(&sk);
    let encoder = Encoder::new(params)?;
    let mut enc = Encryptor::with_secret_key(sk.clone());
    let scale = Scale(params.default_scale());
    for level in [0, params.max_level()] {
        let pt = encoder.encode(&[0.5, -0.25, 1.0], level, scale, Encoding::Slots)?;
        let ct = enc.encrypt(&pt);
        let tag = format!("p{selector}_l{level}");
        write(
            dir,
            "ckks_ciphertext",
            &format!("{tag}_seeded"),
            &with_selector(selector, &ct.encode(params)),
        )?;
        // A fresh one-prime ciphertext may ship `c0` rounded (flag 3).
        if level == 0 {
            write(
                dir,
                "ckks_ciphertext",
                &format!("{tag}_rounded"),
                &with_selector(selector, &ct.encode_rounded(params, 8)?),
            )?;
        }
        // A sum drops the seed: both components ship in full.
        let sum = Evaluator::new(params).add(&ct, &ct)?;
        write(
            dir,
            "ckks_ciphertext",
            &format!("{tag}_full"),
            &with_selector(selector, &sum.encode(params)),
        )?;
    }
    write(
        dir,
        "ckks_public_key",
        &format!("p{selector}"),
        &with_selector(selector, &pk.encode()),
    )?;
    let rlk = RelinKey::new(&sk);
    write(
        dir,
        "ckks_relin_key",
        &format!("p{selector}"),
        &with_selector(selector, &rlk.encode()),
    )?;
    let gks = GaloisKeys::new(&sk, &[1], true);
    for g in gks.elements() {
        if let Some(gk) = gks.get(g) {
            write(
                dir,
                "ckks_galois_key",
                &format!("p{selector}_g{g}"),
                &with_selector(selector, &gk.encode()),
            )?;
        }
    }
    // Parameter literals: log N, log scale, dnum, security, Q sizes, 0, P sizes.
    let lit = params.literal();
    let mut p = vec![
        lit.log_n as u8,
        lit.log_scale as u8,
        lit.dnum.unwrap_or(0) as u8,
        0,
    ];
    p.extend(lit.log_q.iter().map(|&b| b as u8));
    p.push(0);
    p.extend(lit.log_p.iter().map(|&b| b as u8));
    write(dir, "ckks_parameters", &format!("p{selector}"), &p)?;
    Ok(())
}

fn linalg(dir: &Path, selector: u8, params: &Arc<Parameters>) -> Res<()> {
    let shape = MatrixShape::new(16, 8);
    let w = selene_fuzz::stream_weights();
    let m = PreparedMatrix::new(params, &w, shape, Method::Coefficients, 1)?;
    write(
        dir,
        "linalg_layout",
        &format!("p{selector}_coeff"),
        &with_selector(selector, &m.layout().to_bytes()),
    )?;
    let mut client = Client::new(params);
    for n in [1, 2] {
        let x: Vec<f32> = (0..16 * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let (input, _) = client.encode_encrypt(&x, n, m.layout())?;
        let out = Server::new(params).apply(&m, &input)?;
        let tag = format!("p{selector}_n{n}");
        write(
            dir,
            "linalg_input",
            &tag,
            &with_selector(selector, &input.to_bytes(params)),
        )?;
        write(
            dir,
            "linalg_output",
            &tag,
            &with_selector(selector, &out.to_bytes()),
        )?;
        // The stream target's first byte spaces its cuts: every 38 bytes.
        write(
            dir,
            "linalg_stream",
            &tag,
            &with_selector(1, &input.to_bytes(params)),
        )?;
    }
    Ok(())
}

/// A small GGUF v3: a few `llama.*` keys, a string array, one F32 tensor.
fn gguf() -> Vec<u8> {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&4u64.to_le_bytes()); // metadata entries
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    string(&mut b, "llama");
    string(&mut b, "llama.block_count");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    string(&mut b, "llama.attention.layer_norm_rms_epsilon");
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&1e-5f32.to_le_bytes());
    string(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&3u64.to_le_bytes());
    for t in ["a", "b", "ab"] {
        string(&mut b, t);
    }
    string(&mut b, "output_norm.weight");
    b.extend_from_slice(&1u32.to_le_bytes()); // dims
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for v in [1.0f32, 0.5, -0.5, 2.0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// One block per format (selector byte first, as the `quant_blocks` target reads it):
/// scales 0.5 (f16 0x3800) and a ramp of quants.
fn quant_blocks() -> Vec<(&'static str, Vec<u8>)> {
    let ramp = |n: usize| (0..n).map(|i| (i * 37 % 256) as u8).collect::<Vec<u8>>();
    let with = |sel: u8, parts: &[&[u8]]| {
        let mut v = vec![sel];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    let half = [0x00u8, 0x38];
    vec![
        ("q8_0", with(0, &[&half, &ramp(32)])),
        ("q4_1", with(1, &[&half, &half, &ramp(16)])),
        ("q5_0", with(2, &[&half, &ramp(4), &ramp(16)])),
        ("q4_k", with(3, &[&half, &half, &ramp(12), &ramp(128)])),
        ("q6_k", with(4, &[&ramp(128), &ramp(64), &ramp(16), &half])),
    ]
}

/// Every frame kind; the opaque payloads are real encodings where the seeds have one.
/// The `galois_key_set` seeds: the full expected set, and one key short.
fn galois_key_set(dir: &Path, selector: u8, params: &Arc<Parameters>) -> Res<()> {
    let sk = SecretKey::from_seed(params, &[selector + 7; 32]);
    let mut keys = GaloisKeys::default();
    let elements = selene_fuzz::pack_elements(params);
    for &g in &elements {
        keys.insert(selene_ckks::GaloisKey::new(&sk, g));
    }
    let bytes = selene_protocol::codec::keys::encode_galois_keys(&keys);
    write(
        dir,
        "galois_key_set",
        &format!("p{selector}_full"),
        &with_selector(selector, &bytes),
    )?;
    let mut short = GaloisKeys::default();
    short.insert(selene_ckks::GaloisKey::new(&sk, elements[0]));
    let bytes = selene_protocol::codec::keys::encode_galois_keys(&short);
    write(
        dir,
        "galois_key_set",
        &format!("p{selector}_short"),
        &with_selector(selector, &bytes),
    )?;
    Ok(())
}

fn wire_frames(dir: &Path, layout: &[u8], input: &[u8], output: &[u8]) -> Res<()> {
    let frames = [
        Message::Hello(Hello {
            protocol: WIRE_VERSION,
            token: b"bearer token".to_vec(),
            policy: Policy::selective(30, 4),
            params_fingerprint: [7; 8],
            context: 64,
            eval_keys: vec![EvalKey {
                kind: 1,
                bytes: vec![1, 2, 3],
            }],
        }),
        Message::Hello(Hello {
            protocol: WIRE_VERSION,
            token: Vec::new(),
            policy: Policy::strict(30),
            params_fingerprint: [0; 8],
            context: 8,
            eval_keys: Vec::new(),
        }),
        Message::Welcome(Welcome {
            session_id: 42,
            model: ModelFacts {
                layers: 30,
                d_model: 576,
                vocab: 49152,
                fingerprint: [3; 32],
            },
            limits: SessionLimits {
                max_message_bytes: 1 << 20,
                max_requests: 1000,
                idle_timeout_ms: 120_000,
                lifetime_ms: 3_600_000,
            },
            layouts: vec![layout.to_vec(), layout.to_vec()],
        }),
        Message::Product {
            layer: 3,
            stage: LinearStage::Qkv,
            ciphertext: input.to_vec(),
        },
        Message::ProductResult {
            ciphertext: output.to_vec(),
        },
        Message::GaloisKeys {
            bytes: vec![1, 0, 0, 0, 4, 0, 0, 0, 9, 9, 9, 9],
        },
        Message::KeysAccepted,
        Message::Release {
            bytes: encode_release(&[0.5, -1.0, 2.0, 0.25], 1, 4),
        },
        Message::Logits {
            values: vec![0.1, -3.5, 7.25],
        },
        Message::HiddenState {
            values: vec![1.0, 0.0, -0.0, 1e-3],
        },
        Message::Close,
        Message::error(ErrorCode::BadPayload, "ciphertext rejected"),
        Message::PublicPrefix {
            tokens: vec![1, 9690, 2, 49151],
        },
        Message::PrefixKv {
            bytes: b"SELP opaque to the wire".to_vec(),
        },
        // A fused pair's request and its answer (version-2 frames).
        Message::Products {
            items: vec![
                ProductRequest {
                    layer: 2,
                    product: Product::Stage(LinearStage::AttnOut),
                    ciphertext: vec![1; 24],
                },
                ProductRequest {
                    layer: 2,
                    product: Product::Fused(FusedPair::AttnGate),
                    ciphertext: vec![2; 16],
                },
                ProductRequest {
                    layer: 2,
                    product: Product::Stage(LinearStage::GateUp),
                    ciphertext: vec![3; 8],
                },
            ],
        },
        Message::ProductResults {
            ciphertexts: vec![vec![6; 20], Vec::new(), vec![7; 5]],
        },
        // A version-6 session's answers to a release (version-6 frames).
        Message::LogitsAhead {
            values: vec![0.1, -3.5, 7.25],
            ahead: Ahead {
                token: 9690,
                qkv: vec![0.5, -0.25, 1.0, 2.0],
            },
        },
        Message::HiddenAhead {
            values: vec![1.0, 0.0, -0.0, 1e-3],
            ahead: Ahead {
                token: 2,
                qkv: vec![0.125, -1.0],
            },
        },
    ];
    for (i, message) in frames.into_iter().enumerate() {
        let kind = message.kind();
        let bytes = wire::encode(&Frame {
            request_id: i as u64 + 1,
            message,
        })?;
        // The target's cap is 64 * (selector + 1): the smallest that admits the frame.
        let sel = ((bytes.len() - 4).div_ceil(64) - 1).min(255) as u8;
        assert!(wire::decode(&bytes, &selene_fuzz::wire_limits(sel)).is_ok());
        write(
            dir,
            "wire",
            &format!("{i:02}_{kind:?}"),
            &with_selector(sel, &bytes),
        )?;
    }
    Ok(())
}

/// `SELP` blobs at SmolLM2's shape, written from the documented layout (the type has
/// no public constructor but the plaintext run) and checked by the decoder.
fn prefix_kv(dir: &Path) -> Res<()> {
    let c = selene_fuzz::smollm2_config();
    let limits = PrefixLimits {
        max_positions: selene_fuzz::PREFIX_MAX_POSITIONS,
    };
    for (first, count, positions) in [(0u32, 1u32, 1u32), (28, 2, 1), (4, 1, 3)] {
        let mut b = b"SELP".to_vec();
        b.extend_from_slice(&1u16.to_le_bytes()); // version
        b.extend_from_slice(&1u16.to_le_bytes()); // kind: f32
        for v in [first, count, positions, c.kv_dim() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let values = count as usize * 2 * positions as usize * c.kv_dim();
        for i in 0..values {
            b.extend_from_slice(&((i % 97) as f32 * 0.125 - 6.0).to_le_bytes());
        }
        let kv = PrefixKv::from_bytes(&b, &c, &limits)?;
        assert_eq!(kv.to_bytes(), b);
        write(
            dir,
            "prefix_kv",
            &format!("l{first}_n{count}_p{positions}"),
            &b,
        )?;
    }
    Ok(())
}

/// A real keystore (passphrase root at the test-only KDF cost), release log, head,
/// owner policies and an envelope; selector bytes as `selene_fuzz::KeystoreFormat`.
fn keystore(dir: &Path) -> Res<()> {
    let tmp = std::env::temp_dir().join(format!("selene-fuzz-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let policy = OwnerPolicy::selective(4, 0.5, 100, 200);
    let root = PassphraseRoot::create(b"fuzz seed passphrase", KdfParams::INSECURE_TEST, "P")?;
    let mut ks = Keystore::init(&tmp.join("ks"), "alice", Box::new(root), &policy)?;
    write(
        dir,
        "keystore",
        "file_empty",
        &with_selector(0, &fs::read(tmp.join("ks").join("keystore.bin"))?),
    )?;
    for preset in [LinalgPreset::Coeff12, LinalgPreset::Coeff11] {
        let params = preset.build()?;
        ks.persist_session(&SessionKey::fresh(&params))?;
    }
    write(
        dir,
        "keystore",
        "file_sessions",
        &with_selector(0, &fs::read(tmp.join("ks").join("keystore.bin"))?),
    )?;

    let log_path = tmp.join("releases.log");
    let (mut log, _) = ReleaseLog::open(&log_path, &selene_fuzz::LOG_KEYSTORE_ID)?;
    let mut last = (0, [0; 32]);
    for (i, key) in ["00ff", "a1b2", "00ff"].into_iter().enumerate() {
        last = log.append(LogEntry {
            seq: 0,
            time: 1_700_000_000 + i as u64,
            key: key.to_string(),
            after_layer: 4,
            tensor: Tensor::Residual,
            rows: i as u64 + 1,
            flood_sigma: 0.1 * (i as f64 + 1.0),
            digest: format!("{:064x}", i),
            prev: String::new(),
        })?;
    }
    write(
        dir,
        "keystore",
        "log",
        &with_selector(1, &fs::read(&log_path)?),
    )?;
    let head_key = KeyBytes::from_slice(&[9; 32]).ok_or("key")?;
    selene_keys::log::write_head(&tmp, &head_key, last.0, &last.1)?;
    write(
        dir,
        "keystore",
        "head",
        &with_selector(2, &fs::read(tmp.join(selene_keys::log::HEAD_FILE))?),
    )?;
    for (name, p) in [
        ("policy_selective", policy),
        ("policy_strict", OwnerPolicy::strict()),
    ] {
        write(
            dir,
            "keystore",
            name,
            &with_selector(3, p.to_toml()?.as_bytes()),
        )?;
    }
    let key = KeyBytes::from_slice(&selene_fuzz::ENVELOPE_KEY).ok_or("key")?;
    let sealed = envelope::seal(&key, &[5; 32], selene_fuzz::ENVELOPE_AAD);
    write(dir, "keystore", "envelope", &with_selector(4, &sealed))?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

fn main() -> Res<()> {
    let dir = std::env::args().nth(1).ok_or("usage: seeds DIR")?;
    let dir = Path::new(&dir);
    let sets = [
        LinalgPreset::Coeff11.build()?,
        selene_ckks::ExampleParams::Test12.build()?,
    ];
    for (selector, params) in sets.iter().enumerate() {
        // The targets pick the set with the selector's low bit (selene_fuzz::params).
        assert_eq!(selene_fuzz::params(selector as u8), Some(params));
        ckks(dir, selector as u8, params)?;
        if selector == 0 {
            // The coefficient method needs a one-prime set: Coeff11 only.
            linalg(dir, selector as u8, params)?;
        }
    }
    for (d, n) in [(4usize, 3usize), (64, 2), (1, 1)] {
        let v: Vec<f32> = (0..n * d).map(|i| i as f32 * 0.25 - 1.0).collect();
        // The release target reads `d` as `first byte % 64 + 1`.
        write(
            dir,
            "release",
            &format!("d{d}_n{n}"),
            &with_selector((d - 1) as u8, &encode_release(&v, n, d)),
        )?;
    }
    write(
        dir,
        "policy",
        "strict",
        Policy::strict(30).to_toml()?.as_bytes(),
    )?;
    write(
        dir,
        "policy",
        "selective4",
        Policy::selective(30, 4).to_toml()?.as_bytes(),
    )?;
    write(dir, "gguf", "tiny", &gguf())?;
    for (name, bytes) in quant_blocks() {
        write(dir, "quant_blocks", name, &bytes)?;
    }
    for (selector, params) in sets.iter().enumerate() {
        galois_key_set(dir, selector as u8, params)?;
    }
    prefix_kv(dir)?;
    keystore(dir)?;
    let read = |t: &str, name: &str| -> Res<Vec<u8>> {
        // The linalg seeds of set 0 (Coeff11), without their selector byte.
        Ok(fs::read(dir.join(t).join(name))?[1..].to_vec())
    };
    wire_frames(
        dir,
        &read("linalg_layout", "p0_coeff")?,
        &read("linalg_input", "p0_n1")?,
        &read("linalg_output", "p0_n1")?,
    )?;
    Ok(())
}
