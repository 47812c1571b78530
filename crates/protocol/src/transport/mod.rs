//! How the client's frames reach the server: the [`Transport`] trait the client speaks
//! through, the embedded [`InProcess`] transport (the one file that names both halves:
//! it drives the server's connection state machine in this process) and TLS over TCP
//! ([`net`]).

use std::time::Duration;

use crate::error::Result;

mod in_process;
pub mod net;

pub use in_process::InProcess;

/// Carries one request frame to the server and its reply frame back (both in the
/// [`crate::wire`] format, length prefix included).
pub trait Transport {
    /// Sends `request` and returns the server's reply.
    ///
    /// # Errors
    /// Whatever the channel fails with ([`crate::Error::Closed`] once the server closed
    /// the connection).
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>>;

    /// The bearer token this transport presents in `Hello`.
    fn token(&self) -> &[u8];

    /// Caps the size of the next replies at `max_bytes` (length prefix excluded): a
    /// transport that reads from a network refuses a longer reply before allocating it.
    /// [`crate::ClientSession`] sets it before each request from what that request can
    /// legitimately get back. The default does nothing (in process, nothing is read).
    fn limit_reply(&mut self, max_bytes: usize) {
        let _ = max_bytes;
    }

    /// Time spent waiting for the server so far (for the per-token report): its compute
    /// time in process, the round trips' wall time over a network.
    fn server_time(&self) -> Duration;
}
