//! Rounded uploads ([`selene_linalg::CoeffLayout::upload_drop_bits`]): what each
//! coefficient preset drops from `c0`, the bytes that saves, and that the product's
//! precision does not move (the same ciphertexts, serialized whole and rounded).

mod common;

use std::sync::Arc;

use common::{max_rel_error, values};
use selene_linalg::{
    Client, EncryptedInput, EncryptedOutput, LayoutKind, LinalgPreset, Link, MatrixShape, Method,
    PreparedMatrix, Server,
};

#[test]
fn rounded_uploads_save_bytes_without_losing_precision() {
    let shape = MatrixShape::new(576, 960);
    let w: Vec<f32> = values(3, 576 * 960).iter().map(|v| v * 0.05).collect();
    let coefficient_presets = LinalgPreset::ALL
        .into_iter()
        .filter(|p| p.method() == Method::Coefficients);
    for preset in coefficient_presets {
        let params = preset.build().unwrap();
        let m = PreparedMatrix::for_link(&params, &w, shape, Method::Coefficients, 1, &Link::WAN)
            .unwrap();
        let layout = m.layout();
        let LayoutKind::Coefficients(l) = layout.kind() else {
            panic!("coefficient layout expected")
        };
        let mut client = Client::new(&params);
        let mut server = Server::new(&params);
        if preset.packs() {
            let gks = client.galois_keys(&[layout]);
            server = server.with_galois_keys(Arc::new(gks));
        }
        let n = 2;
        let x = values(11, n * shape.d_in);
        let (input, scales) = client.encode_encrypt(&x, n, layout).unwrap();
        let d = input.drop_bits();
        assert_eq!(d, l.upload_drop_bits(&params));
        let run = |input: &EncryptedInput| {
            let up = input.to_bytes(&params);
            let parsed = EncryptedInput::from_bytes(&up, &params).unwrap();
            let out = server.apply(&m, &parsed).unwrap();
            let out = EncryptedOutput::from_bytes(&out.to_bytes(), &params).unwrap();
            let y = client.decrypt_decode(&out, &scales, layout).unwrap();
            (up.len(), -max_rel_error(&x, &w, shape, &y).log2())
        };
        let (rounded_bytes, rounded_bits) = run(&input);
        let (whole_bytes, whole_bits) = run(&input.clone().with_drop_bits(0));
        println!(
            "{preset}: tiling {:?}, x_bits {}, {d} bits dropped, up {whole_bytes} -> \
             {rounded_bytes} B, {whole_bits:.2} -> {rounded_bits:.2} bits",
            l.tiling.as_tuple(),
            l.x_bits
        );
        // One byte more per ciphertext (the dropped-bit count), N d / 8 fewer.
        let cts = input.ciphertexts();
        if d > 0 {
            assert_eq!(
                whole_bytes - rounded_bytes,
                cts * (params.n() * d as usize / 8 - 1)
            );
        } else {
            assert_eq!(whole_bytes, rounded_bytes);
        }
        // The rounding sits a quarter of the switch's rounding below: within 0.2 bits of
        // the whole upload's worst output.
        assert!(
            rounded_bits >= whole_bits - 0.2,
            "{preset}: {rounded_bits} vs {whole_bits}"
        );
    }
    // Where it pays and where it must not happen.
    let drop = |preset: LinalgPreset| {
        let params = preset.build().unwrap();
        let m = PreparedMatrix::for_link(&params, &w, shape, Method::Coefficients, 1, &Link::WAN)
            .unwrap();
        let LayoutKind::Coefficients(l) = m.layout().kind() else {
            panic!("coefficient layout expected")
        };
        l.upload_drop_bits(&params)
    };
    assert!(drop(LinalgPreset::Coeff12Pack) >= 8);
    assert_eq!(drop(LinalgPreset::Coeff12Wide), 0);
    assert_eq!(drop(LinalgPreset::Coeff12WidePack), 0);
}
