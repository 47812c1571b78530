//! Parameter sets: a serde literal in, a validated immutable `Parameters` out (Lattigo's
//! `ParametersLiteral` habit), with generated prime chains and the HE-standard check.

use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ring::basis::digit_groups;
use crate::ring::modulus::{generate_ntt_primes, MAX_MODULUS_BITS};
use crate::ring::RnsContext;

/// Smallest supported `log N`.
pub const MIN_LOG_N: u32 = 10;
/// Largest supported `log N`.
pub const MAX_LOG_N: u32 = 16;
/// Most primes (`Q` and `P`) in one set: key-switching inner products and base
/// conversions accumulate up to this many products in a `u128` before reducing.
pub const MAX_PRIMES: usize = 64;

/// Largest `log2(QP)` with 128-bit classical security for a ternary secret, per
/// `log N` (Homomorphic Encryption Standard, Albrecht et al. 2018, Table 1).
pub fn max_log_qp_128(log_n: u32) -> Option<u32> {
    match log_n {
        10 => Some(27),
        11 => Some(54),
        12 => Some(109),
        13 => Some(218),
        14 => Some(438),
        15 => Some(881),
        16 => Some(1761),
        _ => None,
    }
}

/// Whether `Parameters::new` enforces the HE-standard bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Security {
    /// Refuse anything above the 128-bit bound for a ternary secret.
    #[default]
    Hes128,
    /// Build any set, however weak (tests, experiments). Logs a warning. Only code can
    /// choose it: no deserializer reads it (a parameter file, policy or peer cannot turn
    /// the check off), so a serialized literal that carries it does not read back.
    #[serde(skip_deserializing)]
    DangerousNoSecurityCheck,
}

/// Unchecked description of a parameter set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParametersLiteral {
    /// `log2 N`.
    pub log_n: u32,
    /// Bit sizes of the `Q` primes, `q_0` first.
    pub log_q: Vec<u32>,
    /// Bit sizes of the special key-switching primes `P`.
    pub log_p: Vec<u32>,
    /// `log2` of the default scale.
    pub log_scale: u32,
    /// Number of key-switching digits; `None` = one per `Q` prime.
    pub dnum: Option<usize>,
    /// Bits `w` of a gadget base `2^w` inside each one-prime key-switching digit: the
    /// digit splits into `ceil(bits(q) / w)` balanced base-`2^w` parts, each with its own
    /// key row, so the key's noise term scales with `2^w` instead of `q`. A one-prime
    /// ring whose `P` must stay below `q` (the security bound) needs it for a key switch
    /// whose noise is the rounding alone. `None`: RNS digits only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gadget_log_base: Option<u32>,
    /// Security check.
    #[serde(default)]
    pub security: Security,
}

/// Example parameter sets (Lattigo's "example parameters"): a small one for tests and
/// the anchors' benchmark sets. Not what Selene serves: its products run on
/// `selene_linalg::LinalgPreset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExampleParams {
    /// Small and fast, for tests: N = 2^12, Q = 28, 22, 22 bits, P = 36 bits, scale 2^22.
    Test12,
    /// The anchors' N = 2^13 set: Q = 36, 4 x 30 bits, P = 60 bits, scale 2^30, dnum 5.
    Anchor13,
    /// The anchors' N = 2^14 set: Q = 50, 8 x 40 bits, P = 60 bits, scale 2^40, dnum 9.
    Anchor14,
    /// The anchors' N = 2^15 set: Q = 60, 8 x 50 bits, P = 60 bits, scale 2^50, dnum 9.
    Anchor15,
}

impl ExampleParams {
    /// The literal of this set.
    pub fn literal(self) -> ParametersLiteral {
        let (log_n, first, rest, count, log_p, log_scale) = match self {
            ExampleParams::Test12 => (12, 28, 22, 2, 36, 22),
            ExampleParams::Anchor13 => (13, 36, 30, 4, 60, 30),
            ExampleParams::Anchor14 => (14, 50, 40, 8, 60, 40),
            ExampleParams::Anchor15 => (15, 60, 50, 8, 60, 50),
        };
        let mut log_q = vec![first];
        log_q.extend(std::iter::repeat_n(rest, count));
        ParametersLiteral {
            log_n,
            log_q,
            log_p: vec![log_p],
            log_scale,
            dnum: None,
            gadget_log_base: None,
            security: Security::Hes128,
        }
    }

    /// Builds the set's parameters.
    pub fn build(self) -> Result<Arc<Parameters>> {
        Parameters::new(&self.literal())
    }
}

/// A validated parameter set with its RNS context and precomputed constants.
#[derive(Debug)]
pub struct Parameters {
    literal: ParametersLiteral,
    q: Vec<u64>,
    p: Vec<u64>,
    dnum: usize,
    groups: Vec<Range<usize>>,
    /// Key rows per digit group: 1, or the gadget's parts.
    parts: Vec<usize>,
    ring: RnsContext,
    log_qp: f64,
    fingerprint: [u8; 8],
    /// `P^-1 mod q_i`.
    inv_p: Vec<u64>,
    /// `P mod q_i` (the gadget's nonzero entry).
    p_mod_q: Vec<u64>,
}

impl PartialEq for Parameters {
    /// Two sets are equal when their fingerprints (primes, dnum, scale) are.
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Parameters {
    /// Validates `lit`, generates its primes and precomputes every per-prime constant.
    pub fn new(lit: &ParametersLiteral) -> Result<Arc<Self>> {
        let log_n = lit.log_n;
        if !(MIN_LOG_N..=MAX_LOG_N).contains(&log_n) {
            return Err(Error::InvalidLogN {
                log_n,
                min: MIN_LOG_N,
                max: MAX_LOG_N,
            });
        }
        if lit.log_q.is_empty() || lit.log_p.is_empty() {
            return Err(Error::EmptyModulusChain {
                q: lit.log_q.len(),
                p: lit.log_p.len(),
            });
        }
        // Lazy sums of up to 64 products of residues below 2^61 fit in a u128.
        let count = lit.log_q.len() + lit.log_p.len();
        if count > MAX_PRIMES {
            return Err(Error::TooManyPrimes {
                count,
                max: MAX_PRIMES,
            });
        }
        let min_bits = log_n + 2;
        let max_bits = MAX_MODULUS_BITS - 1;
        if let Some(&bits) = lit
            .log_q
            .iter()
            .chain(&lit.log_p)
            .find(|&&b| !(min_bits..=max_bits).contains(&b))
        {
            return Err(Error::InvalidPrimeBits {
                bits,
                min: min_bits,
                max: max_bits,
                log_n,
            });
        }
        if !(1..=61).contains(&lit.log_scale) {
            return Err(Error::InvalidLogScale {
                log_scale: lit.log_scale,
            });
        }
        let nq = lit.log_q.len();
        let dnum = lit.dnum.unwrap_or(nq);
        if !(1..=nq).contains(&dnum) {
            return Err(Error::InvalidDnum { dnum, q_primes: nq });
        }
        let bits: Vec<u32> = lit.log_q.iter().chain(&lit.log_p).copied().collect();
        let primes = generate_ntt_primes(log_n, &bits).ok_or_else(|| {
            // Find the size that ran out, for the message.
            let bad = (1..=bits.len())
                .find(|&k| generate_ntt_primes(log_n, &bits[..k]).is_none())
                .map_or(bits[0], |k| bits[k - 1]);
            Error::NotEnoughPrimes { bits: bad, log_n }
        })?;
        // A gadget base needs one prime per digit, a sane width, and every part below
        // every prime in magnitude (the extension of a part is then a plain reduction):
        // `2^(w-1) + 1 < p` for the smallest prime.
        if let Some(w) = lit.gadget_log_base {
            let narrow = primes.iter().any(|&p| (p as f64).log2() <= f64::from(w));
            if dnum != nq || !(8..=MAX_MODULUS_BITS).contains(&w) || narrow {
                return Err(Error::InvalidGadgetBase {
                    log_base: w,
                    dnum,
                    q_primes: nq,
                });
            }
        }
        let log_qp: f64 = primes.iter().map(|&x| (x as f64).log2()).sum();
        let bound = max_log_qp_128(log_n).unwrap_or(0);
        match lit.security {
            Security::Hes128 if log_qp > f64::from(bound) => {
                return Err(Error::InsecureParameters {
                    log_n,
                    log_qp,
                    max_log_qp: bound,
                })
            }
            Security::DangerousNoSecurityCheck if log_qp > f64::from(bound) => {
                tracing::warn!(
                    log_n,
                    log_qp,
                    bound,
                    "CKKS parameters above the 128-bit HE-standard bound (security check disabled)"
                );
            }
            _ => {}
        }
        let (q, p) = primes.split_at(nq);
        let ring = RnsContext::new(log_n, q, p).ok_or(Error::NotEnoughPrimes {
            bits: bits[0],
            log_n,
        })?;
        let mut inv_p = Vec::with_capacity(nq);
        let mut p_mod_q = Vec::with_capacity(nq);
        for m in ring.q() {
            let pm = p.iter().fold(1u64, |acc, &x| m.mul(acc, m.reduce(x)));
            // p_j and q_i are distinct primes, so P is invertible mod q_i.
            let inv = m.inv(pm).unwrap_or(0);
            inv_p.push(inv);
            p_mod_q.push(pm);
        }
        let mut h = Sha256::new();
        h.update(b"selene-ckks-parameters-v1");
        h.update(log_n.to_le_bytes());
        for list in [q, p] {
            h.update((list.len() as u32).to_le_bytes());
            list.iter().for_each(|x| h.update(x.to_le_bytes()));
        }
        h.update((dnum as u32).to_le_bytes());
        h.update(lit.log_scale.to_le_bytes());
        // Only sets with a gadget hash it, so every other fingerprint stays as it was.
        if let Some(w) = lit.gadget_log_base {
            h.update(b"gadget");
            h.update(w.to_le_bytes());
        }
        let digest = h.finalize();
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest[..8]);
        let groups = digit_groups(nq, dnum);
        let parts = groups
            .iter()
            .map(|g| match lit.gadget_log_base {
                // One prime per group (checked above).
                Some(w) => ring.q()[g.start].bits().div_ceil(w) as usize,
                None => 1,
            })
            .collect();
        Ok(Arc::new(Self {
            literal: lit.clone(),
            q: q.to_vec(),
            p: p.to_vec(),
            dnum,
            groups,
            parts,
            ring,
            log_qp,
            fingerprint,
            inv_p,
            p_mod_q,
        }))
    }

    /// The literal these parameters were built from.
    pub fn literal(&self) -> &ParametersLiteral {
        &self.literal
    }

    /// `log2 N`.
    pub fn log_n(&self) -> u32 {
        self.literal.log_n
    }

    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        1 << self.literal.log_n
    }

    /// Number of complex slots with full packing, `N/2`.
    pub fn slots(&self) -> usize {
        self.n() / 2
    }

    /// The top level `L` (number of `Q` primes minus one).
    pub fn max_level(&self) -> usize {
        self.q.len() - 1
    }

    /// Checks that `level` exists in this chain (`0..=max_level`).
    ///
    /// # Errors
    /// [`Error::InvalidLevel`] naming the level and the chain's range.
    pub fn check_level(&self, level: usize) -> Result<()> {
        if level > self.max_level() {
            return Err(Error::InvalidLevel {
                level,
                min: 0,
                max: self.max_level(),
            });
        }
        Ok(())
    }

    /// The `Q` primes.
    pub fn q(&self) -> &[u64] {
        &self.q
    }

    /// The special primes.
    pub fn p(&self) -> &[u64] {
        &self.p
    }

    /// Number of key-switching digits.
    pub fn dnum(&self) -> usize {
        self.dnum
    }

    /// `Q` prime indices of each digit.
    pub fn digit_groups(&self) -> &[Range<usize>] {
        &self.groups
    }

    /// Key rows of each digit group: 1, or the number of gadget parts
    /// ([`ParametersLiteral::gadget_log_base`]).
    pub fn digit_parts(&self) -> &[usize] {
        &self.parts
    }

    /// Bits of the gadget base inside each one-prime digit, if the set has one.
    pub fn gadget_log_base(&self) -> Option<u32> {
        self.literal.gadget_log_base
    }

    /// Rows of a key-switching key (`b` and `a` each): one per digit part.
    pub fn key_digits(&self) -> usize {
        self.parts.iter().sum()
    }

    /// Key rows a polynomial at `level` decomposes into: the parts of every digit
    /// group that starts at or below `level`.
    pub fn key_digits_at_level(&self, level: usize) -> usize {
        self.groups
            .iter()
            .zip(&self.parts)
            .take_while(|(g, _)| g.start <= level)
            .map(|(_, &k)| k)
            .sum()
    }

    /// The default scale `2^log_scale`.
    pub fn default_scale(&self) -> f64 {
        (self.literal.log_scale as f64).exp2()
    }

    /// Exact `log2(QP)` of the generated primes.
    pub fn log_qp(&self) -> f64 {
        self.log_qp
    }

    /// First 8 bytes of SHA-256 over (log N, primes, dnum, log scale): identifies the set
    /// in every serialized object.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// The RNS context (primes, NTT plans).
    pub fn ring(&self) -> &RnsContext {
        &self.ring
    }

    /// `P^-1 mod q_i`, for `mod_down`.
    pub fn inv_p(&self) -> &[u64] {
        &self.inv_p
    }

    /// `P mod q_i`.
    pub fn p_mod_q(&self) -> &[u64] {
        &self.p_mod_q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The security opt-out cannot come from bytes: JSON that names it is refused, the
    /// default and the checked value read back.
    #[test]
    fn dangerous_no_security_check_is_never_deserialized() {
        let lit = |security: &str| {
            format!(
                r#"{{"log_n":10,"log_q":[50],"log_p":[40],"log_scale":20,"dnum":null{security}}}"#
            )
        };
        let weak = lit(r#","security":"DangerousNoSecurityCheck""#);
        let err = serde_json::from_str::<ParametersLiteral>(&weak).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        assert!(serde_json::from_str::<Security>(r#""DangerousNoSecurityCheck""#).is_err());
        for ok in [lit(""), lit(r#","security":"Hes128""#)] {
            let l: ParametersLiteral = serde_json::from_str(&ok).unwrap();
            assert_eq!(l.security, Security::Hes128);
            // 90 bits at N = 2^10 exceed the 27-bit bound: the check still refuses it.
            assert!(Parameters::new(&l).is_err());
        }
        // A literal built in code with the opt-out serializes, but does not read back.
        let mut l: ParametersLiteral = serde_json::from_str(&lit("")).unwrap();
        l.security = Security::DangerousNoSecurityCheck;
        let json = serde_json::to_string(&l).unwrap();
        assert!(serde_json::from_str::<ParametersLiteral>(&json).is_err());
    }

    #[test]
    fn example_params_pass_the_security_check() {
        for (set, bound) in [
            (ExampleParams::Test12, 109.0),
            (ExampleParams::Anchor13, 218.0),
            (ExampleParams::Anchor14, 438.0),
            (ExampleParams::Anchor15, 881.0),
        ] {
            let p = set.build().unwrap();
            assert!(p.log_qp() <= bound, "{set:?}: {}", p.log_qp());
            assert_eq!(p.dnum(), p.q().len());
        }
        let p13 = ExampleParams::Anchor13.build().unwrap();
        assert_eq!((p13.q().len(), p13.p().len(), p13.n()), (5, 1, 8192));
        assert!((p13.log_qp() - 216.0).abs() < 0.01);
    }

    #[test]
    fn over_bound_set_is_refused_unless_dangerous() {
        // N = 2^13 with log QP = 250.
        let mut lit = ParametersLiteral {
            log_n: 13,
            log_q: vec![40, 30, 30, 30, 30, 30],
            log_p: vec![60],
            log_scale: 30,
            dnum: None,
            gadget_log_base: None,
            security: Security::Hes128,
        };
        match Parameters::new(&lit) {
            Err(Error::InsecureParameters {
                log_n: 13,
                log_qp,
                max_log_qp: 218,
            }) => {
                assert!((log_qp - 250.0).abs() < 0.01)
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        lit.security = Security::DangerousNoSecurityCheck;
        assert!(Parameters::new(&lit).is_ok());
    }

    #[test]
    fn invalid_literals_are_errors_and_fingerprints_differ() {
        let base = ExampleParams::Test12.literal();
        let mut l = base.clone();
        l.log_n = 17;
        assert!(matches!(
            Parameters::new(&l),
            Err(Error::InvalidLogN { log_n: 17, .. })
        ));
        let mut l = base.clone();
        l.dnum = Some(4);
        assert!(matches!(
            Parameters::new(&l),
            Err(Error::InvalidDnum {
                dnum: 4,
                q_primes: 3
            })
        ));
        let mut l = base.clone();
        l.log_p.clear();
        assert!(matches!(
            Parameters::new(&l),
            Err(Error::EmptyModulusChain { .. })
        ));
        let mut l = base.clone();
        l.log_q[0] = 61;
        assert!(matches!(
            Parameters::new(&l),
            Err(Error::InvalidPrimeBits { bits: 61, .. })
        ));
        let mut l = base.clone();
        l.log_q = vec![30; 70];
        assert!(matches!(
            Parameters::new(&l),
            Err(Error::TooManyPrimes { count: 71, max: 64 })
        ));
        let mut l = base.clone();
        l.dnum = Some(2);
        let a = Parameters::new(&base).unwrap();
        let b = Parameters::new(&l).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            Parameters::new(&base).unwrap().fingerprint()
        );
        assert_eq!(b.digit_groups(), &[0..2, 2..3]);
    }
}
