//! Times one NTT per anchor prime size (development probe).
use std::time::Instant;
use selene_ckks::ring::{modulus::generate_ntt_primes, NttPlan};
fn main() {
    for log_n in [13u32, 14] {
        for bits in [30u32, 36, 40, 50, 60] {
            let q = generate_ntt_primes(log_n, &[bits]).unwrap()[0];
            let plan = NttPlan::new(1 << log_n, q).unwrap();
            let mut a: Vec<u64> = (0..1u64 << log_n).map(|i| i * 7919 % q).collect();
            for _ in 0..50 { plan.forward(&mut a); plan.backward(&mut a); }
            let t = Instant::now();
            for _ in 0..200 { plan.forward(&mut a); }
            let f = t.elapsed().as_secs_f64() / 200.0 * 1e6;
            let t = Instant::now();
            for _ in 0..200 { plan.backward(&mut a); }
            let b = t.elapsed().as_secs_f64() / 200.0 * 1e6;
            println!("logN {log_n} bits {bits}: fwd {f:.1} us, inv {b:.1} us");
        }
    }
}
