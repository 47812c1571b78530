//! Measures one packed product per tiling of SmolLM2's six product shapes (the four
//! stages and the two stacked fused pairs) at `coeff12pack` and fits the packed cost
//! model's server constants (`crates/linalg/src/tiling.rs`) by least squares:
//! `server = a (in_blocks x blocks) + b key_switches + c in_blocks + d`, in ms.
//!
//! `cargo run --release -p selene-linalg --example sweep [PRESET]` (2 threads, as the
//! reference machine's server; `RAYON_NUM_THREADS` to change; `PRESET` another packing
//! preset, e.g. `coeff12widepack`). Weights and inputs are synthetic: the time of a
//! product does not depend on the values.

use std::sync::Arc;
use std::time::Instant;

use selene_linalg::tiling::Tiling;
use selene_linalg::{Client, LinalgPreset, MatrixShape, PreparedMatrix, Server};

/// SmolLM2's product shapes `(d_in, d_out)`: q|k|v, o, gate|up, down, then the stacked
/// `AttnGate` and `DownQkv` pairs.
const SHAPES: [(usize, usize); 6] = [
    (576, 960),
    (576, 576),
    (576, 3072),
    (1536, 576),
    (1152, 3072),
    (2112, 960),
];
/// Repetitions per tiling; the median is kept.
const REPS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Solves the normal equations `A^T A c = A^T y` by Gaussian elimination.
fn least_squares(rows: &[[f64; 4]], y: &[f64]) -> [f64; 4] {
    let mut m = [[0.0f64; 5]; 4];
    for (r, &yv) in rows.iter().zip(y) {
        for i in 0..4 {
            for j in 0..4 {
                m[i][j] += r[i] * r[j];
            }
            m[i][4] += r[i] * yv;
        }
    }
    for col in 0..4 {
        let pivot = (col..4)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (r, row) in m.iter_mut().enumerate() {
            if r != col && pivot_row[col] != 0.0 {
                let f = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    std::array::from_fn(|i| {
        if m[i][i] == 0.0 {
            0.0
        } else {
            m[i][4] / m[i][i]
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let preset: LinalgPreset = match std::env::args().nth(1) {
        Some(name) => name.parse()?,
        None => LinalgPreset::Coeff12Pack,
    };
    let params = preset.build()?;
    let n = params.n();
    let (mut features, mut server_ms, mut enc, mut dec) = (vec![], vec![], vec![], vec![]);
    println!("d_in d_out k_i | in_blocks blocks key_switches | server_ms enc_ms dec_ms | up_bytes down_bytes");
    for (d_in, d_out) in SHAPES {
        let w: Vec<f32> = (0..d_in * d_out)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let x: Vec<f32> = (0..d_in).map(|i| (i as f32).sin()).collect();
        let shape = MatrixShape::new(d_in, d_out);
        let mut k_i = 64;
        while k_i < 2 * d_in && k_i <= n {
            let t = Tiling {
                n_b: 1,
                k_i,
                k_o: (n / k_i).min(d_out),
            };
            k_i *= 2;
            let m = PreparedMatrix::with_packed_tiling(&params, &w, shape, t)?;
            let layout = m.layout().clone();
            let mut client = Client::new(&params);
            let gks = Arc::new(client.galois_keys(&[&layout]));
            let server = Server::new(&params).with_galois_keys(gks);
            let (mut s, mut e, mut d) = (vec![], vec![], vec![]);
            let (mut up, mut down) = (0, 0);
            for _ in 0..REPS {
                let t0 = Instant::now();
                let (input, scales) = client.encode_encrypt(&x, 1, &layout)?;
                e.push(t0.elapsed().as_secs_f64() * 1e3);
                let t0 = Instant::now();
                let out = server.apply(&m, &input)?;
                s.push(t0.elapsed().as_secs_f64() * 1e3);
                let t0 = Instant::now();
                client.decrypt_decode(&out, &scales, &layout)?;
                d.push(t0.elapsed().as_secs_f64() * 1e3);
                (up, down) = (input.wire_bytes(&params), out.wire_bytes());
            }
            let (bi, packed) = (t.in_blocks(d_in), t.packed_cts(d_out));
            let (ks, blocks) = t.packed_work(d_in, d_out, selene_linalg::coeff::packing(&params));
            let (s, e, d) = (median(s), median(e), median(d));
            println!(
                "{d_in} {d_out} {} | {bi} {blocks} {ks} | {s:.3} {e:.3} {d:.3} | {up} {down}",
                t.k_i
            );
            features.push([(bi * blocks) as f64, ks as f64, bi as f64, 1.0]);
            server_ms.push(s);
            enc.push(e / bi as f64);
            dec.push(d / packed as f64);
        }
    }
    let c = least_squares(&features, &server_ms);
    let per_coeff = |ms: f64| ms * 1e6 / n as f64;
    println!(
        "fit (ns per coefficient, wall): multiply-add {:.2}, key switch {:.1}, per uploaded \
         ciphertext {:.1}, constant {:.3} ms",
        per_coeff(c[0]),
        per_coeff(c[1]),
        per_coeff(c[2]),
        c[3]
    );
    let worst = features
        .iter()
        .zip(&server_ms)
        .map(|(f, &y)| {
            let p: f64 = f.iter().zip(&c).map(|(a, b)| a * b).sum();
            (p - y).abs() / y
        })
        .fold(0.0f64, f64::max);
    println!("worst relative residual {:.0}%", worst * 100.0);
    println!(
        "client (ns per coefficient, wall): encryption {:.1} per uploaded ciphertext, \
         decryption {:.1} per download",
        per_coeff(median(enc)),
        per_coeff(median(dec))
    );
    Ok(())
}
