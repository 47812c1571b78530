//! Parameter presets for one ciphertext x plaintext product per round trip.
//!
//! The client encrypts fresh before every product and decrypts right after it
//! (ARCHITECTURE.md, "One generation step"), so a ciphertext needs room for one product
//! and no rescaling chain: a single `Q` prime. Every preset stays within the
//! HE-standard 128-bit bound on `log QP` (the engine refuses anything weaker); the special
//! prime `P` is only used by the slot method's rotations, but it is counted either way.
//! Measured precision of each preset: see the tests in `crates/cli/tests/linalg_smollm2.rs` and the crate
//! docs.

use std::sync::Arc;

use selene_ckks::{Parameters, ParametersLiteral, Security};

use crate::error::Result;
use crate::Method;

/// Named parameter sets for encrypted matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinalgPreset {
    /// Coefficient method, `N = 2^11`, one prime near `2^39` (`P = 12289`, `log QP`
    /// about 52.6 <= 54): the smallest ring that meets 2^-12 relative precision.
    Coeff11,
    /// Coefficient method, `N = 2^12`, one prime near `2^41` (`P` near `2^20`, `log QP`
    /// about 61 <= 109). The default: two more bits of precision margin than `Coeff11`.
    Coeff12,
    /// Slot (diagonal) method, `N = 2^13` (4096 slots, enough for `d_in + d_out - 1 = 3647`
    /// of the 576 -> 3072 projection), one 55-bit prime and a 60-bit `P` (`log QP` 115
    /// <= 218); rotation keys with one digit, whose noise `P` divides by `2^60`.
    Slots13,
}

impl LinalgPreset {
    /// The method this preset is built for.
    pub fn method(self) -> Method {
        match self {
            LinalgPreset::Coeff11 | LinalgPreset::Coeff12 => Method::Coefficients,
            LinalgPreset::Slots13 => Method::Slots,
        }
    }

    /// The engine literal of this preset.
    pub fn literal(self) -> ParametersLiteral {
        let (log_n, q, p) = match self {
            LinalgPreset::Coeff11 => (11, 39, 13),
            LinalgPreset::Coeff12 => (12, 41, 20),
            LinalgPreset::Slots13 => (13, 55, 60),
        };
        ParametersLiteral {
            log_n,
            log_q: vec![q],
            log_p: vec![p],
            log_scale: 20,
            dnum: None,
            security: Security::Hes128,
        }
    }

    /// Builds (and security-checks) the parameters.
    pub fn build(self) -> Result<Arc<Parameters>> {
        Ok(Parameters::new(&self.literal())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_meet_the_he_standard_bound() {
        for p in [
            LinalgPreset::Coeff11,
            LinalgPreset::Coeff12,
            LinalgPreset::Slots13,
        ] {
            let params = p.build().unwrap();
            let bound = selene_ckks::params::max_log_qp_128(params.log_n()).unwrap();
            assert!(
                params.log_qp() <= f64::from(bound),
                "{p:?}: {}",
                params.log_qp()
            );
            assert_eq!(params.q().len(), 1);
        }
    }
}
