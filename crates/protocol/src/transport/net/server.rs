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

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::admission::Admission;
use super::identity::Identity;
use crate::codec::wire::{self, ErrorCode, Frame, Message};
use crate::error::Result;
use crate::limits::Limits;
use crate::server::{Connection, EarlyItem, EarlyWork, Prefetch, Prefetched, SessionServer};

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

/// Products of a frame started while the rest of it uploaded ([`Prefetch`]).
type Pending = Vec<JoinHandle<Option<Prefetched>>>;

/// A frame's products computed as they uploaded ([`Prefetch::stream`]).
type Stream = Vec<JoinHandle<Option<EarlyItem>>>;

/// What reading the next frame gave.
enum Next {
    /// A whole frame, length prefix included, and its products started early.
    Frame(Vec<u8>, Pending, Stream),
    /// A length prefix refused before its body: send this reply, then end.
    Refuse(Vec<u8>),
    /// The connection's deadline passed before a frame began: expire it, then end.
    Expired,
    /// The peer vanished or stalled inside a frame: end without a reply.
    End,
}

/// Waits for a length prefix until `deadline` (none while the connection computes a
/// reply, so a request read ahead is never cut short); `None` when the deadline passed.
async fn read_prefix<R: AsyncRead + Unpin>(
    rd: &mut R,
    deadline: &mut watch::Receiver<Option<Instant>>,
) -> Option<std::io::Result<[u8; 4]>> {
    let mut prefix = [0u8; 4];
    let outcome = {
        let read = rd.read_exact(&mut prefix);
        tokio::pin!(read);
        loop {
            let until = *deadline.borrow_and_update();
            let expired = async move {
                match until {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut read => break Some(r.map(|_| ())),
                () = expired => break None,
                // A new deadline (the connection answered a frame): wait again under it.
                changed = deadline.changed() => if changed.is_err() { break None },
            }
        }
    };
    outcome.map(|r| r.map(|()| prefix))
}

/// Reads the rest of a frame of at most `max` bytes whose `prefix` arrived. With a
/// `prefetch` (a fused session's), each `Products` item whose bytes are all in before the
/// frame ends starts computing on the blocking pool at once.
async fn read_body<R: AsyncRead + Unpin>(
    rd: &mut R,
    prefix: [u8; 4],
    max: usize,
    limits: &Limits,
    prefetch: Option<&watch::Receiver<Option<Prefetch>>>,
) -> Next {
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
            return frame.map_or(Next::End, Next::Refuse);
        }
    };
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&prefix);
    let mut pending = Pending::new();
    let mut streams = Stream::new();
    // The item streaming now: where its bytes not yet sent begin and end, the channel
    // they go on, and its worker.
    let mut current: Option<(usize, usize, std::sync::mpsc::Sender<Vec<u8>>)> = None;
    // Items seen whole, and those streamed (left out of the prefetch).
    let (mut seen, mut streamed) = (0, Vec::new());
    let read = async {
        let mut got = 4;
        while got < frame.len() {
            let n = rd.read(&mut frame[got..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
            // Items that end with the frame are left to the connection, which computes
            // them side by side.
            let Some(p) = prefetch.and_then(|p| p.borrow().clone()) else {
                continue;
            };
            if got == frame.len() {
                continue;
            }
            // The streaming item's bytes up to what arrived; once whole, its worker takes
            // them and stops.
            if let Some((sent, end, tx)) = &mut current {
                let to = got.min(*end);
                if to > *sent {
                    // A worker that stopped (a product that does not stream) hung up.
                    let _ = tx.send(frame[*sent..to].to_vec());
                    *sent = to;
                }
                if to == *end {
                    current = None;
                }
            }
            for item in wire::ready_products(&frame[..got], &cap)
                .into_iter()
                .skip(seen)
            {
                seen += 1;
                if streamed.contains(&item.index) {
                    continue;
                }
                let (p, input) = (p.clone(), frame[item.ciphertext.clone()].to_vec());
                pending.push(tokio::task::spawn_blocking(move || {
                    rayon::scope(|_| p.compute(&item, input))
                }));
            }
            if current.is_none() {
                if let Some(item) = wire::arriving_product(&frame[..got], &cap) {
                    if p.streams(&item) && !streamed.contains(&item.index) {
                        let (tx, rx) = std::sync::mpsc::channel();
                        let range = item.ciphertext.clone();
                        let _ = tx.send(frame[range.start..got].to_vec());
                        streamed.push(item.index);
                        streams.push(tokio::task::spawn_blocking(move || p.stream(&item, &rx)));
                        current = Some((got, range.end, tx));
                    }
                }
            }
        }
        Ok::<(), std::io::Error>(())
    };
    // A peer that sends the prefix and then trickles (or withholds) the body is dropped
    // after `frame_timeout`; dropping the connection frees its session.
    match tokio::time::timeout(limits.frame_timeout, read).await {
        // Dropping the sender ends the stream's worker after what it has.
        Ok(Ok(())) => Next::Frame(frame, pending, streams),
        _ => Next::End,
    }
}

/// Reads one frame of at most `max` bytes, waiting for it until `deadline`.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    deadline: &mut watch::Receiver<Option<Instant>>,
    max: usize,
    limits: &Limits,
    prefetch: Option<&watch::Receiver<Option<Prefetch>>>,
) -> Next {
    match read_prefix(rd, deadline).await {
        None => Next::Expired,
        Some(Err(_)) => Next::End, // the peer vanished: dropping the connection frees its session
        Some(Ok(prefix)) => read_body(rd, prefix, max, limits, prefetch).await,
    }
}

/// Sends what a non-frame [`Next`] owes the peer before the connection ends.
async fn conclude<W: AsyncWrite + Unpin>(
    wr: &mut W,
    c: &mut Connection,
    next: Next,
    limits: &Limits,
) {
    let bytes = match next {
        Next::Refuse(bytes) => bytes,
        Next::Expired => c.expire().bytes,
        Next::Frame(..) | Next::End => return,
    };
    let _ = tokio::time::timeout(limits.frame_timeout, wr.write_all(&bytes)).await;
}

/// Reads a session's frames ahead of the connection that answers them: one frame waits
/// in `tx` while the one before is computed, so a client's next request uploads during
/// that work (a permit is taken before reading, so no more than one waits), and a
/// fused session's products start as their bytes arrive (`prefetch`, the session's as of
/// its last answer). Ends after the first non-frame.
async fn read_ahead<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<Next>,
    mut deadline: watch::Receiver<Option<Instant>>,
    prefetch: watch::Receiver<Option<Prefetch>>,
    limits: Limits,
) {
    loop {
        let Ok(permit) = tx.reserve().await else {
            return;
        };
        let max = limits.max_message_bytes;
        let next = read_frame(&mut rd, &mut deadline, max, &limits, Some(&prefetch)).await;
        let last = !matches!(next, Next::Frame(..));
        permit.send(next);
        if last {
            return;
        }
    }
}

/// Answers `frame` on the blocking pool, with the products `pending` computed and the
/// one `stream` multiplied in while it uploaded, and sends the reply; returns the
/// connection when it goes on.
async fn answer<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut c: Connection,
    frame: Vec<u8>,
    (pending, stream): (Pending, Stream),
    limits: &Limits,
) -> Option<Connection> {
    let mut prefetched = Vec::with_capacity(pending.len());
    for p in pending {
        // A prefetch that failed or panicked is computed again (or refused) by `c`.
        if let Ok(Some(p)) = p.await {
            prefetched.push(p);
        }
    }
    // Likewise a stream that stopped: the connection computes its product whole.
    let mut streamed = Vec::with_capacity(stream.len());
    for worker in stream {
        match worker.await {
            Ok(Some(EarlyItem::Streamed(s))) => streamed.push(s),
            Ok(Some(EarlyItem::Whole(p))) => prefetched.push(p),
            _ => {}
        }
    }
    let early = EarlyWork {
        prefetched,
        streamed,
    };
    let handled = tokio::task::spawn_blocking(move || {
        // The frame runs as one job in rayon's pool: its parallel loops (a product has
        // dozens) then split among the workers in place, where from this blocking thread
        // each would be handed to the pool and waited for.
        let reply = rayon::scope(|_| c.handle_early(&frame, early));
        (c, reply)
    })
    .await;
    let (c, reply) = handled.ok()?;
    let write = async {
        wr.write_all(&reply.bytes).await?;
        wr.flush().await
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
        // The sender stays alive (a dropped one reads as an expired deadline).
        let (_fixed, mut deadline) = watch::channel(Some(c.deadline()));
        let max = limits.max_hello_bytes;
        let (frame, early) = match read_frame(&mut tls, &mut deadline, max, limits, None).await {
            Next::Frame(frame, pending, stream) => (frame, (pending, stream)),
            next => {
                conclude(&mut tls, &mut c, next, limits).await;
                let _ = tls.shutdown().await;
                return None;
            }
        };
        let Some(next) = answer(&mut tls, c, frame, early, limits).await else {
            let _ = tls.shutdown().await;
            return None;
        };
        c = next;
        if c.session_id().is_some() {
            return Some((tls, c));
        }
    }
}

/// The session phase: frames up to [`Limits::max_message_bytes`] until the session ends,
/// read one ahead of the one being answered ([`read_ahead`]).
async fn serve_session(tls: TlsStream<TcpStream>, mut c: Connection, limits: &Limits) {
    let (rd, mut wr) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::channel(1);
    let (deadline_tx, deadline) = watch::channel(Some(c.deadline()));
    let (prefetch_tx, prefetch) = watch::channel(c.prefetch());
    let reader = tokio::spawn(read_ahead(rd, tx, deadline, prefetch, limits.clone()));
    while let Some(next) = rx.recv().await {
        let Next::Frame(frame, pending, stream) = next else {
            conclude(&mut wr, &mut c, next, limits).await;
            break;
        };
        // No deadline while computing: a request read ahead waits for this one.
        deadline_tx.send_replace(None);
        match answer(&mut wr, c, frame, (pending, stream), limits).await {
            Some(next) => c = next,
            None => break,
        }
        prefetch_tx.send_replace(c.prefetch());
        deadline_tx.send_replace(Some(c.deadline()));
    }
    reader.abort();
    let _ = wr.shutdown().await;
}
