//! The server's session state machine, shared by every connection and independent of the
//! transport: [`SessionServer`] holds the prepared model, the accepted token hashes, the
//! limits and the counters; each connection drives one [`Connection`], which turns one
//! request frame into one reply frame.
//!
//! A connection is `Idle` until a valid `Hello` opens its session (version, token, policy,
//! parameters, keys and the session limit are all checked before anything is allocated);
//! then it answers requests in order, each with a request id above the last. The session
//! ends on `Close`, when the connection is dropped (the peer vanished), at its idle
//! timeout or lifetime, or when it has used its requests; ending it frees its tail state
//! and keys. A malformed frame gets an `Error` reply and touches no other session.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::prefetch::{EarlyWork, Prefetch, Prefetched};
use super::session::{reject, Reject, Session};
use super::session_server::SessionServer;
use super::{handlers, hello};
use crate::codec::wire::{self, ErrorCode, Frame, Message};
use crate::error::Error;

/// What to send back for one request frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The reply frame.
    pub bytes: Vec<u8>,
    /// True when the connection must close after sending it.
    pub close: bool,
}

/// One connection's state machine: no session until `Hello`, then one session.
pub struct Connection {
    server: Arc<SessionServer>,
    session: Option<Session>,
    last_request: u64,
    connected: Instant,
    peer: Option<IpAddr>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session.as_ref().map(|s| s.id))
            .field("last_request", &self.last_request)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The open session's id.
    pub fn session_id(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// When this connection must end if no request arrives: the `Hello` timeout before
    /// `Hello`, then the earlier of the idle timeout and the session's lifetime.
    pub fn deadline(&self) -> Instant {
        let l = &self.server.limits;
        match &self.session {
            None => self.connected + l.hello_timeout,
            Some(s) => (s.last_active + l.idle_timeout).min(s.opened + l.max_lifetime),
        }
    }

    /// Ends the session because its deadline passed; returns the `Error` frame to send
    /// before closing.
    pub fn expire(&mut self) -> Reply {
        let why = self.end("idle timeout or lifetime");
        self.error_reply(0, ErrorCode::SessionExpired, why, true)
    }

    fn end(&mut self, reason: &'static str) -> &'static str {
        if let Some(mut s) = self.session.take() {
            s.end_reason = reason;
        }
        reason
    }

    fn frame(&self, request_id: u64, message: Message) -> Vec<u8> {
        let bytes = wire::encode(&Frame {
            request_id,
            message,
        })
        .or_else(|e| {
            wire::encode(&Frame {
                request_id,
                message: Message::error(ErrorCode::Internal, e),
            })
        })
        // Error frames never fail to encode (no policy inside).
        .unwrap_or_default();
        self.server
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes
    }

    fn error_reply(
        &self,
        request_id: u64,
        code: ErrorCode,
        message: impl std::fmt::Display,
        close: bool,
    ) -> Reply {
        self.server.errors.fetch_add(1, Ordering::Relaxed);
        Reply {
            bytes: self.frame(request_id, Message::error(code, message)),
            close,
        }
    }

    /// What a transport needs to compute this session's products while their request
    /// still uploads: `Some` once a fused session is open.
    pub fn prefetch(&self) -> Option<Prefetch> {
        let s = self.session.as_ref().filter(|s| s.policy.fused)?;
        Some(Prefetch::new(
            self.server.clone(),
            s.model,
            s.galois.clone(),
            s.policy.encrypted_layers,
        ))
    }

    /// Answers one request frame (length prefix included). Never panics: every failure
    /// is an `Error` reply; `close` is set after `Close`, a refused `Hello`, a frame over
    /// the size limit, an expired session and a used-up request budget.
    pub fn handle(&mut self, bytes: &[u8]) -> Reply {
        self.handle_prefetched(bytes, Vec::new())
    }

    /// Like [`Connection::handle`], with products of this frame computed while it
    /// uploaded ([`Prefetch`]): the frame is checked as any other, and each of its
    /// `Products` items that decodes to a prefetched item's index, layer, product and
    /// bytes takes that answer instead of computing it again.
    pub fn handle_prefetched(&mut self, bytes: &[u8], prefetched: Vec<Prefetched>) -> Reply {
        self.handle_early(
            bytes,
            EarlyWork {
                prefetched,
                streamed: Vec::new(),
            },
        )
    }

    /// Like [`Connection::handle_prefetched`], with products streamed as well
    /// ([`Prefetch::stream`]): each is finished only for an item of the same index, layer
    /// and product whose bytes begin with those its stream took.
    pub fn handle_early(&mut self, bytes: &[u8], early: EarlyWork) -> Reply {
        self.server
            .bytes_in
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let frame = match wire::decode(bytes, &self.server.limits) {
            Ok(f) => f,
            Err(e @ Error::FrameTooLarge { .. }) => {
                return self.error_reply(0, ErrorCode::MessageTooLarge, e, true)
            }
            Err(e @ Error::PolicyParse { .. }) => {
                return self.error_reply(0, ErrorCode::PolicyRejected, e, false)
            }
            Err(e) => return self.error_reply(0, ErrorCode::Malformed, e, false),
        };
        let id = frame.request_id;
        if let Some(s) = &self.session {
            let now = Instant::now();
            let l = &self.server.limits;
            if now > s.last_active + l.idle_timeout || now > s.opened + l.max_lifetime {
                let why = self.end("idle timeout or lifetime");
                return self.error_reply(id, ErrorCode::SessionExpired, why, true);
            }
        }
        if id <= self.last_request {
            return self.error_reply(
                id,
                ErrorCode::BadRequestId,
                format!(
                    "request id {id} is not above the last one ({})",
                    self.last_request
                ),
                false,
            );
        }
        self.last_request = id;
        if let Some(s) = &mut self.session {
            s.last_active = Instant::now();
            s.requests += 1;
            if s.requests > self.server.limits.max_requests {
                let why = self.end("request limit");
                return self.error_reply(id, ErrorCode::RequestLimit, why, true);
            }
        }
        if matches!(frame.message, Message::Close) {
            self.end("close");
            return Reply {
                bytes: self.frame(id, Message::Close),
                close: true,
            };
        }
        // A refused `Hello` ends the connection: one guess per connection (and per
        // backoff interval of its address), never a stream of them.
        let opening = self.session.is_none() && matches!(frame.message, Message::Hello(_));
        match self.answer(frame.message, early) {
            Ok(m) => Reply {
                bytes: self.frame(id, m),
                close: false,
            },
            Err(r) => self.error_reply(id, r.code, r.message, opening),
        }
    }
    /// Routes one decoded message to its handler: `Hello` opens the session, every other
    /// client message needs one; each handler receives the decoded value.
    fn answer(
        &mut self,
        message: Message,
        early: EarlyWork,
    ) -> std::result::Result<Message, Reject> {
        let server = self.server.clone();
        match (message, &mut self.session) {
            (Message::Hello(h), None) => {
                let (session, welcome) = hello::open(&server, h, self.peer)?;
                self.session = Some(session);
                Ok(welcome)
            }
            (Message::Hello(_), Some(_)) => {
                Err(reject(ErrorCode::AlreadyOpen, "a session is already open"))
            }
            (
                Message::Product { .. }
                | Message::Products { .. }
                | Message::Release { .. }
                | Message::PublicPrefix { .. }
                | Message::GaloisKeys { .. }
                | Message::Close,
                None,
            ) => Err(reject(ErrorCode::NoSession, "no session: send Hello first")),
            (Message::GaloisKeys { bytes }, Some(s)) => handlers::galois_keys(&server, s, &bytes),
            (
                Message::Product {
                    layer,
                    stage,
                    ciphertext,
                },
                Some(s),
            ) => handlers::product(&server, s, layer, stage, &ciphertext),
            (Message::Products { items }, Some(s)) => handlers::products(&server, s, &items, early),
            (Message::PublicPrefix { tokens }, Some(s)) => {
                handlers::public_prefix(&server, s, &tokens)
            }
            (Message::Release { bytes }, Some(s)) => handlers::release(&server, s, &bytes),
            (m, _) => Err(reject(
                ErrorCode::UnexpectedMessage,
                format!("a client never sends {:?}", m.kind()),
            )),
        }
    }
}

impl SessionServer {
    /// A new connection's state machine, for a peer without an address (in process).
    pub fn connect(self: &Arc<Self>) -> Connection {
        self.connect_peer(None)
    }

    /// A new connection's state machine for a peer at `peer`: refused `Hello`s from that
    /// address make its later ones wait ([`crate::Limits::refusal_backoff`]).
    pub fn connect_from(self: &Arc<Self>, peer: IpAddr) -> Connection {
        self.connect_peer(Some(peer))
    }

    fn connect_peer(self: &Arc<Self>, peer: Option<IpAddr>) -> Connection {
        Connection {
            server: self.clone(),
            session: None,
            last_request: 0,
            connected: Instant::now(),
            peer,
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
