//! Parameter presets for one ciphertext x plaintext product per round trip.
//!
//! The client encrypts fresh before every product and decrypts right after it
//! (ARCHITECTURE.md, "One generation step"), so a ciphertext needs room for one product
//! and no rescaling chain: a single `Q` prime. Every preset stays within the
//! HE-standard 128-bit bound on `log QP` (the engine refuses anything weaker); the special
//! prime `P` is only used by the slot method's rotations, but it is counted either way.
//! Measured precision of each preset: the tests in `crates/cli/tests/linalg_smollm2.rs`,
//! with the figures in `docs/benchmarks.md`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use selene_ckks::{Parameters, ParametersLiteral, Security};

use crate::error::{Error, Result};
use crate::Method;

/// Named parameter sets for encrypted matrix products: the one preset type, which owns
/// each set's name (`"coeff12"`, in policy files, `--preset` flags and messages), its
/// one-byte code (in stored keys) and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinalgPreset {
    /// Coefficient method, `N = 2^11`, one prime near `2^39` (`P = 12289`, `log QP`
    /// about 52.6 <= 54): the smallest ring that meets 2^-12 relative precision.
    Coeff11,
    /// Coefficient method, `N = 2^12`, one prime near `2^41` (`P` near `2^20`, `log QP`
    /// about 61 <= 109), download modulus `2^24`. The default for strict mode: two more
    /// bits of precision margin than `Coeff11`. Too narrow for decryption flooding
    /// (docs/hardening.md, section 3), which strict mode does not need: it releases
    /// nothing decrypted to the server, so there is no IND-CPA-D exposure.
    Coeff12,
    /// Coefficient method, `N = 2^12`, one prime near `2^60` (`P` near `2^20`, `log QP`
    /// about 80 <= 109), download modulus `2^47`, 12-bit weights. Exists for selective
    /// mode: its released hidden states are functions of decryptions, which must be
    /// noise-flooded (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022) with a sigma near
    /// `2^34` download units for a short session (every released coefficient counted);
    /// the wide prime and download modulus keep about 11 bits of precision under it,
    /// where `Coeff12`'s `2^24` download modulus keeps none ([`crate::flooding`]).
    /// Costs about 1.5x the upload and 1.9x the download of `Coeff12`.
    Coeff12Wide,
    /// Coefficient method with packed outputs, `N = 2^12`, one prime near `2^54` and a
    /// `P` near `2^54` (`log QP` about 108 <= 109), download modulus `2^24`. The server
    /// merges the output ciphertexts of a product into few ([`crate::coeff`], "Packed
    /// outputs") with Galois keys the client uploads once per session; the wide `P`
    /// keeps each merge's key-switch noise near `2^6`, and the prime leaves room for the
    /// merges' doubling of the values. Strict mode only (no flooding).
    Coeff12Pack,
    /// Coefficient method with packed outputs under decryption flooding: `Coeff12Wide`'s
    /// 61-bit prime, `2^47` download modulus and 12-bit weights, a `P` near `2^47`
    /// (`log QP` about 108 <= 109) and a base-`2^31` gadget inside the prime's digit, so
    /// a merge's key-switch noise is its rounding (`~sqrt(N)`) instead of
    /// `q sqrt(N) / P ~ 2^20`. No merge level is folded into the weights (the images'
    /// rounding would be multiplied by them) and the blocks are pre-divided by `2^r`
    /// ([`crate::coeff::packing`]), so the flooded precision stays near `Coeff12Wide`'s
    /// with a few ciphertexts per product each way. Selective mode on slow links.
    Coeff12WidePack,
    /// Slot (diagonal) method, `N = 2^13` (4096 slots, enough for `d_in + d_out - 1 = 3647`
    /// of the 576 -> 3072 projection), one 55-bit prime and a 60-bit `P` (`log QP` 115
    /// <= 218); rotation keys with one digit, whose noise `P` divides by `2^60`.
    Slots13,
}

impl LinalgPreset {
    /// The preset's name (`"coeff11"`, `"coeff12"`, `"coeff12wide"`, ...). What
    /// [`Display`](fmt::Display) writes, [`FromStr`] and serde read, and a policy file
    /// names.
    pub fn name(self) -> &'static str {
        match self {
            LinalgPreset::Coeff11 => "coeff11",
            LinalgPreset::Coeff12 => "coeff12",
            LinalgPreset::Coeff12Wide => "coeff12wide",
            LinalgPreset::Coeff12Pack => "coeff12pack",
            LinalgPreset::Coeff12WidePack => "coeff12widepack",
            LinalgPreset::Slots13 => "slots13",
        }
    }

    /// One line on what the preset costs and is for, for help texts (no final period).
    pub fn description(self) -> &'static str {
        match self {
            LinalgPreset::Coeff11 => {
                "N = 2^11, one 39-bit prime: less traffic, about 14 bits (strict mode only)"
            }
            LinalgPreset::Coeff12 => {
                "N = 2^12, one 41-bit prime: about 15 bits of precision per product (strict \
                 default)"
            }
            LinalgPreset::Coeff12Wide => {
                "N = 2^12, one 61-bit prime: room for the decryption flooding every release \
                 needs (selective mode; it and coeff12widepack are the presets that flood); \
                 ~1.7x the traffic"
            }
            LinalgPreset::Coeff12Pack => {
                "N = 2^12, one 54-bit prime, outputs packed by the server with Galois keys: a \
                 few ciphertexts down per product (strict mode only)"
            }
            LinalgPreset::Coeff12WidePack => {
                "N = 2^12, coeff12wide's 61-bit prime with packed outputs (Galois keys with a \
                 2^31 gadget): the flooded selective preset for slow links, a few \
                 ciphertexts per product"
            }
            LinalgPreset::Slots13 => {
                "N = 2^13, one 55-bit prime, slot method with rotation keys: about 15 bits \
                 (benchmarks; no session serves it)"
            }
        }
    }

    /// The preset's one-byte code in binary formats (stored session keys): fixed forever,
    /// never 0.
    pub fn code(self) -> u8 {
        match self {
            LinalgPreset::Coeff11 => 1,
            LinalgPreset::Coeff12 => 2,
            LinalgPreset::Slots13 => 3,
            LinalgPreset::Coeff12Wide => 4,
            LinalgPreset::Coeff12Pack => 5,
            LinalgPreset::Coeff12WidePack => 6,
        }
    }

    /// The preset whose [`LinalgPreset::code`] is `code`, if any.
    pub fn from_code(code: u8) -> Option<LinalgPreset> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }

    /// True when decryptions at this preset keep precision under the noise flooding a
    /// released decryption needs (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022;
    /// [`crate::flooding`]): [`LinalgPreset::Coeff12Wide`] and its packed twin, whose
    /// `2^47` download modulus leaves about 11 bits under a sigma near `2^34`.
    pub fn floods(self) -> bool {
        matches!(
            self,
            LinalgPreset::Coeff12Wide | LinalgPreset::Coeff12WidePack
        )
    }

    /// The method this preset is built for.
    pub fn method(self) -> Method {
        match self {
            LinalgPreset::Coeff11
            | LinalgPreset::Coeff12
            | LinalgPreset::Coeff12Wide
            | LinalgPreset::Coeff12Pack
            | LinalgPreset::Coeff12WidePack => Method::Coefficients,
            LinalgPreset::Slots13 => Method::Slots,
        }
    }

    /// Every preset, for lookups and tests.
    pub const ALL: [LinalgPreset; 6] = [
        LinalgPreset::Coeff11,
        LinalgPreset::Coeff12,
        LinalgPreset::Coeff12Wide,
        LinalgPreset::Coeff12Pack,
        LinalgPreset::Coeff12WidePack,
        LinalgPreset::Slots13,
    ];

    /// True when the server packs this preset's product outputs before the download
    /// (needs the client's Galois keys): [`LinalgPreset::Coeff12Pack`] and
    /// [`LinalgPreset::Coeff12WidePack`].
    pub fn packs(self) -> bool {
        matches!(
            self,
            LinalgPreset::Coeff12Pack | LinalgPreset::Coeff12WidePack
        )
    }

    /// The preset `params` were built from, if they are one.
    pub fn of(params: &Parameters) -> Option<LinalgPreset> {
        Self::ALL
            .into_iter()
            .find(|p| &p.literal() == params.literal())
    }

    /// Bits of an encoded weight (column `j` is scaled to norm `2^w_bits`). The inputs
    /// get the rest of the prime (`x_bits = log q - w_bits - 3`), and the encryption noise
    /// times the weights, relative to the full-scale output, is about
    /// `3.2 sqrt(k_o) 2^(w_bits + 3 - log q)`: at the wide preset that term is what
    /// decryption flooding must cover beside the switch's rounding, so 12 bits (weight
    /// rounding `~2^-13.8` relative, still below the flooding, which leaves about 11 bits)
    /// keep it under the rounding term at `2^47` (docs/hardening.md, issue 20 item 1).
    pub fn weight_bits(self) -> u32 {
        match self {
            LinalgPreset::Coeff12Wide | LinalgPreset::Coeff12WidePack => 12,
            _ => crate::coeff::W_BITS,
        }
    }

    /// Bits `k` of the download modulus `2^k` the product outputs are switched to. The
    /// switch's rounding adds about `sqrt(N/12)` units and the full-scale output is
    /// `2^(k - 3)`, so `k = 24` keeps about 17 bits unflooded; the wide preset's `k = 47`
    /// leaves room for decryption flooding (each bit of `k` is a bit under it while the
    /// rounding dominates), and is the largest its 61-bit prime still decrypts exactly
    /// (`k + log N + 2 <= bits(q)`, [`selene_ckks::rlwe::Pow2Modulus::lift_fits`]).
    pub fn down_bits(self) -> u32 {
        match self {
            LinalgPreset::Coeff11 | LinalgPreset::Coeff12 | LinalgPreset::Coeff12Pack => {
                crate::coeff::DEFAULT_DOWN_BITS
            }
            LinalgPreset::Coeff12Wide => 47,
            // Past q's own lift (k + log N + 2 <= bits(q p)): where the encryption noise
            // times the weights meets the switch's rounding, about 1.5-2 bits more under
            // flooding than 47 (flooding.rs, packed_flooding_preset_keeps_more_bits).
            LinalgPreset::Coeff12WidePack => 50,
            LinalgPreset::Slots13 => crate::slots::DOWN_BITS,
        }
    }

    /// The engine literal of this preset.
    pub fn literal(self) -> ParametersLiteral {
        let (log_n, q, p) = match self {
            LinalgPreset::Coeff11 => (11, 39, 13),
            LinalgPreset::Coeff12 => (12, 41, 20),
            // 60 is the engine's widest prime size (the prime lands just above 2^60).
            LinalgPreset::Coeff12Wide => (12, 60, 20),
            LinalgPreset::Coeff12Pack => (12, 54, 54),
            LinalgPreset::Coeff12WidePack => (12, 60, 47),
            LinalgPreset::Slots13 => (13, 55, 60),
        };
        ParametersLiteral {
            log_n,
            log_q: vec![q],
            log_p: vec![p],
            log_scale: 20,
            dnum: None,
            // Two parts of at most 2^30 each: key noise ~2^-11 after dividing by P.
            gadget_log_base: (self == LinalgPreset::Coeff12WidePack).then_some(31),
            security: Security::Hes128,
        }
    }

    /// Builds (and security-checks) the parameters.
    pub fn build(self) -> Result<Arc<Parameters>> {
        Ok(Parameters::new(&self.literal())?)
    }
}

impl fmt::Display for LinalgPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LinalgPreset {
    type Err = Error;

    /// Reads a preset's [`LinalgPreset::name`].
    ///
    /// # Errors
    /// [`Error::UnknownPreset`] for any other text.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::UnknownPreset { name: s.to_owned() })
    }
}

/// The names of every preset, comma-separated, for error messages.
pub(crate) fn names() -> String {
    let names: Vec<_> = LinalgPreset::ALL.iter().map(|p| p.name()).collect();
    names.join(", ")
}

impl serde::Serialize for LinalgPreset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for LinalgPreset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_descriptions_read_as_one_line() {
        // `--help` prints these; a lost line continuation leaves a run of spaces.
        for p in LinalgPreset::ALL {
            let d = p.description();
            assert!(!d.contains("  ") && !d.contains('\n'), "{p:?}: {d:?}");
        }
    }

    #[test]
    fn presets_meet_the_he_standard_bound() {
        for p in LinalgPreset::ALL {
            let params = p.build().unwrap();
            assert_eq!(LinalgPreset::of(&params), Some(p));
            let bound = selene_ckks::params::max_log_qp_128(params.log_n()).unwrap();
            assert!(
                params.log_qp() <= f64::from(bound),
                "{p:?}: {}",
                params.log_qp()
            );
            assert_eq!(params.q().len(), 1);
            assert!(
                selene_ckks::rlwe::Pow2Modulus::new(p.down_bits())
                    .unwrap()
                    .lift_fits(&params),
                "{p:?}: 2^{} outputs do not decrypt exactly",
                p.down_bits()
            );
        }
        let wide = LinalgPreset::Coeff12Wide.build().unwrap();
        assert!((79.0..=82.0).contains(&wide.log_qp()), "{}", wide.log_qp());
        assert_eq!(wide.ring().moduli()[0].bits(), 61);
    }

    #[test]
    fn every_preset_round_trips_through_name_code_and_serde() {
        for p in LinalgPreset::ALL {
            assert_eq!(p.to_string(), p.name());
            assert_eq!(p.name().parse::<LinalgPreset>().unwrap(), p);
            assert_eq!(LinalgPreset::from_code(p.code()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<LinalgPreset>(&json).unwrap(), p);
            assert!(!p.description().is_empty());
        }
        // The codes are stored in keystores: they never change.
        let codes = LinalgPreset::ALL.map(LinalgPreset::code);
        assert_eq!(codes, [1, 2, 4, 5, 6, 3]);
        assert_eq!(LinalgPreset::from_code(0), None);
        assert_eq!(LinalgPreset::from_code(7), None);
        let names = LinalgPreset::ALL.map(LinalgPreset::name);
        assert_eq!(
            names,
            [
                "coeff11",
                "coeff12",
                "coeff12wide",
                "coeff12pack",
                "coeff12widepack",
                "slots13"
            ]
        );
        assert_eq!(
            LinalgPreset::ALL
                .into_iter()
                .filter(|p| p.floods())
                .collect::<Vec<_>>(),
            [LinalgPreset::Coeff12Wide, LinalgPreset::Coeff12WidePack]
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_valid_ones() {
        for bad in ["coeff99", "Coeff12", "coeff12 ", ""] {
            let e = bad.parse::<LinalgPreset>().unwrap_err();
            assert!(matches!(&e, Error::UnknownPreset { name } if name == bad));
            assert_eq!(
                e.to_string(),
                format!(
                    "unknown preset {bad:?}; expected one of coeff11, coeff12, coeff12wide, \
                     coeff12pack, coeff12widepack, slots13"
                )
            );
            assert!(serde_json::from_str::<LinalgPreset>(&format!("{bad:?}")).is_err());
        }
        assert!(serde_json::from_str::<LinalgPreset>("4").is_err());
    }
}
