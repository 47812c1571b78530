//! Block sizes of the coefficient-encoded product (Cheetah, Huang et al., USENIX Security
//! 2022, sec. 3.2; Iron, Hao et al., NeurIPS 2022, sec. 3) and where each value sits.
//!
//! `X` (`n x d_in`) is cut into blocks of `n_b` tokens by `k_i` inputs and `W`
//! (`d_in x d_out`) into blocks of `k_i` inputs by `k_o` outputs, with
//! `n_b * k_i * k_o <= N`. Block polynomials in `Z_q[x]/(x^N + 1)`:
//!
//! ```text
//! X~ = sum_{t < n_b, i < k_i} X[t, i] x^(t k_i k_o + i)
//! W~ = sum_{i < k_i, j < k_o} W[i, j] x^(j k_i + k_i - 1 - i)
//! ```
//!
//! **Claim.** Coefficient `T(t, j) = t k_i k_o + j k_i + k_i - 1` of `X~ W~` is exactly
//! `sum_i X[t, i] W[i, j]`.
//!
//! **Proof.** A product of the term `(t, i)` of `X~` and `(i', j)` of `W~` has exponent
//! `e = t k_i k_o + j k_i + r` with `r = k_i - 1 + i - i'` in `[0, 2 k_i - 2]`.
//! Every target satisfies `T = k_i - 1 (mod k_i)` (as `k_i | k_i k_o`).
//! - No wrap (`e < N`): if `r < k_i` then `j k_i + r < k_i k_o`, so `e` determines
//!   `t = e div k_i k_o`, `j = (e mod k_i k_o) div k_i` and `r = e mod k_i`; `e = T(t0, j0)`
//!   forces `t = t0`, `j = j0`, `r = k_i - 1`, i.e. `i = i'`: exactly the wanted terms,
//!   each with sign `+`. If `r >= k_i` then `e = k_i * (...) + (r - k_i)` with
//!   `0 <= r - k_i <= k_i - 2`, so `e != k_i - 1 (mod k_i)` and it hits no target.
//! - Negacyclic wrap (`e >= N`, the term lands at `e - N` with a minus sign): the largest
//!   exponent is `(n_b - 1) k_i k_o + (k_i - 1) + (k_i k_o - 1) = n_b k_i k_o + k_i - 2`,
//!   so `e - N <= n_b k_i k_o - N + k_i - 2 <= k_i - 2`, below the smallest target
//!   `T(0, 0) = k_i - 1`. No wrapped term lands on a target. QED.
//!
//! All other coefficients hold partial sums the client never reads, so the server sends
//! only `c0` at the `n_b k_o` targets (plus all of `c1`, which decryption needs).

/// Block sizes: `n_b` tokens, `k_i` inputs and `k_o` outputs per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tiling {
    /// Tokens per ciphertext.
    pub n_b: usize,
    /// Inputs per block.
    pub k_i: usize,
    /// Outputs per block.
    pub k_o: usize,
}

/// Cost-model constants (measured order of magnitude on the 2-core reference machine).
/// One lazy NTT-domain multiply-accumulate of both ciphertext components, per coefficient.
const MAC_NS: f64 = 1.2;
/// One forward or inverse NTT, per coefficient (`N = 2^12`: about 20 us).
const NTT_NS_PER_COEFF: f64 = 5.0;
/// Wire time per bit at 1 Gbit/s.
const WIRE_NS_PER_BIT: f64 = 1.0;
/// The packed model's constants (`Coeff12Pack`, `N = 2^12`, wall time with 2 threads on
/// the 2-core reference machine). The `sweep` example (`cargo run --release -p
/// selene-linalg --example sweep`) times one product per tiling of SmolLM2's six shapes
/// and fits them: across five runs, multiply-adds 0.3-1.7 ns and key switches 20-52 ns
/// per coefficient (nearly collinear over these tilings, so the split is loose), the
/// client's encryption 37-45 and decryption 23-26. Multiply-adds keep [`MAC_NS`], the
/// cost in a whole model, whose weights stream from memory (an isolated product finds
/// them in cache); with key switches at 37 the model picks the sweep's fastest tiling
/// for every shape on `lan` and `home` and all but `gate|up` on `wan` (18% off). The
/// end-to-end check is in docs/network.md, "How the plan is chosen".
///
/// One key switch (a packing merge or a hoisted image: an automorphism with a hybrid key
/// switch over `q` and `P`, about seven NTTs and the element-wise work around them), per
/// coefficient. The same at `Coeff12WidePack`, whose base-`2^31` gadget doubles the
/// decomposition: its two parts run on the two threads, and the sweep fit 24.4 there
/// against 33.6 at `Coeff12Pack` (`cargo run --release -p selene-linalg --example sweep
/// coeff12widepack`, EPYC). Hosts differ (an Intel Xeon one fit 27 and 38-50): the plan's
/// modelled cost is flat enough near its optimum that constants off by 1.4x move it by
/// about 2%, so one constant serves both presets and every host.
const KS_NS_PER_COEFF: f64 = 37.0;
/// The server's work per uploaded ciphertext (reading it, expanding `c1` from its seed),
/// per coefficient.
const PACKED_INPUT_NS: f64 = 8.0;
/// The client's encoding and encryption of one uploaded ciphertext, per coefficient
/// (sampling `c1` from a seed and the error, an NTT, a product with the key).
const CLIENT_ENC_NS_PER_COEFF: f64 = 42.0;
/// The client's decryption and decoding of one packed download, per coefficient.
const CLIENT_DEC_NS_PER_COEFF: f64 = 26.0;

/// How a packing preset merges its output blocks: what the tiling's choice and the
/// server's work depend on beyond the shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Whether the first merge levels may fold into the weights ([`crate::hoist`]). Not
    /// under decryption flooding: the images' key-switch rounding would be multiplied by
    /// the weights ([`crate::flooding`]).
    pub fold: bool,
}

impl Packing {
    /// The strict packed preset's merges: folded levels.
    pub const FOLDED: Packing = Packing { fold: true };
}

impl Tiling {
    /// The tuple `(n_b, k_i, k_o)`, for error messages.
    pub fn as_tuple(&self) -> (usize, usize, usize) {
        (self.n_b, self.k_i, self.k_o)
    }

    /// Number of input blocks, `ceil(d_in / k_i)`.
    pub fn in_blocks(&self, d_in: usize) -> usize {
        d_in.div_ceil(self.k_i)
    }

    /// Number of output blocks, `ceil(d_out / k_o)`.
    pub fn out_blocks(&self, d_out: usize) -> usize {
        d_out.div_ceil(self.k_o)
    }

    /// Number of token groups for `n` tokens, `ceil(n / n_b)`.
    pub fn groups(&self, n: usize) -> usize {
        n.div_ceil(self.n_b)
    }

    /// Exponent of `X[t, i]` in an input block polynomial.
    #[inline]
    pub fn x_pos(&self, t: usize, i: usize) -> usize {
        t * self.k_i * self.k_o + i
    }

    /// Exponent of `W[i, j]` in a weight block polynomial.
    #[inline]
    pub fn w_pos(&self, i: usize, j: usize) -> usize {
        j * self.k_i + self.k_i - 1 - i
    }

    /// Exponent of `Y[t, j]` in an output block polynomial (see the module proof).
    #[inline]
    pub fn y_pos(&self, t: usize, j: usize) -> usize {
        t * self.k_i * self.k_o + j * self.k_i + self.k_i - 1
    }

    /// The tiling with `n_b` tokens per ciphertext that minimises the modelled server time
    /// plus wire time at 1 Gbit/s for one group of `n_b` tokens, given the bits per
    /// uploaded coefficient (`up_bits`) and per downloaded one (`down_bits`).
    ///
    /// Per group: `ceil(d_in/k_i)` uploads of `N` coefficients, `ceil(d_out/k_o)` downloads
    /// of `N + n_b k_o` coefficients, `ceil(d_in/k_i) ceil(d_out/k_o) N` multiply-adds and
    /// two inverse NTTs per output block. With `n_b k_i k_o = N` the multiply-adds are
    /// `n_b d_in d_out` whatever the split, so the choice trades upload (`~ d_in k_o`)
    /// against download (`~ d_out k_i`): the optimum is near
    /// `k_i = sqrt(N/n_b * d_in up_bits / (d_out down_bits))`.
    pub fn choose(
        ring_n: usize,
        d_in: usize,
        d_out: usize,
        n_b: usize,
        up_bits: u32,
        down_bits: u32,
    ) -> Tiling {
        let per_ct = ring_n / n_b.max(1);
        let mut best = Tiling {
            n_b,
            k_i: 1,
            k_o: 1,
        };
        let mut best_cost = f64::INFINITY;
        for k_i in 1..=d_in.min(per_ct) {
            let k_o = (per_ct / k_i).min(d_out);
            if k_o == 0 {
                break;
            }
            let t = Tiling { n_b, k_i, k_o };
            let cost = t.model_ns(ring_n, d_in, d_out, up_bits, down_bits);
            if cost < best_cost {
                best_cost = cost;
                best = t;
            }
        }
        best
    }

    /// The tiling with `n_b` tokens per ciphertext and a power-of-two `k_i` (so outputs
    /// can be packed, [`crate::coeff`]) that minimises the modelled time of one token
    /// group over `link`: server multiply-adds, inverse NTTs and packing merges, the
    /// client's encryptions and decryptions, and the bytes each way at the link's rates.
    /// Packing merges `2^r` output blocks (`r = min(log2 k_i, ceil(log2 blocks))`) into
    /// one download; see [`Tiling::packed_model_ns`] for the key switches it costs.
    /// `up_bits` gives each candidate's uploaded bits per coefficient (the rounded `c0`
    /// keeps more or fewer bits with the tiling's precision,
    /// [`crate::CoeffLayout::upload_drop_bits`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "the shape, both widths, the link and the preset's packing"
    )]
    pub fn choose_packed(
        ring_n: usize,
        d_in: usize,
        d_out: usize,
        n_b: usize,
        up_bits: &dyn Fn(&Tiling) -> u32,
        down_bits: u32,
        link: &crate::Link,
        packing: Packing,
    ) -> Tiling {
        let per_ct = ring_n / n_b.max(1);
        let mut best = Tiling {
            n_b,
            k_i: 1,
            k_o: per_ct.min(d_out).max(1),
        };
        let mut best_cost = f64::INFINITY;
        let mut k_i = 1;
        while k_i <= per_ct && k_i < 2 * d_in {
            let k_o = (per_ct / k_i).min(d_out);
            let t = Tiling { n_b, k_i, k_o };
            let cost =
                t.packed_model_ns(ring_n, d_in, d_out, up_bits(&t), down_bits, link, packing);
            if cost < best_cost {
                best_cost = cost;
                best = t;
            }
            k_i *= 2;
        }
        best
    }

    /// Whether this tiling can lay out a packed `d_in x d_out` product in a ring of
    /// degree `ring_n`: at least one token, a power-of-two `k_i` (the packing grid) no
    /// wider than the matrix needs, `1 <= k_o <= d_out`, and `n_b k_i k_o <= ring_n`.
    pub fn packed_fits(&self, ring_n: usize, d_in: usize, d_out: usize) -> bool {
        (1..=ring_n).contains(&self.n_b)
            && self.k_i.is_power_of_two()
            && self.k_i < 2 * d_in
            && (1..=d_out).contains(&self.k_o)
            && self.n_b.saturating_mul(self.k_i).saturating_mul(self.k_o) <= ring_n
    }

    /// Merge levels of a packed product: `min(log2 k_i, ceil(log2 out_blocks))` (0 when
    /// `k_i` is odd: no power-of-two grid).
    pub fn pack_levels(&self, d_out: usize) -> u32 {
        let blocks = self.out_blocks(d_out);
        self.k_i
            .trailing_zeros()
            .min(blocks.next_power_of_two().trailing_zeros())
    }

    /// Merge levels moved to the weights ([`crate::hoist`]): the `L` in `0..=r` that
    /// minimises the key switches of one token group, `in_blocks (2^L - 1)` hoisted
    /// images plus `packed (2^(r-L) - 1)` real merges (the smaller `L` on a tie). A
    /// function of the tiling, shape and preset, so client and server agree without
    /// sending it. 0 when `packing` does not fold.
    pub fn hoist_levels(
        &self,
        d_in: usize,
        d_out: usize,
        pack_levels: u32,
        packing: Packing,
    ) -> u32 {
        if !packing.fold {
            return 0;
        }
        let (bi, packed) = (self.in_blocks(d_in), self.packed_cts(d_out));
        (0..=pack_levels)
            .min_by_key(|&l| bi * ((1 << l) - 1) + packed * ((1 << (pack_levels - l)) - 1))
            .unwrap_or(0)
    }

    /// Downloaded ciphertexts of one token group when packed.
    pub fn packed_cts(&self, d_out: usize) -> usize {
        self.out_blocks(d_out)
            .div_ceil(1 << self.pack_levels(d_out))
    }

    /// The server's work for one token group of a packed product: `(key switches,
    /// blocks)`, each block `in_blocks` weight polynomials multiplied in. With `L` merge
    /// levels folded into the weights ([`crate::hoist`]) that is `in_blocks (2^L - 1)`
    /// images plus `packed (2^(r-L) - 1)` real merges, and the folded items pad to `2^r`
    /// blocks; with none, one merge per block beyond the packed ones.
    pub fn packed_work(&self, d_in: usize, d_out: usize, packing: Packing) -> (usize, usize) {
        let (bi, bo, packed) = (
            self.in_blocks(d_in),
            self.out_blocks(d_out),
            self.packed_cts(d_out),
        );
        let r = self.pack_levels(d_out);
        match self.hoist_levels(d_in, d_out, r, packing) {
            0 => (bo - packed, bo),
            l => {
                let (s, j) = (1usize << l, 1usize << (r - l));
                (bi * (s - 1) + packed * (j - 1), packed * s * j)
            }
        }
    }

    /// Modelled time (ns) of one token group with packed outputs over `link`; see
    /// [`Tiling::choose_packed`].
    #[allow(
        clippy::too_many_arguments,
        reason = "the shape, both widths, the link and the preset's packing"
    )]
    pub fn packed_model_ns(
        &self,
        ring_n: usize,
        d_in: usize,
        d_out: usize,
        up_bits: u32,
        down_bits: u32,
        link: &crate::Link,
        packing: Packing,
    ) -> f64 {
        let (bi, packed) = (self.in_blocks(d_in) as f64, self.packed_cts(d_out) as f64);
        let nf = ring_n as f64;
        let (key_switches, blocks) = self.packed_work(d_in, d_out, packing);
        let (key_switches, blocks) = (key_switches as f64, blocks as f64);
        let server = bi * blocks * nf * MAC_NS
            + key_switches * nf * KS_NS_PER_COEFF
            + bi * nf * PACKED_INPUT_NS
            + 2.0 * packed * nf * NTT_NS_PER_COEFF;
        let client = nf * (bi * CLIENT_ENC_NS_PER_COEFF + packed * CLIENT_DEC_NS_PER_COEFF);
        let used = (self.n_b * d_out) as f64;
        let up = bi * nf * f64::from(up_bits) * link.up_ns_per_bit();
        let down = (packed * nf + used) * f64::from(down_bits) * link.down_ns_per_bit();
        server + client + up + down
    }

    /// Bits on the wire, both ways, for one token group.
    pub fn wire_bits(
        &self,
        ring_n: usize,
        d_in: usize,
        d_out: usize,
        up_bits: u32,
        down_bits: u32,
    ) -> f64 {
        let (bi, bo) = (self.in_blocks(d_in) as f64, self.out_blocks(d_out) as f64);
        let nf = ring_n as f64;
        bi * nf * f64::from(up_bits)
            + bo * (nf + (self.n_b * self.k_o) as f64) * f64::from(down_bits)
    }

    /// Modelled server plus wire time (ns) of one token group; see [`Tiling::choose`].
    pub fn model_ns(
        &self,
        ring_n: usize,
        d_in: usize,
        d_out: usize,
        up_bits: u32,
        down_bits: u32,
    ) -> f64 {
        let (bi, bo) = (self.in_blocks(d_in) as f64, self.out_blocks(d_out) as f64);
        let nf = ring_n as f64;
        let server = bi * bo * nf * MAC_NS + 2.0 * bo * nf * NTT_NS_PER_COEFF;
        server + self.wire_bits(ring_n, d_in, d_out, up_bits, down_bits) * WIRE_NS_PER_BIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schoolbook negacyclic product over the integers.
    fn negacyclic(a: &[i64], b: &[i64]) -> Vec<i64> {
        let n = a.len();
        let mut c = vec![0i64; n];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                let k = i + j;
                if k < n {
                    c[k] += x * y;
                } else {
                    c[k - n] -= x * y;
                }
            }
        }
        c
    }

    #[test]
    fn targets_hold_exact_dot_products_for_full_and_ragged_tilings() {
        let n = 64;
        for t in [
            Tiling {
                n_b: 1,
                k_i: 8,
                k_o: 8,
            },
            Tiling {
                n_b: 2,
                k_i: 4,
                k_o: 8,
            },
            Tiling {
                n_b: 4,
                k_i: 16,
                k_o: 1,
            },
            Tiling {
                n_b: 1,
                k_i: 1,
                k_o: 64,
            },
            Tiling {
                n_b: 3,
                k_i: 5,
                k_o: 4,
            },
        ] {
            let mut xs = vec![0i64; n];
            let mut ws = vec![0i64; n];
            let x = |tt: usize, i: usize| (tt * 7 + i * 3) as i64 % 11 - 5;
            let w = |i: usize, j: usize| (i * 5 + j * 13) as i64 % 9 - 4;
            for tt in 0..t.n_b {
                for i in 0..t.k_i {
                    xs[t.x_pos(tt, i)] = x(tt, i);
                }
            }
            for i in 0..t.k_i {
                for j in 0..t.k_o {
                    ws[t.w_pos(i, j)] = w(i, j);
                }
            }
            let prod = negacyclic(&xs, &ws);
            for tt in 0..t.n_b {
                for j in 0..t.k_o {
                    let want: i64 = (0..t.k_i).map(|i| x(tt, i) * w(i, j)).sum();
                    assert_eq!(prod[t.y_pos(tt, j)], want, "{t:?} t={tt} j={j}");
                }
            }
        }
    }

    #[test]
    fn chosen_tiling_fills_the_ring_and_balances_traffic() {
        let t = Tiling::choose(4096, 576, 960, 1, 41, 24);
        assert!(t.k_i * t.k_o <= 4096 && t.k_i * t.k_o > 2048, "{t:?}");
        let t64 = Tiling::choose(4096, 576, 576, 4, 41, 24);
        assert!(t64.n_b * t64.k_i * t64.k_o <= 4096);
        // More inputs than outputs favours wide input blocks.
        let down = Tiling::choose(4096, 1536, 576, 1, 41, 24);
        assert!(down.k_i > t.k_i, "{down:?} vs {t:?}");
    }
}
