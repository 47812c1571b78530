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
//! | `tls_start_timeout` | 2 s | A connection must send the first byte of its TLS ClientHello this soon after the TCP accept: a real client sends it at once, so a raw socket that never starts TLS holds its pre-authentication slot for 2 s, not the whole handshake timeout. |
//! | `handshake_timeout` | 5 s | TLS handshake on a loopback or LAN link takes milliseconds, over a slow WAN a few round trips; a silent connection must not hold a slot. |
//! | `hello_timeout` | 5 s | Time from the end of the TLS handshake to an accepted `Hello`: the client sends it as its first frame. |
//! | `max_hello_bytes` | 16 KiB | Largest frame accepted before a session is open. The largest valid `Hello` (token of [`crate::wire::MAX_TOKEN_BYTES`], policy of [`crate::wire::MAX_POLICY_BYTES`], no evaluation keys) is under 4.5 KB; an unauthenticated peer must not make the server buffer 64 MiB. Evaluation keys never ride in `Hello`: packed outputs' Galois keys go up in a `GaloisKeys` message once the session is open. |
//! | `max_unauthenticated` | 64 | Connections that have not opened a session (TCP accepted, TLS or `Hello` pending), in all. When full, a new connection sheds the oldest of them, so a flood of idle sockets delays a real client by at most its own handshake. Authenticated connections are counted by `max_sessions` instead. |
//! | `free_refusals` | 3 | Refused `Hello`s an address may send before it must wait (a mistyped token, a wrong preset); each refused `Hello` also closes its connection. |
//! | `refusal_backoff` | 1 s | The first wait after the free refusals; it doubles with each further refusal up to 60 s, and during the wait a `Hello` from that address is refused without its token being checked, so guessing runs at about one try a minute. A valid token clears the address. |
//! | `max_unauthenticated_per_address` | 16 | The same, per source IP address: a full address sheds its own oldest connection, so one address cannot evict the others' handshakes. 16 lets one host (a proxy such as `selene openai`) open `max_sessions` sessions at once; a client host opening more at once may see its own oldest handshake shed (it retries). |
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
    /// Time a new connection has to send the first byte of its TLS handshake.
    pub tls_start_timeout: Duration,
    /// Time a new connection has to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time from the end of the TLS handshake to an accepted `Hello`.
    pub hello_timeout: Duration,
    /// Largest frame (length prefix excluded) accepted before a session is open.
    pub max_hello_bytes: usize,
    /// Connections without a session (TLS or `Hello` pending), in all.
    pub max_unauthenticated: usize,
    /// Connections without a session from one source address.
    pub max_unauthenticated_per_address: usize,
    /// Refused `Hello`s per source address before it must wait.
    pub free_refusals: u32,
    /// First wait after the free refusals; doubled with each further one, up to 60 s.
    pub refusal_backoff: Duration,
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
            tls_start_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(5),
            max_hello_bytes: 16 << 10,
            max_unauthenticated: 64,
            max_unauthenticated_per_address: 16,
            free_refusals: 3,
            refusal_backoff: Duration::from_secs(1),
            frame_timeout: Duration::from_secs(30),
            max_positions: 2048,
        }
    }
}
