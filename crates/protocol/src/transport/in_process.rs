//! The embedded transport: client and server in one process, every frame still crossing
//! as bytes through the server's [`Connection`] state machine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::Transport;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::server::{Connection, ModelServer, SessionServer};

/// The embedded transport: the session server runs in this process, and every frame
/// goes through the same state machine and the same bytes a network peer would send.
pub struct InProcess {
    conn: Connection,
    token: Vec<u8>,
    server_time: Duration,
    /// Replies computed at [`Transport::send`], not yet received.
    replies: VecDeque<Vec<u8>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("conn", &self.conn)
            .field("token", &"[redacted]")
            .field("server_time", &self.server_time)
            .finish()
    }
}

impl InProcess {
    /// An embedded strict-mode session server for `server`'s prepared model (no
    /// plaintext tail), with a random one-time token.
    pub fn new(server: ModelServer) -> Self {
        let mut token = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut token);
        let s = SessionServer::strict_only(server.model().clone(), Limits::default())
            .with_token(&token);
        Self::connect(&Arc::new(s), &token)
    }

    /// A connection to a shared session server, presenting `token`.
    pub fn connect(server: &Arc<SessionServer>, token: &[u8]) -> Self {
        Self {
            conn: server.connect(),
            token: token.to_vec(),
            server_time: Duration::ZERO,
            replies: VecDeque::new(),
        }
    }
}

impl Transport for InProcess {
    fn send(&mut self, request: &[u8]) -> Result<()> {
        let t = Instant::now();
        let reply = self.conn.handle(request);
        self.server_time += t.elapsed();
        self.replies.push_back(reply.bytes);
        Ok(())
    }

    fn receive(&mut self) -> Result<Vec<u8>> {
        // Nothing outstanding: the server has closed this exchange's stream.
        self.replies.pop_front().ok_or(Error::Closed)
    }

    fn token(&self) -> &[u8] {
        &self.token
    }

    fn server_time(&self) -> Duration {
        self.server_time
    }
}
