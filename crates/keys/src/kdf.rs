//! Argon2id's cost parameters: stored in the keystore's header (so [`crate::backend`]
//! names them) and run by the passphrase root ([`crate::passphrase`]).

use crate::error::{Error, Result};

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes over memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The default: 64 MiB, 3 passes, 1 lane (RFC 9106 sec. 4, second recommended
    /// option, with one lane since the derivation runs on one thread here).
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// A cheap setting for tests only: 64 KiB, one pass. Never for a real keystore.
    pub const INSECURE_TEST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    /// Checks the parameters are within what this build will run (at most 4 GiB, 64
    /// passes, 16 lanes: a keystore file cannot make the KDF run for hours).
    ///
    /// # Errors
    /// [`Error::KdfParams`].
    pub fn validate(&self) -> Result<()> {
        let ok = (1..=16).contains(&self.p)
            && (1..=64).contains(&self.t)
            && self.m_kib >= 8 * self.p
            && self.m_kib <= 4 * 1024 * 1024;
        if ok {
            Ok(())
        } else {
            Err(Error::KdfParams {
                m_kib: self.m_kib,
                t: self.t,
                p: self.p,
            })
        }
    }
}
