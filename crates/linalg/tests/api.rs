//! Round trips on synthetic matrices against an f64 reference, and every mismatch error.

mod common;

use common::{max_rel_error, round_trip, values};
use selene_linalg::{
    Client, EncryptedInput, EncryptedOutput, Error, LinalgPreset, MatrixShape, Method,
    PreparedMatrix, Server,
};

/// X with a few large outliers, like the residual stream.
fn activations(seed: u64, n: usize, d: usize) -> Vec<f32> {
    let mut x = values(seed, n * d);
    for t in 0..n {
        x[t * d + (7 * t + 3) % d] *= 60.0;
    }
    x
}

#[test]
fn coefficient_method_matches_f64_for_ragged_shapes_and_many_tokens() {
    for preset in [
        LinalgPreset::Coeff11,
        LinalgPreset::Coeff12,
        LinalgPreset::Coeff12Wide,
        LinalgPreset::Coeff12Pack,
        LinalgPreset::Coeff12WidePack,
    ] {
        let params = preset.build().unwrap();
        for (d_in, d_out, n) in [(100, 37, 1), (64, 200, 5), (300, 90, 3)] {
            let shape = MatrixShape::new(d_in, d_out);
            let w: Vec<f32> = values(1, d_in * d_out).iter().map(|v| v * 0.1).collect();
            let x = activations(2, n, d_in);
            let (y, up, down) = round_trip(&params, &w, shape, Method::Coefficients, &x, n);
            let err = max_rel_error(&x, &w, shape, &y);
            println!(
                "{preset:?} {d_in}->{d_out} n={n}: {:.1} bits, up {up} B, down {down} B",
                -err.log2()
            );
            assert!(err <= 2f64.powi(-12), "{preset:?} {d_in}->{d_out}: {err:e}");
        }
    }
}

#[test]
fn coefficient_method_packs_tokens_per_ciphertext() {
    let params = LinalgPreset::Coeff12.build().unwrap();
    let shape = MatrixShape::new(96, 80);
    let w = values(5, 96 * 80);
    let x = activations(6, 7, 96);
    let m = PreparedMatrix::new(&params, &w, shape, Method::Coefficients, 4).unwrap();
    assert_eq!(m.layout().tokens_per_ct(), 4);
    let mut client = Client::new(&params);
    let (input, scales) = client.encode_encrypt(&x, 7, m.layout()).unwrap();
    let out = Server::new(&params).apply(&m, &input).unwrap();
    let y = client.decrypt_decode(&out, &scales, m.layout()).unwrap();
    let err = max_rel_error(&x, &w, shape, &y);
    assert!(err <= 2f64.powi(-12), "{err:e}");
}

#[test]
fn slot_method_matches_f64() {
    let params = LinalgPreset::Slots13.build().unwrap();
    for (d_in, d_out, n) in [(48, 30, 1), (40, 100, 3)] {
        let shape = MatrixShape::new(d_in, d_out);
        let w: Vec<f32> = values(3, d_in * d_out).iter().map(|v| v * 0.2).collect();
        let x = activations(4, n, d_in);
        let (y, up, down) = round_trip(&params, &w, shape, Method::Slots, &x, n);
        let err = max_rel_error(&x, &w, shape, &y);
        println!(
            "slots {d_in}->{d_out} n={n}: {:.1} bits, up {up} B, down {down} B",
            -err.log2()
        );
        assert!(err <= 2f64.powi(-12), "{d_in}->{d_out}: {err:e}");
    }
}

#[test]
fn mismatches_are_errors() {
    let params = LinalgPreset::Coeff11.build().unwrap();
    let other = LinalgPreset::Coeff12.build().unwrap();
    let (a, b) = (MatrixShape::new(64, 32), MatrixShape::new(32, 64));
    let w = values(7, 64 * 32);
    let ma = PreparedMatrix::new(&params, &w, a, Method::Coefficients, 1).unwrap();
    let mb = PreparedMatrix::new(&params, &w, b, Method::Coefficients, 1).unwrap();
    let mc = PreparedMatrix::new(&params, &w, a, Method::Coefficients, 2).unwrap();
    assert!(matches!(
        PreparedMatrix::new(&params, &w[1..], a, Method::Coefficients, 1),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        PreparedMatrix::new(
            &params,
            &[],
            MatrixShape::new(0, 3),
            Method::Coefficients,
            1
        ),
        Err(Error::EmptyShape { .. })
    ));
    let mut bad = w.clone();
    bad[5] = f32::NAN;
    assert!(matches!(
        PreparedMatrix::new(&params, &bad, a, Method::Coefficients, 1),
        Err(Error::NonFinite { index: 5, .. })
    ));
    let mut client = Client::new(&params);
    let x = values(8, 2 * 64);
    assert!(matches!(
        client.encode_encrypt(&x[1..], 2, ma.layout()),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        Client::new(&other).encode_encrypt(&x, 2, ma.layout()),
        Err(Error::ParamsMismatch { .. })
    ));
    let (input, scales) = client.encode_encrypt(&x, 2, ma.layout()).unwrap();
    let server = Server::new(&params);
    assert!(matches!(
        server.apply(&mb, &input),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        server.apply(&mc, &input),
        Err(Error::LayoutMismatch { .. })
    ));
    assert!(matches!(
        Server::new(&other).apply(&ma, &input),
        Err(Error::ParamsMismatch { .. })
    ));
    let out = server.apply(&ma, &input).unwrap();
    assert!(matches!(
        client.decrypt_decode(&out, &scales, mb.layout()),
        Err(Error::ShapeMismatch { .. })
    ));
    let (_, one) = client.encode_encrypt(&x[..64], 1, ma.layout()).unwrap();
    assert!(matches!(
        client.decrypt_decode(&out, &one, ma.layout()),
        Err(Error::Length { .. })
    ));
    // A slot-method matrix refuses coefficient inputs.
    let sp = LinalgPreset::Slots13.build().unwrap();
    let ms = PreparedMatrix::new(&sp, &w, a, Method::Slots, 1).unwrap();
    let (sin, _) = Client::new(&sp).encode_encrypt(&x, 2, ms.layout()).unwrap();
    assert!(matches!(
        Server::new(&sp).apply(&ms, &sin),
        Err(Error::MissingGaloisKeys)
    ));
    assert!(matches!(
        server.apply(&ma, &sin),
        Err(Error::ParamsMismatch { .. })
    ));
    let too_big = MatrixShape::new(3000, 3000);
    let wb = vec![0.0f32; 3000 * 3000];
    assert!(matches!(
        PreparedMatrix::new(&sp, &wb, too_big, Method::Slots, 1),
        Err(Error::TooFewSlots {
            needed: 5999,
            slots: 4096
        })
    ));
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    let params = LinalgPreset::Coeff11.build().unwrap();
    let other = LinalgPreset::Coeff12.build().unwrap();
    let shape = MatrixShape::new(40, 24);
    let w = values(9, 40 * 24);
    let m = PreparedMatrix::new(&params, &w, shape, Method::Coefficients, 1).unwrap();
    let mut client = Client::new(&params);
    let (input, _) = client
        .encode_encrypt(&values(10, 40), 1, m.layout())
        .unwrap();
    let up = input.to_bytes(&params);
    let out = Server::new(&params).apply(&m, &input).unwrap();
    let down = out.to_bytes();
    for cut in (0..up.len()).step_by(97).chain([up.len() - 1]) {
        assert!(
            EncryptedInput::from_bytes(&up[..cut], &params).is_err(),
            "input cut at {cut}"
        );
    }
    for cut in 0..down.len() {
        assert!(
            EncryptedOutput::from_bytes(&down[..cut], &params).is_err(),
            "output cut at {cut}"
        );
    }
    let mut long = down.clone();
    long.push(0);
    assert!(matches!(
        EncryptedOutput::from_bytes(&long, &params),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        EncryptedInput::from_bytes(&down, &params),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        EncryptedOutput::from_bytes(&down, &other),
        Err(Error::ParamsMismatch { .. })
    ));
    let mut huge = down.clone();
    // The ciphertext count (last header field) claims far more than the bytes hold.
    huge[39..43].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        EncryptedOutput::from_bytes(&huge, &params),
        Err(Error::Malformed {
            what: "ciphertext count",
            ..
        })
    ));
    // Allocation amplification (issue 20, item 4): a count the old 4-byte (input) and
    // 8-byte (output) floors admitted, one per 4 or 8 bytes left, would have reserved
    // 36x (or 6x) the frame in slots; now the count is checked against the smallest
    // ciphertext encoding before anything is reserved.
    for (bytes, floor) in [(&up, 4usize), (&down, 8)] {
        let mut amplified = bytes.clone();
        let after_count = 43 + usize::from(floor == 8);
        let fits_old_floor = ((amplified.len() - after_count) / floor) as u32;
        assert!(fits_old_floor > 1);
        amplified[39..43].copy_from_slice(&fits_old_floor.to_le_bytes());
        let refused = if floor == 4 {
            EncryptedInput::from_bytes(&amplified, &params).err()
        } else {
            EncryptedOutput::from_bytes(&amplified, &params).err()
        };
        assert!(
            matches!(
                refused,
                Some(Error::Malformed {
                    what: "ciphertext count",
                    ..
                })
            ),
            "floor {floor}: {refused:?}"
        );
    }
    // A token count (header bytes 35..39) that does not match the ciphertexts sent.
    let mut lying = up.clone();
    lying[35..39].copy_from_slice(&3u32.to_le_bytes());
    let lying = EncryptedInput::from_bytes(&lying, &params).unwrap();
    assert!(matches!(
        Server::new(&params).apply(&m, &lying),
        Err(Error::CiphertextCount { .. })
    ));
    assert_eq!(
        EncryptedOutput::from_bytes(&down, &params)
            .unwrap()
            .to_bytes(),
        down
    );
}
