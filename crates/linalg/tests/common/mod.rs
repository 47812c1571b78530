//! Shared helpers: the f64 reference product and the precision metric.

// Each test binary uses a different subset.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use selene_ckks::{GaloisKeys, Parameters};
use selene_linalg::{
    Client, EncryptedInput, EncryptedOutput, Layout, MatrixShape, Method, PreparedMatrix, Server,
};

/// `Y = X W` in f64, `W` given as `d_out` rows of `d_in`.
pub fn reference(x: &[f32], w_rows: &[f32], shape: MatrixShape) -> Vec<f64> {
    let n = x.len() / shape.d_in;
    let mut y = vec![0.0; n * shape.d_out];
    for t in 0..n {
        let xt = &x[t * shape.d_in..(t + 1) * shape.d_in];
        for j in 0..shape.d_out {
            let wj = &w_rows[j * shape.d_in..(j + 1) * shape.d_in];
            y[t * shape.d_out + j] = xt
                .iter()
                .zip(wj)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
        }
    }
    y
}

/// `max |got - want| / (||x_t|| ||w_j||)` over all outputs.
pub fn max_rel_error(x: &[f32], w_rows: &[f32], shape: MatrixShape, got: &[f64]) -> f64 {
    let want = reference(x, w_rows, shape);
    let norm = |v: &[f32]| v.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
    let n = x.len() / shape.d_in;
    let mut worst: f64 = 0.0;
    for t in 0..n {
        let nx = norm(&x[t * shape.d_in..(t + 1) * shape.d_in]);
        for j in 0..shape.d_out {
            let nw = norm(&w_rows[j * shape.d_in..(j + 1) * shape.d_in]);
            let e = (got[t * shape.d_out + j] - want[t * shape.d_out + j]).abs();
            if nx * nw > 0.0 {
                worst = worst.max(e / (nx * nw));
            }
        }
    }
    worst
}

/// One full round trip through the wire format: prepare, encrypt, serialize, parse,
/// apply, serialize, parse, decrypt. Returns `Y` and the bytes up and down.
pub fn round_trip(
    params: &Arc<Parameters>,
    w_rows: &[f32],
    shape: MatrixShape,
    method: Method,
    x: &[f32],
    n: usize,
) -> (Vec<f64>, usize, usize) {
    let m = PreparedMatrix::new(params, w_rows, shape, method, 1).unwrap();
    let mut client = Client::new(params);
    let layout: &Layout = m.layout();
    let mut server = Server::new(params);
    if method == Method::Slots || !layout.pack_galois_elements(params.log_n()).is_empty() {
        let gks: GaloisKeys = client.galois_keys(&[layout]);
        server = server.with_galois_keys(Arc::new(gks));
    }
    let (input, scales) = client.encode_encrypt(x, n, layout).unwrap();
    let up = input.to_bytes(params);
    let input = EncryptedInput::from_bytes(&up, params).unwrap();
    let out = server.apply(&m, &input).unwrap();
    let down = out.to_bytes();
    assert_eq!(down.len(), out.wire_bytes());
    let out = EncryptedOutput::from_bytes(&down, params).unwrap();
    let y = client.decrypt_decode(&out, &scales, layout).unwrap();
    (y, up.len(), down.len())
}

/// Deterministic pseudo-random values in `[-1, 1)`.
pub fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}
