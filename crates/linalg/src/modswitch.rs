//! The download's modulus switch `q -> 2^k` and the client's decryption of switched
//! ciphertexts, shared by both methods.
//!
//! `round(c 2^k / q)` keeps `c0 + c1 s = m (mod q)` as `c0' + c1' s = m 2^k / q + r`
//! (mod `2^k`) with `r = r0 + r1 s` the rounding errors, `|r| ~ sqrt(N/18)`: the product
//! needs no more bits than its own precision, and a power-of-two modulus packs densely.

use selene_ckks::ring::{Coeff, Modulus, Ntt, Poly};
use selene_ckks::rlwe::Decryptor;
use selene_ckks::Parameters;

/// A product ciphertext after the switch to `2^k`: `c0` (all of it, or only the used
/// coefficients) and all of `c1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SwitchedCt {
    pub(crate) c0: Vec<u64>,
    pub(crate) c1: Vec<u64>,
}

/// Switches residues mod `q` (`< 2^50`, exact in f64) to `2^k`.
pub(crate) fn switch(q: &Modulus, k: u32, v: &[u64]) -> Vec<u64> {
    let ratio = f64::from(k).exp2() / q.value() as f64;
    let mask = (1u64 << k) - 1;
    // The f64 ratio's relative error 2^-53 moves the result by at most 2^(k - 53 + 1),
    // far below the rounding error already accepted.
    v.iter()
        .map(|&x| ((x as f64 * ratio).round() as u64) & mask)
        .collect()
}

/// `v mod 2^k` centred into `[-2^(k-1), 2^(k-1))`.
#[inline]
pub(crate) fn center(v: u64, k: u32) -> i64 {
    let v = (v & ((1u64 << k) - 1)) as i64;
    if v >= 1i64 << (k - 1) {
        v - (1i64 << k)
    } else {
        v
    }
}

/// `c1 s` over the integers for a switched `c1` (values mod `2^k`): `|c1| <= 2^(k-1)` and
/// `s` is ternary, so `|c1 s| <= N 2^(k-1)`, which callers keep below `q/2`; the product
/// computed mod `q` then centres to the exact integer.
pub(crate) fn c1_times_s(params: &Parameters, dec: &Decryptor, c1: &[u64], k: u32) -> Vec<i64> {
    let ring = params.ring();
    let q = ring.moduli()[0];
    let c1: Vec<i64> = c1.iter().map(|&v| center(v, k)).collect();
    let c1 = Poly::<Coeff>::from_signed(ring, &c1, 0, false).into_ntt(ring);
    let zero = Poly::<Ntt>::zero(ring, 0, false);
    dec.decrypt_poly(&zero, &c1)
        .row(0)
        .iter()
        .map(|&v| q.center(v))
        .collect()
}

/// Whether `2^k` switched ciphertexts of `params` decrypt exactly (see [`c1_times_s`]).
pub(crate) fn lift_fits(params: &Parameters, k: u32) -> bool {
    k + params.log_n() + 2 <= params.ring().moduli()[0].bits()
}
