//! A user-space network link between a client and a server on loopback: a TCP relay that
//! gives each direction a one-way delay of half the round-trip time and a rate limit
//! (this kernel has no `netem`, and a benchmark should not need root anyway).
//!
//! The model is a lossless FIFO link with an unbounded buffer: a chunk that arrives at
//! time `a` starts transmitting at `max(a, end of the previous chunk)`, takes
//! `8 len / rate` seconds, and is delivered one-way delay later. TCP's own windowing
//! still runs end to end, over loopback, so slow start and loss recovery are absent: the
//! figures are a link's floor, not a congested Internet path.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use selene_linalg::Link;

/// Largest chunk read at once. Large reads keep the relay's thread wake-ups few: with
/// 16 KiB ones, 56 MB per token at 1 Gbit/s meant thousands of wake-ups competing with
/// the client and server for 2 cores.
const CHUNK: usize = 256 << 10;
/// Least bytes a chunk is delivered in at once: it goes out in slices of at least this
/// size or a millisecond of the link's rate, each when its own last bit would arrive, so
/// a receiver sees a long message arrive progressively, as over a real link (a server
/// that starts on the first part of a request while the rest uploads gains what it
/// would on one), and a message's last byte is on time whatever the slice size.
const SLICE: usize = 16 << 10;

/// A running link emulator; stops listening when dropped (open connections finish).
pub struct Emulator {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Listens on a free loopback port and relays every connection to `upstream`
    /// through `link` (`up` is client to server).
    ///
    /// # Errors
    /// A listener that cannot be bound.
    pub fn start(upstream: SocketAddr, link: Link) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if let Err(e) = relay(client, upstream, link) {
                    eprintln!("[link emulator: could not relay a connection: {e}]");
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Connects to `upstream` and starts both directions of `client`'s connection.
fn relay(client: TcpStream, upstream: SocketAddr, link: Link) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let delay = Duration::from_secs_f64(link.rtt_ms * 1e-3 / 2.0);
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    direction(client, server, link.up_mbit * 1e6, delay);
    direction(s2, c2, link.down_mbit * 1e6, delay);
    Ok(())
}

/// One direction: a reader that timestamps chunks with the time their first bit leaves
/// and a writer that delivers each slice of them when its last bit arrives.
fn direction(mut from: TcpStream, mut to: TcpStream, bits_per_s: f64, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let transmit = move |bytes: usize| Duration::from_secs_f64(bytes as f64 * 8.0 / bits_per_s);
    thread::spawn(move || {
        let mut free = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let start = free.max(Instant::now());
            free = start + transmit(n);
            if tx.send((start, buf[..n].to_vec())).is_err() {
                break;
            }
        }
        // Dropping `tx` tells the writer the stream ended.
    });
    let slice = SLICE.max((bits_per_s / 8e3) as usize);
    thread::spawn(move || {
        'relay: while let Ok((start, chunk)) = rx.recv() {
            let mut sent = 0;
            for part in chunk.chunks(slice) {
                sent += part.len();
                let at = start + transmit(sent) + delay;
                let now = Instant::now();
                if at > now {
                    thread::sleep(at - now);
                }
                if to.write_all(part).is_err() {
                    break 'relay;
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                thread::spawn(move || {
                    let mut r = c.try_clone().unwrap();
                    let _ = io::copy(&mut r, &mut c);
                });
            }
        });
        addr
    }

    fn link(rtt_ms: f64, up: f64, down: f64) -> Link {
        Link {
            rtt_ms,
            up_mbit: up,
            down_mbit: down,
        }
    }

    #[test]
    fn a_round_trip_takes_at_least_the_rtt_and_bytes_arrive_intact() {
        let emu = Emulator::start(echo(), link(40.0, 1000.0, 1000.0)).unwrap();
        let mut s = TcpStream::connect(emu.addr()).unwrap();
        s.set_nodelay(true).unwrap();
        let msg: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let t = Instant::now();
        s.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        // Lower bound only: a loaded machine may add time, never remove it.
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(back, msg);
    }

    #[test]
    fn each_direction_is_rate_limited() {
        // 1 MB up at 20 Mbit/s takes at least 0.4 s (the echo streams it back down as it
        // arrives, so the faster down direction overlaps).
        let emu = Emulator::start(echo(), link(2.0, 20.0, 80.0)).unwrap();
        let mut s = TcpStream::connect(emu.addr()).unwrap();
        let msg = vec![0x5au8; 1_000_000];
        let t = Instant::now();
        let mut w = s.try_clone().unwrap();
        let sender = thread::spawn(move || w.write_all(&msg).unwrap());
        let mut back = vec![0u8; 1_000_000];
        s.read_exact(&mut back).unwrap();
        sender.join().unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        assert!(back.iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn a_long_message_arrives_progressively() {
        // 512 KiB up at 5 Mbit/s: its last byte arrives after at least 0.84 s. The relay
        // reads it in chunks of up to 256 KiB (128 KiB here, whose last bit takes 0.21
        // s); its first 16 KiB slice is delivered after 27 ms (29 measured), and the
        // echo returns it at once.
        let emu = Emulator::start(echo(), link(2.0, 5.0, 1000.0)).unwrap();
        let mut s = TcpStream::connect(emu.addr()).unwrap();
        let msg: Vec<u8> = (0..512u32 << 10).map(|i| (i % 253) as u8).collect();
        let t = Instant::now();
        let mut w = s.try_clone().unwrap();
        let sent = msg.clone();
        let sender = thread::spawn(move || w.write_all(&sent).unwrap());
        let mut back = vec![0u8; msg.len()];
        let first = s.read(&mut back).unwrap();
        let first_at = t.elapsed();
        s.read_exact(&mut back[first..]).unwrap();
        let last_at = t.elapsed();
        sender.join().unwrap();
        assert!(last_at >= Duration::from_millis(838), "{last_at:?}");
        // Between the slice's 27 ms and a whole chunk's 0.21 s.
        assert!(
            first_at < Duration::from_millis(120),
            "first {first} bytes at {first_at:?}, the last at {last_at:?}"
        );
        assert_eq!(back, msg);
    }
}
