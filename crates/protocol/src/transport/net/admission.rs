//! The pre-authentication budget: connections that have not opened a session yet (TCP
//! accepted, TLS or `Hello` pending), bounded in all and per source address. A new
//! connection is always admitted; when a bound is full it sheds the oldest connection of
//! its own address (per-address bound) or of all (total bound). A flood of idle sockets
//! therefore only ever evicts itself, and a real client, whose handshake and `Hello` take
//! milliseconds, is never the oldest for long.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

struct Entry {
    ip: IpAddr,
    shed: Arc<Notify>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// By admission order: the first entry is the oldest.
    live: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.live.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&e.ip);
            }
        }
        Some(e)
    }
}

/// The connections without a session, with their shedding signals.
pub(super) struct Admission {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<State>,
}

/// One admitted connection's place in the budget; dropping it (the session opened, or the
/// connection ended) gives the place back.
pub(super) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// Notified when this connection is shed: it must end.
    pub(super) shed: Arc<Notify>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

impl Admission {
    /// A budget of `max_total` connections, `max_per_ip` per address (both at least 1).
    pub(super) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip`, shedding the oldest one of `ip` when `ip` is at its
    /// bound, else the oldest of all when the total is.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Ticket {
        let mut s = self.lock();
        if s.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            let oldest = s.live.iter().find(|(_, e)| e.ip == ip).map(|(id, _)| *id);
            if let Some(e) = oldest.and_then(|id| s.remove(id)) {
                e.shed.notify_one();
            }
        }
        if s.live.len() >= self.max_total {
            let oldest = s.live.keys().next().copied();
            if let Some(e) = oldest.and_then(|id| s.remove(id)) {
                e.shed.notify_one();
            }
        }
        let id = s.next;
        s.next += 1;
        let shed = Arc::new(Notify::new());
        s.live.insert(
            id,
            Entry {
                ip,
                shed: shed.clone(),
            },
        );
        *s.per_ip.entry(ip).or_insert(0) += 1;
        Ticket {
            admission: self.clone(),
            id,
            shed,
        }
    }

    /// Connections without a session now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().live.len()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn is_shed(t: &Ticket) -> bool {
        // `notify_one` stores a permit: a shed ticket's future completes at once.
        let fut = t.shed.notified();
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        fut.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_full_address_sheds_its_own_oldest_and_a_full_server_its_oldest() {
        let a = Admission::new(4, 2);
        let (x, y): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let x1 = a.admit(x);
        let y1 = a.admit(y);
        let x2 = a.admit(x);
        let x3 = a.admit(x); // x is full: sheds x1, not y1
        assert!(is_shed(&x1));
        assert!(!is_shed(&y1) && !is_shed(&x2) && !is_shed(&x3));
        assert_eq!(a.len(), 3);
        let z: IpAddr = [10, 0, 0, 3].into();
        let z1 = a.admit(z);
        assert_eq!(a.len(), 4);
        let z2 = a.admit(z); // the total is full: sheds the oldest, y1
        assert!(is_shed(&y1));
        assert!(!is_shed(&z1) && !is_shed(&z2));
        drop((x1, y1));
        assert_eq!(a.len(), 4, "a shed ticket no longer counts");
        drop((x2, x3, z1, z2));
        assert_eq!(a.len(), 0);
    }
}
