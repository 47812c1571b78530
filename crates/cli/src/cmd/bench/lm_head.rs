//! Where the LM head should run: on the client in plaintext (today's split) or on the
//! server under encryption with packed logits (`coeff12pack`), both measured on the
//! model's real output matrix and a real final hidden state, and compared on a link.
//!
//! The head is `logits = W' (h / rms(h))` with the final norm's gain folded into `W'`
//! (`Weights::stage_weight_folded`): the scalar `1 / rms(h)` is the client's, so the
//! encrypted variant needs nothing the client would not send for any other product.

use std::sync::Arc;
use std::time::Instant;

use selene_linalg::{Client, LinalgPreset, Link, MatrixShape, Method, PreparedMatrix, Server};
use selene_model::forward::rms_norm;
use selene_model::sampling::argmax;
use selene_model::{forward_observed, head, KvCache, LinearStage, Logits, QuantLinear, Weights};
use serde_json::{json, Value};

use super::meter::process_cpu_s;

/// Plaintext head passes averaged for the client's time.
const PLAIN_REPS: usize = 8;
/// Encrypted head passes averaged (after one warm-up).
const ENCRYPTED_REPS: usize = 3;

/// Measures both placements for the last position of `prompt` and returns the row.
pub fn row(w: &Weights, prompt: &[u32], link: &Link) -> anyhow::Result<Value> {
    let c = w.config();
    let (d, v) = (c.d_model, c.vocab_size);
    // The real final residual of the prompt's last position.
    let mut cache = KvCache::new(c, prompt.len());
    let mut hidden = Vec::new();
    forward_observed(
        w,
        prompt,
        &mut cache,
        &mut QuantLinear::new(w),
        Logits::Last,
        &mut |_, x| hidden = x[x.len() - d..].to_vec(),
    )?;

    // Client, plaintext: final norm and the quantized head, as strict mode runs it.
    let mut plain = vec![0.0f32; v];
    let mut lin = QuantLinear::new(w);
    head(w, &hidden, &mut lin, &mut plain)?;
    let cpu0 = process_cpu_s();
    for _ in 0..PLAIN_REPS {
        head(w, &hidden, &mut lin, &mut plain)?;
    }
    let plain_cpu_s = (process_cpu_s() - cpu0) / PLAIN_REPS as f64;
    let head_bytes = w
        .stage_matrices(c.n_layers, LinearStage::LmHead)?
        .iter()
        .map(|m| m.format().row_bytes(m.cols()) * m.rows())
        .sum::<usize>();

    // Server, encrypted: the gain-folded head prepared once with the link's packed plan.
    let params = LinalgPreset::Coeff12Pack.build()?;
    let folded = w.stage_weight_folded(c.n_layers, LinearStage::LmHead)?;
    let shape = MatrixShape::new(d, v);
    let s = Instant::now();
    let m = PreparedMatrix::for_link(&params, &folded, shape, Method::Coefficients, 1, link)?;
    let prepare_s = s.elapsed().as_secs_f64();
    drop(folded);
    let layout = m.layout().clone();
    let mut client = Client::new(&params);
    let s = Instant::now();
    let gks = client.galois_keys(&[&layout]);
    let keygen_s = s.elapsed().as_secs_f64();
    let server = Server::new(&params).with_galois_keys(Arc::new(gks));
    // The client's un-gained norm, as it sends it for every other product.
    let mut xn = vec![0.0f32; d];
    rms_norm(&hidden, d, c.rms_eps, &mut xn);
    let (mut client_s, mut server_s, mut up, mut down) = (0.0, 0.0, 0, 0);
    let mut logits = Vec::new();
    for rep in 0..=ENCRYPTED_REPS {
        let c0 = process_cpu_s();
        let (input, scales) = client.encode_encrypt(&xn, 1, &layout)?;
        let up_bytes = input.to_bytes(&params).len();
        let c1 = process_cpu_s();
        let out = server.apply(&m, &input)?;
        let c2 = process_cpu_s();
        let down_bytes = out.to_bytes().len();
        logits = client.decrypt_decode(&out, &scales, &layout)?;
        let c3 = process_cpu_s();
        if rep > 0 {
            client_s += (c1 - c0) + (c3 - c2);
            server_s += c2 - c1;
            (up, down) = (up_bytes, down_bytes);
        }
    }
    let reps = ENCRYPTED_REPS as f64;
    let (client_s, server_s) = (client_s / reps, server_s / reps);
    let max_err = logits
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - f64::from(*b)).abs())
        .fold(0.0f64, f64::max);
    let decrypted: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
    let same_argmax = argmax(&decrypted) == argmax(&plain);
    // The encrypted head adds one round trip per pass (it needs the last layer's output).
    let encrypted_link_s = client_s + server_s + link.seconds(up as f64, down as f64, 1.0);
    let choice = if plain_cpu_s <= encrypted_link_s {
        "client"
    } else {
        "server"
    };
    Ok(json!({
        "mode": "lm_head",
        "d_model": d,
        "vocab": v,
        "link": link.to_string(),
        "client_plain_cpu_s": plain_cpu_s,
        "client_head_bytes": head_bytes,
        "encrypted_client_cpu_s": client_s,
        "encrypted_server_cpu_s": server_s,
        "encrypted_bytes_up": up,
        "encrypted_bytes_down": down,
        "encrypted_link_s": encrypted_link_s,
        "server_prepare_s": prepare_s,
        "server_memory_bytes": m.memory_bytes(),
        "galois_keygen_s": keygen_s,
        "max_logit_err": max_err,
        "argmax_equal": same_argmax,
        "choice": choice,
    }))
}

/// Prints the row as a short table.
pub fn print(r: &Value) {
    let f = |key: &str| r[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "LM head ({} x {}), link {}: client plaintext {:.1} ms (holds {:.1} MB of head); \
         encrypted on the server: client {:.1} ms, server {:.1} ms, {:.2} MB up, {:.2} MB \
         down, {:.2} s per pass on the link (prepare {:.1} s, {:.0} MB held), max logit \
         error {:.2e}, argmax equal {}; the plan puts it on the {}",
        r["d_model"],
        r["vocab"],
        r["link"].as_str().unwrap_or("?"),
        1e3 * f("client_plain_cpu_s"),
        f("client_head_bytes") / 1e6,
        1e3 * f("encrypted_client_cpu_s"),
        1e3 * f("encrypted_server_cpu_s"),
        f("encrypted_bytes_up") / 1e6,
        f("encrypted_bytes_down") / 1e6,
        f("encrypted_link_s"),
        f("server_prepare_s"),
        f("server_memory_bytes") / 1e6,
        f("max_logit_err"),
        r["argmax_equal"],
        r["choice"].as_str().unwrap_or("?"),
    );
}
