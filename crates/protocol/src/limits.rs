//! The server's limits: what one peer may cost it.
//!
//! | Limit | Default | Why this value |
//! |---|---|---|
//! | `max_message_bytes` | 64 MiB | A prefill sends all prompt tokens in one product: at `coeff12` a layer costs 1.04 MB up and 0.83 MB down per token over its 4 products (`docs/benchmarks.md`), so no single product frame exceeds about 0.6 MB per token and 64 MiB carries a prompt of about 100 tokens; the 1.5 MB `Welcome` (120 layouts) fits easily. Every frame is held in memory once, so this also bounds a connection's buffer. Longer prompts need a larger limit (`selene serve --max-message-mib`) until the client splits prefill products. |
//! | `max_sessions` | 16 | A session past the limit is refused at `Hello` with `TooManySessions` rather than queued. The memory one session may hold is in the `max_positions` row; `tests/load.rs` measures the peak RSS growth per session of 32 concurrent short sessions and asserts under 64 MiB (figures in `docs/benchmarks.md`). |
//! | `max_positions` | 2,048 | Positions a session may fill on the server: a public prefix longer than this (or than the session's context) is refused **before** it runs, and a release that would pass it is refused before the tail runs. The memory budget this makes true, per session, for SmolLM2 (30 layers, 384 key and value floats per layer and position, 46 KB per position over all layers): the selective tail's KV cache at most 2,048 x 46 KB = 94 MB; a public prefix run at most about 3 x 94 MB = 283 MB while it runs (its cache, the `PrefixKv` copy and the reply's bytes) plus its activations (a few tens of MB at 2,048 positions); one frame in flight, at most `max_message_bytes`. So 16 sessions stay under 16 x (94 MB + 64 MiB) = 2.6 GB at rest, and each concurrent prefix run adds at most about 0.35 GB while it runs. |
//! | `idle_timeout` | 120 s | Between two requests the client only runs its own plaintext steps (attention, norms: milliseconds) or waits for the previous answer; two minutes of silence means it is gone. |
//! | `max_lifetime` | 1 h | A 2,048-token strict generation at about 1 s per token fits; keys are per session and the number of releases per key is capped (ARCHITECTURE.md), so sessions must end. |
//! | `max_requests` | 500,000 | Strict mode sends 120 products per token: a full 2,048-token context is 245,760 requests, doubled for margin. |
//! | `handshake_timeout` | 10 s | TLS handshake plus `Hello` on a loopback or LAN link take milliseconds; a silent connection must not hold a slot. |
//! | `frame_timeout` | 30 s | Time to receive one frame's body once its length prefix arrived, and to send one reply. A full 64 MiB frame at 20 Mbit/s takes 27 s, a usual product frame (under 1 MB per token) well under a second even on a slow link. Separate from `idle_timeout` (the client's think time between requests) so a peer trickling a frame a byte at a time (slowloris) is dropped after this long, not after the idle timeout. |
//!
//! Fixed bounds of the wire format (not configurable): bearer token at most
//! [`crate::wire::MAX_TOKEN_BYTES`], policy text [`crate::wire::MAX_POLICY_BYTES`],
//! evaluation keys [`crate::wire::MAX_EVAL_KEYS`], error text
//! [`crate::wire::MAX_ERROR_BYTES`].

use std::time::Duration;

/// Limits the server enforces per frame, per session and in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (length prefix excluded) accepted, in bytes.
    pub max_message_bytes: usize,
    /// Sessions open at once.
    pub max_sessions: usize,
    /// A session with no request for this long is ended.
    pub idle_timeout: Duration,
    /// A session is ended this long after it opened.
    pub max_lifetime: Duration,
    /// Requests per session, at most.
    pub max_requests: u64,
    /// Time a new connection has to finish TLS and send `Hello`.
    pub handshake_timeout: Duration,
    /// Time to read one frame's body after its length prefix, and to write one reply.
    pub frame_timeout: Duration,
    /// Positions (public prefix plus released rows) one session may fill on the server:
    /// bounds the plaintext tail's KV cache and a prefix run (module docs: the budget).
    pub max_positions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_sessions: 16,
            idle_timeout: Duration::from_secs(120),
            max_lifetime: Duration::from_secs(3600),
            max_requests: 500_000,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            max_positions: 2048,
        }
    }
}
