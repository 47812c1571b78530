//! One private generation over any transport, as every front end runs it (`selene run`,
//! `selene client`, the OpenAI endpoint, `selene bench e2e`): open a session under a
//! policy, check that the server runs this client's model, generate in strict or
//! selective mode, close.

use std::ops::ControlFlow;
use std::sync::Arc;

use selene_ckks::Parameters;
use selene_linalg::Client;
use selene_model::{
    forward, forward_fused, generate_with, DraftStats, KvCache, Logits, PromptLookup, Sampler,
    Weights,
};

use super::padding::PaddedLinear;
use super::prefix::generate_after_prefix_drafted;
use super::selective::{generate_session, SelectiveClient};
use super::session::ClientSession;
use super::strict::{StrictLinear, TrafficStats};
use crate::codec::prefix_kv::PrefixKv;
use crate::error::{Error, Result};
use crate::policy::{Policy, PolicyGuard, ReleaseGuard, Terms};
use crate::transport::Transport;

/// The model fingerprint a server announces in `Welcome` ([`Weights::fingerprint`]: the
/// GGUF header and tensor index plus the client bundle's tensors), the same from the full
/// model and from a client bundle; hand it to [`PrivateGenerator::open`].
pub fn model_fingerprint(w: &Weights) -> [u8; 32] {
    w.fingerprint()
}

/// What one private generation cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivateStats {
    /// Traffic and client HE time of the encrypted layers.
    pub traffic: TrafficStats,
    /// Server compute time of the encrypted layers, in seconds.
    pub server_s: f64,
    /// Hidden-state rows released to the server (selective mode; 0 in strict mode).
    pub releases: usize,
    /// Positions whose layer-0 q|k|v the server sent ahead with a release (selective
    /// mode, [`crate::wire::Ahead`]): one round trip saved each.
    pub ahead: usize,
    /// What prompt-lookup drafts achieved (all zero without drafts).
    pub draft: DraftStats,
}

/// An opened private session, ready to generate once: the encrypting client, the
/// policy's terms and the guard that authorizes selective mode's releases.
pub struct PrivateGenerator<'w, T: Transport> {
    w: &'w Weights,
    strict: StrictLinear<'w, T>,
    terms: Terms,
    guard: Option<Box<dyn ReleaseGuard + Send>>,
    draft: Option<PromptLookup>,
}

impl<T: Transport> std::fmt::Debug for PrivateGenerator<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateGenerator")
            .field("terms", &self.terms)
            .field("guard", &self.guard.is_some())
            .field("draft", &self.draft)
            .finish_non_exhaustive()
    }
}

impl<'w, T: Transport> PrivateGenerator<'w, T> {
    /// Opens a session under `policy` over `transport` with `client` (holding this
    /// session's secret key) and checks that the server runs the model whose fingerprint
    /// is `fingerprint` ([`model_fingerprint`], from the full model or its client
    /// bundle). `guard` authorizes every release in
    /// selective mode (a keystore's signed policy and log); without one, a
    /// [`PolicyGuard`] enforces the policy's layer, sigma and cap.
    ///
    /// # Errors
    /// The server refuses the session ([`Error::Remote`]), runs another model
    /// ([`Error::ModelMismatch`]), or sends layouts this client cannot use.
    pub fn open(
        w: &'w Weights,
        fingerprint: &[u8; 32],
        params: &Arc<Parameters>,
        policy: Policy,
        transport: T,
        client: Client,
        guard: Option<Box<dyn ReleaseGuard + Send>>,
    ) -> Result<Self> {
        let terms = Terms::of(&policy);
        let session = ClientSession::open(transport, params, policy, w.config().context_length)?;
        // A server without weights (strict-only, embedded) announces no fingerprint.
        let fp = session.welcome().model.fingerprint;
        if fp != [0; 32] && fp != *fingerprint {
            return Err(Error::ModelMismatch);
        }
        Ok(Self {
            w,
            strict: StrictLinear::from_session(w, client, session)?,
            terms,
            guard,
            draft: None,
        })
    }

    /// Drafts up to `lookup.k()` tokens per pass by prompt lookup (strict mode only:
    /// in selective mode the server's tail keeps per-position state a rejected draft
    /// would have to take back).
    ///
    /// # Errors
    /// [`Error::Model`] with [`selene_model::Error::BadDraft`] in selective mode.
    pub fn with_draft(mut self, lookup: Option<PromptLookup>) -> Result<Self> {
        if let Some(l) = lookup {
            if self.terms.k < self.w.config().n_layers {
                return Err(selene_model::Error::BadDraft {
                    draft: format!("prompt-lookup:{}", l.k()),
                    why: "drafts run in strict mode only (in selective mode the server's \
                          layers keep per-position state a rejected draft cannot take back)",
                }
                .into());
            }
        }
        self.draft = lookup;
        Ok(self)
    }

    /// Spot-checks each product with probability `rate` in plaintext
    /// ([`StrictLinear::with_verify_rate`]; needs the full model's layer matrices).
    ///
    /// # Errors
    /// As [`StrictLinear::with_verify_rate`].
    pub fn with_verify_rate(mut self, rate: f64) -> Result<Self> {
        self.strict.set_verify_rate(rate)?;
        Ok(self)
    }

    /// The policy's terms.
    pub fn terms(&self) -> Terms {
        self.terms
    }

    /// The session, before generating (e.g. to run a public prefix first).
    pub fn session_mut(&mut self) -> &mut ClientSession<T> {
        self.strict.session_mut()
    }

    /// Generates up to `max_tokens` tokens after `prompt` (and after `prefix`, the keys
    /// and values of a public context the server already ran): strict mode when the
    /// policy encrypts every layer, selective mode below (releases flooded as the policy
    /// says and authorized by the guard). Stops after an id in `stop` or when `on_token`
    /// breaks, as [`selene_model::generate`] does, then closes the session.
    ///
    /// # Errors
    /// A full context, and whatever the protocol or `on_token` fails with.
    #[allow(
        clippy::too_many_arguments,
        reason = "the token loop's inputs, each needed"
    )]
    pub fn generate(
        self,
        prefix: Option<&PrefixKv>,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
    ) -> Result<(Vec<u32>, PrivateStats)> {
        let Self {
            w,
            strict,
            terms,
            guard,
            draft,
        } = self;
        let c = w.config();
        let p = prefix.map_or(0, PrefixKv::positions);
        // Generated tokens must fit after the prefix and the prompt.
        let max_tokens = max_tokens.min(c.context_length.saturating_sub(p + prompt.len()));
        if strict.is_fused() {
            if let Some(by) = terms.fusion_blocker(prefix.is_some(), draft.is_some()) {
                return Err(Error::FusionBlocked { by });
            }
        }
        if strict.is_fused() && terms.k >= c.n_layers {
            return generate_fused(w, strict, prompt, max_tokens, stop, sampler, on_token);
        }
        if terms.k >= c.n_layers {
            let mut linear = PaddedLinear::new(strict, c, terms.pad_to)?;
            // A drafted pass holds k positions beyond the last token.
            let k = draft.map_or(0, |d| d.k());
            let max_tokens = max_tokens.min(c.context_length.saturating_sub(p + prompt.len() + k));
            let (ids, draft) = generate_after_prefix_drafted(
                w,
                prefix,
                prompt,
                max_tokens,
                stop,
                sampler,
                &mut linear,
                draft.as_ref(),
                on_token,
            )?;
            let mut linear = linear.into_inner();
            // The tokens are out; a failed Close only ends the session early.
            let _ = linear.session_mut().close();
            let stats = PrivateStats {
                traffic: linear.stats(),
                server_s: linear.server_time().as_secs_f64(),
                releases: 0,
                ahead: 0,
                draft,
            };
            return Ok((ids, stats));
        }
        let capacity = p + prompt.len() + max_tokens;
        let guard =
            guard.unwrap_or_else(|| Box::new(PolicyGuard::new(terms.k, terms.sigma, terms.cap)));
        let key_rows = guard.key_rows_cap();
        // Every product decryption is flooded for the session's capacity (LMSS22 at the
        // coeff12wide preset, docs/hardening.md section 3), or for every row a reused key
        // may release over all its sessions, so the releases do not hand an
        // honest-but-curious server the key.
        let client = match prefix {
            Some(kv) => {
                SelectiveClient::with_prefix(w, terms.k, strict, terms.sigma, capacity, kv)?
            }
            None => SelectiveClient::new(w, terms.k, strict, terms.sigma, capacity)?,
        };
        let mut client = client.with_guard(guard);
        if let Some(rows) = key_rows {
            client.flood_for_key_rows(rows)?;
        }
        let ids = generate_session(&mut client, prompt, max_tokens, stop, sampler, on_token)?;
        let _ = client.strict_mut().session_mut().close();
        let stats = PrivateStats {
            traffic: client.strict().stats(),
            server_s: client.strict().server_time().as_secs_f64(),
            releases: client.releases(),
            ahead: client.ahead_used(),
            draft: DraftStats::default(),
        };
        Ok((ids, stats))
    }
}

/// A fused strict session's generation (two round trips per layer per generated token,
/// `selene_model::fused`; the prompt's one pass unfused), once the caller has checked
/// `Terms::fusion_blocker` (no public prefix, drafts or padding, which the fused pass does
/// not carry yet).
fn generate_fused<T: Transport>(
    w: &Weights,
    mut strict: StrictLinear<'_, T>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
) -> Result<(Vec<u32>, PrivateStats)> {
    let mut cache = KvCache::new(w.config(), prompt.len() + max_tokens);
    let ids = generate_with(
        prompt,
        max_tokens,
        stop,
        sampler,
        // The prompt's pass runs unfused: its round trips are paid once, and the stage
        // matrices cost the server about half the fused ones' multiply-adds per row (and
        // take the batched layouts, when the server holds them).
        &mut |ids| {
            if ids.len() > 1 {
                forward(w, ids, &mut cache, &mut strict, Logits::Last)
            } else {
                forward_fused(w, ids, &mut cache, &mut strict, Logits::Last)
            }
        },
        on_token,
    )?;
    // The tokens are out; a failed Close only ends the session early.
    let _ = strict.session_mut().close();
    let stats = PrivateStats {
        traffic: strict.stats(),
        server_s: strict.server_time().as_secs_f64(),
        releases: 0,
        ahead: 0,
        draft: DraftStats::default(),
    };
    Ok((ids, stats))
}
