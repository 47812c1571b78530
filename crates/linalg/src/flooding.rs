//! Noise flooding of product decryptions: the ring noise bound of a product output and
//! the flooding standard deviation that keeps released decryptions from leaking the key.
//!
//! # Why
//! A CKKS decryption reveals `m + e` where `e` is a known linear function of the secret
//! key given the ciphertext; a party that sees decoded values and holds the ciphertexts
//! re-encodes them and solves for `s` (Li and Micciancio, "On the Security of
//! Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021, Sec. 4; the attack is
//! run for real in `tests/li_micciancio.rs`). Adding a fresh Gaussian of standard
//! deviation `sigma = sqrt(12 Q) 2^(lambda/2) B` to every decrypted coefficient, with `B`
//! a bound on the ciphertext noise and `Q` the number of decryptions released under one
//! key, gives `lambda` bits of statistical security (Li, Micciancio, Schultz, Sorrell,
//! "Securing Approximate Homomorphic Encryption Using Differential Privacy", CRYPTO 2022,
//! Sec. 4, Gaussian mechanism under Rényi divergence; `selene_ckks::flooding_sigma`).
//!
//! # The noise bound `B` of a coefficient-method output (units of `2^down_bits`)
//! The server's output block is `c = sum_b ct_b W~_b` with `ct_b` fresh secret-key
//! encryptions `c0 + c1 s = M_b + e_b` (`e_b` rounded Gaussian, `sigma_e = 3.2`, cut at
//! `6 sigma_e`), switched to `2^k` by `c_i' = c_i 2^k / q + r_i`, `|r_i| <= 1/2`
//! ([`selene_ckks::rlwe::modswitch`]). So `c0' + c1' s = (2^k/q) M + E (mod 2^k)` with
//!
//! ```text
//! E = (2^k/q) sum_b (e_b W~_b) + r0 + r1 s.
//! ```
//!
//! - `(e_b W~_b)[T] = sum_u +-e_b[T - u] W~_b[u]` is a sum of independent centred terms
//!   with variance at most `sigma_e^2 ||W~_b||^2`; over the input blocks `sum_b ||W~_b||^2`
//!   is the squared norm of the `k_o` scaled, rounded columns of the block, each at most
//!   `2^w_bits + sqrt(d_in)/2` (`w_bits` = [`crate::coeff::W_BITS`] = 16, 13 at the wide
//!   preset).
//! - `r1 s` sums at most `N` terms in `[-1/2, 1/2]` (`s` ternary); `r0` is one more.
//!
//! All terms are independent and sub-Gaussian, with variance proxies `sigma_e^2` (times
//! the weights), `1/4` each for the rounding terms (Hoeffding), so `P(|E| > t) <=
//! 2 exp(-t^2 / 2V)` with `V = (2^k/q)^2 sigma_e^2 k_o (2^w_bits + sqrt(d_in)/2)^2 +
//! (N + 1)/4`, and `B = sqrt(2 V ln(2^(TAIL_BITS + 1)))` holds for each coefficient
//! except with probability `2^-TAIL_BITS`. The test below checks it against the measured
//! noise of real product outputs. (This is a per-coefficient bound; the bit `r1 s`,
//! about `sqrt(N/12)`, dominates at every shipped preset.)
//!
//! # Which preset
//! At `LinalgPreset::Coeff12` (download modulus `2^24`) the sigma the bound asks for
//! (`~2^30`) exceeds the whole download modulus; `LinalgPreset::Coeff12Wide` (a 61-bit
//! prime, `2^46` download modulus, 13-bit weights) keeps about 13 bits under it for a
//! short selective session ([`flooded_precision_bits`]; docs/hardening.md, section 3).
//!
//! # Counting decryptions
//! Each output ciphertext the client decrypts is one decryption in the sense of LMSS22:
//! a key that serves `R` released rows through products whose outputs take `D` ciphertexts
//! per row allows `Q = R D` ([`decryptions_per_row`]).

use selene_ckks::ring::sampler::ERROR_SIGMA;
use selene_ckks::Parameters;

use crate::coeff::CoeffLayout;
use crate::error::{Error, Result};
use crate::matrix::{Layout, LayoutKind};

/// Statistical security (bits) of decryption flooding: OpenFHE's default for
/// `NOISE_FLOODING_DECRYPT` (`statisticalSecurity = 30`).
pub const FLOODING_STAT_SECURITY: u32 = 30;

/// The noise bound fails for a coefficient with probability at most `2^-TAIL_BITS`.
pub const TAIL_BITS: u32 = 64;

/// Largest flooding sigma [`crate::Client::decrypt_decode_flooded`] accepts (`2^60`,
/// where the engine's sampler stops).
pub const MAX_FLOODING_SIGMA: f64 = 1.152_921_504_606_847e18;

fn coeff_layout(layout: &Layout) -> Result<&CoeffLayout> {
    match &layout.kind {
        LayoutKind::Coefficients(l) => Ok(l),
        LayoutKind::Slots(_) => Err(Error::FloodingUnsupported {
            method: layout.method(),
        }),
    }
}

/// The bound `B` (module docs) on the ring noise of one decrypted output coefficient of
/// `layout`, in units of the download modulus `2^down_bits`.
///
/// # Errors
/// [`Error::FloodingUnsupported`] for the slot method (its key-switching noise has no
/// bound here yet); a layout for other parameters.
pub fn product_noise_bound(params: &Parameters, layout: &Layout) -> Result<f64> {
    layout.check_params(params)?;
    let l = coeff_layout(layout)?;
    let q = params.ring().moduli()[0].value() as f64;
    let switch = f64::from(l.down_bits).exp2() / q;
    let column = f64::from(l.w_bits).exp2() + (layout.shape.d_in as f64).sqrt() / 2.0;
    let k_o = l.tiling.k_o.min(layout.shape.d_out) as f64;
    let v = (switch * ERROR_SIGMA * column).powi(2) * k_o + (params.n() as f64 + 1.0) / 4.0;
    Ok((2.0 * v * f64::from(TAIL_BITS + 1) * std::f64::consts::LN_2).sqrt())
}

/// Output ciphertexts the client decrypts per token row of `layout` (one token per
/// ciphertext group; with `n_b` tokens per group a row costs a share of a group, so this
/// is an upper bound).
pub fn decryptions_per_row(layout: &Layout) -> u64 {
    match &layout.kind {
        LayoutKind::Coefficients(l) => l.tiling.out_blocks(layout.shape.d_out) as u64,
        LayoutKind::Slots(_) => 1,
    }
}

/// The flooding sigma (units of `2^down_bits`) for outputs of `layout` when at most
/// `decryptions` decryptions are released under one key, at `stat_security` bits:
/// `selene_ckks::flooding_sigma(product_noise_bound, decryptions, stat_security)`
/// (LMSS22 Sec. 4; see the module docs).
///
/// # Errors
/// As [`product_noise_bound`].
pub fn decryption_flooding_sigma(
    params: &Parameters,
    layout: &Layout,
    decryptions: u64,
    stat_security: u32,
) -> Result<f64> {
    let b = product_noise_bound(params, layout)?;
    Ok(selene_ckks::flooding_sigma(b, decryptions, stat_security))
}

/// Bits of precision left after flooding with `sigma`: `log2` of the full-scale output
/// (`2^(x_bits + w_bits)` mod `q`, i.e. `||x_t|| ||w_j||`, switched to `2^down_bits`)
/// over `sigma`. The unflooded presets reach about 15 (`docs/benchmarks.md`); below about 8 the
/// model's tokens change.
///
/// # Errors
/// As [`product_noise_bound`].
pub fn flooded_precision_bits(params: &Parameters, layout: &Layout, sigma: f64) -> Result<f64> {
    layout.check_params(params)?;
    let l = coeff_layout(layout)?;
    let q_bits = (params.ring().moduli()[0].value() as f64).log2();
    let full_scale = f64::from(l.x_bits + l.w_bits + l.down_bits) - q_bits;
    Ok(full_scale - sigma.max(1.0).log2())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, LinalgPreset, MatrixShape, Method, PreparedMatrix, Server};

    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    /// Measures `E` exactly: the client's decrypted integers against `(2^k/q) M` for the
    /// exact integer product `M` of the rounded encodings.
    #[test]
    fn measured_product_noise_stays_under_the_bound_coeff11_coeff12_coeff12wide() {
        for preset in [
            LinalgPreset::Coeff11,
            LinalgPreset::Coeff12,
            LinalgPreset::Coeff12Wide,
        ] {
            let params = preset.build().unwrap();
            let (shape, n) = (MatrixShape::new(576, 192), 3);
            let w = values(1, shape.d_in * shape.d_out);
            let mut x = values(2, n * shape.d_in);
            x[5] *= 40.0;
            let m = PreparedMatrix::new(&params, &w, shape, Method::Coefficients, 1).unwrap();
            let l = coeff_layout(m.layout()).unwrap().clone();
            let mut client = Client::new(&params);
            let (input, scales) = client.encode_encrypt(&x, n, m.layout()).unwrap();
            let out = Server::new(&params).apply(&m, &input).unwrap();
            let raw = client.decrypt_raw(&out, m.layout()).unwrap();

            let q = params.ring().moduli()[0].value() as f64;
            let switch = f64::from(l.down_bits).exp2() / q;
            let (mut worst, mut sum_sq, mut count) = (0f64, 0f64, 0f64);
            for t in 0..n {
                let delta = scales.scales[t];
                for j in 0..shape.d_out {
                    // The exact integer product of the two rounded encodings.
                    let exact: i128 = (0..shape.d_in)
                        .map(|i| {
                            let xi = (f64::from(x[t * shape.d_in + i]) * delta).round() as i128;
                            let wi =
                                (f64::from(w[j * shape.d_in + i]) * l.col_scale[j]).round() as i128;
                            xi * wi
                        })
                        .sum();
                    let e = raw[t * shape.d_out + j] as f64 - exact as f64 * switch;
                    worst = worst.max(e.abs());
                    sum_sq += e * e;
                    count += 1.0;
                }
            }
            let bound = product_noise_bound(&params, m.layout()).unwrap();
            let sd = (sum_sq / count).sqrt();
            println!("{preset:?}: noise sd {sd:.1}, max {worst:.1}, bound {bound:.1}");
            assert!(worst <= bound, "{preset:?}: {worst} > {bound}");
            // Not vacuous: the bound sits within ~20 standard deviations of the noise.
            assert!(bound < 20.0 * sd, "{preset:?}: bound {bound} vs sd {sd}");
        }
    }

    /// The flooded decryption differs from the plain one by a Gaussian of the requested
    /// sigma (in download units), and refuses bad sigmas.
    #[test]
    fn flooded_decryption_adds_the_requested_spread_coeff12() {
        let params = LinalgPreset::Coeff12.build().unwrap();
        let (shape, n) = (MatrixShape::new(64, 400), 4);
        let w = values(5, shape.d_in * shape.d_out);
        let x = values(6, n * shape.d_in);
        let m = PreparedMatrix::new(&params, &w, shape, Method::Coefficients, 1).unwrap();
        let l = coeff_layout(m.layout()).unwrap().clone();
        let mut client = Client::new(&params);
        let (input, scales) = client.encode_encrypt(&x, n, m.layout()).unwrap();
        let out = Server::new(&params).apply(&m, &input).unwrap();
        let plain = client.decrypt_decode(&out, &scales, m.layout()).unwrap();
        let sigma = 1000.0;
        let flooded = client
            .decrypt_decode_flooded(&out, &scales, m.layout(), sigma)
            .unwrap();
        let unit = params.ring().moduli()[0].value() as f64 / f64::from(l.down_bits).exp2();
        let var = plain
            .iter()
            .zip(&flooded)
            .enumerate()
            .map(|(at, (a, b))| {
                let (t, j) = (at / shape.d_out, at % shape.d_out);
                ((b - a) * scales.scales[t] * l.col_scale[j] / unit).powi(2)
            })
            .sum::<f64>()
            / plain.len() as f64;
        // 1600 samples: the sample sd is within a few percent of sigma.
        assert!((var.sqrt() / sigma - 1.0).abs() < 0.1, "sd {}", var.sqrt());
        for bad in [-1.0, f64::NAN, 1e19] {
            assert!(matches!(
                client.decrypt_decode_flooded(&out, &scales, m.layout(), bad),
                Err(Error::InvalidFloodingSigma { .. })
            ));
        }
    }

    #[test]
    fn sigma_grows_with_releases_and_refuses_slots() {
        let params = LinalgPreset::Coeff12.build().unwrap();
        let m = PreparedMatrix::new(
            &params,
            &values(3, 64 * 40),
            MatrixShape::new(64, 40),
            Method::Coefficients,
            1,
        )
        .unwrap();
        let one = decryption_flooding_sigma(&params, m.layout(), 1, 30).unwrap();
        let many = decryption_flooding_sigma(&params, m.layout(), 100, 30).unwrap();
        assert!((many / one - 10.0).abs() < 1e-9);
        let bits = flooded_precision_bits(&params, m.layout(), one).unwrap();
        assert!(bits < 0.0, "Coeff12 cannot carry 2^30 flooding: {bits}");
        let wide = LinalgPreset::Coeff12Wide.build().unwrap();
        let mw = PreparedMatrix::new(
            &wide,
            &values(3, 64 * 40),
            MatrixShape::new(64, 40),
            Method::Coefficients,
            1,
        )
        .unwrap();
        let sigma = decryption_flooding_sigma(&wide, mw.layout(), 5544, 30).unwrap();
        let bits = flooded_precision_bits(&wide, mw.layout(), sigma).unwrap();
        assert!(
            bits > 10.0,
            "Coeff12Wide keeps {bits} bits under sigma {sigma}"
        );
        let slots = LinalgPreset::Slots13.build().unwrap();
        let sm = PreparedMatrix::new(
            &slots,
            &values(4, 48 * 30),
            MatrixShape::new(48, 30),
            Method::Slots,
            1,
        )
        .unwrap();
        assert!(matches!(
            product_noise_bound(&slots, sm.layout()),
            Err(Error::FloodingUnsupported { .. })
        ));
    }
}
