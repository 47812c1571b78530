//! Refused `Hello`s per source address: after a few free refusals an address waits,
//! twice as long after each further one, before its next `Hello` is even checked, so a
//! token cannot be guessed at network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest wait imposed on one address.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// An address with no refusal for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Addresses remembered at most; past this the least recently refused is forgotten.
const MAX_ADDRESSES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Record {
    refusals: u32,
    until: Instant,
    last: Instant,
}

/// The refusal record of every address that recently sent a refused `Hello`.
#[derive(Debug)]
pub(super) struct Backoff {
    free: u32,
    base: Duration,
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl Backoff {
    /// `free` refusals per address cost nothing; the next one makes it wait `base`, then
    /// `2 base`, `4 base`, ... up to a minute.
    pub(super) fn new(free: u32, base: Duration) -> Self {
        Self {
            free,
            base,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must still wait before a `Hello` from it is checked (`None`: now).
    pub(super) fn wait(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let r = records.get(&ip)?;
        (r.until > now).then(|| r.until - now)
    }

    /// Records a refused `Hello` from `ip`.
    pub(super) fn refused(&self, ip: IpAddr, now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_ADDRESSES && !records.contains_key(&ip) {
            records.retain(|_, r| now.saturating_duration_since(r.last) < FORGET_AFTER);
            if records.len() >= MAX_ADDRESSES {
                let oldest = records.iter().min_by_key(|(_, r)| r.last).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    records.remove(&k);
                }
            }
        }
        let r = records.entry(ip).or_insert(Record {
            refusals: 0,
            until: now,
            last: now,
        });
        if now.saturating_duration_since(r.last) >= FORGET_AFTER {
            r.refusals = 0;
        }
        r.refusals = r.refusals.saturating_add(1);
        r.last = now;
        if r.refusals > self.free {
            let doublings = (r.refusals - self.free - 1).min(16);
            let wait = self.base.saturating_mul(1 << doublings).min(MAX_WAIT);
            r.until = now + wait;
        }
    }

    /// Forgets `ip`'s refusals (it presented a valid token).
    pub(super) fn accepted(&self, ip: IpAddr) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_refusals_and_a_valid_token_clears_them() {
        let b = Backoff::new(2, Duration::from_secs(1));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t = Instant::now();
        b.refused(ip, t);
        b.refused(ip, t);
        assert_eq!(b.wait(ip, t), None, "two free refusals");
        b.refused(ip, t);
        assert_eq!(b.wait(ip, t), Some(Duration::from_secs(1)));
        b.refused(ip, t);
        assert_eq!(b.wait(ip, t), Some(Duration::from_secs(2)));
        for _ in 0..40 {
            b.refused(ip, t);
        }
        assert_eq!(b.wait(ip, t), Some(MAX_WAIT), "capped");
        assert_eq!(b.wait(ip, t + MAX_WAIT), None, "the wait passes");
        assert_eq!(b.wait(other, t), None, "per address");
        b.accepted(ip);
        assert_eq!(b.wait(ip, t), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let b = Backoff::new(0, Duration::from_secs(1));
        let t = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            b.refused(IpAddr::from(i.to_be_bytes()), t);
        }
        let n = b.records.lock().unwrap().len();
        assert!(n <= MAX_ADDRESSES, "{n}");
    }
}
