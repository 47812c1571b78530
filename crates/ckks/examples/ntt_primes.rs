//! Times one forward NTT and one element-wise multiply-accumulate of `N = 2^12` per
//! prime width: tfhe-ntt multiplies with AVX-512 IFMA below `2^50` and emulates a 64-bit
//! product above, so a preset's prime widths set the cost of its key switches (a merge at
//! `coeff12widepack` runs four of its eight NTTs at the 60-bit `q`).
//!
//! `cargo run --release -p selene-ckks --example ntt_primes` (one thread; the median of
//! seven runs of 2,000 calls each).

use std::time::Instant;

use selene_ckks::{Parameters, ParametersLiteral, Security};

/// Calls per timed run, and runs per figure (the median is printed).
const CALLS: usize = 2000;
const RUNS: usize = 7;

fn median_us(mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / CALLS as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn main() -> Result<(), selene_ckks::Error> {
    println!("prime bits | forward NTT (us) | multiply-accumulate (us)");
    for bits in [30u32, 40, 49, 50, 54, 60] {
        let params = Parameters::new(&ParametersLiteral {
            log_n: 12,
            log_q: vec![bits],
            log_p: vec![30],
            log_scale: 20,
            dnum: None,
            gadget_log_base: None,
            security: Security::Hes128,
        })?;
        let ring = params.ring();
        let plan = ring.plan(0);
        let q = ring.moduli()[0].value();
        let mut a: Vec<u64> = (0..params.n() as u64).map(|i| (i * 7919) % q).collect();
        let b = a.clone();
        let mut acc = vec![0u64; params.n()];
        let ntt = median_us(|| plan.forward(&mut a));
        let mac = median_us(|| plan.mul_add(&mut acc, &a, &b));
        println!("{bits:>10} | {ntt:>16.2} | {mac:>24.2}");
    }
    Ok(())
}
