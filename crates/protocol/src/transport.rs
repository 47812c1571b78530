//! How the client's requests reach the server.

use std::time::{Duration, Instant};

use selene_model::LinearStage;

use crate::error::Result;
use crate::server::ModelServer;

/// Carries one encrypted product request to the server and its answer back.
pub trait Transport {
    /// Sends `request` (an encrypted input in wire form) for `layer`'s `stage` and
    /// returns the server's answer (an encrypted output in wire form).
    ///
    /// # Errors
    /// Whatever the server or the channel fails with.
    fn round_trip(&mut self, layer: usize, stage: LinearStage, request: &[u8]) -> Result<Vec<u8>>;

    /// Time the server spent computing so far (for the per-token report).
    fn server_time(&self) -> Duration;
}

/// The embedded transport: the server runs in this process, messages cross as bytes.
#[derive(Debug)]
pub struct InProcess {
    server: ModelServer,
    server_time: Duration,
}

impl InProcess {
    /// Wraps a server.
    pub fn new(server: ModelServer) -> Self {
        Self {
            server,
            server_time: Duration::ZERO,
        }
    }
}

impl Transport for InProcess {
    fn round_trip(&mut self, layer: usize, stage: LinearStage, request: &[u8]) -> Result<Vec<u8>> {
        let t = Instant::now();
        let out = self.server.handle(layer, stage, request);
        self.server_time += t.elapsed();
        out
    }

    fn server_time(&self) -> Duration {
        self.server_time
    }
}
