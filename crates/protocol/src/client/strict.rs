//! The client's half of strict mode: a [`Linear`] whose products run encrypted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use selene_ckks::Parameters;
use selene_linalg::flooding::{
    decryption_flooding_sigma, flooded_precision_bits, released_per_row, FLOODING_STAT_SECURITY,
};
use selene_linalg::{Client, EncryptedOutput, Layout};
use selene_model::forward::apply_gain;
use selene_model::fused::{fused_order, stack_rows, stacked_weight};
use selene_model::linear::{row_norm, NORM_STAGES};
use selene_model::{FusedLinear, FusedPair, Linear, LinearStage, ProductAt, QuantLinear, Weights};

use super::session::ClientSession;
use crate::codec::keys::encode_galois_keys;
use crate::codec::stage::{stage_index, Product};
use crate::codec::wire::ProductRequest;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::transport::Transport;

/// Most activation rows (positions) in one encrypted product request: the widest input
/// or output of SmolLM2 over 32 rows is about 20 MiB on the wire at Coeff12, well inside
/// the server's 64 MiB message limit, and a longer prompt simply takes several requests
/// per product.
pub const MAX_ROWS_PER_PRODUCT: usize = 32;

/// Rows per request of a product over many rows (a prompt's pass, a drafted pass): a
/// 32-token prompt's product goes as four pipelined requests, so about a quarter of its bytes is
/// on the link while the server is idle instead of all of them (the rest crosses while
/// it computes the other requests), at no extra compute: row-by-row and batched tilings
/// cost the same per row in requests of any size that fills their ciphertexts.
pub const PIPELINE_ROWS: usize = 8;

/// Largest deviation a spot check ([`StrictLinear::with_verify_rate`]) accepts between
/// the decrypted product and the client's plaintext recomputation, relative to
/// `||x_t|| ||w_j||`: honest products keep at least 10 bits of that (flooded, selective
/// mode; about 15 unflooded) and the plaintext reference's own error is of the same
/// order, so `2^-6` leaves a factor of 16. An answer that is not the product (the
/// key-recovery ciphertext `c1 = 2^44 X^r`, an encryption of zero, a shifted output)
/// deviates by the outputs' own size, `|y_tj| / (||x_t|| ||w_j||)`, far above it.
pub const VERIFY_TOLERANCE: f64 = 1.0 / 64.0;

/// What crossed the wire and where the client's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrafficStats {
    /// Encrypted products done.
    pub products: usize,
    /// Bytes sent to the server (encrypted inputs).
    pub bytes_up: usize,
    /// Bytes received from the server (encrypted outputs).
    pub bytes_down: usize,
    /// Client time spent encoding, encrypting, decrypting and decoding.
    pub client_time: Duration,
    /// Galois keys uploaded for packed outputs (0 when nothing is packed).
    pub galois_keys: usize,
    /// Their bytes on the wire (once per session).
    pub galois_key_bytes: usize,
    /// Time the client spent generating them.
    pub galois_keygen: Duration,
    /// Products recomputed in plaintext by a spot check (`--verify-rate`).
    pub verified: usize,
    /// Largest deviation a spot check found, relative to `||x_t|| ||w_j||`.
    pub verify_max_deviation: f64,
    /// Request-reply exchanges of the session so far, `Hello` included.
    pub round_trips: u64,
}

/// Strict client-aided mode: every per-layer weight product is encrypted under the
/// client's fresh CKKS key and computed by the server; the LM head (the public,
/// tied embedding table) runs here in plaintext, so the server never sees a logit.
pub struct StrictLinear<'w, T: Transport> {
    weights: &'w Weights,
    client: Client,
    layouts: Vec<[Arc<Layout>; 4]>,
    /// A fused session's layouts of the fused matrices, in `fused_order`.
    fused_layouts: Vec<Arc<Layout>>,
    /// Their balance factors (`selene_model::fused::Stacked::alpha`), in the same order.
    fused_alphas: Vec<f32>,
    /// The server's batched layouts (several rows per ciphertext), empty if none.
    batched: Vec<[Arc<Layout>; 4]>,
    session: ClientSession<T>,
    stats: TrafficStats,
    flooding: Option<Flooding>,
    verify_rate: f64,
    rng: ChaCha20Rng,
    check_failed: bool,
}

/// Ring-level flooding of every product decryption ([`StrictLinear::flood_decryptions`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Flooding {
    /// Rows the key may release (the cap the sigmas are sized for).
    pub releases_cap: u64,
    /// Decrypted coefficients the key may release, the `Q` of the flooding bound
    /// (`selene_linalg::flooding`): `releases_cap` times the outputs (`d_out`) of one row
    /// through every encrypted product.
    pub released: u64,
    /// Flooding sigma per layer and stage (units of each layout's download modulus).
    pub sigmas: Vec<[f64; 4]>,
    /// Flooding sigma per fused matrix, in the session's fused order (empty unless the
    /// session is fused).
    pub fused_sigmas: Vec<f64>,
    /// Fewest bits of precision any product keeps under its sigma
    /// (`selene_linalg::flooding::flooded_precision_bits`).
    pub precision_bits: f64,
}

impl<T: Transport> std::fmt::Debug for StrictLinear<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrictLinear")
            .field("client", &self.client)
            .field("layers", &self.layouts.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'w, T: Transport> StrictLinear<'w, T> {
    /// A client with a fresh secret key for `params` that opens a session over
    /// `transport` with the default policy for `layouts.len()` encrypted layers (strict
    /// mode when it is the model's depth, else [`Policy::selective`]) and the model's
    /// full context, and checks the server's layouts equal `layouts`.
    ///
    /// # Errors
    /// More layouts than the model has layers, the server's refusal, layouts that differ
    /// from the server's ([`Error::LayoutMismatch`]).
    pub fn new(
        weights: &'w Weights,
        params: &std::sync::Arc<Parameters>,
        layouts: Vec<[Layout; 4]>,
        transport: T,
    ) -> Result<Self> {
        Self::with_client(weights, Client::new(params), layouts, transport)
    }

    /// Like [`StrictLinear::new`] in a fused session (the policy says `fused = true`):
    /// besides [`Linear`], it implements [`FusedLinear`], so
    /// [`selene_model::forward_fused`] runs a token in `2 L + 1` round trips instead of
    /// `4 L` (selective mode: [`selene_model::fused::forward_layers_fused`] over the
    /// `layouts.len()` encrypted layers). The fused layouts' scales are pinned to norms
    /// computed here from the layer matrices (a client bundle has none).
    ///
    /// # Errors
    /// As [`StrictLinear::new`]; [`Error::Fused`] without the layer matrices or without
    /// layouts; the server's refusal (no fused matrices).
    pub fn new_fused(
        weights: &'w Weights,
        params: &std::sync::Arc<Parameters>,
        layouts: Vec<[Layout; 4]>,
        transport: T,
    ) -> Result<Self> {
        let client = Client::new(params);
        let c = weights.config();
        if layouts.is_empty() || layouts.len() > c.n_layers {
            return Err(Error::Fused {
                why: "fused sessions encrypt between one layer and the model's depth",
            });
        }
        if !weights.has_layer_matrices() {
            return Err(Error::Fused {
                why: "pinning the fused matrices' scales needs the layer matrices (the full model)",
            });
        }
        let mut policy = Policy::selective(c.n_layers, layouts.len());
        policy.fused = true;
        if let Some(preset) = selene_linalg::LinalgPreset::of(client.params()) {
            policy.preset = preset;
        }
        let session = ClientSession::open(transport, client.params(), policy, c.context_length)?;
        if let Some(layer) =
            (0..layouts.len()).find(|&l| session.layouts().get(l) != layouts.get(l))
        {
            return Err(Error::LayoutMismatch { layer });
        }
        Self::from_session(weights, client, session)
    }

    /// Like [`StrictLinear::new`] with a given client (a session key from a keystore,
    /// `selene_keys`) instead of a fresh one.
    ///
    /// # Errors
    /// As [`StrictLinear::new`].
    pub fn with_client(
        weights: &'w Weights,
        client: Client,
        layouts: Vec<[Layout; 4]>,
        transport: T,
    ) -> Result<Self> {
        let c = weights.config();
        let layers = c.n_layers;
        if layouts.len() > layers {
            return Err(Error::LayerOutOfRange {
                layer: layouts.len(),
                layers,
            });
        }
        let mut policy = if layouts.len() == layers {
            Policy::strict(layers)
        } else {
            Policy::selective(layers, layouts.len())
        };
        // Name the preset the client's parameters come from (the server checks both).
        if let Some(preset) = selene_linalg::LinalgPreset::of(client.params()) {
            policy.preset = preset;
        }
        let session = ClientSession::open(transport, client.params(), policy, c.context_length)?;
        if let Some(layer) =
            (0..layouts.len()).find(|&l| session.layouts().get(l) != layouts.get(l))
        {
            return Err(Error::LayoutMismatch { layer });
        }
        Self::from_session(weights, client, session)
    }

    /// A client holding `client`'s key over an open session, encrypting for the layouts
    /// the server sent once their decoding scales are pinned: every column scale must be
    /// the one `weights`' column norms give ([`Weights::column_norms`]: computed from
    /// the layer matrices, or carried by a client bundle), so an active server cannot
    /// choose how the client decodes.
    ///
    /// # Errors
    /// More encrypted layers than the model has; [`Error::NoColumnNorms`] for a bundle
    /// without norms; [`Error::ScaleMismatch`].
    pub fn from_session(
        weights: &'w Weights,
        client: Client,
        mut session: ClientSession<T>,
    ) -> Result<Self> {
        let layers = weights.config().n_layers;
        let layouts = session.layouts().to_vec();
        if layouts.len() > layers {
            return Err(Error::LayerOutOfRange {
                layer: layouts.len(),
                layers,
            });
        }
        let batched = session.batched_layouts().to_vec();
        let norms = weights.column_norms().map_err(Error::NoColumnNorms)?;
        // The batched layouts tile the same matrices: the same norms pin them.
        let per_layer = layouts.iter().enumerate().chain(batched.iter().enumerate());
        for (layer, four) in per_layer {
            for (layout, stage) in four.iter().zip(NORM_STAGES) {
                layout
                    .check_column_norms(norms.get(layer, stage)?)
                    .map_err(|source| Error::ScaleMismatch {
                        layer,
                        stage,
                        source,
                    })?;
            }
        }
        // A fused session's fused layouts get the same pinning, from norms of the stacked
        // fused matrices computed here.
        let fused_layouts = session.fused_layouts().to_vec();
        let order: Vec<(usize, FusedPair)> = fused_order(layouts.len()).collect();
        let mut fused_alphas = Vec::new();
        if !fused_layouts.is_empty() {
            if fused_layouts.len() != order.len() {
                return Err(Error::Fused {
                    why: "the Welcome's fused layouts are not one per fused matrix",
                });
            }
            for (layout, &(layer, pair)) in fused_layouts.iter().zip(&order) {
                let stacked = stacked_weight(weights, layer, pair)?;
                let (d_in, _) = pair.stacked_dims(weights.config());
                let norms: Vec<f64> = stacked.rows.chunks_exact(d_in).map(row_norm).collect();
                fused_alphas.push(stacked.alpha);
                layout
                    .check_column_norms(&norms)
                    .map_err(|source| Error::ScaleMismatch {
                        layer,
                        stage: pair.stages().1,
                        source,
                    })?;
            }
        }
        let mut stats = TrafficStats::default();
        // Packed layouts: the server merges outputs with this key's Galois keys, sent
        // once per session.
        let refs: Vec<&Layout> = layouts
            .iter()
            .flatten()
            .chain(batched.iter().flatten())
            .chain(&fused_layouts)
            .collect();
        let log_n = client.params().log_n();
        if refs
            .iter()
            .any(|l| !l.pack_galois_elements(log_n).is_empty())
        {
            let start = Instant::now();
            let keys = client.galois_keys(&refs);
            let bytes = encode_galois_keys(&keys);
            stats.galois_keys = keys.elements().count();
            stats.galois_key_bytes = bytes.len();
            stats.galois_keygen = start.elapsed();
            session.upload_galois_keys(bytes)?;
        }
        // Shared, not copied, by every request in flight (a layout holds its output
        // width's column scales).
        let share = |four: Vec<[Layout; 4]>| -> Vec<[Arc<Layout>; 4]> {
            four.into_iter().map(|l| l.map(Arc::new)).collect()
        };
        Ok(Self {
            weights,
            client,
            layouts: share(layouts),
            fused_layouts: fused_layouts.into_iter().map(Arc::new).collect(),
            fused_alphas,
            batched: share(batched),
            session,
            stats,
            flooding: None,
            verify_rate: 0.0,
            rng: ChaCha20Rng::from_entropy(),
            check_failed: false,
        })
    }

    /// Spot checks: each product is, with probability `rate`, recomputed here in
    /// plaintext from the layer matrices and compared with the decrypted answer within
    /// [`VERIFY_TOLERANCE`] ([`Error::SpotCheckFailed`] otherwise). The products to check
    /// are drawn from an OS-seeded ChaCha20 after the answer arrives, so a server cannot
    /// tell which; one that tampers with `m` products escapes with probability
    /// `(1 - rate)^m`. Costs one plaintext product per check.
    ///
    /// # Errors
    /// [`Error::InvalidVerifyRate`] outside `[0, 1]`; [`Error::VerifyNeedsWeights`] for
    /// `rate > 0` on a client bundle (no layer matrices).
    pub fn with_verify_rate(mut self, rate: f64) -> Result<Self> {
        self.set_verify_rate(rate)?;
        Ok(self)
    }

    /// [`Self::with_verify_rate`] in place.
    pub(crate) fn set_verify_rate(&mut self, rate: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::InvalidVerifyRate { rate });
        }
        if rate > 0.0 && !self.weights.has_layer_matrices() {
            return Err(Error::VerifyNeedsWeights);
        }
        self.verify_rate = rate;
        Ok(())
    }

    /// True in a fused session (its policy says `fused = true`): [`FusedLinear`] works.
    pub fn is_fused(&self) -> bool {
        !self.fused_layouts.is_empty()
    }

    /// True once a product of this session failed a check (output bound or spot check):
    /// every later product and release is refused ([`Error::FailedCheckEarlier`]).
    pub fn check_failed(&self) -> bool {
        self.check_failed
    }

    /// Checks the next token's q|k|v a selective server sent ahead (`x` the un-gained
    /// norm of that token's embedding, one row; `y` the values) as a decrypted output is
    /// checked: every value within `(1 + OUTPUT_BOUND_SLACK) ||x|| ||w_j||` (the pinned
    /// column norms of layer 0's `Qkv`), and, when this client holds the layer matrices,
    /// equal to its own plaintext product within [`VERIFY_TOLERANCE`] (the server computed
    /// them in plaintext from the same weights). A client bundle has the bound alone. A
    /// failed check fails the session's checks: every later product is refused.
    ///
    /// # Errors
    /// [`Error::AheadShape`]; [`Error::ProductCheck`] past the bound;
    /// [`Error::SpotCheckFailed`] against the recomputation.
    pub(crate) fn check_ahead(&mut self, x: &[f32], y: &[f32]) -> Result<()> {
        let at = stage_index(LinearStage::Qkv)?;
        let layout = self
            .layouts
            .first()
            .and_then(|l| l.get(at))
            .cloned()
            .ok_or(Error::LayerOutOfRange {
                layer: 0,
                layers: self.layouts.len(),
            })?;
        let norms = self.weights.column_norms().map_err(Error::NoColumnNorms)?;
        let w_norms = norms.get(0, LinearStage::Qkv)?;
        if w_norms.len() != y.len() {
            return Err(Error::AheadShape {
                found: y.len(),
                expected: w_norms.len(),
            });
        }
        let x_norm = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        for (column, (&v, &w_norm)) in y.iter().zip(w_norms).enumerate() {
            let bound = (1.0 + selene_linalg::OUTPUT_BOUND_SLACK) * x_norm * w_norm;
            let value = f64::from(v);
            if value.abs() > bound || value.is_nan() {
                self.check_failed = true;
                return Err(Error::ProductCheck {
                    layer: 0,
                    stage: LinearStage::Qkv,
                    source: selene_linalg::Error::OutputOutOfBound {
                        token: 0,
                        column,
                        value,
                        bound,
                    },
                });
            }
        }
        if !self.weights.has_layer_matrices() {
            return Ok(());
        }
        let y: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
        match self.spot_check(0, LinearStage::Qkv, &layout, x, &y) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.check_failed = true;
                Err(e)
            }
        }
    }

    /// Recomputes `x`'s product in plaintext and errors unless the decrypted `y` is
    /// within [`VERIFY_TOLERANCE`] of it, relative to `||x_t|| ||w_j||`; returns the
    /// largest deviation.
    fn spot_check(
        &self,
        layer: usize,
        stage: LinearStage,
        layout: &Layout,
        x: &[f32],
        y: &[f64],
    ) -> Result<f64> {
        let (d_in, d_out) = (layout.shape().d_in, layout.shape().d_out);
        // The server multiplies the un-gained input by gain-folded weights; the same
        // product is the gained input times the plain matrix.
        let mut gained = x.to_vec();
        if let Some(g) = self.weights.stage_gain(layer, stage)? {
            apply_gain(&mut gained, g);
        }
        let mut reference = vec![0.0f32; y.len()];
        QuantLinear::new(self.weights)
            .apply(ProductAt::new(layer, stage), &gained, &mut reference)
            .map_err(Error::Model)?;
        let w_norms = layout.column_norms();
        let mut deviation = 0.0f64;
        for (xr, (yr, rr)) in x
            .chunks_exact(d_in)
            .zip(y.chunks_exact(d_out).zip(reference.chunks_exact(d_out)))
        {
            let x_norm = xr.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            for ((&a, &b), &w) in yr.iter().zip(rr).zip(&w_norms) {
                let scale = (x_norm * w).max(f64::MIN_POSITIVE);
                deviation = deviation.max((a - f64::from(b)).abs() / scale);
            }
        }
        if deviation <= VERIFY_TOLERANCE {
            Ok(deviation)
        } else {
            Err(Error::SpotCheckFailed {
                layer,
                stage,
                deviation,
                tolerance: VERIFY_TOLERANCE,
            })
        }
    }

    /// The session (its `Welcome`, the transport).
    pub fn session(&self) -> &ClientSession<T> {
        &self.session
    }

    /// The session, mutably (for releases and `Close`).
    pub fn session_mut(&mut self) -> &mut ClientSession<T> {
        &mut self.session
    }

    /// Decrypts every product with ring-level Gaussian flooding (Li, Micciancio, Schultz,
    /// Sorrell, CRYPTO 2022), each sigma sized from the product's noise bound for a key
    /// that releases at most `releases_cap` rows (`selene_linalg::flooding`): the form
    /// needed when values derived from the decryptions reach the server (selective mode).
    /// Check [`Flooding::precision_bits`]: a preset without the headroom loses its output.
    ///
    /// # Errors
    /// A layout whose method has no noise bound (slots).
    pub fn flood_decryptions(mut self, releases_cap: u64) -> Result<Self> {
        self.size_flooding(releases_cap)?;
        Ok(self)
    }

    /// Sizes (or re-sizes, before any decryption) the flooding of
    /// [`Self::flood_decryptions`] for a key that releases at most `releases_cap` rows.
    pub(crate) fn size_flooding(&mut self, releases_cap: u64) -> Result<()> {
        let params = self.client.params().clone();
        let all: u64 = self
            .layouts
            .iter()
            .flatten()
            .map(|l| released_per_row(l))
            .sum();
        // A fused session decrypts a generated row through layer 0's q|k|v, each layer's
        // inner products (o, down) and the fused matrices; the prompt's rows take the
        // four stages. A row goes one way or the other: the larger count bounds both.
        let per_row = if self.fused_layouts.is_empty() {
            all
        } else {
            let at = |stage: LinearStage| stage_index(stage).unwrap_or(0);
            let first = self
                .layouts
                .first()
                .map_or(0, |l| released_per_row(&l[at(LinearStage::Qkv)]));
            let inner: u64 = self
                .layouts
                .iter()
                .map(|l| {
                    released_per_row(&l[at(LinearStage::AttnOut)])
                        + released_per_row(&l[at(LinearStage::Down)])
                })
                .sum();
            let fused: u64 = self.fused_layouts.iter().map(|l| released_per_row(l)).sum();
            all.max(first + inner + fused)
        };
        let released = releases_cap.max(1).saturating_mul(per_row);
        let mut precision_bits = f64::INFINITY;
        let mut sigma_of = |layout: &Layout| -> Result<f64> {
            let sigma =
                decryption_flooding_sigma(&params, layout, released, FLOODING_STAT_SECURITY)?;
            precision_bits = precision_bits.min(flooded_precision_bits(&params, layout, sigma)?);
            Ok(sigma)
        };
        let mut sigmas = Vec::with_capacity(self.layouts.len());
        for layer in &self.layouts {
            let mut s = [0.0; 4];
            for (sigma, layout) in s.iter_mut().zip(layer) {
                *sigma = sigma_of(layout)?;
            }
            sigmas.push(s);
        }
        let fused_sigmas = self
            .fused_layouts
            .iter()
            .map(|l| sigma_of(l))
            .collect::<Result<Vec<_>>>()?;
        self.flooding = Some(Flooding {
            releases_cap,
            released,
            sigmas,
            fused_sigmas,
            precision_bits,
        });
        Ok(())
    }

    /// The decryption flooding in force, if any.
    pub fn flooding(&self) -> Option<&Flooding> {
        self.flooding.as_ref()
    }

    /// Traffic, client time and round trips so far.
    pub fn stats(&self) -> TrafficStats {
        TrafficStats {
            round_trips: self.session.round_trips(),
            ..self.stats
        }
    }

    /// Server compute time so far, as the transport measured it.
    pub fn server_time(&self) -> Duration {
        self.session.transport().server_time()
    }

    /// Encodes and encrypts `x` (`n` rows of `stage`'s input) for `layer`: the request's
    /// ciphertext bytes and what decrypting its answer needs.
    fn encrypt_rows(
        &mut self,
        layer: usize,
        stage: LinearStage,
        x: &[f32],
        n: usize,
    ) -> Result<(Vec<u8>, Sent)> {
        if self.check_failed {
            return Err(Error::FailedCheckEarlier);
        }
        let stage_at = stage_index(stage)?;
        let single = self.layouts.get(layer).and_then(|l| l.get(stage_at));
        let batched = self.batched.get(layer).and_then(|l| l.get(stage_at));
        // Several rows take the batched tiling when they fill at least half of one of its
        // ciphertexts (unflooded: the flooding sigmas are sized for the stages' layouts).
        let layout = match batched {
            Some(b) if self.flooding.is_none() && n > 1 && 2 * n >= b.tokens_per_ct() => Some(b),
            _ => single,
        }
        .ok_or(Error::LayerOutOfRange {
            layer,
            layers: self.layouts.len(),
        })?
        .clone(); // an Arc
        let sigma = match &self.flooding {
            None => None,
            Some(f) => Some(
                f.sigmas
                    .get(layer)
                    .and_then(|s| s.get(stage_at))
                    .copied()
                    .ok_or(Error::LayerOutOfRange {
                        layer,
                        layers: f.sigmas.len(),
                    })?,
            ),
        };
        let t = Instant::now();
        let (input, scales) = self.client.encode_encrypt(x, n, &layout)?;
        let request = input.to_bytes(self.client.params());
        self.stats.client_time += t.elapsed();
        self.stats.bytes_up += request.len();
        Ok((
            request,
            Sent {
                layout,
                scales,
                sigma,
            },
        ))
    }

    /// Decrypts and checks the answer to a request [`Self::encrypt_rows`] made of `x`
    /// into `out`.
    fn decrypt_rows(
        &mut self,
        layer: usize,
        stage: LinearStage,
        sent: &Sent,
        answer: &[u8],
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.stats.bytes_down += answer.len();
        let t = Instant::now();
        let output = EncryptedOutput::from_bytes(answer, self.client.params())?;
        let decoded = match sent.sigma {
            Some(sigma) => {
                self.client
                    .decrypt_decode_flooded(&output, &sent.scales, &sent.layout, sigma)
            }
            None => self
                .client
                .decrypt_decode(&output, &sent.scales, &sent.layout),
        };
        let y = match decoded {
            Ok(y) => y,
            Err(source @ selene_linalg::Error::OutputOutOfBound { .. }) => {
                self.check_failed = true;
                return Err(Error::ProductCheck {
                    layer,
                    stage,
                    source,
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.stats.client_time += t.elapsed();
        if self.verify_rate > 0.0 && self.rng.gen::<f64>() < self.verify_rate {
            self.stats.verified += 1;
            match self.spot_check(layer, stage, &sent.layout, x, &y) {
                Ok(d) => {
                    self.stats.verify_max_deviation = self.stats.verify_max_deviation.max(d);
                }
                Err(e) => {
                    self.check_failed = true;
                    return Err(e);
                }
            }
        }
        let t = Instant::now();
        for (o, v) in out.iter_mut().zip(&y) {
            *o = *v as f32;
        }
        self.stats.client_time += t.elapsed();
        self.stats.products += 1;
        Ok(())
    }

    /// How `layer`'s `stage` over `n` rows splits into requests (their row counts, in
    /// order): [`PIPELINE_ROWS`] each, or one batched ciphertext's rows when that is more
    /// (at most [`MAX_ROWS_PER_PRODUCT`]), the rest last; and rows beyond the last whole
    /// batched ciphertext that would fill less than half of one go as their own request,
    /// in the single-row tiling. A batched ciphertext costs the server about two single
    /// rows (4 rows per ciphertext), so a drafted pass of 9 rows goes as 8 + 1 and one
    /// of 5 as 4 + 1, not as three or two ciphertexts of 4.
    fn request_rows(&self, layer: usize, stage: LinearStage, n: usize) -> Vec<usize> {
        let per_ct = stage_index(stage)
            .ok()
            .and_then(|at| Some(self.batched.get(layer)?.get(at)?.tokens_per_ct()))
            .unwrap_or(1)
            .max(1);
        split_rows(n, per_ct)
    }

    /// `stage`'s product of `x` into `out`, in requests of `rows` rows each, each sent
    /// before the previous answer is read ([`ClientSession::send_product`]): the server
    /// computes one request while the next uploads and the one before downloads, and the
    /// client encrypts the next meanwhile.
    fn encrypted(
        &mut self,
        layer: usize,
        stage: LinearStage,
        x: &[f32],
        out: &mut [f32],
        rows: &[usize],
    ) -> Result<()> {
        let (d_in, d_out) = stage.dims(self.weights.config());
        let n: usize = rows.iter().sum();
        if x.len() != n * d_in || out.len() != n * d_out {
            return Err(selene_model::Error::Shape {
                what: "encrypted product (the requests' rows of its input and output)",
                found: x.len(),
                expected: n * d_in,
            }
            .into());
        }
        let (mut xs, mut outs) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        let (mut x_rest, mut out_rest) = (x, out);
        for &r in rows {
            let (xi, xr) = x_rest.split_at(r * d_in);
            let (oi, or) = std::mem::take(&mut out_rest).split_at_mut(r * d_out);
            xs.push(xi);
            outs.push(oi);
            (x_rest, out_rest) = (xr, or);
        }
        let done = self.pipelined(layer, stage, rows, &xs, &mut outs);
        if done.is_err() {
            self.session.discard_outstanding();
        }
        done
    }

    /// The requests of [`Self::encrypted`], `rows[i]` rows each, one input and output
    /// slice each.
    fn pipelined(
        &mut self,
        layer: usize,
        stage: LinearStage,
        rows: &[usize],
        xs: &[&[f32]],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let mut waiting: Option<Sent> = None;
        for i in 0..=xs.len() {
            let next = match xs.get(i) {
                Some(xi) => {
                    let (request, sent) = self.encrypt_rows(layer, stage, xi, rows[i])?;
                    self.session.send_product(layer, stage, request)?;
                    Some(sent)
                }
                None => None,
            };
            if let Some(sent) = waiting.take() {
                let answer = self.session.receive_product()?;
                self.decrypt_rows(layer, stage, &sent, &answer, xs[i - 1], outs[i - 1])?;
            }
            waiting = next;
        }
        Ok(())
    }
}

/// [`StrictLinear::request_rows`] for `n` rows and batched ciphertexts of `per_ct` rows
/// (1: none).
fn split_rows(n: usize, per_ct: usize) -> Vec<usize> {
    let per_ct = per_ct.max(1);
    let chunk = PIPELINE_ROWS.max(per_ct).min(MAX_ROWS_PER_PRODUCT);
    let mut rows = vec![chunk; n / chunk];
    let last = n % chunk;
    let tail = last % per_ct;
    if last > tail && tail > 0 && 2 * tail < per_ct {
        rows.extend([last - tail, tail]);
    } else if last > 0 {
        rows.push(last);
    }
    rows
}

/// What decrypting one request's answer needs.
struct Sent {
    layout: Arc<Layout>,
    scales: selene_linalg::TokenScales,
    sigma: Option<f64>,
}

impl<T: Transport> StrictLinear<'_, T> {
    /// One round trip for `layer`'s fused `pair` over at most [`MAX_ROWS_PER_PRODUCT`]
    /// rows, two products: the inner stage's of `inner_x` into `inner_out`, and the
    /// stacked matrix's ([`stacked_weight`]) of `[stream | alpha inner_x]` into `outer_out`
    /// (unscaled: the caller divides by the RMS).
    fn fused_round_trip(
        &mut self,
        layer: usize,
        pair: FusedPair,
        inner_x: &[f32],
        stream: &[f32],
        inner_out: &mut [f32],
        outer_out: &mut [f32],
    ) -> Result<()> {
        if self.check_failed {
            return Err(Error::FailedCheckEarlier);
        }
        let (inner_stage, outer_stage) = pair.stages();
        let at = 2 * layer + usize::from(pair == FusedPair::DownQkv);
        let inner_l = self
            .layouts
            .get(layer)
            .and_then(|l| l.get(stage_index(inner_stage).ok()?))
            .cloned();
        let (Some(inner_l), Some(fused_l)) = (inner_l, self.fused_layouts.get(at).cloned()) else {
            return Err(if self.fused_layouts.is_empty() {
                Error::Fused {
                    why: "this session is not fused (open it with StrictLinear::new_fused)",
                }
            } else {
                Error::LayerOutOfRange {
                    layer,
                    layers: self.layouts.len(),
                }
            });
        };
        let d_inner = inner_l.shape().d_in.max(1);
        let n = inner_x.len() / d_inner;
        let d_model = self.weights.config().d_model;
        let alpha = self.fused_alphas.get(at).copied().unwrap_or(1.0);
        let stacked = stack_rows(stream, d_model, inner_x, d_inner, alpha).ok_or(Error::Fused {
            why: "the stream and the inner input have different row counts",
        })?;
        let t = Instant::now();
        let mut items = Vec::with_capacity(2);
        let mut scales = Vec::with_capacity(2);
        // The stacked product first where it streams: the server then starts its key
        // switches, the most, as the frame begins (`crate::Prefetch`). Otherwise (strict
        // mode's folded merge levels) the inner one, computed while the stacked uploads.
        let stacked_first = fused_l.streams();
        let mut order = [
            (Product::Fused(pair), &fused_l, &stacked[..]),
            (Product::Stage(inner_stage), &inner_l, inner_x),
        ];
        if !stacked_first {
            order.reverse();
        }
        for (product, layout, x) in order {
            let (input, s) = self.client.encode_encrypt(x, n, layout)?;
            let ciphertext = input.to_bytes(self.client.params());
            self.stats.bytes_up += ciphertext.len();
            items.push(ProductRequest {
                layer: u32::try_from(layer).unwrap_or(u32::MAX),
                product,
                ciphertext,
            });
            scales.push(s);
        }
        self.stats.client_time += t.elapsed();

        let answers = self.session.products(items)?;

        // Under decryption flooding (selective mode), each product's own sigma.
        let mut sigmas = match &self.flooding {
            None => [None, None],
            Some(f) => [
                f.fused_sigmas.get(at).copied(),
                f.sigmas
                    .get(layer)
                    .and_then(|s| s.get(stage_index(inner_stage).ok()?))
                    .copied(),
            ]
            .map(|s| {
                s.ok_or(Error::LayerOutOfRange {
                    layer,
                    layers: f.sigmas.len(),
                })
            })
            .map(Some),
        };
        let mut decoding = [(&fused_l, outer_stage), (&inner_l, inner_stage)];
        if !stacked_first {
            sigmas.reverse();
            decoding.reverse();
        }
        let t = Instant::now();
        let mut ys = Vec::with_capacity(2);
        for (((answer, s), (layout, stage)), sigma) in
            answers.iter().zip(&scales).zip(decoding).zip(sigmas)
        {
            self.stats.bytes_down += answer.len();
            let output = EncryptedOutput::from_bytes(answer, self.client.params())?;
            let decoded = match sigma {
                Some(sigma) => self
                    .client
                    .decrypt_decode_flooded(&output, s, layout, sigma?),
                None => self.client.decrypt_decode(&output, s, layout),
            };
            match decoded {
                Ok(y) => ys.push(y),
                Err(source @ selene_linalg::Error::OutputOutOfBound { .. }) => {
                    self.check_failed = true;
                    return Err(Error::ProductCheck {
                        layer,
                        stage,
                        source,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !stacked_first {
            ys.reverse();
        }
        let [y_outer, y_inner]: [Vec<f64>; 2] = ys.try_into().map_err(|_| Error::Fused {
            why: "an answer is missing",
        })?;
        for (o, v) in inner_out.iter_mut().zip(&y_inner) {
            *o = *v as f32;
        }
        for (o, v) in outer_out.iter_mut().zip(&y_outer) {
            *o = *v as f32;
        }
        self.stats.client_time += t.elapsed();
        self.stats.products += 2;
        Ok(())
    }

    /// [`Self::fused_round_trip`] over any number of rows, in requests of at most
    /// [`MAX_ROWS_PER_PRODUCT`] rows, errors wrapped for the model.
    fn fused_rows(
        &mut self,
        layer: usize,
        pair: FusedPair,
        inner_x: &[f32],
        stream: &[f32],
        inner_out: &mut [f32],
        outer_out: &mut [f32],
    ) -> selene_model::Result<()> {
        let c = self.weights.config();
        let (inner_stage, outer_stage) = pair.stages();
        let (d_in, d_mid) = inner_stage.dims(c);
        let (d_model, d_out) = outer_stage.dims(c);
        let r = MAX_ROWS_PER_PRODUCT;
        let wrap = |e: Error| selene_model::Error::Linear {
            layer,
            stage: outer_stage,
            source: Box::new(e),
        };
        let n = inner_x.len() / d_in.max(1);
        if inner_x.len() != n * d_in
            || stream.len() != n * d_model
            || inner_out.len() != n * d_mid
            || outer_out.len() != n * d_out
        {
            return Err(selene_model::Error::Shape {
                what: "fused pair (n rows of each input and output)",
                found: stream.len(),
                expected: n * d_model,
            });
        }
        for (((xi, s), oi), oo) in inner_x
            .chunks(r * d_in)
            .zip(stream.chunks(r * d_model))
            .zip(inner_out.chunks_mut(r * d_mid))
            .zip(outer_out.chunks_mut(r * d_out))
        {
            self.fused_round_trip(layer, pair, xi, s, oi, oo)
                .map_err(wrap)?;
        }
        Ok(())
    }
}

impl<T: Transport> FusedLinear for StrictLinear<'_, T> {
    fn attn_gate(
        &mut self,
        layer: usize,
        a: &[f32],
        x: &[f32],
        o: &mut [f32],
        gu: &mut [f32],
    ) -> selene_model::Result<()> {
        self.fused_rows(layer, FusedPair::AttnGate, a, x, o, gu)
    }

    fn down_qkv(
        &mut self,
        layer: usize,
        m: &[f32],
        h: &[f32],
        down: &mut [f32],
        qkv: Option<&mut [f32]>,
    ) -> selene_model::Result<()> {
        match qkv {
            Some(qkv) => self.fused_rows(layer, FusedPair::DownQkv, m, h, down, qkv),
            // The last layer's down product has no next layer to fuse with.
            None => self.apply(ProductAt::new(layer, LinearStage::Down), m, down),
        }
    }
}

impl<T: Transport> Linear for StrictLinear<'_, T> {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> selene_model::Result<()> {
        let ProductAt { layer, stage } = at;
        if stage == LinearStage::LmHead {
            // The forward pass hands gain-folded stages the un-gained norm; the client's
            // plaintext head puts the final norm's gain back.
            let mut gained = x.to_vec();
            apply_gain(&mut gained, self.weights.output_norm());
            return QuantLinear::new(self.weights).apply(
                ProductAt::new(layer, stage),
                &gained,
                out,
            );
        }
        stage.check(self.weights.config(), x, out)?;
        // A long prompt goes as several requests of at most PIPELINE_ROWS rows (or one
        // batched ciphertext's), pipelined, so every message stays far below the server's
        // size limit and the link carries one request while the server computes another.
        let n = x.len() / stage.dims(self.weights.config()).0.max(1);
        let rows = self.request_rows(layer, stage, n);
        self.encrypted(layer, stage, x, out, &rows)
            .map_err(|e| selene_model::Error::Linear {
                layer,
                stage,
                source: Box::new(e),
            })
    }

    fn gains_folded(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_products_split_into_whole_ciphertexts_and_a_single_row_rest() {
        // Row by row: requests of 8, the rest last.
        assert_eq!(split_rows(1, 1), [1]);
        assert_eq!(split_rows(22, 1), [8, 8, 6]);
        // 4 rows per ciphertext: a rest of one row goes alone (single-row tiling), one
        // of two or three stays with the whole ciphertexts before it.
        assert_eq!(split_rows(9, 4), [8, 1]);
        assert_eq!(split_rows(5, 4), [4, 1]);
        assert_eq!(split_rows(6, 4), [6]);
        assert_eq!(split_rows(32, 4), [8, 8, 8, 8]);
        assert_eq!(split_rows(153, 4), [vec![8; 19], vec![1]].concat());
        // 16 rows per ciphertext: requests of 16; 9 rows fill more than half of one.
        assert_eq!(split_rows(32, 16), [16, 16]);
        assert_eq!(split_rows(9, 16), [9]);
        assert_eq!(split_rows(17, 16), [16, 1]);
        // 64 per ciphertext is capped at MAX_ROWS_PER_PRODUCT rows per request.
        assert_eq!(split_rows(64, 64), [32, 32]);
        for (n, per_ct) in [(0, 1), (7, 2), (100, 8), (33, 32)] {
            assert_eq!(split_rows(n, per_ct).iter().sum::<usize>(), n);
        }
    }
}
