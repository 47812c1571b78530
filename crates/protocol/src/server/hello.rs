//! Opening a session: a `Hello` is validated completely (version, token, policy, preset
//! and parameters, context, keys) before a session slot is taken or anything allocated.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selene_linalg::LinalgPreset;

use super::prepared::PreparedModel;
use super::session::{reject, Reject, Session};
use super::session_server::{SessionEvent, SessionServer};
use super::tail::TailState;
use crate::codec::wire::{
    ErrorCode, Hello, Message, SessionLimits, Welcome, FUSED_WIRE_VERSION, MIN_WIRE_VERSION,
    WIRE_VERSION,
};
use crate::policy::Policy;

/// Validates a `Hello` from `peer` completely, then takes a session slot and opens the
/// session; returns it with the `Welcome` to send. While `peer` waits out its backoff
/// the token is not even compared.
pub(super) fn open(
    server: &Arc<SessionServer>,
    h: Hello,
    peer: Option<IpAddr>,
) -> std::result::Result<(Session, Message), Reject> {
    if !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(&h.protocol)
        || (h.policy.fused && h.protocol < FUSED_WIRE_VERSION)
    {
        return Err(reject(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} (this server speaks {MIN_WIRE_VERSION}..={WIRE_VERSION}, \
                 and at least {FUSED_WIRE_VERSION} for fused sessions)",
                h.protocol
            ),
        ));
    }
    let now = Instant::now();
    if let Some(wait) = peer.and_then(|ip| server.backoff.wait(ip, now)) {
        return Err(reject(
            ErrorCode::Unauthorized,
            format!(
                "too many refused tokens from this address: retry in {} ms",
                wait.as_millis()
            ),
        ));
    }
    if !server.authorized(&h.token) {
        if let Some(ip) = peer {
            server.backoff.refused(ip, now);
        }
        return Err(reject(ErrorCode::Unauthorized, "bearer token not accepted"));
    }
    if let Some(ip) = peer {
        server.backoff.accepted(ip);
    }
    let protocol = h.protocol;
    let p = h.policy;
    // A server without weights does not know the model's depth: it checks coherence
    // against the depth the policy implies (one plaintext layer after a release).
    let depth = server
        .n_layers
        .unwrap_or(p.encrypted_layers + usize::from(p.release.is_some()));
    p.validate(depth)
        .map_err(|e| reject(ErrorCode::PolicyRejected, e))?;
    let model_at = served_model(server, &p, &h.params_fingerprint)?;
    let context = h.context as usize;
    if context == 0 || context > server.context_length {
        return Err(reject(
            ErrorCode::PolicyRejected,
            format!("context {context} must be in 1..={}", server.context_length),
        ));
    }
    if !h.eval_keys.is_empty() {
        return Err(reject(
            ErrorCode::KeysRejected,
            format!(
                "the coefficient method needs no evaluation keys; got {}",
                h.eval_keys.len()
            ),
        ));
    }
    let max = server.limits.max_sessions;
    if server
        .open
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        })
        .is_err()
    {
        return Err(reject(
            ErrorCode::TooManySessions,
            format!("the server has {max} sessions open"),
        ));
    }
    server.ever.fetch_add(1, Ordering::SeqCst);
    let id = server.next_id.fetch_add(1, Ordering::SeqCst);
    let k = p.encrypted_layers;
    let fused = p.fused;
    let tail = match (&server.weights, &p.release) {
        (Some(w), Some(_)) => Some(TailState::new(w, k, context)),
        _ => None,
    };
    let session = Session {
        id,
        server: server.clone(),
        model: model_at,
        policy: p,
        protocol,
        opened: now,
        last_active: now,
        requests: 1,
        released_rows: 0,
        tail,
        end_reason: "disconnect",
        galois: None,
    };
    server.emit(&SessionEvent::Opened {
        id,
        encrypted_layers: k,
    });
    Ok((session, welcome(server, id, model_at, k, fused)))
}

/// The index of the served model for the policy's preset, after checking that the
/// client's parameters are that model's and that it prepared the layers the policy
/// encrypts.
fn served_model(
    server: &SessionServer,
    p: &Policy,
    params_fingerprint: &[u8; 8],
) -> std::result::Result<usize, Reject> {
    let served: Vec<_> = server.models.iter().map(|m| m.preset).collect();
    let Some(model_at) = served.iter().position(|m| *m == Some(p.preset)) else {
        let served: Vec<_> = served.iter().map(|m| m.map(LinalgPreset::name)).collect();
        return Err(reject(
            ErrorCode::ParamsMismatch,
            format!(
                "client preset {:?}; this server serves {served:?}",
                p.preset.name()
            ),
        ));
    };
    let model = server
        .models
        .get(model_at)
        .ok_or_else(|| reject(ErrorCode::Internal, "served model missing"))?
        .products
        .model();
    let fp = model.params().fingerprint();
    if *params_fingerprint != fp {
        return Err(reject(
            ErrorCode::ParamsMismatch,
            format!(
                "client preset {:?} / parameters {:02x?}, server {fp:02x?}",
                p.preset.name(),
                params_fingerprint
            ),
        ));
    }
    let prepared = model.layers();
    if p.encrypted_layers > prepared {
        return Err(reject(
            ErrorCode::PolicyRejected,
            format!(
                "encrypted_layers = {} but this server prepared {prepared} layers at preset \
                 {:?}",
                p.encrypted_layers,
                p.preset.name()
            ),
        ));
    }
    if p.fused {
        let served = server
            .models
            .get(model_at)
            .ok_or_else(|| reject(ErrorCode::Internal, "served model missing"))?;
        if served.fused_layouts.len() < PreparedModel::fused_count(p.encrypted_layers) {
            return Err(reject(
                ErrorCode::PolicyRejected,
                format!(
                    "fused = true but this server holds no fused matrices at preset {:?} \
                     (it was started without --fuse)",
                    p.preset.name()
                ),
            ));
        }
    }
    Ok(model_at)
}

/// The `Welcome` of session `id`: the model's facts, the session's limits and the
/// layouts of the `k` encrypted layers, then, in a fused session, those of the first
/// `2 k - 1` fused matrices, then, when the server holds
/// batched matrices (`PreparedModel::with_batched`), the `4 k` batched layouts.
fn welcome(server: &SessionServer, id: u64, model_at: usize, k: usize, fused: bool) -> Message {
    let l = &server.limits;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let served = server.models.get(model_at);
    let mut layouts = served
        .and_then(|m| m.layouts.get(..4 * k))
        .unwrap_or(&[])
        .to_vec();
    if fused {
        layouts.extend(
            served
                .and_then(|m| m.fused_layouts.get(..PreparedModel::fused_count(k)))
                .unwrap_or(&[])
                .iter()
                .cloned(),
        );
    }
    layouts.extend(
        served
            .and_then(|m| m.batched_layouts.get(..4 * k))
            .unwrap_or(&[])
            .iter()
            .cloned(),
    );
    Message::Welcome(Welcome {
        session_id: id,
        model: server.facts,
        limits: SessionLimits {
            max_message_bytes: u32::try_from(l.max_message_bytes).unwrap_or(u32::MAX),
            max_requests: l.max_requests,
            idle_timeout_ms: ms(l.idle_timeout),
            lifetime_ms: ms(l.max_lifetime),
        },
        layouts,
    })
}
