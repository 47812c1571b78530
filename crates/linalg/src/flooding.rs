//! Noise flooding of product decryptions: the ring noise bound of a product output and
//! the flooding standard deviation that keeps released decryptions from leaking the key
//! to an honest-but-curious server (the bound is for the noise of an honest product's
//! ciphertext; a server that answers with other ciphertexts is checked by the client,
//! [`crate::Client::decrypt_decode`]'s output bound).
//!
//! # Why
//! A CKKS decryption reveals `m + e` where `e` is a known linear function of the secret
//! key given the ciphertext; a party that sees decoded values and holds the ciphertexts
//! re-encodes them and solves for `s` (Li and Micciancio, "On the Security of
//! Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021, Sec. 4; the attack is
//! run for real in `tests/li_micciancio.rs`). Li, Micciancio, Schultz and Sorrell
//! ("Securing Approximate Homomorphic Encryption Using Differential Privacy", CRYPTO
//! 2022) add a fresh Gaussian of standard deviation `sigma` to every released
//! coordinate: `Q` releases whose error vectors have Euclidean norm at most `t` each
//! keep `lambda` bits of statistical security when `sigma = sqrt(12 Q) 2^(lambda/2) t`
//! (`selene_ckks::flooding_sigma`, the formula OpenFHE's `NOISE_FLOODING_DECRYPT` uses).
//!
//! # Which norm, and what `Q` counts
//! The bound comes from the divergence between the released `y + e + z` and the ideal
//! `y + z` (`z` the flooding): for a Gaussian of covariance `sigma^2 I` shifted by `e`
//! that divergence is a function of `||e||_2^2 / sigma^2`, and independent releases add
//! their `||e_i||_2^2`. So `t` bounds the **Euclidean norm of the whole error vector a
//! release reveals**, not one coordinate, and only the total `sum_i ||e_i||_2^2 <= Q t^2`
//! enters. Splitting a release into its coordinates gives the same total: `c` released
//! coefficients each at most `B` have `sum e^2 <= c B^2`, the bound with `Q = c`,
//! `t = B`. Selene counts that way: `Q` is the number of decrypted **coefficients** the
//! key may release ([`released_per_row`] per token row and product, i.e. `d_out`), and `t`
//! is the per-coefficient bound `B` below. Counting output ciphertexts instead (as
//! before issue 20) undercounts by the `k_o` (times `n_b`) coefficients each carries:
//! sigma was about `sqrt(5184 / 66) = 8.9` times too small for SmolLM2.
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
//!   `2^w_bits + sqrt(d_in)/2` (`w_bits` = [`crate::coeff::W_BITS`] = 16, or the preset's
//!   [`crate::LinalgPreset::weight_bits`]).
//! - `r1 s` sums at most `N` terms in `[-1/2, 1/2]` (`s` ternary); `r0` is one more.
//!
//! All terms are independent and sub-Gaussian, with variance proxies `sigma_e^2` (times
//! the weights), `1/4` each for the rounding terms (Hoeffding), so `P(|E| > t) <=
//! 2 exp(-t^2 / 2V)` with `V = (2^k/q)^2 sigma_e^2 k_o (2^w_bits + sqrt(d_in)/2)^2 +
//! (N + 1)/4`, and `B = sqrt(2 V ln(2^(TAIL_BITS + 1)))` holds for each coefficient
//! except with probability `2^-TAIL_BITS` (a union bound over a session's coefficients
//! costs a few of those 64 bits). The test below checks it against the measured noise of
//! real product outputs. (The bit `r1 s`, about `sqrt(N/12)`, dominates at every shipped
//! preset.)
//!
//! # Which preset
//! At `LinalgPreset::Coeff12` (download modulus `2^24`) the sigma the bound asks for
//! (`~2^33`) exceeds the whole download modulus; `LinalgPreset::Coeff12Wide` (a 61-bit
//! prime, `2^47` download modulus, 12-bit weights) keeps about 11 bits under it for a
//! short selective session ([`flooded_precision_bits`]; docs/hardening.md, sections 3 and
//! "Second review").

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
    let gain = f64::from(l.merge_gain_bits).exp2();
    let ks = key_switch_variance(params);
    // Packed outputs: every weighted term scaled by the merges' gain; hoisted images
    // carry a key switch's noise times the folded weights (whose squared norms the
    // parallelogram law keeps at `4^L` times the blocks'); each real merge level's key
    // switch is doubled by every later level.
    let images = if l.hoist_levels > 0 { ks } else { 0.0 };
    let real = l.pack_levels - l.hoist_levels;
    let merges = ks * (4f64.powi(real as i32) - 1.0) / 3.0;
    let v = switch.powi(2)
        * ((gain * column).powi(2) * k_o * (ERROR_SIGMA.powi(2) + images) + merges)
        + (params.n() as f64 + 1.0) / 4.0;
    Ok((2.0 * v * f64::from(TAIL_BITS + 1) * std::f64::consts::LN_2).sqrt())
}

/// Variance proxy of one key switch's noise per coefficient, in units of `q`: the
/// ModDown rounding `r0 + r1 s` (`N + 1` terms in `[-1/2, 1/2]`) plus the key's
/// `sum_k d_k e_k / P` (`N` terms per key row, the digit part bounded by half its
/// range: `q/2` for a whole-prime digit, `2^(w-1)` for a gadget part).
fn key_switch_variance(params: &Parameters) -> f64 {
    let n = params.n() as f64;
    let p: f64 = params.p().iter().map(|&x| x as f64).product();
    let q = params.ring().moduli()[0];
    let parts = params.key_digits();
    let halves: f64 = match params.gadget_log_base() {
        None => (q.value() as f64 / 2.0).powi(2),
        Some(w) => {
            let last = f64::from(q.bits() - w * (parts as u32 - 1)).exp2() / 2.0 + 1.0;
            (parts - 1) as f64 * f64::from(w - 1).exp2().powi(2) + last.powi(2)
        }
    };
    (n + 1.0) / 4.0 + n * ERROR_SIGMA.powi(2) * halves / (p * p)
}

/// Decrypted coefficients one token row releases through a product of `layout`: its
/// `d_out` outputs (each decrypted, flooded and decoded once). This is the unit the
/// flooding counts (module docs): a key serving `R` rows through these products releases
/// `R * sum released_per_row` coefficients.
pub fn released_per_row(layout: &Layout) -> u64 {
    layout.shape.d_out as u64
}

/// The flooding sigma (units of `2^down_bits`) for outputs of `layout` when at most
/// `released` decrypted coefficients, over every product, are released under one key, at
/// `stat_security` bits: `selene_ckks::flooding_sigma(product_noise_bound, released,
/// stat_security)`, i.e. `sqrt(12 released) 2^(stat_security / 2) B` (LMSS22 with the
/// Euclidean norm of everything released; see the module docs).
///
/// # Errors
/// As [`product_noise_bound`].
pub fn decryption_flooding_sigma(
    params: &Parameters,
    layout: &Layout,
    released: u64,
    stat_security: u32,
) -> Result<f64> {
    let b = product_noise_bound(params, layout)?;
    Ok(selene_ckks::flooding_sigma(b, released, stat_security))
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
    let full_scale = f64::from(l.x_bits + l.w_bits + l.merge_gain_bits + l.down_bits) - q_bits;
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

    /// Measures `E` exactly: the client's decrypted integers against `(2^k/q) M` (times
    /// the merges' gain) for the exact integer product `M` of the rounded encodings, at
    /// every coefficient preset: unpacked, packed with folded levels, and packed flat
    /// with exact merges.
    #[test]
    fn measured_product_noise_stays_under_the_bound_at_every_coefficient_preset() {
        for (preset, shape) in [
            LinalgPreset::Coeff11,
            LinalgPreset::Coeff12,
            LinalgPreset::Coeff12Wide,
            LinalgPreset::Coeff12Pack,
            LinalgPreset::Coeff12WidePack,
        ]
        .into_iter()
        .flat_map(|p| {
            // Packed presets also at SmolLM2's widest output (more merge levels).
            let wide = p.packs().then_some((p, MatrixShape::new(576, 3072)));
            [(p, MatrixShape::new(576, 192))].into_iter().chain(wide)
        }) {
            let params = preset.build().unwrap();
            let n = 3;
            let w = values(1, shape.d_in * shape.d_out);
            let mut x = values(2, n * shape.d_in);
            x[5] *= 40.0;
            let m = PreparedMatrix::new(&params, &w, shape, Method::Coefficients, 1).unwrap();
            let l = coeff_layout(m.layout()).unwrap().clone();
            assert_eq!(preset.packs(), l.pack_levels > 0, "{preset:?}");
            let mut client = Client::new(&params);
            let (input, scales) = client.encode_encrypt(&x, n, m.layout()).unwrap();
            let server = if preset.packs() {
                let keys = client.galois_keys(&[m.layout()]);
                Server::new(&params).with_galois_keys(std::sync::Arc::new(keys))
            } else {
                Server::new(&params)
            };
            let out = server.apply(&m, &input).unwrap();
            let raw = client.decrypt_raw(&out, m.layout()).unwrap();

            let q = params.ring().moduli()[0].value() as f64;
            let switch = f64::from(l.down_bits).exp2() / q * f64::from(l.merge_gain_bits).exp2();
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
            println!(
                "{preset:?}: tiling {:?}, {} merge levels ({} folded): noise sd {sd:.1}, max \
                 {worst:.1}, bound {bound:.1}",
                l.tiling.as_tuple(),
                l.pack_levels,
                l.hoist_levels
            );
            assert!(worst <= bound, "{preset:?}: {worst} > {bound}");
            // Not vacuous: the bound sits within ~20 standard deviations of the noise. The
            // noise is fresh each run: at Coeff12 13 runs gave sd 15.6-18.3 against the
            // bound 314.3 (ratios 17-20.1; 20 failed a CI run), so the check allows 25.
            assert!(bound < 25.0 * sd, "{preset:?}: bound {bound} vs sd {sd}");
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

    /// The sigma covers the Euclidean norm of everything released: for `R` rows through
    /// a `576 -> 960` product at the wide preset it is `sqrt(12 R 960) 2^15 B`, with `B`
    /// computed here by hand from the module docs' formula, and `sqrt(k_o)` (8 for SmolLM2's
    /// 15 blocks of 64) times the sigma that counted output ciphertexts as the releases.
    #[test]
    fn sigma_counts_every_released_coefficient_coeff12wide() {
        let params = LinalgPreset::Coeff12Wide.build().unwrap();
        let shape = MatrixShape::new(576, 960);
        let m = PreparedMatrix::new(
            &params,
            &values(7, shape.d_in * shape.d_out),
            shape,
            Method::Coefficients,
            1,
        )
        .unwrap();
        let l = coeff_layout(m.layout()).unwrap();
        assert_eq!((l.down_bits, l.w_bits), (47, 12));
        assert_eq!(released_per_row(m.layout()), 960);
        // Hand reference: V = (2^47 / q)^2 3.2^2 k_o (2^12 + sqrt(576) / 2)^2 + 4097 / 4,
        // B = sqrt(2 V 65 ln 2), sigma = sqrt(12 R 960) 2^15 B.
        let q = params.ring().moduli()[0].value() as f64;
        let k_o = l.tiling.k_o as f64;
        let v = (2f64.powi(47) / q * 3.2 * (4096.0 + 12.0)).powi(2) * k_o + 4097.0 / 4.0;
        let b = (2.0 * v * 65.0 * std::f64::consts::LN_2).sqrt();
        let rows = 13u64;
        let want = (12.0 * (rows * 960) as f64).sqrt() * 2f64.powi(15) * b;
        let got =
            decryption_flooding_sigma(&params, m.layout(), rows * released_per_row(m.layout()), 30)
                .unwrap();
        assert!((got / want - 1.0).abs() < 1e-12, "{got} vs {want}");
        // Counting output ciphertexts instead undercounts by the coefficients each holds.
        let blocks = l.tiling.out_blocks(960) as f64;
        let per_ciphertext = (12.0 * rows as f64 * blocks).sqrt() * 2f64.powi(15) * b;
        assert!((got / per_ciphertext - (960.0 / blocks).sqrt()).abs() < 1e-9);
        assert!(got / per_ciphertext >= 5.0, "{blocks} blocks");
        println!(
            "k_o {k_o}, B {b:.1}, sigma 2^{:.2}, precision {:.2} bits",
            got.log2(),
            flooded_precision_bits(&params, m.layout(), got).unwrap()
        );
    }

    /// The packed flooding preset's `2^50` download modulus (its lift runs through
    /// `q p`) keeps more precision than `coeff12wide`'s `2^47` under the same flooding,
    /// with every plan's tilings of SmolLM2's four stages: 38 rows (a 32-token prompt and
    /// 6 tokens) through 4 layers, and 200 rows above the floor.
    #[test]
    fn packed_flooding_preset_keeps_more_bits_than_coeff12wide() {
        let shapes = [(576, 960), (576, 576), (576, 3072), (1536, 576)];
        let worst = |preset: LinalgPreset, link: &crate::Link, rows: u64| {
            let params = preset.build().unwrap();
            shapes
                .iter()
                .map(|&(d_in, d_out)| {
                    let shape = MatrixShape::new(d_in, d_out);
                    let w = values(9, d_in * d_out);
                    let m =
                        PreparedMatrix::for_link(&params, &w, shape, Method::Coefficients, 1, link)
                            .unwrap();
                    let sigma = decryption_flooding_sigma(&params, m.layout(), rows * 4 * 5184, 30)
                        .unwrap();
                    flooded_precision_bits(&params, m.layout(), sigma).unwrap()
                })
                .fold(f64::INFINITY, f64::min)
        };
        for (name, link) in crate::Link::PROFILES {
            let wide = worst(LinalgPreset::Coeff12Wide, &link, 38);
            let packed = worst(LinalgPreset::Coeff12WidePack, &link, 38);
            let long = worst(LinalgPreset::Coeff12WidePack, &link, 200);
            println!("{name}: 38 rows {wide:.2} bits wide, {packed:.2} packed; 200 rows {long:.2}");
            assert!(packed >= wide + 1.3, "{name}: {packed} vs {wide}");
            assert!(long > 10.0, "{name}: {long} at 200 rows");
        }
    }

    /// Selective mode's fused pairs (`selene_model::fused`) decrypt the stacked products
    /// `[stream | inner] -> outer` (SmolLM2: 1152 -> 3072 and 2112 -> 960) under the same
    /// flooding: a row releases as many coefficients fused as unfused (5184 per layer),
    /// and the stacked layouts keep the stages' bits (measured: `AttnGate` within 0.01 of
    /// `gate|up`, `DownQkv` above it).
    #[test]
    fn stacked_products_keep_ten_bits_under_selective_flooding() {
        let params = LinalgPreset::Coeff12WidePack.build().unwrap();
        for (name, link) in crate::Link::PROFILES {
            let bits = |(d_in, d_out): (usize, usize), rows: u64| {
                let shape = MatrixShape::new(d_in, d_out);
                let w = values(9, d_in * d_out);
                let m =
                    PreparedMatrix::for_link(&params, &w, shape, Method::Coefficients, 1, &link)
                        .unwrap();
                let sigma =
                    decryption_flooding_sigma(&params, m.layout(), rows * 4 * 5184, 30).unwrap();
                flooded_precision_bits(&params, m.layout(), sigma).unwrap()
            };
            for rows in [38, 200] {
                let stage = bits((576, 3072), rows);
                let attn_gate = bits((1152, 3072), rows);
                let down_qkv = bits((2112, 960), rows);
                println!(
                    "{name}, {rows} rows: gate|up {stage:.2} bits, stacked AttnGate \
                     {attn_gate:.2}, stacked DownQkv {down_qkv:.2}"
                );
                assert!(attn_gate.min(down_qkv) > 10.0, "{name}, {rows} rows");
                assert!(attn_gate > stage - 1.0, "{name}: {attn_gate} vs {stage}");
            }
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
        // 13 rows through 4 SmolLM2 layers (5184 coefficients per row and layer).
        let sigma = decryption_flooding_sigma(&wide, mw.layout(), 13 * 4 * 5184, 30).unwrap();
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
