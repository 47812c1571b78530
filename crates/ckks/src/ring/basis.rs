//! Fast base conversion for hybrid key switching and rescaling.
//!
//! * `mod_up`: the digit `[c]_{Q_j}` of a polynomial over `Q_l` (for the group of primes
//!   `Q_j` of digit `j`) extended to the basis `Q_l P` (Bossuat, Mouchet,
//!   Troncoso-Pastoriza, Hubaux, EUROCRYPT 2021, Sec. 3). With several primes per digit the
//!   extension is the approximate fast base conversion of Halevi, Polyakov, Shoup
//!   (CT-RSA 2019, Sec. 2.2): it may add a small multiple of `Q_j`, which the gadget
//!   `P Q/Q_j [(Q/Q_j)^-1]_{Q_j}` maps to 0 mod `QP`. With one prime per digit (the anchor
//!   layout) the digit's residues are below `q_j`, so the extension is a plain reduction:
//!   that fast path is explicit below.
//! * `mod_down`: `round(c / P)` from `Q_l P` back to `Q_l` (same papers), and `rescale`:
//!   `round(c / q_l)` dropping the last prime (RNS-CKKS, Cheon-Han-Kim-Kim-Song SAC 2018,
//!   Sec. 3.3), both by subtracting the lifted remainder and multiplying by the inverse.

use std::ops::Range;

use super::modulus::Modulus;
use super::poly::{for_each_row, with_scratch, Ntt, Poly};
use super::RnsContext;

/// Primes of each key-switching digit, as index ranges into the `Q` chain.
pub fn digit_groups(nq: usize, dnum: usize) -> Vec<Range<usize>> {
    let alpha = nq.div_ceil(dnum.max(1));
    (0..nq)
        .step_by(alpha)
        .map(|s| s..(s + alpha).min(nq))
        .collect()
}

/// Number of digits present at `level`.
pub fn digits_at_level(groups: &[Range<usize>], level: usize) -> usize {
    groups.iter().take_while(|g| g.start <= level).count()
}

/// Writes into `out` (over `Q_l P`, NTT form) the extension of digit `group` of `c`
/// (over `Q_l`, NTT form). `scratch` holds `N` words per prime of the group.
pub fn mod_up(ctx: &RnsContext, c: &Poly<Ntt>, group: Range<usize>, out: &mut Poly<Ntt>) {
    let n = ctx.n();
    let l = c.level();
    debug_assert!(out.q_rows() == l + 1 && out.p_rows() == ctx.np());
    let group = group.start..group.end.min(l + 1);
    with_scratch(group.len() * n, |coeffs| {
        mod_up_with(ctx, c, group, out, coeffs)
    });
}

fn mod_up_with(
    ctx: &RnsContext,
    c: &Poly<Ntt>,
    group: Range<usize>,
    out: &mut Poly<Ntt>,
    coeffs: &mut [u64],
) {
    let n = ctx.n();
    // Coefficients of the digit's own residues.
    coeffs.copy_from_slice(&c.data()[group.start * n..group.end * n]);
    for (k, row) in coeffs.chunks_exact_mut(n).enumerate() {
        ctx.plan(group.start + k).backward(row);
    }
    let q_rows = out.q_rows();
    if group.len() == 1 {
        // Fast path (one prime per digit): the digit is the centered integer in
        // (-q_j/2, q_j/2] (centering halves the key-switching noise), reduced mod q_t.
        let j = group.start;
        let qj = ctx.moduli()[j].value();
        let half = qj / 2;
        let arch = pulp::Arch::new();
        for_each_row(out.data_mut(), n, |r, row| {
            let idx = ctx.modulus_index(q_rows, r);
            if idx == j {
                row.copy_from_slice(c.row(j));
                return;
            }
            let m = ctx.moduli()[idx];
            let qt = m.value();
            if qj < 2 * qt {
                // Both cases below vectorize where the CPU has 64-bit lane minimum and
                // compare (AVX-512); `pulp` compiles them for it.
                arch.dispatch(
                    #[inline(always)]
                    || lift_small(m, qj, half, coeffs, row),
                );
            } else {
                let qj_mod = m.reduce(qj);
                for (o, &x) in row.iter_mut().zip(coeffs.iter()) {
                    let mask = 0u64.wrapping_sub(u64::from(x > half));
                    *o = m.sub(m.reduce(x), qj_mod & mask);
                }
            }
            ctx.plan(idx).forward(row);
        });
        return;
    }
    // General digit: y_i = x_i (Q_j/q_i)^-1 mod q_i, then sum_i y_i (Q_j/q_i) mod t.
    let gm: Vec<Modulus> = group.clone().map(|i| ctx.moduli()[i]).collect();
    for (k, row) in coeffs.chunks_exact_mut(n).enumerate() {
        let m = gm[k];
        let hat = gm
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != k)
            .fold(1u64, |acc, (_, o)| m.mul(acc, m.reduce(o.value())));
        let inv = m.inv(hat).unwrap_or(0);
        let inv_s = m.shoup(inv);
        row.iter_mut()
            .for_each(|x| *x = m.mul_shoup(*x, inv, inv_s));
    }
    for_each_row(out.data_mut(), n, |r, row| {
        let idx = ctx.modulus_index(q_rows, r);
        if group.contains(&idx) {
            row.copy_from_slice(c.row(idx));
            return;
        }
        let m = ctx.moduli()[idx];
        let hats: Vec<u64> = (0..gm.len())
            .map(|k| {
                gm.iter()
                    .enumerate()
                    .filter(|&(i, _)| i != k)
                    .fold(1u64, |acc, (_, o)| m.mul(acc, m.reduce(o.value())))
            })
            .collect();
        for (t, o) in row.iter_mut().enumerate() {
            let mut acc = 0u128;
            for (k, &h) in hats.iter().enumerate() {
                acc += coeffs[k * n + t] as u128 * h as u128;
            }
            *o = m.reduce_u128(acc);
        }
        ctx.plan(idx).forward(row);
    });
}

/// Writes into `outs` (each over `Q_l P`, NTT form) the balanced base-`2^w` parts of
/// the one-prime digit `j` of `c` (over `Q_l`, NTT form): with `x` the centered residue
/// of a coefficient mod `q_j`, parts `d_k` in `[-2^(w-1), 2^(w-1))` (the last one takes
/// the rest) with `x = sum_k d_k 2^(w k)`, each reduced into every row. Each part is
/// below every prime (`Parameters` checks `w` against them), so the extension is exact
/// and the key's noise term is `sum_k d_k e_k`, about `2^w sqrt(N)` instead of
/// `q_j sqrt(N)` (the gadget decomposition of BGV/GSW key switching, Brakerski, Gentry,
/// Vaikuntanathan, ITCS 2012, Sec. 3.2, inside one RNS digit). The last part's row of
/// `q_j` needs no NTT: it is `(c - sum_(k<last) 2^(w k) d_k) 2^(-w last)` in NTT form.
pub fn gadget_mod_up(ctx: &RnsContext, c: &Poly<Ntt>, j: usize, w: u32, outs: &mut [Poly<Ntt>]) {
    let n = ctx.n();
    let qj = ctx.moduli()[j];
    let Some((last, init)) = outs.split_last_mut() else {
        return;
    };
    with_scratch(2 * n, |buf| {
        let (rest, part) = buf.split_at_mut(n);
        rest.copy_from_slice(c.row(j));
        ctx.plan(j).backward(rest);
        // Centred residues, as the bits of i64s.
        for v in rest.iter_mut() {
            *v = qj.center(*v) as u64;
        }
        for out in init.iter_mut() {
            for (r, p) in rest.iter_mut().zip(part.iter_mut()) {
                // Sign-extended low w bits: the balanced part.
                let x = *r as i64;
                let d = (x << (64 - w)) >> (64 - w);
                *r = ((x - d) >> w) as u64;
                *p = d as u64;
            }
            extend_small(ctx, part, out, None);
        }
        // The rest is the last part; its q_j row from the digit's own NTT.
        extend_small(
            ctx,
            rest,
            last,
            Some(LastPart {
                j,
                c_row: c.row(j),
                init,
                w,
            }),
        );
    });
}

/// The gadget's last part of digit `j`, as [`extend_small`] derives its row of `q_j`.
#[derive(Clone, Copy)]
struct LastPart<'a> {
    /// The digit's prime index.
    j: usize,
    /// The digit's row of `c`, NTT form.
    c_row: &'a [u64],
    /// The parts before the last, extended and in NTT form.
    init: &'a [Poly<Ntt>],
    /// Bits of the gadget base.
    w: u32,
}

/// Reduces the small signed values `part` (bits of i64s, each below every prime in
/// magnitude) into every row of `out` and takes each row to NTT form; with `last`, the
/// row of prime `j` is instead `(c_j - sum_k 2^(w k) init_k) 2^(-w len(init))` from the
/// NTT forms at hand (valid there only: the parts sum to `c` mod `q_j`, not mod the other
/// primes).
fn extend_small(ctx: &RnsContext, part: &[u64], out: &mut Poly<Ntt>, last: Option<LastPart<'_>>) {
    let n = ctx.n();
    let q_rows = out.q_rows();
    let arch = pulp::Arch::new();
    for_each_row(out.data_mut(), n, |r, row| {
        let idx = ctx.modulus_index(q_rows, r);
        let m = ctx.moduli()[idx];
        if let Some(LastPart { c_row, init, w, .. }) = last.filter(|f| f.j == idx) {
            row.copy_from_slice(c_row);
            for (k, d) in init.iter().enumerate() {
                let f = m.reduce_i128(1i128 << (w * k as u32));
                let f_s = m.shoup(f);
                for (o, &v) in row.iter_mut().zip(d.row(r)) {
                    *o = m.sub(*o, m.mul_shoup(v, f, f_s));
                }
            }
            let inv = m
                .inv(m.reduce_i128(1i128 << (w * init.len() as u32)))
                .unwrap_or(0);
            let inv_s = m.shoup(inv);
            row.iter_mut()
                .for_each(|o| *o = m.mul_shoup(*o, inv, inv_s));
            return;
        }
        let mv = m.value();
        arch.dispatch(
            #[inline(always)]
            || {
                for (o, &d) in row.iter_mut().zip(part) {
                    // |d| < m: a negative value only needs m added.
                    *o = d.wrapping_add(mv & (((d as i64) >> 63) as u64));
                }
            },
        );
        ctx.plan(idx).forward(row);
    });
}

/// The centered lift of `coeffs` (residues mod `q_j < 2 q_t`, `half = q_j / 2`) reduced
/// mod `q_t` (`m`) into `row`, branch-free.
#[inline(always)]
fn lift_small(m: Modulus, qj: u64, half: u64, coeffs: &[u64], row: &mut [u64]) {
    let qt = m.value();
    if qj < qt {
        let shift = qt - qj;
        for (o, &x) in row.iter_mut().zip(coeffs) {
            *o = x + (shift & 0u64.wrapping_sub(u64::from(x > half)));
        }
    } else {
        // x < q_j < 2 q_t: one conditional subtraction reduces.
        let qj_mod = qj - qt;
        for (o, &x) in row.iter_mut().zip(coeffs) {
            let mask = 0u64.wrapping_sub(u64::from(x > half));
            let y = x.min(x.wrapping_sub(qt));
            *o = m.sub(y, qj_mod & mask);
        }
    }
}

/// For every `Q` row `i` of `data` (NTT form): `row_i = (x_i - [v]_{q_i}) inv_i` with
/// `x_i` row `i` of `src` (or of `data` itself), where `v` is the integer whose residues
/// (coefficient form) modulo `divisor` are `rem` (one row per divisor prime; lifted by
/// fast base conversion, centered when there is one divisor prime so the division
/// rounds to nearest).
fn subtract_and_divide(
    ctx: &RnsContext,
    src: Option<&[u64]>,
    data: &mut [u64],
    rem: &[u64],
    divisor: &[Modulus],
    inv: &[u64],
) {
    let n = ctx.n();
    // Multi-prime divisor: y_k = x_k (D/d_k)^-1 mod d_k (HPS fast base conversion).
    let scaled: Vec<u64>;
    let rem = if divisor.len() > 1 {
        let mut s = rem.to_vec();
        for (k, row) in s.chunks_exact_mut(n).enumerate() {
            let m = divisor[k];
            let hat = divisor
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != k)
                .fold(1u64, |acc, (_, o)| m.mul(acc, m.reduce(o.value())));
            let hi = m.inv(hat).unwrap_or(0);
            row.iter_mut().for_each(|x| *x = m.mul(*x, hi));
        }
        scaled = s;
        &scaled[..]
    } else {
        rem
    };
    // The element-wise loops below are compiled for the CPU's SIMD level (64-bit lane
    // minimum and compare need AVX-512; without it they run as scalar `cmov`s).
    let arch = pulp::Arch::new();
    for_each_row(data, n, |i, row| {
        with_scratch(n, |t| {
            let m = ctx.moduli()[i];
            if let [d] = divisor {
                // Centered lift of x in (-d/2, d/2] reduced mod q_i, branch-free.
                let half = d.value() / 2;
                let d_mod = m.reduce(d.value());
                let qi = m.value();
                if d.value() < 2 * qi {
                    // x < d < 2 q_i: one conditional subtraction reduces.
                    arch.dispatch(
                        #[inline(always)]
                        || {
                            for (o, &x) in t.iter_mut().zip(rem) {
                                let mask = 0u64.wrapping_sub(u64::from(x > half));
                                *o = m.sub(x.min(x.wrapping_sub(qi)), d_mod & mask);
                            }
                        },
                    );
                } else {
                    for (o, &x) in t.iter_mut().zip(rem) {
                        let mask = 0u64.wrapping_sub(u64::from(x > half));
                        *o = m.sub(m.reduce(x), d_mod & mask);
                    }
                }
            } else {
                let hats: Vec<u64> = (0..divisor.len())
                    .map(|k| {
                        divisor
                            .iter()
                            .enumerate()
                            .filter(|&(j, _)| j != k)
                            .fold(1u64, |acc, (_, o)| m.mul(acc, m.reduce(o.value())))
                    })
                    .collect();
                for (c, o) in t.iter_mut().enumerate() {
                    let mut acc = 0u128;
                    for (k, &h) in hats.iter().enumerate() {
                        acc += rem[k * n + c] as u128 * h as u128;
                    }
                    *o = m.reduce_u128(acc);
                }
            }
            let plan = ctx.plan(i);
            plan.forward(t);
            match src {
                Some(src) => arch.dispatch(
                    #[inline(always)]
                    || {
                        let x = &src[i * n..(i + 1) * n];
                        for ((o, &x), &y) in row.iter_mut().zip(x).zip(t.iter()) {
                            *o = m.sub(x, y);
                        }
                    },
                ),
                None => arch.dispatch(
                    #[inline(always)]
                    || {
                        for (x, &y) in row.iter_mut().zip(t.iter()) {
                            *x = m.sub(*x, y);
                        }
                    },
                ),
            }
            // Times `inv`: the plan's SIMD product with the constant `inv N`, whose
            // `N^-1` normalisation leaves `inv` (one vector pass instead of a scalar
            // Shoup multiplication per value).
            t.fill(m.mul(inv[i], m.reduce(n as u64)));
            plan.mul_normalize(row, t);
        })
    });
}

/// `round(a / P)`: from `Q_l P` (NTT) to `out` over `Q_l` (NTT).
pub fn mod_down(ctx: &RnsContext, a: &Poly<Ntt>, inv_p: &[u64], out: &mut Poly<Ntt>) {
    let n = ctx.n();
    let qr = a.q_rows();
    debug_assert!(out.q_rows() == qr && out.p_rows() == 0);
    with_scratch(a.data().len() - qr * n, |rem| {
        rem.copy_from_slice(&a.data()[qr * n..]);
        for_each_row(rem, n, |k, row| ctx.plan(ctx.nq() + k).backward(row));
        let q_part = &a.data()[..qr * n];
        subtract_and_divide(ctx, Some(q_part), out.data_mut(), rem, ctx.p(), inv_p);
    });
}

/// `round(a / q_l)`: drops the last prime of `a` (NTT form, over `Q` only).
pub fn rescale(ctx: &RnsContext, a: &mut Poly<Ntt>) {
    let n = ctx.n();
    let l = a.level();
    debug_assert!(l > 0 && a.p_rows() == 0);
    with_scratch(n, |rem| {
        rem.copy_from_slice(a.row(l));
        ctx.plan(l).backward(rem);
        a.drop_to_level(l - 1);
        subtract_and_divide(
            ctx,
            None,
            a.data_mut(),
            rem,
            &ctx.q()[l..=l],
            ctx.inv_last_q(l),
        );
    });
    debug_assert_eq!(a.data().len(), l * n);
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index-based reference math
mod tests {
    use super::*;
    use crate::ring::modulus::generate_ntt_primes;
    use crate::ring::Coeff;

    fn ctx(np: usize) -> RnsContext {
        let mut bits = vec![40, 30, 30];
        bits.extend(std::iter::repeat_n(45, np));
        let p = generate_ntt_primes(4, &bits).unwrap();
        RnsContext::new(4, &p[..3], &p[3..]).unwrap()
    }

    fn to_i128(ctx: &RnsContext, p: &Poly<Coeff>, r: usize, k: usize) -> i128 {
        ctx.moduli()[p.modulus_index(ctx, r)].center(p.row(r)[k]) as i128
    }

    #[test]
    fn rescale_rounds_exactly() {
        let ctx = ctx(1);
        let q2 = ctx.q()[2].value() as i64;
        let vals: Vec<i64> = (0..16)
            .map(|i| (i - 8) * q2 + (i * 7919 % 61) * q2 / 64 - 3)
            .collect();
        let mut a = Poly::from_signed(&ctx, &vals, 2, false).into_ntt(&ctx);
        rescale(&ctx, &mut a);
        let a = a.into_coeff(&ctx);
        for (k, &v) in vals.iter().enumerate() {
            let want = (v as f64 / q2 as f64).round() as i128;
            for r in 0..2 {
                assert_eq!(to_i128(&ctx, &a, r, k), want);
            }
        }
    }

    #[test]
    fn mod_up_then_mod_down_recovers_divided_value() {
        for (np, dnum) in [(1, 3), (2, 1), (2, 2)] {
            let ctx = ctx(np);
            let groups = digit_groups(3, dnum);
            let vals: Vec<i64> = (0..16).map(|i| i * 1_000_003 - 7_777_777).collect();
            let c = Poly::from_signed(&ctx, &vals, 2, false).into_ntt(&ctx);
            let mut p_val = 1i128;
            for m in ctx.p() {
                p_val *= m.value() as i128;
            }
            let inv_p: Vec<u64> = ctx
                .q()
                .iter()
                .map(|m| {
                    let pi = ctx
                        .p()
                        .iter()
                        .fold(1u64, |a, o| m.mul(a, m.reduce(o.value())));
                    m.inv(pi).unwrap()
                })
                .collect();
            for g in groups {
                let mut up = Poly::<Ntt>::zero(&ctx, 2, true);
                mod_up(&ctx, &c, g.clone(), &mut up);
                let upc = up.clone().into_coeff(&ctx);
                // The extension agrees with c on the digit's primes and is congruent
                // across all rows to one integer (up to a multiple of Q_j).
                for k in 0..16 {
                    for r in g.clone() {
                        assert_eq!(to_i128(&ctx, &upc, r, k), vals[k] as i128);
                    }
                }
                // Multiply by P then mod_down: recovers the extension mod Q_l.
                let pmul: Vec<u64> = (0..up.rows())
                    .map(|r| {
                        let m = ctx.moduli()[up.modulus_index(&ctx, r)];
                        m.reduce_i128(p_val)
                    })
                    .collect();
                up.mul_scalar_assign(&ctx, &pmul);
                let mut down = Poly::<Ntt>::zero(&ctx, 2, false);
                mod_down(&ctx, &up, &inv_p, &mut down);
                let up_q = upc.clone();
                let down = down.into_coeff(&ctx);
                for r in 0..3 {
                    assert_eq!(down.row(r), up_q.row(r), "np={np} dnum={dnum}");
                }
            }
        }
    }
}
