//! The network between client and server, as the cost model sees it: bandwidth each way
//! and round-trip time. The plan of a product (tiling, packing) is chosen for a link,
//! because the bytes a plan saves are worth what the link makes them cost.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A link: round-trip time and bandwidth per direction (client's upload and download).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Client-to-server bandwidth, Mbit/s.
    pub up_mbit: f64,
    /// Server-to-client bandwidth, Mbit/s.
    pub down_mbit: f64,
}

impl Link {
    /// A local network: 1 Gbit/s each way, 1 ms round trip.
    pub const LAN: Link = Link {
        rtt_ms: 1.0,
        up_mbit: 1000.0,
        down_mbit: 1000.0,
    };
    /// A wide-area link: 100 Mbit/s each way, 20 ms round trip.
    pub const WAN: Link = Link {
        rtt_ms: 20.0,
        up_mbit: 100.0,
        down_mbit: 100.0,
    };
    /// A home uplink: 20 Mbit/s up, 100 Mbit/s down, 30 ms round trip.
    pub const HOME: Link = Link {
        rtt_ms: 30.0,
        up_mbit: 20.0,
        down_mbit: 100.0,
    };
    /// The named profiles, for help text and errors.
    pub const PROFILES: [(&'static str, Link); 3] =
        [("lan", Link::LAN), ("wan", Link::WAN), ("home", Link::HOME)];

    /// Nanoseconds to send one bit from client to server.
    pub fn up_ns_per_bit(&self) -> f64 {
        1e3 / self.up_mbit
    }

    /// Nanoseconds to send one bit from server to client.
    pub fn down_ns_per_bit(&self) -> f64 {
        1e3 / self.down_mbit
    }

    /// Seconds to move `up` bytes up and `down` bytes down in `trips` round trips
    /// (transfer plus latency; no overlap).
    pub fn seconds(&self, up: f64, down: f64, trips: f64) -> f64 {
        (8.0 * up * self.up_ns_per_bit() + 8.0 * down * self.down_ns_per_bit()) * 1e-9
            + trips * self.rtt_ms * 1e-3
    }
}

impl Default for Link {
    /// [`Link::LAN`].
    fn default() -> Self {
        Link::LAN
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = Link::PROFILES.iter().find(|(_, l)| l == self) {
            return write!(f, "{name}");
        }
        write!(f, "{},{},{}", self.rtt_ms, self.up_mbit, self.down_mbit)
    }
}

impl FromStr for Link {
    type Err = Error;

    /// `lan`, `wan`, `home`, or `RTT_MS,UP_MBIT,DOWN_MBIT` (RTT at least 0, bandwidths
    /// positive, all finite).
    fn from_str(s: &str) -> Result<Self> {
        if let Some((_, l)) = Link::PROFILES.iter().find(|(n, _)| *n == s) {
            return Ok(*l);
        }
        let bad = || Error::InvalidLink {
            link: s.chars().take(64).collect(),
        };
        let parts: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        match parts[..] {
            [rtt, up, down]
                if rtt.is_finite()
                    && rtt >= 0.0
                    && up.is_finite()
                    && up > 0.0
                    && down.is_finite()
                    && down > 0.0 =>
            {
                Ok(Link {
                    rtt_ms: rtt,
                    up_mbit: up,
                    down_mbit: down,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_triples_parse_and_print_back() {
        assert_eq!("wan".parse::<Link>().unwrap(), Link::WAN);
        assert_eq!(Link::HOME.to_string(), "home");
        let l: Link = "40,10,50".parse().unwrap();
        assert_eq!((l.rtt_ms, l.up_mbit, l.down_mbit), (40.0, 10.0, 50.0));
        assert_eq!(l.to_string().parse::<Link>().unwrap(), l);
        // 1 MB down at 100 Mbit/s is 80 ms; two round trips at 20 ms add 40 ms.
        assert!((Link::WAN.seconds(0.0, 1e6, 2.0) - 0.12).abs() < 1e-12);
    }

    #[test]
    fn bad_links_are_refused_with_the_forms_allowed() {
        for bad in [
            "", "fast", "1,2", "1,2,3,4", "-1,10,10", "1,0,10", "1,10,inf", "1,x,3",
        ] {
            let e = bad.parse::<Link>().unwrap_err().to_string();
            assert!(e.contains("lan, wan, home"), "{bad}: {e}");
        }
    }
}
