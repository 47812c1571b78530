//! Times `Evaluator::pack` (the packing merges of a product's outputs) at
//! `coeff12widepack`'s key-switching shape, one 60-bit `q` with a base-`2^31` gadget and
//! `P ~ 2^47`, against the same width of `q` as two 31-bit primes, each a key-switching
//! digit: whether merges on primes below `2^50`, whose NTTs take the IFMA path
//! (`ntt_primes`), would be cheaper.
//!
//! `cargo run --release -p selene-ckks --example pack_primes` (`RAYON_NUM_THREADS=2` as a
//! server on the reference machine; the median of five packs of 128 ciphertexts, 127
//! merges, per shape, the shapes alternated twice).

use std::sync::Arc;
use std::time::Instant;

use selene_ckks::ring::Poly;
use selene_ckks::scheme::pack_galois_elements;
use selene_ckks::{
    Ciphertext, Encoding, Encryptor, Evaluator, GaloisKey, GaloisKeys, Parameters,
    ParametersLiteral, Plaintext, Scale, SecretKey, Security,
};

/// Ciphertexts packed per run (`2^LOG_COUNT`, on a grid of the same size).
const LOG_COUNT: u32 = 7;
/// Runs per figure (the median is printed).
const RUNS: usize = 5;

/// The median wall time of one pack of `2^LOG_COUNT` ciphertexts, in ms.
fn pack_ms(log_q: Vec<u32>, dnum: Option<usize>, gadget: Option<u32>) -> selene_ckks::Result<f64> {
    let p = Parameters::new(&ParametersLiteral {
        log_n: 12,
        log_q,
        log_p: vec![47],
        log_scale: 20,
        dnum,
        gadget_log_base: gadget,
        security: Security::Hes128,
    })?;
    let sk = Arc::new(SecretKey::generate(&p));
    let mut gks = GaloisKeys::default();
    for g in pack_galois_elements(p.log_n(), LOG_COUNT, LOG_COUNT) {
        gks.insert(GaloisKey::new(&sk, g));
    }
    let mut ev = Evaluator::new(&p).with_galois_keys(Arc::new(gks));
    let mut enc = Encryptor::with_secret_key(sk);
    let vals: Vec<i64> = (0..p.n() as i64).map(|i| (i * 7919) % 1000 - 500).collect();
    let poly = Poly::from_signed(p.ring(), &vals, p.max_level(), false).into_ntt(p.ring());
    let pt = Plaintext::from_poly(poly, Scale(1.0), Encoding::Coefficients);
    let cts: Vec<Ciphertext> = (0..1 << LOG_COUNT).map(|_| enc.encrypt(&pt)).collect();
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let input = cts.iter().cloned().map(Some).collect();
        let t = Instant::now();
        ev.pack(input, LOG_COUNT)?;
        runs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[RUNS / 2])
}

fn main() -> selene_ckks::Result<()> {
    let merges = f64::from((1u32 << LOG_COUNT) - 1);
    println!("q | pack of {} (ms) | per merge (us)", 1 << LOG_COUNT);
    for _ in 0..2 {
        for (name, log_q, dnum, gadget) in [
            ("one 60-bit prime, gadget 2^31", vec![60], None, Some(31)),
            (
                "two 31-bit primes, one digit each",
                vec![31, 30],
                Some(2),
                None,
            ),
        ] {
            let ms = pack_ms(log_q, dnum, gadget)?;
            println!("{name} | {ms:.1} | {:.0}", ms * 1e3 / merges);
        }
    }
    Ok(())
}
