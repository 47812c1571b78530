//! The TLS server: an accept loop, one task per connection, CKKS work on the blocking
//! pool so the reactor keeps serving other connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::identity::Identity;
use crate::codec::wire::{self, ErrorCode, Frame, Message};
use crate::error::Result;
use crate::server::{Connection, SessionServer};

/// A bound TLS listener in front of a [`SessionServer`].
pub struct TlsServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sessions: Arc<SessionServer>,
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("addr", &self.listener.local_addr().ok())
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Binds `addr` (e.g. `127.0.0.1:7443`, port 0 for any) with `identity`'s certificate.
    /// Connections at once are capped at twice the session limit plus 4 (connections
    /// still in their handshake also hold memory); more are dropped at accept.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the address cannot be bound, [`crate::Error::Tls`] for
    /// an unusable identity.
    pub async fn bind(
        addr: &str,
        identity: &Identity,
        sessions: Arc<SessionServer>,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let acceptor = TlsAcceptor::from(identity.server_config()?);
        let max = sessions.limits().max_sessions.saturating_mul(2) + 4;
        Ok(Self {
            listener,
            acceptor,
            sessions,
            connections: Arc::new(Semaphore::new(max)),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`crate::Error::Io`] from the socket.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Accepts connections until the task is dropped; one failing connection never
    /// stops the loop.
    pub async fn run(self) {
        loop {
            let Ok((stream, _peer)) = self.listener.accept().await else {
                continue;
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let acceptor = self.acceptor.clone();
            let sessions = self.sessions.clone();
            tokio::spawn(async move {
                serve_connection(stream, acceptor, sessions).await;
                drop(permit);
            });
        }
    }
}

/// Runs one connection to its end; every way it can fail just ends it.
async fn serve_connection(stream: TcpStream, acceptor: TlsAcceptor, sessions: Arc<SessionServer>) {
    let limits = sessions.limits().clone();
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream));
    let Ok(Ok(mut tls)) = handshake.await else {
        return; // plain HTTP, garbage, a truncated or slow handshake
    };
    let mut conn = Some(sessions.connect());
    while let Some(mut c) = conn.take() {
        let wait = c.deadline().saturating_duration_since(Instant::now());
        let read = async {
            let mut prefix = [0u8; 4];
            tls.read_exact(&mut prefix).await?;
            Ok::<_, std::io::Error>(prefix)
        };
        let prefix = match tokio::time::timeout(wait, read).await {
            Err(_) => {
                let reply = c.expire();
                let _ = tokio::time::timeout(limits.handshake_timeout, tls.write_all(&reply.bytes))
                    .await;
                break;
            }
            Ok(Err(_)) => break, // the peer vanished: dropping `c` frees its session
            Ok(Ok(p)) => p,
        };
        let len = match wire::body_len(prefix, &limits) {
            Ok(len) => len,
            Err(e) => {
                // Refused before reading the body: answer, then close this connection.
                let code = match e {
                    crate::Error::FrameTooLarge { .. } => ErrorCode::MessageTooLarge,
                    _ => ErrorCode::Malformed,
                };
                let frame = wire::encode(&Frame {
                    request_id: 0,
                    message: Message::error(code, e),
                });
                if let Ok(bytes) = frame {
                    let _ =
                        tokio::time::timeout(limits.handshake_timeout, tls.write_all(&bytes)).await;
                }
                break;
            }
        };
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&prefix);
        let body = tls.read_exact(&mut frame[4..]);
        // A peer that sends the prefix and then trickles (or withholds) the body is
        // dropped after `frame_timeout`; dropping `c` frees its session.
        match tokio::time::timeout(limits.frame_timeout, body).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let handled = tokio::task::spawn_blocking(move || {
            let reply = c.handle(&frame);
            (c, reply)
        })
        .await;
        let Ok((c, reply)) = handled else { break };
        let write = async {
            tls.write_all(&reply.bytes).await?;
            tls.flush().await
        };
        match tokio::time::timeout(limits.frame_timeout, write).await {
            Ok(Ok(())) if !reply.close => conn = Some(c),
            _ => drop::<Connection>(c),
        }
    }
    let _ = tls.shutdown().await;
}
