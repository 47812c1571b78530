//! Measures the key hierarchy's costs: session key generation per preset, the
//! evaluation keys a session uploads per preset (bytes and generation time), keystore
//! key wrap/unwrap with each backend, and keystore open.
//!
//! `cargo run --release -p selene-keys --example key_costs` (needs SoftHSM2 for the
//! PKCS#11 rows; SELENE_SKIP_PKCS11=1 leaves them out). Timings are medians; on a
//! shared machine they are indicative only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "measurement tool"
)]

#[path = "../tests/softhsm/mod.rs"]
mod softhsm;

use std::time::Instant;

use selene_ckks::GaloisKeys;
use selene_keys::{
    AuthPin, KdfParams, KeyBytes, Keystore, OwnerPolicy, PassphraseRoot, Pkcs11Root, RootKey,
    SessionKey, TokenLocation, Unlock,
};
use selene_linalg::{LinalgPreset, MatrixShape, Method, PreparedMatrix};

fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

/// SmolLM2-135M's four encrypted products per layer: [q|k|v], o, [gate|up], down.
const SHAPES: [(usize, usize); 4] = [(576, 960), (576, 576), (576, 3072), (1536, 576)];

fn main() {
    println!("| what | preset / backend | median | notes |");
    println!("|---|---|---|---|");
    for preset in [
        LinalgPreset::Coeff11,
        LinalgPreset::Coeff12,
        LinalgPreset::Slots13,
    ] {
        let name = preset.name();
        let params = preset.build().unwrap();
        let ms = median_ms(9, || {
            let k = SessionKey::fresh(&params);
            std::hint::black_box(k.secret_key(&params).unwrap());
        });
        println!("| session secret key (seed + SecretKey::from_seed) | {name} | {ms:.2} ms | |");
        let steps: Vec<i64> = if preset.method() == Method::Slots {
            let mut steps = Vec::new();
            for (d_in, d_out) in SHAPES {
                let w = vec![0.01f32; d_in * d_out];
                let m = PreparedMatrix::new(
                    &params,
                    &w,
                    MatrixShape::new(d_in, d_out),
                    Method::Slots,
                    1,
                )
                .unwrap();
                steps.extend(m.layout().rotation_steps());
            }
            steps.sort_unstable();
            steps.dedup();
            steps
        } else {
            Vec::new()
        };
        let sk = SessionKey::fresh(&params).secret_key(&params).unwrap();
        let t = Instant::now();
        let gks = GaloisKeys::new(&sk, &steps, false);
        let gen_s = t.elapsed().as_secs_f64();
        let bytes: usize = gks
            .elements()
            .map(|g| gks.get(g).unwrap().encode().len())
            .sum();
        println!(
            "| evaluation keys uploaded per session | {name} | {:.2} s | {} Galois keys, {:.2} MB |",
            gen_s,
            steps.len(),
            bytes as f64 / 1e6
        );
    }

    let t = Instant::now();
    let mut root = PassphraseRoot::create(b"measure the kdf", KdfParams::DEFAULT, "P").unwrap();
    println!(
        "| root key derivation (Argon2id 64 MiB, t = 3) | passphrase | {:.0} ms | once per open |",
        t.elapsed().as_secs_f64() * 1e3
    );
    wrap_rows("passphrase (XChaCha20-Poly1305)", &mut root);

    if let Some(hsm) = softhsm::softhsm() {
        let at = TokenLocation {
            module: hsm.module.clone(),
            slot: None,
            serial: None,
            label: Some("t-roundtrip".to_string()),
        };
        let pin = AuthPin::from(softhsm::PIN);
        let t = Instant::now();
        let mut root = Pkcs11Root::create(&at, &pin, "P", "measure").unwrap();
        println!(
            "| root key generation on the token + login | pkcs11 (SoftHSM2) | {:.1} ms | once per identity |",
            t.elapsed().as_secs_f64() * 1e3
        );
        wrap_rows("pkcs11 (SoftHSM2, CKM_AES_KEY_WRAP_PAD)", &mut root);
        let dir = tempfile::tempdir().unwrap();
        drop(
            Keystore::init(
                dir.path(),
                "measure",
                Box::new(root),
                &OwnerPolicy::strict(),
            )
            .unwrap(),
        );
        let ms = median_ms(9, || {
            Keystore::open(
                dir.path(),
                Unlock::Pin {
                    pin: &pin,
                    module: None,
                },
            )
            .unwrap();
        });
        println!("| keystore open (login, find root, unwrap, verify MACs) | pkcs11 (SoftHSM2) | {ms:.1} ms | |");
    }
}

fn wrap_rows(backend: &str, root: &mut dyn RootKey) {
    let k = KeyBytes::random();
    let ms = median_ms(101, || {
        std::hint::black_box(root.wrap(&k, b"context").unwrap());
    });
    println!("| wrap keystore key | {backend} | {:.1} us | |", ms * 1e3);
    let w = root.wrap(&k, b"context").unwrap();
    let ms = median_ms(101, || {
        std::hint::black_box(root.unwrap(&w, b"context").unwrap());
    });
    println!("| unwrap keystore key | {backend} | {:.1} us | |", ms * 1e3);
}
