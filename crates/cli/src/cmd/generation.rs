//! One private generation over any transport: open a session under a policy, generate in
//! strict or selective mode, close. Shared by `run` and `client` (through
//! [`super::run::drive`]) and by the `openai` endpoint.

use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context;
use selene_audit::view::DEFAULT_FLOOD_SIGMA;
use selene_ckks::Parameters;
use selene_keys::KeystoreGuard;
use selene_model::{Sampler, Weights};
use selene_protocol::policy::FloodSigma;
use selene_protocol::{
    generate_after_prefix, generate_session, ClientSession, PaddedLinear, Policy, PolicyGuard,
    PrefixKv, ReleaseGuard, SelectiveClient, StrictLinear, TrafficStats, Transport,
};
use sha2::{Digest, Sha256};

/// The parts of a policy the token loop needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    /// Layers run encrypted; the model's depth is strict mode.
    pub k: usize,
    /// Flooding standard deviation of each release.
    pub sigma: f64,
    /// Most hidden-state rows released per session.
    pub cap: u64,
    /// Strict mode pads the prompt's products to a multiple of this many rows (1: none).
    pub pad_to: usize,
}

impl Terms {
    /// The terms `policy` sets (the audit's default sigma when it fixes none).
    pub fn of(policy: &Policy) -> Self {
        let sigma = match policy.release.map(|r| r.flood_sigma) {
            Some(FloodSigma::Fixed(s)) => s,
            _ => DEFAULT_FLOOD_SIGMA,
        };
        Self {
            k: policy.encrypted_layers,
            sigma,
            cap: policy.release.map_or(0, |r| r.max_per_session),
            pad_to: policy.pad_to.unwrap_or(1),
        }
    }
}

/// What a policy leaks, as the line `run`, `client` and `openai` print on stderr:
/// strict mode's ciphertext-only view, or the audit's measured inversion rate for
/// selective mode (issue 8); `None` when the audit has no row at or below K.
///
/// # Errors
/// The shipped audit table does not parse.
pub fn policy_notice(terms: Terms, layers: usize) -> anyhow::Result<Option<String>> {
    let k = terms.k;
    if k >= layers {
        return Ok(Some(format!(
            "[strict mode: all {layers} layers encrypted; the server sees ciphertexts, their \
             sizes and timing (so the token count), never a token, activation or logit]"
        )));
    }
    let Some(row) = selene_audit::measured::measured_leak(k, terms.sigma)? else {
        return Ok(None);
    };
    let fields = row
        .field_recovery
        .map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f));
    Ok(Some(format!(
        "[selective mode, K = {k}: the server receives the hidden states after the first {k} \
         layers; from them an attacker holding the weights recovered {:.1}% of prompt tokens \
         and {fields} of sensitive fields (audit at K = {}, flooding sigma {}; docs/audit.md). \
         This is not private.]",
        100.0 * row.token_recovery,
        row.k,
        row.flood_sigma
    )))
}

/// An opened session: the encrypting client and, when a keystore exists, its guard.
pub struct Session<'w, T: Transport> {
    /// The client half, holding the session key.
    pub strict: StrictLinear<'w, T>,
    /// The keystore's release guard (its signed policy and log), if there is a keystore.
    pub guard: Option<KeystoreGuard>,
}

/// SHA-256 of the model file, as the server announces it in `Welcome`: computed once per
/// process (hashing the 98 MB GGUF takes a few tenths of a second).
pub fn model_fingerprint(w: &Weights) -> [u8; 32] {
    Sha256::digest(w.gguf().bytes()).into()
}

/// Opens a session under `policy` over `transport` with the keystore's session key
/// when one exists (else a fresh ephemeral key), and checks that the server runs this
/// client's model (`fingerprint`, from [`model_fingerprint`]).
///
/// # Errors
/// The keystore fails to open, the server refuses the session, or its model
/// fingerprint differs.
pub fn open<'w, T: Transport>(
    w: &'w Weights,
    fingerprint: &[u8; 32],
    params: &Arc<Parameters>,
    policy: Policy,
    transport: T,
) -> anyhow::Result<Session<'w, T>> {
    let keys = selene_keys::open_or_ephemeral(&selene_keys::default_dir(), policy.preset)?;
    let session = ClientSession::open(transport, params, policy, w.config().context_length)
        .context("the server refused the session")?;
    let fp = session.welcome().model.fingerprint;
    if fp != [0; 32] && fp != *fingerprint {
        anyhow::bail!("the server runs another model than this client's (fingerprints differ)");
    }
    Ok(Session {
        strict: StrictLinear::from_session(w, keys.key.client()?, session)?,
        guard: keys.guard,
    })
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
}

/// Generates up to `max_tokens` tokens after `prompt` (and after `prefix`, the keys and
/// values of a public context the server already ran) in an opened session: strict mode
/// when `terms.k` is the model's depth, selective mode below it (releases flooded as
/// `terms` say and authorized by the keystore's guard, or without a keystore by a
/// [`PolicyGuard`] with the policy's cap). Stops after an id in `stop` or when `on_token` breaks, as
/// [`selene_model::generate`] does, then closes the session.
///
/// # Errors
/// A full context, and whatever the protocol or `on_token` fails with.
#[allow(clippy::too_many_arguments)] // one call's inputs; none of them belong together
pub fn generate<T: Transport>(
    w: &Weights,
    session: Session<'_, T>,
    terms: Terms,
    prefix: Option<&PrefixKv>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
) -> anyhow::Result<(Vec<u32>, PrivateStats)> {
    let Session { strict, guard } = session;
    let p = prefix.map_or(0, PrefixKv::positions);
    // Generated tokens must fit after the prefix and the prompt.
    let max_tokens = max_tokens.min(w.config().context_length.saturating_sub(p + prompt.len()));
    if terms.k >= w.config().n_layers {
        let mut linear = PaddedLinear::new(strict, w.config(), terms.pad_to)?;
        let ids = generate_after_prefix(
            w,
            prefix,
            prompt,
            max_tokens,
            stop,
            sampler,
            &mut linear,
            on_token,
        )?;
        let mut linear = linear.into_inner();
        let _ = linear.session_mut().close();
        let stats = PrivateStats {
            traffic: linear.stats(),
            server_s: linear.server_time().as_secs_f64(),
            releases: 0,
        };
        return Ok((ids, stats));
    }
    let capacity = p + prompt.len() + max_tokens;
    let guard: Box<dyn ReleaseGuard + Send> = match guard {
        Some(g) => Box::new(g),
        None => Box::new(PolicyGuard::new(terms.k, terms.sigma, terms.cap)),
    };
    // Every product decryption is flooded for the session's capacity (LMSS22 at the
    // coeff12wide preset, docs/hardening.md section 3), so the releases do not hand the
    // server this session's key.
    let mut client =
        SelectiveClient::new(w, terms.k, strict, terms.sigma, capacity)?.with_guard(guard);
    if let Some(kv) = prefix {
        client.install_prefix(kv)?;
    }
    let ids = generate_session(&mut client, prompt, max_tokens, stop, sampler, on_token)?;
    let _ = client.strict_mut().session_mut().close();
    let stats = PrivateStats {
        traffic: client.strict().stats(),
        server_s: client.strict().server_time().as_secs_f64(),
        releases: client.releases(),
    };
    Ok((ids, stats))
}
