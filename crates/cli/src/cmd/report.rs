//! `--report FILE`: one generation's measured figures as JSON, for `selene bench net`
//! (which runs `serve` and `client` as separate processes and reads this file) and for
//! anyone scripting a comparison.
//!
//! The transport is wrapped in [`Counted`], which counts round trips and the frames'
//! bytes each way as the client sees them (TLS record overhead excluded); snapshots of
//! those counters and of the process's CPU time are taken at the start, at the first
//! generated token (the end of the prefill) and at the end, so decode figures are the
//! difference of the last two.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use selene_protocol::Transport;
use serde::{Deserialize, Serialize};

/// The `NAME: N kB` field `name` (with its colon) of a Linux `/proc` file, in KiB;
/// `None` where the file or the field is missing.
pub fn proc_kib(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Process CPU time in seconds (every thread, user and system).
pub fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_PROCESS_CPUTIME_ID is a clock every Linux kernel since 2.6.12 provides; on
    // failure the call leaves `ts` untouched and returns -1, handled below.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Seconds since the Unix epoch (wall clock, comparable across processes).
pub fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Round trips and bytes through a [`Counted`] transport so far.
#[derive(Debug, Default)]
pub struct Counters {
    exchanges: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Counters {
    /// The counters now, with this process's CPU time and the wall clock.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            exchanges: self.exchanges.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            cpu_s: process_cpu_s(),
            unix_s: unix_s(),
        }
    }
}

/// The counters, CPU time and wall clock at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Request/reply round trips.
    pub exchanges: u64,
    /// Request bytes sent.
    pub bytes_up: u64,
    /// Reply bytes received.
    pub bytes_down: u64,
    /// This process's CPU seconds.
    pub cpu_s: f64,
    /// Wall clock, seconds since the Unix epoch.
    pub unix_s: f64,
}

/// A transport that counts what crosses it.
pub struct Counted<T> {
    inner: T,
    counters: Arc<Counters>,
    /// Requests sent whose replies are not read yet.
    outstanding: usize,
}

impl<T: Transport> Counted<T> {
    /// Wraps `inner`; the returned counters follow every exchange.
    pub fn new(inner: T) -> (Self, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        (
            Self {
                inner,
                counters,
                outstanding: 0,
            },
            c,
        )
    }
}

impl<T: Transport> Transport for Counted<T> {
    fn send(&mut self, request: &[u8]) -> selene_protocol::Result<()> {
        let c = &self.counters;
        // A request sent while another waits for its reply shares that round trip.
        if self.outstanding == 0 {
            c.exchanges.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_up
            .fetch_add(request.len() as u64, Ordering::Relaxed);
        self.inner.send(request)?;
        self.outstanding += 1;
        Ok(())
    }

    fn receive(&mut self) -> selene_protocol::Result<Vec<u8>> {
        self.outstanding = self.outstanding.saturating_sub(1);
        let reply = self.inner.receive()?;
        self.counters
            .bytes_down
            .fetch_add(reply.len() as u64, Ordering::Relaxed);
        Ok(reply)
    }

    fn token(&self) -> &[u8] {
        self.inner.token()
    }

    fn limit_reply(&mut self, max_bytes: usize) {
        self.inner.limit_reply(max_bytes);
    }

    fn server_time(&self) -> Duration {
        self.inner.server_time()
    }
}

/// One generation's figures, as `--report FILE` writes them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Tokens in the (templated) prompt.
    pub prompt_tokens: usize,
    /// The generated token ids, in order.
    pub ids: Vec<u32>,
    /// Seconds until the first generated token (prefill, session opening included).
    pub prefill_s: f64,
    /// Seconds between consecutive generated tokens (after the first).
    pub token_s: Vec<f64>,
    /// Model passes that produced tokens: the prompt's and one per later pass (the
    /// generated tokens without drafts; `plain` always reports the tokens).
    pub passes: usize,
    /// Counters when the session was opened.
    pub start: Snapshot,
    /// Counters at the first generated token.
    pub first_token: Snapshot,
    /// Counters at the end.
    pub end: Snapshot,
}

impl RunReport {
    /// Decode seconds per generated token after the first.
    pub fn decode_s_per_token(&self) -> f64 {
        let n = self.token_s.len().max(1) as f64;
        self.token_s.iter().sum::<f64>() / n
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// An unwritable file.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json).with_context(|| format!("could not write {}", path.display()))
    }

    /// Reads a report written by [`RunReport::write`].
    ///
    /// # Errors
    /// An unreadable file or one that is not a report.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run report", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_clock_advances_with_work() {
        let a = process_cpu_s();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = process_cpu_s();
        assert!(a.is_finite() && b > a, "{a} -> {b}");
    }

    #[test]
    fn report_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let r = RunReport {
            prompt_tokens: 3,
            ids: vec![1, 2, 3],
            prefill_s: 1.5,
            token_s: vec![0.5, 1.5],
            passes: 3,
            end: Snapshot {
                exchanges: 7,
                bytes_up: 10,
                bytes_down: 20,
                cpu_s: 0.25,
                unix_s: 5.0,
            },
            ..RunReport::default()
        };
        r.write(&path).unwrap();
        assert_eq!(RunReport::read(&path).unwrap(), r);
        assert!((r.decode_s_per_token() - 1.0).abs() < 1e-12);
    }
}
