//! Packed outputs ([`LinalgPreset::Coeff12Pack`]) on SmolLM2's four product shapes, for
//! one token and for a prompt: precision against the f64 product, the layout's round trip
//! through its wire form, and that packing shrinks the download as the plan says.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{max_rel_error, values};
use selene_linalg::{
    Client, EncryptedInput, EncryptedOutput, Layout, LayoutKind, LinalgPreset, Link, MatrixShape,
    Method, PreparedMatrix, Server,
};

/// SmolLM2-135M's products: qkv, attention output, gate|up, down.
const SHAPES: [(usize, usize); 4] = [(576, 960), (576, 576), (576, 3072), (1536, 576)];

#[test]
fn packed_products_match_f64_and_download_a_few_ciphertexts() {
    let params = LinalgPreset::Coeff12Pack.build().unwrap();
    for link in [Link::WAN, Link::LAN] {
        for (d_in, d_out) in SHAPES {
            let shape = MatrixShape::new(d_in, d_out);
            let w: Vec<f32> = values(3, d_in * d_out).iter().map(|v| v * 0.05).collect();
            let m = PreparedMatrix::for_link(&params, &w, shape, Method::Coefficients, 1, &link)
                .unwrap();
            // The client sees the layout as the server sends it.
            let layout = Layout::from_bytes(&m.layout().to_bytes(), &params).unwrap();
            assert_eq!(&layout, m.layout());
            let LayoutKind::Coefficients(l) = layout.kind() else {
                panic!("coefficient layout expected")
            };
            let mut client = Client::new(&params);
            let gks = client.galois_keys(&[&layout]);
            let server = Server::new(&params).with_galois_keys(Arc::new(gks));
            for n in [1, 3] {
                let x = values(4 + n as u64, n * d_in);
                let (input, scales) = client.encode_encrypt(&x, n, &layout).unwrap();
                let up = input.to_bytes(&params);
                let input = EncryptedInput::from_bytes(&up, &params).unwrap();
                let start = Instant::now();
                let out = server.apply(&m, &input).unwrap();
                let server_time = start.elapsed();
                let down = out.to_bytes();
                let out = EncryptedOutput::from_bytes(&down, &params).unwrap();
                let y = client.decrypt_decode(&out, &scales, &layout).unwrap();
                let err = max_rel_error(&x, &w, shape, &y);
                let t = l.tiling;
                println!(
                    "{link} {d_in}->{d_out} n={n}: tiling {:?}, {} merge levels, {} cts down \
                     (unpacked {}), {:.1} bits, up {} B, down {} B, server {:?}",
                    t.as_tuple(),
                    l.pack_levels,
                    out.ciphertexts(),
                    t.groups(n) * t.out_blocks(d_out),
                    -err.log2(),
                    up.len(),
                    down.len(),
                    server_time
                );
                assert!(
                    err <= 2f64.powi(-12),
                    "{link} {d_in}->{d_out} n={n}: {err:e}"
                );
                assert_eq!(
                    out.ciphertexts(),
                    t.groups(n) * t.packed_cts(d_out),
                    "{link} {d_in}->{d_out}"
                );
            }
        }
    }
}

/// Every tiling the cost model weighs (what the `sweep` example times) computes the
/// product; tilings a packed layout cannot hold are refused, as is a preset that does not
/// pack.
#[test]
fn every_packed_tiling_matches_f64_and_bad_ones_are_refused() {
    use selene_linalg::tiling::Tiling;
    let params = LinalgPreset::Coeff12Pack.build().unwrap();
    let (d_in, d_out) = (576, 960);
    let shape = MatrixShape::new(d_in, d_out);
    let w: Vec<f32> = values(5, d_in * d_out).iter().map(|v| v * 0.05).collect();
    let x = values(6, d_in);
    let mut k_i = 64;
    while k_i < 2 * d_in {
        let t = Tiling {
            n_b: 1,
            k_i,
            k_o: (4096 / k_i).min(d_out),
        };
        let m = PreparedMatrix::with_packed_tiling(&params, &w, shape, t).unwrap();
        let LayoutKind::Coefficients(l) = m.layout().kind() else {
            panic!("coefficient layout expected")
        };
        assert_eq!(l.tiling, t);
        let mut client = Client::new(&params);
        let gks = client.galois_keys(&[m.layout()]);
        let server = Server::new(&params).with_galois_keys(Arc::new(gks));
        let (input, scales) = client.encode_encrypt(&x, 1, m.layout()).unwrap();
        let out = server.apply(&m, &input).unwrap();
        let y = client.decrypt_decode(&out, &scales, m.layout()).unwrap();
        let err = max_rel_error(&x, &w, shape, &y);
        assert!(err <= 2f64.powi(-12), "k_i {k_i}: {err:e}");
        k_i *= 2;
    }
    let bad = [
        Tiling {
            n_b: 1,
            k_i: 96,
            k_o: 32,
        }, // not a power of two
        Tiling {
            n_b: 1,
            k_i: 2048,
            k_o: 2,
        }, // wider than d_in needs
        Tiling {
            n_b: 1,
            k_i: 1024,
            k_o: 8,
        }, // more than N coefficients
        Tiling {
            n_b: 0,
            k_i: 1024,
            k_o: 4,
        }, // no token
    ];
    for t in bad {
        let e = PreparedMatrix::with_packed_tiling(&params, &w, shape, t).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{t:?}: {e}");
    }
    let unpacked = LinalgPreset::Coeff12.build().unwrap();
    let t = Tiling {
        n_b: 1,
        k_i: 1024,
        k_o: 4,
    };
    assert!(PreparedMatrix::with_packed_tiling(&unpacked, &w, shape, t).is_err());
}

#[test]
fn a_packed_product_without_galois_keys_is_an_error() {
    let params = LinalgPreset::Coeff12Pack.build().unwrap();
    let shape = MatrixShape::new(64, 256);
    let w = values(1, 64 * 256);
    let m =
        PreparedMatrix::for_link(&params, &w, shape, Method::Coefficients, 1, &Link::WAN).unwrap();
    let mut client = Client::new(&params);
    let (input, _) = client
        .encode_encrypt(&values(2, 64), 1, m.layout())
        .unwrap();
    let e = Server::new(&params).apply(&m, &input).unwrap_err();
    assert!(matches!(e, selene_linalg::Error::MissingGaloisKeys), "{e}");
}
