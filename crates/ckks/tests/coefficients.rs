//! End-to-end tests with coefficient encoding against f64 references.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

mod common;

use common::{automorphism, bits, negacyclic, uniform, Kit};
use selene_ckks::ring::automorphism::{conjugation_element, galois_element};
use selene_ckks::{Encoding, Error, ExampleParams, Parameters, ParametersLiteral, Scale, Security};

const C: Encoding = Encoding::Coefficients;

fn check_all_ops(kit: &mut Kit, name: &str, min_fresh: f64, min_mul: f64) {
    let n = kit.params.n();
    let a = uniform(n, 1);
    let b = uniform(n, 2);
    // Sparse b keeps the convolution's magnitude near 1 for the product test.
    let sparse: Vec<f64> = (0..n)
        .map(|i| if i % 64 == 0 { b[i] } else { 0.0 })
        .collect();
    let ca = kit.encrypt(&a, C);
    let cb = kit.encrypt(&b, C);
    let fresh = bits(&kit.decrypt(&ca), &a);
    let top = kit.params.max_level();
    let sk_ct = kit.sk_enc.encrypt(&kit.encode(&a, top, C));
    assert!(sk_ct.seed().is_some());
    let sk_bits = bits(&kit.decrypt(&sk_ct), &a);
    println!("{name}: fresh pk {fresh:.1} bits, sk {sk_bits:.1} bits");
    assert!(
        fresh >= min_fresh && sk_bits >= min_fresh,
        "{name}: fresh {fresh} / {sk_bits}"
    );

    let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert!(bits(&kit.decrypt(&kit.eval.add(&ca, &cb).unwrap()), &sum) >= min_fresh - 1.0);
    assert!(bits(&kit.decrypt(&kit.eval.sub(&ca, &cb).unwrap()), &diff) >= min_fresh - 1.0);
    let neg: Vec<f64> = a.iter().map(|x| -x).collect();
    assert!(bits(&kit.decrypt(&kit.eval.neg(&ca)), &neg) >= min_fresh);
    let pb = kit.encode(&b, top, C);
    assert!(bits(&kit.decrypt(&kit.eval.add_plain(&ca, &pb).unwrap()), &sum) >= min_fresh - 1.0);
    let c3: Vec<f64> = a.iter().map(|x| x + 0.25).collect();
    assert!(bits(&kit.decrypt(&kit.eval.add_const(&ca, 0.25).unwrap()), &c3) >= min_fresh - 1.0);

    // ct x pt and ct x ct with rescale.
    let want = negacyclic(&a, &sparse);
    let ps = kit.encode(&sparse, top, C);
    let prod = kit.eval.mul_plain(&ca, &ps).unwrap();
    let prod = kit.eval.rescale(&prod).unwrap();
    let mp = bits(&kit.decrypt(&prod), &want);
    let prepared = selene_ckks::PreparedPlaintext::new(&kit.params, ps.clone());
    let prod2 = kit
        .eval
        .rescale(&kit.eval.mul_prepared(&ca, &prepared).unwrap())
        .unwrap();
    assert!(bits(&kit.decrypt(&prod2), &want) >= min_mul);
    let cs = kit.sk_enc.encrypt(&kit.encode(&sparse, top, C));
    let prod = kit.eval.mul_relin(&ca, &cs).unwrap();
    assert_eq!(prod.level(), top);
    let prod = kit.eval.rescale(&prod).unwrap();
    assert_eq!(prod.level(), top - 1);
    let mr = bits(&kit.decrypt(&prod), &want);
    println!("{name}: mul_plain {mp:.1} bits, mul_relin {mr:.1} bits");
    assert!(mp >= min_mul && mr >= min_mul, "{name}: mul {mp} / {mr}");

    // Constant multiplication.
    let k = kit.eval.mul_const(&ca, -0.75, kit.scale()).unwrap();
    let k = kit.eval.rescale(&k).unwrap();
    let want_k: Vec<f64> = a.iter().map(|x| -0.75 * x).collect();
    assert!(bits(&kit.decrypt(&k), &want_k) >= min_mul);

    // Level drop keeps the message.
    let mut dropped = ca.clone();
    kit.eval.drop_to_level(&mut dropped, 0).unwrap();
    assert_eq!(dropped.level(), 0);
    assert!(bits(&kit.decrypt(&dropped), &a) >= min_fresh);

    // Every generated rotation, conjugation, and the hoisted versions.
    let log_n = kit.params.log_n();
    let steps = kit.steps.clone();
    let hoisted = kit.eval.rotate_hoisted(&ca, &steps).unwrap();
    for (&s, h) in steps.iter().zip(&hoisted) {
        let want = automorphism(&a, galois_element(s, log_n));
        let r = kit.eval.rotate(&ca, s).unwrap();
        let rb = bits(&kit.decrypt(&r), &want);
        let hb = bits(&kit.decrypt(h), &want);
        assert!(
            rb >= min_fresh - 2.0 && hb >= min_fresh - 2.0,
            "{name}: step {s}: {rb} / {hb}"
        );
    }
    let conj = kit.eval.conjugate(&ca).unwrap();
    let want = automorphism(&a, conjugation_element(log_n));
    assert!(bits(&kit.decrypt(&conj), &want) >= min_fresh - 2.0);
    // Rotation at a lower level.
    let r = kit.eval.rotate(&prod, steps[0]).unwrap();
    let want = automorphism(&negacyclic(&a, &sparse), galois_element(steps[0], log_n));
    assert!(bits(&kit.decrypt(&r), &want) >= min_mul - 2.0);
}

#[test]
fn test12_all_ops_coefficients() {
    let mut kit = Kit::new(ExampleParams::Test12.build().unwrap(), &[1, 2, -1, 7]);
    check_all_ops(&mut kit, "Test12", 14.0, 11.0);
}

#[test]
fn grouped_digits_and_two_special_primes() {
    let lit = ParametersLiteral {
        log_n: 11,
        log_q: vec![40, 30, 30, 30],
        log_p: vec![40, 40],
        log_scale: 30,
        dnum: Some(2),
        gadget_log_base: None,
        security: Security::DangerousNoSecurityCheck,
    };
    let mut kit = Kit::new(Parameters::new(&lit).unwrap(), &[1, 3]);
    check_all_ops(&mut kit, "N=2^11 dnum=2 #P=2", 18.0, 15.0);
}

#[test]
fn mismatches_are_errors() {
    let mut kit = Kit::new(ExampleParams::Test12.build().unwrap(), &[1]);
    let a = uniform(16, 3);
    let ca = kit.encrypt(&a, C);
    let mut low = ca.clone();
    kit.eval.drop_to_level(&mut low, 1).unwrap();
    assert!(matches!(
        kit.eval.add(&ca, &low),
        Err(Error::LevelMismatch { left: 2, right: 1 })
    ));
    let mut scaled = ca.clone();
    scaled.set_scale(Scale(3.0));
    assert!(matches!(
        kit.eval.add(&ca, &scaled),
        Err(Error::ScaleMismatch { .. })
    ));
    assert!(matches!(
        kit.eval.rotate(&ca, 5),
        Err(Error::MissingGaloisKey { .. })
    ));
    let mut r0 = low.clone();
    kit.eval.drop_to_level(&mut r0, 0).unwrap();
    assert!(matches!(
        kit.eval.rescale(&r0),
        Err(Error::InvalidLevel { level: 0, .. })
    ));
    let pt = kit.encode(&a, 1, C);
    assert!(matches!(
        kit.eval.mul_plain(&ca, &pt),
        Err(Error::LevelMismatch { .. })
    ));
    assert!(matches!(
        kit.enc.encode(&vec![0.0; 5000], 0, kit.scale(), C),
        Err(Error::TooManyValues {
            got: 5000,
            max: 4096
        })
    ));
    assert!(matches!(
        kit.enc.encode(&[1e40], 0, kit.scale(), C),
        Err(Error::ValueOutOfRange { .. })
    ));
    let mut no_keys = selene_ckks::Evaluator::new(&kit.params);
    assert!(matches!(
        no_keys.mul_relin(&ca, &ca),
        Err(Error::MissingRelinKey)
    ));
}

#[test]
fn flooded_decryption_adds_noise_of_the_requested_size() {
    let mut kit = Kit::new(ExampleParams::Test12.build().unwrap(), &[]);
    let n = kit.params.n();
    let a = uniform(n, 4);
    let ca = kit.encrypt(&a, C);
    let sigma = 2f64.powi(15); // 2^-10 after dividing by the 2^25 scale
    let pt = kit.dec.decrypt_flooded(&ca, sigma).unwrap();
    let got = kit.enc.decode(&pt).unwrap();
    let sd = (got
        .iter()
        .zip(&a)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt();
    let want = sigma / kit.params.default_scale();
    assert!((sd / want - 1.0).abs() < 0.1, "flooding sd {sd} vs {want}");
    assert!(matches!(
        kit.dec.decrypt_flooded(&ca, f64::NAN),
        Err(Error::InvalidFloodingSigma { .. })
    ));
    let s = selene_ckks::flooding_sigma(100.0, 16, 40);
    assert!((s - 100.0 * (12.0f64 * 16.0).sqrt() * 2f64.powi(20)).abs() < 1e-3);
}

/// `encrypt_coefficients` (message and error in one NTT) decrypts to the integer message
/// plus fresh noise, with the secret key (seeded) and the public key, and equals what an
/// encryption of the message's NTT decrypts to within the same noise.
#[test]
fn encrypting_integer_coefficients_decrypts_to_them() {
    let params = ExampleParams::Test12.build().unwrap();
    let mut kit = Kit::new(params.clone(), &[]);
    let ring = params.ring();
    let n = params.n();
    let top = params.max_level();
    let m: Vec<i64> = (0..n as i64)
        .map(|i| (i * 7919 % 2001 - 1000) << 8)
        .collect();
    let plain = selene_ckks::ring::Poly::from_signed(ring, &m, top, false).into_ntt(ring);
    let reference = kit
        .sk_enc
        .encrypt(&selene_ckks::Plaintext::from_poly(plain, Scale(1.0), C));
    let seeded = kit.sk_enc.encrypt_coefficients(&m, top, Scale(1.0), C);
    assert!(seeded.seed().is_some());
    let public = kit.pk_enc.encrypt_coefficients(&m, top, Scale(1.0), C);
    let q0 = ring.moduli()[0];
    let error = |ct: &selene_ckks::Ciphertext| -> i64 {
        let pt = kit.dec.decrypt(ct);
        let coeffs = pt.poly().clone().into_coeff(ring);
        coeffs
            .row(0)
            .iter()
            .zip(&m)
            .map(|(&v, &want)| (q0.center(v) - want).abs())
            .max()
            .unwrap()
    };
    let (e_ref, e_seeded, e_public) = (error(&reference), error(&seeded), error(&public));
    println!("max |decrypted - m|: NTT message {e_ref}, coefficients {e_seeded} (secret key), {e_public} (public key)");
    // Fresh secret-key noise is one Gaussian of sigma 3.2 cut at 6 sigma: at most 19.
    // Public-key noise is `(e u + e0 + e1 s) / P` plus rounding (measured 54): far below
    // the message's 2^8 steps either way.
    assert!(e_ref <= 19 && e_seeded <= 19, "{e_ref} {e_seeded}");
    assert!(e_public <= 512, "{e_public}");
}
