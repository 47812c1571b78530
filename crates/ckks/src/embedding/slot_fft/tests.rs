//! Tests of the special FFT against a direct O(N^2) evaluation of the embedding.

use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::f64::consts::PI;

/// Direct evaluation of polynomials in R[X]/(X^N + 1) at powers of zeta = exp(i*pi/N).
struct Reference {
    degree: usize,
    /// zeta^t for t in 0..2N, each from its own sin_cos.
    powers: Vec<Complex64>,
}

impl Reference {
    fn new(log_n: u32) -> Self {
        let degree = 1usize << log_n;
        let powers = (0..2 * degree)
            .map(|t| {
                let (s, c) = (PI * t as f64 / degree as f64).sin_cos();
                Complex64::new(c, s)
            })
            .collect();
        Reference { degree, powers }
    }

    /// m(zeta^g) by summing every term.
    fn eval(&self, coeffs: &[f64], g: usize) -> Complex64 {
        let m = 2 * self.degree;
        coeffs
            .iter()
            .enumerate()
            .map(|(k, &c)| self.powers[k * g % m] * c)
            .sum()
    }

    /// 5^j mod 2N.
    fn galois(&self, j: usize) -> usize {
        (0..j).fold(1, |p, _| p * 5 % (2 * self.degree))
    }

    /// All N/2 slots m(zeta^(5^j)) of the full ring.
    fn full_slots(&self, coeffs: &[f64]) -> Vec<Complex64> {
        (0..self.degree / 2)
            .map(|j| self.eval(coeffs, self.galois(j)))
            .collect()
    }

    /// Expected sparse decoding: mean of the replicas j, j + n, j + 2n, ... of each slot.
    fn sparse_slots(&self, coeffs: &[f64], n: usize) -> Vec<Complex64> {
        let full = self.full_slots(coeffs);
        let reps = full.len() / n;
        (0..n)
            .map(|j| (0..reps).map(|r| full[j + r * n]).sum::<Complex64>() / reps as f64)
            .collect()
    }

    /// The automorphism X -> X^g on coefficients (X^N = -1).
    fn automorphism(&self, coeffs: &[f64], g: usize) -> Vec<f64> {
        let n = self.degree;
        let mut out = vec![0.0; n];
        for (k, &c) in coeffs.iter().enumerate() {
            let e = k * g % (2 * n);
            if e < n {
                out[e] += c;
            } else {
                out[e - n] -= c;
            }
        }
        out
    }
}

fn random_coeffs(rng: &mut StdRng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn random_slots(rng: &mut StdRng, len: usize) -> Vec<Complex64> {
    (0..len)
        .map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)))
        .collect()
}

fn max_abs(v: &[Complex64]) -> f64 {
    v.iter().map(|z| z.norm()).fold(0.0, f64::max)
}

fn max_diff(a: &[Complex64], b: &[Complex64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm())
        .fold(0.0, f64::max)
}

/// A spread of slot counts for ring 2^log_n: 1, 2, sqrt-ish, N/8, N/4 and N/2 slots.
fn log_slot_choices(log_n: u32) -> Vec<u32> {
    let mut v = vec![
        0,
        1,
        log_n / 2,
        log_n.saturating_sub(3),
        log_n - 2,
        log_n - 1,
    ];
    v.retain(|&s| s < log_n);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn decode_matches_direct_embedding_log_n_4_to_12() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut worst: f64 = 0.0;
    for log_n in 4..=12 {
        let reference = Reference::new(log_n);
        let coeffs = random_coeffs(&mut rng, 1 << log_n);
        let scale = coeffs.iter().fold(0.0f64, |m, c| m.max(c.abs()));
        for log_slots in log_slot_choices(log_n) {
            let fft = SlotFft::new(log_n, log_slots).unwrap();
            let mut got = vec![Complex64::default(); fft.slots()];
            fft.decode(&coeffs, &mut got).unwrap();
            let want = reference.sparse_slots(&coeffs, fft.slots());
            let err = max_diff(&got, &want) / scale;
            assert!(err < 1e-9, "log_n {log_n} log_slots {log_slots}: {err:e}");
            worst = worst.max(err);
        }
    }
    eprintln!("decode vs direct: worst relative error {worst:e}");
}

#[test]
fn encode_matches_direct_embedding_log_n_4_to_12() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut worst: f64 = 0.0;
    for log_n in 4..=12 {
        let reference = Reference::new(log_n);
        for log_slots in log_slot_choices(log_n) {
            let fft = SlotFft::new(log_n, log_slots).unwrap();
            let n = fft.slots();
            let slots = random_slots(&mut rng, n);
            let mut coeffs = vec![f64::NAN; 1 << log_n];
            fft.encode(&slots, &mut coeffs).unwrap();
            // Sparse packing: every coefficient off the subring R[X^gap] is exactly zero.
            let gap = (1 << log_n) / (2 * n);
            for (k, c) in coeffs.iter().enumerate() {
                if k % gap != 0 {
                    assert_eq!(*c, 0.0, "log_n {log_n} log_slots {log_slots} k {k}");
                }
            }
            // The full-ring slot vector is the input repeated N / (2n) times.
            let full = reference.full_slots(&coeffs);
            let want: Vec<Complex64> = (0..full.len()).map(|j| slots[j % n]).collect();
            let err = max_diff(&full, &want) / max_abs(&slots);
            assert!(err < 1e-9, "log_n {log_n} log_slots {log_slots}: {err:e}");
            worst = worst.max(err);
        }
    }
    eprintln!("encode vs direct: worst relative error {worst:e}");
}

#[test]
fn round_trip_error_is_tiny_up_to_log_n_16() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut worst: f64 = 0.0;
    for log_n in 1..=16 {
        for log_slots in log_slot_choices(log_n) {
            let fft = SlotFft::new(log_n, log_slots).unwrap();
            let slots = random_slots(&mut rng, fft.slots());
            let mut coeffs = vec![0.0; 1 << log_n];
            fft.encode(&slots, &mut coeffs).unwrap();
            let mut back = vec![Complex64::default(); fft.slots()];
            fft.decode(&coeffs, &mut back).unwrap();
            let err = max_diff(&slots, &back) / max_abs(&slots);
            // Observed: at most 8.1e-17 * (log_slots + 1) over all these cases.
            let bound = 1e-15 * f64::from(log_slots + 1);
            assert!(err < bound, "log_n {log_n} log_slots {log_slots}: {err:e}");
            worst = worst.max(err / f64::from(log_slots + 1));
        }
    }
    eprintln!("round trip: worst error / (log_slots + 1) {worst:e}");
}

#[test]
fn known_answers() {
    // N = 2: zeta = i, one slot a + i b for m = a + b X.
    let fft = SlotFft::new(1, 0).unwrap();
    let mut slot = [Complex64::default()];
    fft.decode(&[0.5, -2.0], &mut slot).unwrap();
    assert_eq!(slot[0], Complex64::new(0.5, -2.0));

    // N = 4, m = X: slots zeta^1, zeta^5 with zeta = exp(i pi / 4).
    let fft = SlotFft::new(2, 1).unwrap();
    let mut slots = [Complex64::default(); 2];
    fft.decode(&[0.0, 1.0, 0.0, 0.0], &mut slots).unwrap();
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let want = [Complex64::new(h, h), Complex64::new(-h, -h)];
    assert!(max_diff(&slots, &want) < 1e-15);

    // Constant slots c encode to the constant polynomial c; slots i*c to c X^(N/2).
    for (log_n, log_slots) in [(6, 5), (6, 2), (10, 9), (10, 0)] {
        let fft = SlotFft::new(log_n, log_slots).unwrap();
        let n = 1usize << log_n;
        for (slot, at) in [
            (Complex64::new(3.25, 0.0), 0),
            (Complex64::new(0.0, 3.25), n / 2),
        ] {
            let mut coeffs = vec![0.0; n];
            fft.encode(&vec![slot; fft.slots()], &mut coeffs).unwrap();
            for (k, c) in coeffs.iter().enumerate() {
                let want = if k == at { 3.25 } else { 0.0 };
                assert!((c - want).abs() < 1e-14, "log_n {log_n} k {k}: {c}");
            }
        }
    }
}

/// The naive inverse of the full canonical embedding over all N primitive roots,
/// c_k = (1/N) sum_{t odd} sigma_t zeta^(-t k), applied to the conjugate-symmetric
/// vector sigma_(5^j) = z_j, sigma_(-5^j) = conj(z_j), returns real coefficients equal to
/// encode's output.
#[test]
fn encode_equals_inverse_of_conjugate_symmetric_full_embedding() {
    let mut rng = StdRng::seed_from_u64(4);
    for (log_n, log_slots) in [(5, 4), (8, 7), (8, 3), (9, 0)] {
        let reference = Reference::new(log_n);
        let degree = 1usize << log_n;
        let m = 2 * degree;
        let fft = SlotFft::new(log_n, log_slots).unwrap();
        let slots = random_slots(&mut rng, fft.slots());
        let mut sigma = vec![None; m];
        for j in 0..degree / 2 {
            let g = reference.galois(j);
            let z = slots[j % fft.slots()];
            sigma[g] = Some(z);
            sigma[m - g] = Some(z.conj());
        }
        // {5^j} and {-5^j} together cover every odd residue once.
        for (t, s) in sigma.iter().enumerate() {
            assert_eq!(s.is_some(), t % 2 == 1, "residue {t}");
        }
        let mut coeffs = vec![0.0; degree];
        fft.encode(&slots, &mut coeffs).unwrap();
        for (k, c) in coeffs.iter().enumerate() {
            let naive: Complex64 = sigma
                .iter()
                .enumerate()
                .filter_map(|(t, s)| s.map(|s| s * reference.powers[(m - t * k % m) % m]))
                .sum::<Complex64>()
                / degree as f64;
            assert!(naive.im.abs() < 1e-12, "log_n {log_n} k {k}: {naive}");
            assert!(
                (naive.re - c).abs() < 1e-12,
                "log_n {log_n} k {k}: {naive} vs {c}"
            );
        }
    }
}

#[test]
fn real_and_imaginary_slots_give_antisymmetric_and_symmetric_coefficients() {
    // Conjugation X -> X^-1 maps c_k to -c_(N-k); it fixes m iff the slots are real and
    // negates m iff they are imaginary.
    let mut rng = StdRng::seed_from_u64(5);
    for (log_n, log_slots) in [(6, 5), (9, 8), (9, 4)] {
        let fft = SlotFft::new(log_n, log_slots).unwrap();
        let degree = 1usize << log_n;
        let values = random_coeffs(&mut rng, fft.slots());
        let mut real = vec![0.0; degree];
        fft.encode_real(&values, &mut real).unwrap();
        let as_complex: Vec<Complex64> = values.iter().map(|&v| Complex64::new(v, 0.0)).collect();
        let mut via_complex = vec![0.0; degree];
        fft.encode(&as_complex, &mut via_complex).unwrap();
        assert_eq!(real, via_complex);
        let imaginary: Vec<Complex64> = values.iter().map(|&v| Complex64::new(0.0, v)).collect();
        let mut imag = vec![0.0; degree];
        fft.encode(&imaginary, &mut imag).unwrap();
        assert!(real[degree / 2].abs() < 1e-15 && imag[0].abs() < 1e-15);
        for k in 1..degree {
            assert!((real[k] + real[degree - k]).abs() < 1e-15, "real k {k}");
            assert!((imag[k] - imag[degree - k]).abs() < 1e-15, "imag k {k}");
        }
        let mut decoded = vec![0.0; fft.slots()];
        fft.decode_real(&real, &mut decoded).unwrap();
        for (d, v) in decoded.iter().zip(&values) {
            assert!((d - v).abs() < 1e-14);
        }
    }
}

/// X -> X^(5^k) rotates the slots left by k and X -> X^(2N-1) conjugates them, for
/// subring (encoded) and arbitrary coefficient vectors, full and sparse packing.
#[test]
fn automorphisms_rotate_and_conjugate_slots() {
    let mut rng = StdRng::seed_from_u64(6);
    for (log_n, log_slots) in [(4, 3), (7, 6), (7, 4), (7, 0), (10, 9), (10, 5)] {
        let reference = Reference::new(log_n);
        let degree = 1usize << log_n;
        let fft = SlotFft::new(log_n, log_slots).unwrap();
        let n = fft.slots();
        let slots = random_slots(&mut rng, n);
        let mut encoded = vec![0.0; degree];
        fft.encode(&slots, &mut encoded).unwrap();
        let arbitrary = random_coeffs(&mut rng, degree);
        for coeffs in [&encoded, &arbitrary] {
            let mut base = vec![Complex64::default(); n];
            fft.decode(coeffs, &mut base).unwrap();
            let tol = 1e-12 * max_abs(&base).max(1.0);
            let mut got = vec![Complex64::default(); n];
            let steps = [0, 1, 2, 3, n / 2 + 1, n - 1, n, n + 1, degree / 2 - 1];
            for k in steps.into_iter().filter(|&k| k < degree / 2) {
                let rotated = reference.automorphism(coeffs, reference.galois(k));
                fft.decode(&rotated, &mut got).unwrap();
                let want: Vec<Complex64> = (0..n).map(|j| base[(j + k) % n]).collect();
                let err = max_diff(&got, &want);
                assert!(
                    err < tol,
                    "log_n {log_n} log_slots {log_slots} k {k}: {err:e}"
                );
            }
            let conjugated = reference.automorphism(coeffs, 2 * degree - 1);
            fft.decode(&conjugated, &mut got).unwrap();
            let want: Vec<Complex64> = base.iter().map(|z| z.conj()).collect();
            assert!(max_diff(&got, &want) < tol, "log_n {log_n} conj");
        }
        // For encoded inputs the decoded base is the input itself.
        let mut base = vec![Complex64::default(); n];
        fft.decode(&encoded, &mut base).unwrap();
        assert!(max_diff(&base, &slots) < 1e-13);
    }
}

#[test]
fn short_buffers_zero_fill_and_truncate() {
    let mut rng = StdRng::seed_from_u64(7);
    let fft = SlotFft::new(8, 6).unwrap();
    let short = random_slots(&mut rng, 5);
    let mut padded = short.clone();
    padded.resize(fft.slots(), Complex64::default());
    let (mut a, mut b) = (vec![0.0; 256], vec![1.0; 256]);
    fft.encode(&short, &mut a).unwrap();
    fft.encode(&padded, &mut b).unwrap();
    assert_eq!(a, b);
    let mut full = vec![Complex64::default(); fft.slots()];
    let mut prefix = vec![Complex64::default(); 7];
    fft.decode(&a, &mut full).unwrap();
    fft.decode(&a, &mut prefix).unwrap();
    assert_eq!(prefix[..], full[..7]);
    let mut real_prefix = vec![0.0; 3];
    fft.decode_real(&a, &mut real_prefix).unwrap();
    assert!(real_prefix.iter().zip(&full).all(|(r, z)| *r == z.re));
}

#[test]
fn every_bad_input_is_an_error() {
    use EmbeddingError::*;
    assert_eq!(
        SlotFft::new(0, 0).unwrap_err(),
        LogNOutOfRange {
            log_n: 0,
            min: 1,
            max: 20
        }
    );
    assert!(matches!(
        SlotFft::new(21, 3),
        Err(LogNOutOfRange { log_n: 21, .. })
    ));
    assert_eq!(
        SlotFft::new(5, 5).unwrap_err(),
        LogSlotsTooLarge {
            log_slots: 5,
            max: 4,
            log_n: 5
        }
    );
    assert!(matches!(
        SlotFft::new(5, u32::MAX),
        Err(LogSlotsTooLarge { .. })
    ));

    let fft = SlotFft::new(5, 3).unwrap();
    let mut coeffs = vec![0.0; 32];
    let mut slots = vec![Complex64::default(); 8];
    let mut reals = vec![0.0; 8];
    let too_many = vec![Complex64::default(); 9];
    assert_eq!(
        fft.encode(&too_many, &mut coeffs),
        Err(SlotCount { got: 9, max: 8 })
    );
    assert_eq!(
        fft.encode_real(&[0.0; 9], &mut coeffs),
        Err(SlotCount { got: 9, max: 8 })
    );
    assert_eq!(
        fft.decode(&coeffs, &mut too_many.clone()),
        Err(SlotCount { got: 9, max: 8 })
    );
    assert_eq!(
        fft.decode_real(&coeffs, &mut [0.0; 9]),
        Err(SlotCount { got: 9, max: 8 })
    );
    for len in [0, 31, 33] {
        let want = Err(CoeffLength {
            got: len,
            expected: 32,
        });
        let mut bad = vec![0.0; len];
        assert_eq!(fft.encode(&slots, &mut bad), want);
        assert_eq!(fft.encode_real(&reals, &mut bad), want);
        assert_eq!(fft.decode(&bad, &mut slots), want);
        assert_eq!(fft.decode_real(&bad, &mut reals), want);
    }
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut s = slots.clone();
        s[3] = Complex64::new(0.0, bad);
        assert_eq!(fft.encode(&s, &mut coeffs), Err(NonFiniteSlot { index: 3 }));
        s[3] = Complex64::new(bad, 0.0);
        assert_eq!(fft.encode(&s, &mut coeffs), Err(NonFiniteSlot { index: 3 }));
        let mut r = reals.clone();
        r[6] = bad;
        assert_eq!(
            fft.encode_real(&r, &mut coeffs),
            Err(NonFiniteSlot { index: 6 })
        );
        let mut c = vec![0.0; 32];
        c[17] = bad;
        assert_eq!(
            fft.decode(&c, &mut slots),
            Err(NonFiniteCoeff { index: 17 })
        );
        assert_eq!(
            fft.decode_real(&c, &mut reals),
            Err(NonFiniteCoeff { index: 17 })
        );
    }
    let huge = vec![Complex64::new(f64::MAX, f64::MAX); 8];
    assert!(matches!(
        fft.encode(&huge, &mut coeffs),
        Err(Overflow { .. })
    ));
    assert!(matches!(
        fft.encode_real(&[f64::MAX; 8], &mut coeffs),
        Err(Overflow { .. })
    ));
    let huge = vec![f64::MAX; 32];
    assert!(matches!(
        fft.decode(&huge, &mut slots),
        Err(Overflow { .. })
    ));
    assert!(matches!(
        fft.decode_real(&huge, &mut reals),
        Err(Overflow { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decode_and_encode_are_linear(
        log_slots in 0u32..6,
        a in prop::collection::vec(-1e3f64..1e3, 64),
        b in prop::collection::vec(-1e3f64..1e3, 64),
    ) {
        let fft = SlotFft::new(6, log_slots).unwrap();
        let n = fft.slots();
        let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let decode = |c: &[f64]| {
            let mut s = vec![Complex64::default(); n];
            fft.decode(c, &mut s).unwrap();
            s
        };
        let (da, db, ds) = (decode(&a), decode(&b), decode(&sum));
        let added: Vec<Complex64> = da.iter().zip(&db).map(|(x, y)| x + y).collect();
        prop_assert!(max_diff(&ds, &added) < 1e-12 * 64.0 * 2e3);

        let za: Vec<Complex64> = a[..n].iter().zip(&b[..n]).map(|(&x, &y)| Complex64::new(x, y)).collect();
        let zb: Vec<Complex64> = b[..n].iter().zip(&a[n..2 * n]).map(|(&x, &y)| Complex64::new(x, y)).collect();
        let zs: Vec<Complex64> = za.iter().zip(&zb).map(|(x, y)| x + y).collect();
        let encode = |z: &[Complex64]| {
            let mut c = vec![0.0; 64];
            fft.encode(z, &mut c).unwrap();
            c
        };
        let (ea, eb, es) = (encode(&za), encode(&zb), encode(&zs));
        for k in 0..64 {
            prop_assert!((es[k] - ea[k] - eb[k]).abs() < 1e-12 * 2e3);
        }
    }
}
