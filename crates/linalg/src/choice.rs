//! Which method for which shape and token count: a cost model of server time plus wire
//! time at 1 Gbit/s, with constants of the order `selene bench linalg` measures (2
//! threads; the constants below, the figures in `docs/benchmarks.md`).
//!
//! - Coefficients ([`crate::tiling::Tiling::model_ns`]): about `n d_in d_out` lazy
//!   multiply-adds of both components, two inverse NTTs per output block, and
//!   `~2 sqrt(N d_in d_out up_bits down_bits)` bits per token on the wire.
//! - Slots: per ciphertext `g + h - 2` key switches at `N = 2^13`, `d_in` products of
//!   `N = 2^13` coefficients, one 55-bit `c0` up and two 36-bit polynomials down.
//!
//! For SmolLM2's shapes the slot method saves a few hundred KB per layer at `n = 1`, but
//! at 1 Gbit/s those bytes take one to two orders of magnitude less time than its key
//! switching and `N = 2^13` products, so the coefficient method wins at every `n`; the
//! slot method wins only on links below roughly 50 Mbit/s, where bytes dominate.

use crate::tiling::Tiling;
use crate::{MatrixShape, Method};

/// Ring degree of the default coefficient preset.
const COEFF_N: usize = 4096;
/// Bits per uploaded / downloaded coefficient of the default coefficient preset.
const COEFF_BITS: (u32, u32) = (42, crate::coeff::DEFAULT_DOWN_BITS);
/// Ring degree and slots of the slot preset.
const SLOT_N: usize = 8192;
/// Bits per uploaded / downloaded coefficient of the slot preset.
const SLOT_BITS: (f64, f64) = (55.0, 36.0);
/// One key switch (rotation) at `N = 2^13`, one prime, 2 threads (measured ~0.9 ms).
const ROT_NS: f64 = 1.0e6;
/// One Shoup multiply-add of both components, per coefficient.
const SLOT_MAC_NS: f64 = 2.0;

/// Modelled server plus wire time in ns of `n` tokens through `shape` with `method`
/// (infinite when the slot layout does not fit).
pub fn model_ns(method: Method, shape: MatrixShape, n: usize, link_bits_per_ns: f64) -> f64 {
    match method {
        Method::Coefficients => {
            let t = Tiling::choose(
                COEFF_N,
                shape.d_in,
                shape.d_out,
                1,
                COEFF_BITS.0,
                COEFF_BITS.1,
            );
            // `model_ns` charges 1 ns per bit; rescale to the given link.
            let wire = t.wire_bits(COEFF_N, shape.d_in, shape.d_out, COEFF_BITS.0, COEFF_BITS.1);
            let server =
                t.model_ns(COEFF_N, shape.d_in, shape.d_out, COEFF_BITS.0, COEFF_BITS.1) - wire;
            n as f64 * (server + wire / link_bits_per_ns)
        }
        Method::Slots => {
            let segment = shape.d_in + shape.d_out - 1;
            if segment > SLOT_N / 2 {
                return f64::INFINITY;
            }
            let cts = n.div_ceil(SLOT_N / 2 / segment) as f64;
            let g = (shape.d_in as f64).sqrt().ceil();
            let h = (shape.d_in as f64 / g).ceil();
            let server = (g + h - 2.0) * ROT_NS + (shape.d_in * SLOT_N) as f64 * SLOT_MAC_NS;
            let wire = SLOT_N as f64 * (SLOT_BITS.0 + 2.0 * SLOT_BITS.1);
            cts * (server + wire / link_bits_per_ns)
        }
    }
}

/// The method with the smaller modelled server plus wire time at 1 Gbit/s (1 bit/ns).
pub fn choose_method(shape: MatrixShape, n: usize) -> Method {
    let c = model_ns(Method::Coefficients, shape, n, 1.0);
    let s = model_ns(Method::Slots, shape, n, 1.0);
    if s < c {
        Method::Slots
    } else {
        Method::Coefficients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_win_for_smollm2_at_1_gbit_and_slots_on_a_slow_link() {
        for (d_in, d_out) in [(576, 960), (576, 576), (576, 3072), (1536, 576)] {
            let shape = MatrixShape::new(d_in, d_out);
            for n in [1, 64] {
                assert_eq!(
                    choose_method(shape, n),
                    Method::Coefficients,
                    "{d_in}->{d_out} n={n}"
                );
            }
        }
        // At 1 Mbit/s (0.001 bit/ns) the slot method's smaller messages win at n = 1.
        let shape = MatrixShape::new(576, 576);
        let c = model_ns(Method::Coefficients, shape, 1, 0.001);
        let s = model_ns(Method::Slots, shape, 1, 0.001);
        assert!(s < c, "{s} vs {c}");
    }
}
