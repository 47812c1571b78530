//! The TLS server: an accept loop, one task per connection, CKKS work on the blocking
//! pool so the reactor keeps serving other connections.
//!
//! A connection lives in two phases. Before its session opens it is unauthenticated: it
//! holds a place in the [`Admission`] budget (and is shed when a newer connection needs
//! the place), must start TLS within [`Limits::tls_start_timeout`], finish it within
//! [`Limits::handshake_timeout`] and have a `Hello` accepted within
//! [`Limits::hello_timeout`], with frames capped at [`Limits::max_hello_bytes`]; a
//! refused `Hello` closes it. Once the session is open it leaves that budget (sessions
//! are bounded by [`Limits::max_sessions`]) and frames may reach
//! [`Limits::max_message_bytes`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::admission::Admission;
use super::identity::Identity;
use crate::codec::wire::{self, ErrorCode, Frame, Message};
use crate::error::Result;
use crate::limits::Limits;
use crate::server::{Connection, SessionServer};

/// A bound TLS listener in front of a [`SessionServer`].
pub struct TlsServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sessions: Arc<SessionServer>,
    admission: Arc<Admission>,
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
    /// Connections without a session are bounded by
    /// [`Limits::max_unauthenticated`] (and per address), those with one by
    /// [`Limits::max_sessions`].
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
        let l = sessions.limits();
        let admission = Admission::new(l.max_unauthenticated, l.max_unauthenticated_per_address);
        Ok(Self {
            listener,
            acceptor,
            sessions,
            admission,
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
            let (stream, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // Out of descriptors or a connection reset before accept: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let ticket = self.admission.admit(peer.ip());
            let acceptor = self.acceptor.clone();
            let sessions = self.sessions.clone();
            tokio::spawn(async move {
                let shed = ticket.shed.clone();
                let opened = tokio::select! {
                    () = shed.notified() => None,
                    o = authenticate(stream, peer.ip(), &acceptor, &sessions) => o,
                };
                drop(ticket); // the session is open (or the connection ends)
                if let Some((tls, conn)) = opened {
                    serve_session(tls, conn, sessions.limits()).await;
                }
            });
        }
    }
}

/// What reading the next frame gave.
enum Next {
    /// A whole frame, length prefix included.
    Frame(Vec<u8>),
    /// The connection must end (the reply, if any, was sent).
    End,
}

/// Reads one frame of at most `max` bytes before `c`'s deadline; on a deadline, an
/// oversized or malformed prefix or a stalled body it answers what is due and returns
/// [`Next::End`].
async fn next_frame(
    tls: &mut TlsStream<TcpStream>,
    c: &mut Connection,
    max: usize,
    limits: &Limits,
) -> Next {
    let wait = c.deadline().saturating_duration_since(Instant::now());
    let read = async {
        let mut prefix = [0u8; 4];
        tls.read_exact(&mut prefix).await?;
        Ok::<_, std::io::Error>(prefix)
    };
    let prefix = match tokio::time::timeout(wait, read).await {
        Err(_) => {
            let reply = c.expire();
            let _ = tokio::time::timeout(limits.frame_timeout, tls.write_all(&reply.bytes)).await;
            return Next::End;
        }
        Ok(Err(_)) => return Next::End, // the peer vanished: dropping `c` frees its session
        Ok(Ok(p)) => p,
    };
    let cap = Limits {
        max_message_bytes: max,
        ..limits.clone()
    };
    let len = match wire::body_len(prefix, &cap) {
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
                let _ = tokio::time::timeout(limits.frame_timeout, tls.write_all(&bytes)).await;
            }
            return Next::End;
        }
    };
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&prefix);
    // A peer that sends the prefix and then trickles (or withholds) the body is dropped
    // after `frame_timeout`; dropping `c` frees its session.
    match tokio::time::timeout(limits.frame_timeout, tls.read_exact(&mut frame[4..])).await {
        Ok(Ok(_)) => Next::Frame(frame),
        _ => Next::End,
    }
}

/// Answers `frame` on the blocking pool and sends the reply; returns the connection when
/// it goes on.
async fn answer(
    tls: &mut TlsStream<TcpStream>,
    mut c: Connection,
    frame: Vec<u8>,
    limits: &Limits,
) -> Option<Connection> {
    let handled = tokio::task::spawn_blocking(move || {
        let reply = c.handle(&frame);
        (c, reply)
    })
    .await;
    let (c, reply) = handled.ok()?;
    let write = async {
        tls.write_all(&reply.bytes).await?;
        tls.flush().await
    };
    match tokio::time::timeout(limits.frame_timeout, write).await {
        Ok(Ok(())) if !reply.close => Some(c),
        _ => None,
    }
}

/// The unauthenticated phase: the TLS handshake under its two deadlines, then frames of
/// at most [`Limits::max_hello_bytes`] until a `Hello` opens a session (returned with
/// the stream) or the connection ends.
async fn authenticate(
    stream: TcpStream,
    peer: IpAddr,
    acceptor: &TlsAcceptor,
    sessions: &Arc<SessionServer>,
) -> Option<(TlsStream<TcpStream>, Connection)> {
    let limits = sessions.limits();
    let _ = stream.set_nodelay(true);
    // A raw socket that never starts TLS is dropped after the short start deadline.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.tls_start_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return None,
    }
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream));
    let Ok(Ok(mut tls)) = handshake.await else {
        return None; // plain HTTP, garbage, a truncated or slow handshake
    };
    let mut c = sessions.connect_from(peer);
    loop {
        let Next::Frame(frame) = next_frame(&mut tls, &mut c, limits.max_hello_bytes, limits).await
        else {
            let _ = tls.shutdown().await;
            return None;
        };
        let Some(next) = answer(&mut tls, c, frame, limits).await else {
            let _ = tls.shutdown().await;
            return None;
        };
        c = next;
        if c.session_id().is_some() {
            return Some((tls, c));
        }
    }
}

/// The session phase: frames up to [`Limits::max_message_bytes`] until the session ends.
async fn serve_session(mut tls: TlsStream<TcpStream>, mut c: Connection, limits: &Limits) {
    loop {
        let Next::Frame(frame) =
            next_frame(&mut tls, &mut c, limits.max_message_bytes, limits).await
        else {
            break;
        };
        match answer(&mut tls, c, frame, limits).await {
            Some(next) => c = next,
            None => break,
        }
    }
    let _ = tls.shutdown().await;
}
