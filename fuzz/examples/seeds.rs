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
use selene_linalg::{Client, LinalgPreset, MatrixShape, Method, PreparedMatrix, Server};
use selene_protocol::{encode_release, Policy};

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
    let w: Vec<f32> = (0..16 * 8)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let m = PreparedMatrix::new(params, &w, shape, Method::Coefficients, 1)?;
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

fn main() -> Res<()> {
    let dir = std::env::args().nth(1).ok_or("usage: seeds DIR")?;
    let dir = Path::new(&dir);
    let sets = [
        LinalgPreset::Coeff11.build()?,
        selene_ckks::Preset::Test12.build()?,
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
    Ok(())
}
