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

    /// Time spent waiting for the server so far (for the per-token report): its compute
    /// time in process, the round trips' wall time over a network.
    fn server_time(&self) -> Duration;
}
