//! The binary's side of a private generation: the session key and release guard (the
//! keystore under `$SELENE_HOME`, or an ephemeral key) and the leak notice printed before
//! the prompt leaves the machine. The generation itself is
//! [`selene_protocol::PrivateGenerator`], shared by `run`, `client`, `openai` and
//! `bench e2e`.

use std::sync::Arc;

use selene_ckks::Parameters;
use selene_linalg::Client;
use selene_model::{store, Weights};
use selene_protocol::{Policy, PrivateGenerator, ReleaseGuard, Terms, Transport};

/// What a policy leaks, as the line `run`, `client` and `openai` print on stderr:
/// strict mode's ciphertext-only view, or the audit's measured inversion rate for
/// selective mode; `None` when the audit has no row at or below K. The shipped audit
/// measured SmolLM2 only: for another model (`audited` false) selective mode gets a
/// line saying that no audit exists for it.
///
/// # Errors
/// The shipped audit table does not parse.
pub fn policy_notice(terms: Terms, layers: usize, audited: bool) -> anyhow::Result<Option<String>> {
    let k = terms.k;
    if k >= layers {
        return Ok(Some(format!(
            "[strict mode: all {layers} layers encrypted; the server sees ciphertexts, their \
             sizes and timing (so the token count), never a token, activation or logit]"
        )));
    }
    if !audited {
        return Ok(Some(format!(
            "[selective mode, K = {k}: the server receives the hidden states after the first \
             {k} layers; the leakage audit (docs/audit.md) measured SmolLM2 only, not this \
             model. Treat it as not private.]"
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

/// True when `w` is the model the shipped leakage audit measured (SmolLM2 from the
/// store, by its client-bundle fingerprint).
pub fn is_audited_model(w: &Weights) -> bool {
    let hex: String = w.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
    hex == store::MODEL_FINGERPRINT
}

/// Opens a private session under `policy` over `transport` with the keystore's session
/// key and guard when a keystore exists (else a fresh ephemeral key), and checks that
/// the server runs this client's model (`fingerprint`, from
/// [`selene_protocol::model_fingerprint`]).
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
) -> anyhow::Result<PrivateGenerator<'w, T>> {
    let keys = selene_keys::open_or_ephemeral(&super::args::keys_dir(), params)?;
    let guard = keys
        .guard
        .map(|g| Box::new(g) as Box<dyn ReleaseGuard + Send>);
    let client = Client::from_secret_key(keys.key.secret_key(params)?);
    PrivateGenerator::open(w, fingerprint, params, policy, transport, client, guard).map_err(|e| {
        let why = match e {
            selene_protocol::Error::Remote { .. } => "the server refused the session",
            _ => "could not open the private session",
        };
        anyhow::Error::new(e).context(why)
    })
}
