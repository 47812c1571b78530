//! Wire format: round trips, sizes, and every malformed input rejected by its exact error.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;

use common::{bits, uniform, Kit};
use selene_ckks::ring::sampler::Expansion;
use selene_ckks::scheme::serialize::{HEADER_LEN, MAGIC};
use selene_ckks::{
    Ciphertext, Encoding, Error, ExampleParams, GaloisKey, Parameters, ParametersLiteral,
    PublicKey, RelinKey, Security,
};

fn tiny() -> Arc<Parameters> {
    Parameters::new(&ParametersLiteral {
        log_n: 10,
        log_q: vec![30, 25],
        log_p: vec![30],
        log_scale: 25,
        dnum: None,
        gadget_log_base: None,
        security: Security::DangerousNoSecurityCheck,
    })
    .unwrap()
}

#[test]
fn round_trips_and_sizes() {
    let mut kit = Kit::new(ExampleParams::Test12.build().unwrap(), &[1]);
    let params = kit.params.clone();
    let a = uniform(params.slots(), 5);
    let ct = kit.encrypt(&a, Encoding::Slots);
    let bytes = ct.encode(&params);
    let back = Ciphertext::decode(&bytes, &params).unwrap();
    assert_eq!(back, ct);
    // Bit-packed at each prime's width: (28 + 22 + 22) bits per coefficient and component.
    let packed: usize = params
        .q()
        .iter()
        .map(|&q| 64 - q.leading_zeros() as usize)
        .sum();
    assert_eq!(bytes.len(), HEADER_LEN + 11 + 2 * params.n() * packed / 8);
    let top = params.max_level();
    let seeded = kit.sk_enc.encrypt(&kit.encode(&a, top, Encoding::Slots));
    let sb = seeded.encode(&params);
    assert_eq!(sb.len(), HEADER_LEN + 11 + params.n() * packed / 8 + 32);
    let back = Ciphertext::decode(&sb, &params).unwrap();
    assert_eq!(back.seed(), seeded.seed());
    assert!(bits(&kit.decrypt(&back), &a) >= 9.5);
    // Fresh ciphertexts name the ChaCha8 expansion (flag 2). The same seed under flag 1,
    // ChaCha20 (what builds before wire version 4 wrote), reads back as another `c1`:
    // the flag is what peers agree on, and it survives a round trip.
    let flag = HEADER_LEN + 10;
    assert_eq!(sb[flag], 2);
    let mut old = sb.clone();
    old[flag] = 1;
    let other = Ciphertext::decode(&old, &params).unwrap();
    assert_eq!(other.seed().map(|s| s.expansion), Some(Expansion::ChaCha20));
    assert_ne!(other.components().1, back.components().1);
    assert!(bits(&kit.decrypt(&other), &a) < 1.0);
    assert_eq!(other.encode(&params), old);
    old[flag] = 4;
    assert!(Ciphertext::decode(&old, &params).is_err());
    // A mutated ciphertext loses its seed and ships both components.
    let sum = kit.eval.add(&seeded, &seeded).unwrap();
    assert!(sum.seed().is_none());
    assert_eq!(sum.encode(&params).len(), bytes.len());

    let pk = PublicKey::new(&kit.sk);
    assert_eq!(PublicKey::decode(&pk.encode(), &params).unwrap(), pk);
    let rlk = RelinKey::new(&kit.sk);
    assert_eq!(RelinKey::decode(&rlk.encode(), &params).unwrap(), rlk);
    let gk = GaloisKey::new(&kit.sk, 5);
    let gk2 = GaloisKey::decode(&gk.encode(), &params).unwrap();
    assert_eq!(gk2, gk);
    // A deserialized public key encrypts correctly. Fresh public-key noise at this
    // 2^22 scale leaves 9.6-11 bits over 2,048 slots (the worst slot of a fresh key and
    // fresh noise; 40 runs gave a least of 9.59, so a 9.5 floor failed about once in a
    // hundred); a key that decoded wrong leaves under one bit.
    let mut enc = selene_ckks::Encryptor::with_public_key(Arc::new(
        PublicKey::decode(&pk.encode(), &params).unwrap(),
    ));
    let ct2 = enc.encrypt(&kit.encode(&a, top, Encoding::Slots));
    assert!(bits(&kit.decrypt(&ct2), &a) >= 8.0);
}

/// A 128-bit-secure `N = 2^12` literal with one Q and one P prime.
fn one_prime(log_q: u32, log_p: u32, gadget_log_base: Option<u32>) -> ParametersLiteral {
    ParametersLiteral {
        log_n: 12,
        log_q: vec![log_q],
        log_p: vec![log_p],
        log_scale: 20,
        dnum: None,
        gadget_log_base,
        security: Security::Hes128,
    }
}

/// A gadget base adds key rows: the Galois key holds one `b` per part, round-trips, and
/// a key for the same primes without the gadget is refused (other fingerprint).
#[test]
fn gadget_keys_hold_one_row_per_part_and_round_trip() {
    let lit = |gadget_log_base| one_prime(60, 47, gadget_log_base);
    let params = Parameters::new(&lit(Some(31))).unwrap();
    let plain = Parameters::new(&lit(None)).unwrap();
    assert_eq!((params.key_digits(), plain.key_digits()), (2, 1));
    assert_ne!(params.fingerprint(), plain.fingerprint());
    let sk = selene_ckks::SecretKey::generate(&params);
    let gk = GaloisKey::new(&sk, 5);
    let bytes = gk.encode();
    assert_eq!(GaloisKey::decode(&bytes, &params).unwrap(), gk);
    let plain_key = GaloisKey::new(&selene_ckks::SecretKey::generate(&plain), 5).encode();
    assert!(
        bytes.len() > plain_key.len() * 3 / 2,
        "{} vs {}",
        bytes.len(),
        plain_key.len()
    );
    assert!(GaloisKey::decode(&bytes, &plain).is_err());
    // The gadget needs one prime per digit and a sane base.
    // (two primes in one digit; too narrow a base; a base as wide as the 30-bit P)
    for (log_q, dnum, w) in [
        (vec![30, 30], Some(1), 20),
        (vec![60], None, 4),
        (vec![60], None, 31),
    ] {
        let mut l = lit(Some(w));
        l.log_q = log_q;
        l.log_p = vec![30];
        l.dnum = dnum;
        assert!(
            matches!(Parameters::new(&l), Err(Error::InvalidGadgetBase { .. })),
            "{l:?}"
        );
    }
}

#[test]
fn every_truncation_is_truncated_and_trailing_bytes_rejected() {
    let params = tiny();
    let mut kit = Kit::new(params.clone(), &[]);
    let ct = kit.encrypt(&uniform(8, 1), Encoding::Coefficients);
    let bytes = ct.encode(&params);
    for len in 0..bytes.len() {
        match Ciphertext::decode(&bytes[..len], &params) {
            Err(Error::Truncated { .. }) => {}
            other => panic!("prefix {len}: {other:?}"),
        }
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        Ciphertext::decode(&long, &params),
        Err(Error::TrailingBytes { count: 1 })
    );
    let pk = PublicKey::new(&kit.sk).encode();
    for len in [0, 3, HEADER_LEN, HEADER_LEN + 31, pk.len() - 1] {
        assert!(matches!(
            PublicKey::decode(&pk[..len], &params),
            Err(Error::Truncated { .. })
        ));
    }
}

#[test]
fn header_corruptions_give_their_exact_errors() {
    let params = tiny();
    let mut kit = Kit::new(params.clone(), &[]);
    let ct = kit.encrypt(&uniform(8, 1), Encoding::Coefficients);
    let good = ct.encode(&params);
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        Ciphertext::decode(&b, &params)
    };
    assert_eq!(with(0, b'X'), Err(Error::BadMagic { found: *b"XELN" }));
    assert_eq!(
        with(4, 9),
        Err(Error::UnsupportedVersion {
            found: 9,
            supported: 1
        })
    );
    assert_eq!(
        with(6, 2),
        Err(Error::WrongKind {
            expected: 1,
            found: 2
        })
    );
    assert!(matches!(
        with(7, good[7] ^ 1),
        Err(Error::ParameterMismatch { .. })
    ));
    assert_eq!(
        with(15, 7),
        Err(Error::InvalidHeader {
            field: "level",
            value: 7
        })
    );
    assert!(matches!(
        with(23, 0xff),
        Err(Error::InvalidHeader { field: "scale", .. })
    ));
    assert_eq!(
        with(24, 2),
        Err(Error::InvalidHeader {
            field: "encoding",
            value: 2
        })
    );
    assert_eq!(
        with(25, 4),
        Err(Error::InvalidHeader {
            field: "flags",
            value: 4
        })
    );
    // The rounded form (3) exists only at level 0.
    assert_eq!(
        with(25, 3),
        Err(Error::InvalidHeader {
            field: "level",
            value: 1
        })
    );
    // First residue set to all ones (>= q_0).
    let mut b = good.clone();
    b[26..30].fill(0xff);
    assert!(matches!(
        Ciphertext::decode(&b, &params),
        Err(Error::CoefficientOutOfRange {
            row: 0,
            index: 0,
            ..
        })
    ));
    // Another parameter set, other kinds.
    let other = ExampleParams::Test12.build().unwrap();
    assert!(matches!(
        Ciphertext::decode(&good, &other),
        Err(Error::ParameterMismatch { .. })
    ));
    assert_eq!(
        PublicKey::decode(&good, &params),
        Err(Error::WrongKind {
            expected: 2,
            found: 1
        })
    );
    assert_eq!(
        RelinKey::decode(&good, &params),
        Err(Error::WrongKind {
            expected: 3,
            found: 1
        })
    );
    let gk = GaloisKey::new(&kit.sk, 5).encode();
    let mut bad_g = gk.clone();
    bad_g[HEADER_LEN] = 4;
    assert_eq!(
        GaloisKey::decode(&bad_g, &params),
        Err(Error::InvalidHeader {
            field: "galois_element",
            value: 4
        })
    );
    assert_eq!(&good[..4], &MAGIC);
}

#[test]
fn every_single_bit_flip_is_handled_without_panic() {
    let params = tiny();
    let mut kit = Kit::new(params.clone(), &[]);
    let ct = kit.encrypt(&uniform(8, 2), Encoding::Coefficients);
    let good = ct.encode(&params);
    let (mut errors, mut accepted) = (0, 0);
    for bit in 0..good.len() * 8 {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        match Ciphertext::decode(&b, &params) {
            Ok(other) => {
                assert_ne!(other, ct);
                accepted += 1;
            }
            Err(_) => errors += 1,
        }
    }
    // Every header flip is an error except the scale's low mantissa bits; residue flips
    // are either out of range or another valid ciphertext (integrity is the transport's).
    assert!(
        errors >= (HEADER_LEN + 4) * 8,
        "{errors} errors, {accepted} accepted"
    );
}

/// A rounded `c0` drops `d` bits per coefficient and moves each coefficient of the
/// decryption by at most `2^(d-1)`; anything but a fresh one-prime ciphertext, or a `d`
/// past the limit, is refused both ways.
#[test]
fn rounded_c0_costs_at_most_half_a_dropped_unit_per_coefficient() {
    let params = Parameters::new(&one_prime(54, 54, None)).unwrap();
    let sk = Arc::new(selene_ckks::SecretKey::generate(&params));
    let mut enc = selene_ckks::rlwe::Encryptor::with_secret_key(sk.clone());
    let dec = selene_ckks::rlwe::Decryptor::new(sk);
    let q = params.ring().moduli()[0];
    let m: Vec<i64> = (0..params.n() as i64)
        .map(|i| (i * 7919) % 40_000 - 20_000)
        .collect();
    let ct = enc.encrypt_coefficients(&m, 0, selene_ckks::Scale(1.0), Encoding::Coefficients);
    let exact = dec.decrypt_poly(ct.components().0, ct.components().1);
    let full = ct.encode(&params).len();
    for d in [1u32, 12, 32] {
        let bytes = ct.encode_rounded(&params, d).unwrap();
        assert_eq!(
            full - bytes.len(),
            params.n() * d as usize / 8 - 1,
            "d = {d}"
        );
        let back = Ciphertext::decode(&bytes, &params).unwrap();
        assert_eq!(back.seed(), ct.seed());
        // Canonical: a rounded ciphertext re-encodes to its own bytes.
        assert_eq!(back.encode(&params), bytes, "d = {d}");
        let got = dec.decrypt_poly(back.components().0, back.components().1);
        let worst = got
            .row(0)
            .iter()
            .zip(exact.row(0))
            .map(|(&a, &b)| q.center(q.sub(a, b)).unsigned_abs())
            .max()
            .unwrap();
        assert!(worst <= 1 << (d - 1), "d = {d}: {worst}");
        // The error is spread over the interval, not a constant offset.
        assert!(d == 1 || worst >= 1 << (d - 2), "d = {d}: {worst}");
    }
    assert_eq!(ct.encode_rounded(&params, 0).unwrap(), ct.encode(&params));
    for d in [33, 47] {
        assert!(matches!(
            ct.encode_rounded(&params, d),
            Err(Error::InvalidRounding { max: 32, .. })
        ));
    }
    // Not fresh: a sum ships both components and cannot be rounded.
    let eval = selene_ckks::Evaluator::new(&params);
    let sum = eval.add(&ct, &ct).unwrap();
    assert!(matches!(
        sum.encode_rounded(&params, 8),
        Err(Error::InvalidRounding { .. })
    ));
    // On the wire: the dropped bits and the truncated values are checked.
    let bytes = ct.encode_rounded(&params, 12).unwrap();
    let at = HEADER_LEN + 11;
    for bad in [0u8, 33, 200] {
        let mut b = bytes.clone();
        b[at] = bad;
        assert!(matches!(
            Ciphertext::decode(&b, &params),
            Err(Error::InvalidHeader {
                field: "dropped bits",
                ..
            })
        ));
    }
    // The last interval, [top 2^12, q), reads back inside itself: the same bytes again.
    let width = (q.bits() - 12) as usize;
    let top = (q.value() - 1) >> 12;
    let mut b = bytes.clone();
    for bit in 0..width {
        let mask = 1u8 << (bit % 8);
        if top >> bit & 1 == 1 {
            b[at + 1 + bit / 8] |= mask;
        } else {
            b[at + 1 + bit / 8] &= !mask;
        }
    }
    let edge = Ciphertext::decode(&b, &params).unwrap();
    assert_eq!(edge.encode(&params), b);
    let mut b = bytes.clone();
    // The first value all ones: above (q - 1) / 2^12 for this prime just above 2^54.
    for bit in 0..width {
        b[at + 1 + bit / 8] |= 1 << (bit % 8);
    }
    assert!(matches!(
        Ciphertext::decode(&b, &params),
        Err(Error::CoefficientOutOfRange { index: 0, .. })
    ));
    let mut short = bytes.clone();
    short.pop();
    assert!(Ciphertext::decode(&short, &params).is_err());
    let mut long = bytes;
    long.push(0);
    assert!(Ciphertext::decode(&long, &params).is_err());
}
