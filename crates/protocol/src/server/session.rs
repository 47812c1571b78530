//! One open session's state on the server (its policy, counters and plaintext tail) and
//! the refusal every message handler returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::session_server::{SessionEvent, SessionServer};
use super::tail::TailState;
use crate::codec::wire::ErrorCode;
use crate::policy::Policy;

/// One open session: its policy, counters and plaintext tail.
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) server: Arc<SessionServer>,
    /// Index of its preset's model in `server.models`.
    pub(super) model: usize,
    pub(super) policy: Policy,
    /// The wire version the client named in `Hello` (what it can read).
    pub(super) protocol: u16,
    pub(super) opened: Instant,
    pub(super) last_active: Instant,
    pub(super) requests: u64,
    pub(super) released_rows: u64,
    pub(super) tail: Option<TailState>,
    pub(super) end_reason: &'static str,
    /// The client's Galois keys for packed outputs, once uploaded.
    pub(super) galois: Option<Arc<selene_ckks::GaloisKeys>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.open.fetch_sub(1, Ordering::SeqCst);
        self.server.emit(&SessionEvent::Closed {
            id: self.id,
            reason: self.end_reason,
            requests: self.requests,
        });
    }
}

/// An error reply and whether it ends the connection.
pub(super) struct Reject {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

pub(super) fn reject(code: ErrorCode, message: impl std::fmt::Display) -> Reject {
    Reject {
        code,
        message: message.to_string(),
    }
}
