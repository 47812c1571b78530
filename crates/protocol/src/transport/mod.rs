//! How the client's frames reach the server: the [`Transport`] trait the client speaks
//! through, the embedded [`InProcess`] transport (the one file that names both halves:
//! it drives the server's connection state machine in this process) and TLS over TCP
//! ([`net`]).

use std::time::Duration;

use crate::error::Result;

mod in_process;
pub mod net;

pub use in_process::InProcess;

/// Carries request frames to the server and its reply frames back (both in the
/// [`crate::wire`] format, length prefix included), in order.
///
/// A request may be sent before the previous reply is read: the server answers in
/// order and reads one request ahead while it computes ([`crate::wire::WIRE_VERSION`]
/// 3), so [`crate::ClientSession`] keeps at most two outstanding and the second one's
/// upload overlaps the server's work on the first.
pub trait Transport {
    /// Sends `request` without waiting for its reply.
    ///
    /// # Errors
    /// Whatever the channel fails with ([`crate::Error::Closed`] once the server closed
    /// the connection).
    fn send(&mut self, request: &[u8]) -> Result<()>;

    /// Reads the reply to the oldest request not yet answered.
    ///
    /// # Errors
    /// As [`Transport::send`], and a reply above the [`Transport::limit_reply`] bound.
    fn receive(&mut self) -> Result<Vec<u8>>;

    /// Sends `request` and returns the server's reply (nothing else outstanding).
    ///
    /// # Errors
    /// As [`Transport::send`] and [`Transport::receive`].
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>> {
        self.send(request)?;
        self.receive()
    }

    /// The bearer token this transport presents in `Hello`.
    fn token(&self) -> &[u8];

    /// Caps the size of the next replies at `max_bytes` (length prefix excluded): a
    /// transport that reads from a network refuses a longer reply before allocating it.
    /// [`crate::ClientSession`] sets it before each reply it reads from what that
    /// request can legitimately get back. The default does nothing (in process, nothing
    /// is read).
    fn limit_reply(&mut self, max_bytes: usize) {
        let _ = max_bytes;
    }

    /// Time spent waiting for the server so far (for the per-token report): its compute
    /// time in process, the round trips' wall time over a network.
    fn server_time(&self) -> Duration;
}
