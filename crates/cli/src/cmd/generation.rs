//! The binary's side of a private generation: the session key and release guard (the
//! keystore under `$SELENE_HOME`, or an ephemeral key) and the leak notice printed before
//! the prompt leaves the machine. The generation itself is
//! [`selene_protocol::PrivateGenerator`], shared by `run`, `client`, `openai` and
//! `bench e2e`.

use std::sync::Arc;

use selene_audit::measured::Measured;
use selene_ckks::Parameters;
use selene_linalg::Client;
use selene_model::Weights;
use selene_protocol::{Policy, PrivateGenerator, ReleaseGuard, Terms, Transport};

/// What a policy leaks, as the line `run`, `client` and `openai` print on stderr:
/// strict mode's ciphertext-only view, or the audit's measured inversion rate for
/// selective mode from the model's own table (`audit`, see [`audit_table`]); `None` when
/// that table has no row at or below K. A model the audit did not measure (`audit`
/// `None`) gets a line saying so in selective mode.
///
/// # Errors
/// The shipped audit table does not parse.
pub fn policy_notice(
    terms: Terms,
    layers: usize,
    audit: Option<&Measured>,
) -> anyhow::Result<Option<String>> {
    let k = terms.k;
    if k >= layers {
        return Ok(Some(format!(
            "[strict mode: all {layers} layers encrypted; the server sees ciphertexts, their \
             sizes and timing (so the token count), never a token, activation or logit]"
        )));
    }
    let Some(audit) = audit else {
        return Ok(Some(format!(
            "[selective mode, K = {k}: the server receives the hidden states after the first \
             {k} layers; the leakage audit (docs/audit.md) measured {} only, not this model. \
             Treat it as not private.]",
            selene_audit::measured::audited_models().join(" and ")
        )));
    };
    let Some(row) = audit.leak(k, terms.sigma)? else {
        return Ok(None);
    };
    let fields = row
        .field_recovery
        .map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f));
    Ok(Some(format!(
        "[selective mode, K = {k}: the server receives the hidden states after the first {k} \
         layers; from them an attacker holding the weights recovered {:.1}% of prompt tokens \
         and {fields} of sensitive fields (audit of {} at K = {}, flooding sigma {}; \
         docs/audit.md). This is not private.]",
        100.0 * row.token_recovery,
        audit.model.name,
        row.k,
        row.flood_sigma
    )))
}

/// The shipped leakage table of `w`, found by its client-bundle fingerprint; `None` for
/// a model the audit did not measure.
pub fn audit_table(w: &Weights) -> Option<&'static Measured> {
    let hex: String = w.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
    selene_audit::measured::for_fingerprint(&hex)
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

#[cfg(test)]
mod tests {
    use super::*;
    use selene_audit::measured::TABLES;

    fn terms(k: usize) -> Terms {
        Terms {
            k,
            sigma: 0.01,
            cap: 64,
            pad_to: 1,
        }
    }

    #[test]
    fn the_notice_quotes_the_chosen_models_own_audit() {
        let strict = policy_notice(terms(24), 24, None).unwrap().unwrap();
        assert!(strict.contains("all 24 layers encrypted"), "{strict}");
        let qwen = policy_notice(terms(1), 24, Some(&TABLES[1]))
            .unwrap()
            .unwrap();
        assert!(
            qwen.contains("audit of qwen2.5-coder-0.5b at K = 1,"),
            "{qwen}"
        );
        let smol = policy_notice(terms(4), 30, Some(&TABLES[0]))
            .unwrap()
            .unwrap();
        assert!(smol.contains("audit of smollm2 at K = 4,"), "{smol}");
        let other = policy_notice(terms(2), 28, None).unwrap().unwrap();
        assert!(
            other.contains("measured smollm2 and qwen2.5-coder-0.5b only, not this model"),
            "{other}"
        );
    }
}
