//! Where a benchmark's CPU time and memory go, in process: process CPU time
//! (`CLOCK_PROCESS_CPUTIME_ID`) around the server's handler calls, and the process's peak
//! resident memory (`VmHWM`, resettable through `/proc/self/clear_refs`).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use selene_protocol::{InProcess, Transport};

pub use crate::cmd::report::process_cpu_s;

/// Peak resident memory of this process in MiB since the last reset.
pub fn peak_rss_mb() -> f64 {
    crate::cmd::report::proc_kib("/proc/self/status", "VmHWM:")
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// Resets the peak resident memory to the current one (Linux >= 4.0).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The server's CPU seconds and largest request + answer, shared with the meter.
#[derive(Debug, Default)]
pub struct ServerMeter {
    /// Server CPU seconds so far.
    pub cpu_s: Cell<f64>,
    /// Largest request + answer in bytes.
    pub max_working: Cell<usize>,
}

impl ServerMeter {
    /// Runs `f` as server work, adding its process CPU time.
    pub fn time<R>(&self, f: impl FnOnce() -> R) -> R {
        let c = process_cpu_s();
        let out = f();
        self.cpu_s.set(self.cpu_s.get() + process_cpu_s() - c);
        out
    }

    /// Records a request + answer of `bytes`.
    pub fn working(&self, bytes: usize) {
        self.max_working.set(self.max_working.get().max(bytes));
    }
}

/// The in-process transport with the server's CPU time metered.
pub struct Metered {
    /// The transport.
    pub inner: InProcess,
    /// Where the server's CPU time goes.
    pub meter: Rc<ServerMeter>,
    /// Sizes of the requests whose answers are not read yet.
    pub requests: VecDeque<usize>,
}

impl Transport for Metered {
    fn send(&mut self, request: &[u8]) -> selene_protocol::Result<()> {
        // In process the server answers at once: its work is timed here.
        self.meter.time(|| self.inner.send(request))?;
        self.requests.push_back(request.len());
        Ok(())
    }

    fn receive(&mut self) -> selene_protocol::Result<Vec<u8>> {
        let answer = self.inner.receive()?;
        let request = self.requests.pop_front().unwrap_or(0);
        self.meter.working(request + answer.len());
        Ok(answer)
    }

    fn token(&self) -> &[u8] {
        self.inner.token()
    }

    fn server_time(&self) -> Duration {
        self.inner.server_time()
    }
}
