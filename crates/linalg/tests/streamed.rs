//! Products started before their input has all arrived ([`Server::stream`]): the output
//! is byte for byte the one [`Server::apply`] gives the whole input, wherever the bytes
//! were cut, and inputs the stream cannot take are refused or left to `apply`.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::sync::Arc;

use common::values;
use selene_linalg::tiling::Tiling;
use selene_linalg::{
    Client, EncryptedInput, Error, LinalgPreset, Link, MatrixShape, Method, PreparedMatrix, Server,
    StreamedProduct,
};

/// A packed product at the flooded preset, its server, and one encrypted row's wire bytes.
fn setup(d_in: usize, d_out: usize, k_i: usize) -> (PreparedMatrix, Server, Vec<u8>) {
    let params = LinalgPreset::Coeff12WidePack.build().unwrap();
    let shape = MatrixShape::new(d_in, d_out);
    let w: Vec<f32> = values(11, d_in * d_out).iter().map(|v| v * 0.05).collect();
    let t = Tiling {
        n_b: 1,
        k_i,
        k_o: (params.n() / k_i).min(d_out),
    };
    let m = PreparedMatrix::with_packed_tiling(&params, &w, shape, t).unwrap();
    let mut client = Client::new(&params);
    let gks = client.galois_keys(&[m.layout()]);
    let server = Server::new(&params).with_galois_keys(Arc::new(gks));
    let (input, _) = client
        .encode_encrypt(&values(12, d_in), 1, m.layout())
        .unwrap();
    let bytes = input.to_bytes(&params);
    (m, server, bytes)
}

/// Streams `bytes` in pieces ending at `cuts` (increasing), then finishes with the whole.
fn streamed(m: &PreparedMatrix, server: &Server, bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut s = server.stream(m, bytes.len()).unwrap().unwrap();
    let mut at = 0;
    for &cut in cuts {
        server.feed(m, &mut s, &bytes[at..cut]).unwrap();
        at = cut;
    }
    server.finish(m, s, bytes).unwrap().to_bytes()
}

/// Bytes of an input's header, counts and seed table with `cts` ciphertexts.
fn head(cts: usize) -> usize {
    47 + 32 * cts
}

/// `Server::apply`'s answer to the whole `bytes`.
fn applied(m: &PreparedMatrix, server: &Server, bytes: &[u8]) -> Vec<u8> {
    let params = LinalgPreset::Coeff12WidePack.build().unwrap();
    let input = EncryptedInput::from_bytes(bytes, &params).unwrap();
    server.apply(m, &input).unwrap().to_bytes()
}

/// A stream fed the first `cut` bytes.
fn fed(m: &PreparedMatrix, server: &Server, bytes: &[u8], cut: usize) -> StreamedProduct {
    let mut s = server.stream(m, bytes.len()).unwrap().unwrap();
    server.feed(m, &mut s, &bytes[..cut]).unwrap();
    s
}

#[test]
fn a_streamed_product_is_the_applied_one_wherever_the_input_is_cut() {
    // Five input blocks into eleven output blocks, packed in four levels.
    let (m, server, bytes) = setup(300, 700, 64);
    let whole = applied(&m, &server, &bytes);
    let h = head(5);
    let ct = (bytes.len() - h) / 5;
    let cut_sets: Vec<Vec<usize>> = vec![
        vec![],
        vec![10],
        vec![43, 47, 100],
        vec![h - 1],
        vec![h],
        vec![h + ct + 4],
        vec![h + ct + 3, h + 2 * ct + 8, h + 2 * ct + 9, bytes.len() - 1],
        (1..bytes.len()).step_by(7919).collect(),
        vec![bytes.len()],
    ];
    for cuts in &cut_sets {
        assert_eq!(
            streamed(&m, &server, &bytes, cuts),
            whole,
            "cut at {cuts:?}"
        );
    }
    // The `c1` half is computed once the seed table is in, and every ciphertext's `c0`
    // multiplied in once it is whole, not before.
    assert!(!fed(&m, &server, &bytes, h - 1).started());
    let s = fed(&m, &server, &bytes, h);
    assert!(s.started() && s.absorbed() == 0);
    assert_eq!(fed(&m, &server, &bytes, h + 2 * ct + 7).absorbed(), 2);
    assert_eq!(fed(&m, &server, &bytes, 42).absorbed(), 0);
}

/// The input with its seed table emptied: still a valid input, with the same product.
fn without_table(bytes: &[u8], cts: usize) -> Vec<u8> {
    let mut out = bytes[..43].to_vec();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&bytes[head(cts)..]);
    out
}

#[test]
fn a_seed_table_must_match_its_ciphertexts_and_only_a_table_streams() {
    let (m, server, bytes) = setup(300, 700, 64);
    let params = LinalgPreset::Coeff12WidePack.build().unwrap();
    let whole = applied(&m, &server, &bytes);
    // A table entry other than its ciphertext's seed: refused whole and streamed.
    let mut wrong = bytes.clone();
    wrong[47 + 32 * 3] ^= 1;
    assert!(EncryptedInput::from_bytes(&wrong, &params).is_err());
    let mut s = server.stream(&m, wrong.len()).unwrap().unwrap();
    assert!(server.feed(&m, &mut s, &wrong).is_err());
    // A table of another length than the count.
    let mut short = bytes[..43].to_vec();
    short.extend_from_slice(&4u32.to_le_bytes());
    short.extend_from_slice(&bytes[47..]);
    assert!(EncryptedInput::from_bytes(&short, &params).is_err());
    let mut s = server.stream(&m, short.len()).unwrap().unwrap();
    assert!(server.feed(&m, &mut s, &short[..48]).is_err());
    // Without a table the input is valid, gives the same product, and does not stream.
    let bare = without_table(&bytes, 5);
    let input = EncryptedInput::from_bytes(&bare, &params).unwrap();
    assert_eq!(server.apply(&m, &input).unwrap().to_bytes(), whole);
    let mut s = server.stream(&m, bare.len()).unwrap().unwrap();
    assert!(matches!(
        server.feed(&m, &mut s, &bare),
        Err(Error::NotStreamable { .. })
    ));
}

#[test]
fn a_streamed_product_refuses_an_input_that_is_not_the_one_it_began() {
    let (m, server, bytes) = setup(300, 700, 64);
    let half = bytes.len() / 2;
    let mut other = bytes.clone();
    other[100] ^= 1;
    assert!(server
        .finish(&m, fed(&m, &server, &bytes, half), &other)
        .is_err());
    let short = &bytes[..bytes.len() - 1];
    assert!(server
        .finish(&m, fed(&m, &server, &bytes, half), short)
        .is_err());
    // More bytes than announced.
    let mut s = fed(&m, &server, &bytes, bytes.len());
    assert!(server.feed(&m, &mut s, &[0]).is_err());
    // A count the announced size cannot hold is refused before anything is allocated.
    let mut big = bytes.clone();
    big[39..43].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut s = server.stream(&m, big.len()).unwrap().unwrap();
    assert!(server.feed(&m, &mut s, &big[..60]).is_err());
}

#[test]
fn products_that_do_not_stream_are_left_to_apply() {
    // Strict mode's packed preset folds merge levels into the weights on `wan`.
    let params = LinalgPreset::Coeff12Pack.build().unwrap();
    let shape = MatrixShape::new(576, 960);
    let w = values(13, 576 * 960);
    let m =
        PreparedMatrix::for_link(&params, &w, shape, Method::Coefficients, 1, &Link::WAN).unwrap();
    let server = Server::new(&params);
    assert!(server.stream(&m, 1000).unwrap().is_none());
    // Several token groups would hold every group's sums at once.
    let (m, server, _) = setup(300, 700, 64);
    let params = LinalgPreset::Coeff12WidePack.build().unwrap();
    let mut client = Client::new(&params);
    let (input, _) = client
        .encode_encrypt(&values(15, 900), 3, m.layout())
        .unwrap();
    let bytes = input.to_bytes(&params);
    let mut s = server.stream(&m, bytes.len()).unwrap().unwrap();
    assert!(matches!(
        server.feed(&m, &mut s, &bytes),
        Err(Error::NotStreamable { .. })
    ));
}
