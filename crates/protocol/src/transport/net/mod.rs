//! The network transport: the session protocol over TCP with TLS 1.2/1.3 (rustls with
//! the ring provider). The server ([`TlsServer`], tokio) runs one task per connection
//! and the CKKS work on tokio's blocking pool; the client ([`TlsTransport`]) is blocking,
//! like the token loop it serves.
//!
//! Trust: a client either pins the SHA-256 of the server's certificate ([`Trust::Pinned`],
//! for a development self-signed certificate made by [`Identity::self_signed`]; the
//! handshake signature is still verified with the pinned certificate's key) or checks the
//! chain against CA roots and the server's name ([`Trust::Roots`]). The bearer token
//! travels inside the encrypted channel, in `Hello`.
//!
//! Per connection the server refuses a frame whose length prefix passes
//! [`crate::Limits::max_hello_bytes`] (before a session is open) or
//! [`crate::Limits::max_message_bytes`] (after) before reading its body (an `Error`
//! reply, then the connection closes), and drops a connection whose frame body does not
//! arrive within [`crate::Limits::frame_timeout`] (a stalled or trickling peer); anything
//! that is not TLS (plain HTTP, garbage, a truncated or slow handshake) just drops that
//! connection. Connections without a session have their own budget, deadlines and
//! shedding (see the server's module).

mod admission;
mod client;
mod identity;
mod server;

pub use client::{TlsTransport, Trust, DEFAULT_TIMEOUT};
pub use identity::{cert_fingerprint, parse_fingerprint, to_hex, Identity};
pub use server::TlsServer;
