//! The session state machine on the real model (one prepared layer): every rejection
//! gets its code and leaves the session table as it was.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use selene_linalg::{Client, LinalgPreset};
use selene_model::{store, LinearStage};

use super::*;
use selene_model::Weights;

use crate::codec::wire::{decode, encode, EvalKey, Hello, WIRE_VERSION};
use crate::limits::Limits;
use crate::policy::Policy;
use crate::server::{PreparedModel, PublicPrefix};

fn shared() -> &'static (Arc<Weights>, Arc<PreparedModel>) {
    static S: OnceLock<(Arc<Weights>, Arc<PreparedModel>)> = OnceLock::new();
    S.get_or_init(|| {
        let w = Arc::new(store::load(None).unwrap());
        // Selective sessions' preset: the policies below release after layer 1.
        let params = LinalgPreset::Coeff12Wide.build().unwrap();
        let m = Arc::new(PreparedModel::new(&params, &w, 1, &mut || {}).unwrap());
        (w, m)
    })
}

fn server(limits: Limits) -> Arc<SessionServer> {
    let (w, m) = shared();
    Arc::new(SessionServer::new(m.clone(), w.clone(), limits).with_token(b"right"))
}

fn frame(id: u64, message: Message) -> Vec<u8> {
    encode(&Frame {
        request_id: id,
        message,
    })
    .unwrap()
}

fn hello(token: &[u8], policy: Policy) -> Message {
    let (_, m) = shared();
    Message::Hello(Hello {
        protocol: WIRE_VERSION,
        token: token.to_vec(),
        policy,
        params_fingerprint: m.params().fingerprint(),
        context: 64,
        eval_keys: Vec::new(),
    })
}

/// The reply's error code, or None for a non-error reply.
fn code(r: &Reply) -> Option<ErrorCode> {
    match decode(&r.bytes, &Limits::default()).unwrap().message {
        Message::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[test]
fn bad_hellos_get_their_code_and_open_nothing() {
    let s = server(Limits::default());
    let mut c = s.connect();
    let mut id = 0;
    let mut send = |c: &mut Connection, m: Message| {
        id += 1;
        c.handle(&frame(id, m))
    };
    let cases: Vec<(Message, ErrorCode)> = vec![
        (
            hello(b"wrong", Policy::selective(30, 1)),
            ErrorCode::Unauthorized,
        ),
        // Strict mode needs 30 prepared layers; this server has 1.
        (
            hello(
                b"right",
                Policy {
                    preset: crate::policy::SELECTIVE_PRESET,
                    ..Policy::strict(30)
                },
            ),
            ErrorCode::PolicyRejected,
        ),
        (
            hello(
                b"right",
                Policy {
                    release: None,
                    ..Policy::selective(30, 1)
                },
            ),
            ErrorCode::PolicyRejected,
        ),
        (
            hello(
                b"right",
                Policy {
                    preset: LinalgPreset::Coeff11,
                    ..Policy::strict(30)
                },
            ),
            ErrorCode::ParamsMismatch,
        ),
        (
            match hello(b"right", Policy::selective(30, 1)) {
                Message::Hello(mut h) => {
                    h.eval_keys.push(EvalKey {
                        kind: 1,
                        bytes: vec![0; 8],
                    });
                    Message::Hello(h)
                }
                m => m,
            },
            ErrorCode::KeysRejected,
        ),
        (
            match hello(b"right", Policy::selective(30, 1)) {
                Message::Hello(mut h) => {
                    h.protocol = WIRE_VERSION + 1;
                    Message::Hello(h)
                }
                m => m,
            },
            ErrorCode::UnsupportedVersion,
        ),
        // A fused session needs protocol 2 and a server holding fused matrices.
        (
            match hello(
                b"right",
                Policy {
                    fused: true,
                    ..Policy::strict(30)
                },
            ) {
                Message::Hello(mut h) => {
                    h.protocol = 1;
                    Message::Hello(h)
                }
                m => m,
            },
            ErrorCode::UnsupportedVersion,
        ),
        (
            hello(
                b"right",
                Policy {
                    fused: true,
                    preset: LinalgPreset::Coeff12Wide,
                    ..Policy::strict(30)
                },
            ),
            ErrorCode::PolicyRejected,
        ),
        (
            hello(
                b"right",
                Policy {
                    fused: true,
                    ..Policy::selective(30, 1)
                },
            ),
            ErrorCode::PolicyRejected,
        ),
        (
            Message::Products { items: Vec::new() },
            ErrorCode::NoSession,
        ),
        (
            Message::Product {
                layer: 0,
                stage: LinearStage::Qkv,
                ciphertext: vec![1, 2, 3],
            },
            ErrorCode::NoSession,
        ),
        (
            Message::ProductResult { ciphertext: vec![] },
            ErrorCode::UnexpectedMessage,
        ),
    ];
    for (m, want) in cases {
        // A refused `Hello` closes its connection (one guess per connection); other
        // refusals do not.
        let is_hello = matches!(m, Message::Hello(_));
        let r = send(&mut c, m);
        assert_eq!(code(&r), Some(want));
        assert_eq!(r.close, is_hello);
        assert_eq!(s.counters().sessions_open, 0);
        assert_eq!(c.session_id(), None);
    }
    assert_eq!(s.counters().sessions_ever, 0);
    // Plain HTTP reads as an absurd length: refused, and the connection is to close.
    let r = c.handle(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(code(&r), Some(ErrorCode::MessageTooLarge));
    assert!(r.close);
    // Garbage inside a well-sized frame is Malformed and closes nothing.
    let mut g = 20u32.to_le_bytes().to_vec();
    g.extend_from_slice(&[0xAB; 20]);
    let r = c.handle(&g);
    assert_eq!(code(&r), Some(ErrorCode::Malformed));
    assert!(!r.close);
    // After all that, a good Hello still opens a session.
    let r = send(&mut c, hello(b"right", Policy::selective(30, 1)));
    assert_eq!(code(&r), None);
    assert_eq!(s.counters().sessions_open, 1);
    drop(c);
    assert_eq!(
        s.counters().sessions_open,
        0,
        "a dropped connection frees its session"
    );
}

#[test]
fn requests_in_order_bad_payloads_and_close() {
    let s = server(Limits {
        max_sessions: 2,
        ..Limits::default()
    });
    let (_, m) = shared();
    let mut c = s.connect();
    let r = c.handle(&frame(5, hello(b"right", Policy::selective(30, 1))));
    let welcome = match decode(&r.bytes, &Limits::default()).unwrap().message {
        Message::Welcome(w) => w,
        other => panic!("{other:?}"),
    };
    assert_eq!(welcome.layouts.len(), 4);
    assert_eq!(welcome.model.layers, 30);

    // A replayed or lower id is refused and changes nothing.
    let r = c.handle(&frame(5, hello(b"right", Policy::selective(30, 1))));
    assert_eq!(code(&r), Some(ErrorCode::BadRequestId));
    let r = c.handle(&frame(6, hello(b"right", Policy::selective(30, 1))));
    assert_eq!(code(&r), Some(ErrorCode::AlreadyOpen));

    // A real encrypted product, then the same bytes tampered.
    let layout = &m.layouts()[0][0];
    let mut client = Client::new(m.params());
    let x: Vec<f32> = (0..576).map(|i| (i as f32 * 0.1).sin()).collect();
    let (input, _) = client.encode_encrypt(&x, 1, layout).unwrap();
    let ct = input.to_bytes(m.params());
    let product = |ciphertext: Vec<u8>, layer| Message::Product {
        layer,
        stage: LinearStage::Qkv,
        ciphertext,
    };
    let r = c.handle(&frame(7, product(ct.clone(), 0)));
    assert_eq!(code(&r), None);
    let mut bad = ct.clone();
    bad[0] ^= 0xff; // the ciphertext's own magic
    let r = c.handle(&frame(8, product(bad, 0)));
    assert_eq!(code(&r), Some(ErrorCode::BadPayload));
    let r = c.handle(&frame(9, product(ct[..ct.len() - 1].to_vec(), 0)));
    assert_eq!(code(&r), Some(ErrorCode::BadPayload));
    let r = c.handle(&frame(10, product(ct.clone(), 1)));
    assert_eq!(code(&r), Some(ErrorCode::NotAllowed));
    let r = c.handle(&frame(11, Message::Release { bytes: vec![0; 9] }));
    assert_eq!(code(&r), Some(ErrorCode::BadPayload));
    assert_eq!(s.counters().sessions_open, 1);

    // The session limit: one more fits, the third is refused.
    let mut c2 = s.connect();
    assert_eq!(
        code(&c2.handle(&frame(1, hello(b"right", Policy::selective(30, 1))))),
        None
    );
    let mut c3 = s.connect();
    let r = c3.handle(&frame(1, hello(b"right", Policy::selective(30, 1))));
    assert_eq!(code(&r), Some(ErrorCode::TooManySessions));
    assert_eq!(s.counters().sessions_open, 2);

    let r = c.handle(&frame(12, Message::Close));
    assert!(r.close);
    assert!(matches!(
        decode(&r.bytes, &Limits::default()).unwrap().message,
        Message::Close
    ));
    assert_eq!(s.counters().sessions_open, 1);
    drop(c2);
    assert_eq!(s.counters().sessions_open, 0);
    assert_eq!(s.counters().sessions_ever, 2);
}

#[test]
fn idle_sessions_expire_and_oversized_frames_close_the_connection() {
    let s = server(Limits {
        idle_timeout: Duration::ZERO,
        max_message_bytes: 4096,
        ..Limits::default()
    });
    let mut c = s.connect();
    assert_eq!(
        code(&c.handle(&frame(1, hello(b"right", Policy::selective(30, 1))))),
        None
    );
    std::thread::sleep(Duration::from_millis(5));
    let r = c.handle(&frame(2, Message::Release { bytes: vec![] }));
    assert_eq!(code(&r), Some(ErrorCode::SessionExpired));
    assert!(r.close);
    assert_eq!(s.counters().sessions_open, 0);
    let r = c.handle(&frame(
        3,
        Message::Release {
            bytes: vec![0; 5000],
        },
    ));
    assert_eq!(code(&r), Some(ErrorCode::MessageTooLarge));
    assert!(r.close);
}

#[test]
fn a_public_prefix_runs_first_and_only_first() {
    let (w, _) = shared();
    let s = server(Limits::default());
    let tokens: Vec<u32> = vec![504, 3058, 314, 260, 1012];
    // As the session's first request: the client gets layer 0 (K = 1), exactly the
    // plaintext keys and values of the prefix; the server keeps the rest in its tail.
    let mut c = s.connect();
    assert_eq!(
        code(&c.handle(&frame(1, hello(b"right", Policy::selective(30, 1))))),
        None
    );
    let r = c.handle(&frame(
        2,
        Message::PublicPrefix {
            tokens: tokens.clone(),
        },
    ));
    let Message::PrefixKv { bytes } = decode(&r.bytes, &Limits::default()).unwrap().message else {
        panic!("expected PrefixKv");
    };
    let c0 = w.config();
    let kv = crate::PrefixKv::from_bytes(&bytes, c0, &crate::PrefixLimits::for_config(c0)).unwrap();
    assert_eq!(kv.layers(), 0..1);
    assert_eq!(kv.positions(), tokens.len());
    let plain = PublicPrefix::run(w, &tokens).unwrap();
    assert_eq!(kv.keys(0), plain.keys(0));
    assert_eq!(kv.values(0), plain.values(0));
    // A second prefix (or one after any other request) is refused: private positions
    // may already have run.
    let again = c.handle(&frame(3, Message::PublicPrefix { tokens }));
    assert_eq!(code(&again), Some(ErrorCode::NotAllowed));
    // A token outside the vocabulary is a bad payload, and the session stays open.
    let mut c2 = s.connect();
    assert_eq!(
        code(&c2.handle(&frame(1, hello(b"right", Policy::selective(30, 1))))),
        None
    );
    let bad = c2.handle(&frame(
        2,
        Message::PublicPrefix {
            tokens: vec![u32::MAX],
        },
    ));
    assert_eq!(code(&bad), Some(ErrorCode::BadPayload));
    assert_eq!(s.counters().sessions_open, 2);
}

/// A prefix longer than the session may hold is refused before it runs (a run costs
/// about 3 x 46 KB per position), and a release that would pass the positions limit is
/// refused before the tail runs. (Strict sessions take the same check with no tail; this
/// server prepares one layer, too few for strict mode.)
#[test]
fn a_public_prefix_past_the_positions_limit_is_refused_unrun() {
    let s = server(Limits {
        max_positions: 4,
        ..Limits::default()
    });
    let tokens: Vec<u32> = vec![504, 3058, 314, 260, 1012];
    for policy in [Policy::selective(30, 1), Policy::selective(30, 1)] {
        let mut c = s.connect();
        assert_eq!(code(&c.handle(&frame(1, hello(b"right", policy)))), None);
        let r = c.handle(&frame(
            2,
            Message::PublicPrefix {
                tokens: tokens.clone(),
            },
        ));
        let Message::Error { code, message } =
            decode(&r.bytes, &Limits::default()).unwrap().message
        else {
            panic!("expected a refusal");
        };
        assert_eq!(code, ErrorCode::NotAllowed);
        assert!(
            message.contains("5 positions") && message.contains("limit of 4"),
            "{message}"
        );
        assert!(!r.close, "a refused prefix leaves the session open");
    }
    // Four positions fit, and then no release may add a fifth.
    let mut c = s.connect();
    assert_eq!(
        code(&c.handle(&frame(1, hello(b"right", Policy::selective(30, 1))))),
        None
    );
    let r = c.handle(&frame(
        2,
        Message::PublicPrefix {
            tokens: tokens[..4].to_vec(),
        },
    ));
    assert_eq!(code(&r), None);
    let (w, _) = shared();
    let d = w.config().d_model;
    let row = crate::codec::release::encode_release(&vec![0.5; d], 1, d);
    let r = c.handle(&frame(3, Message::Release { bytes: row }));
    assert_eq!(code(&r), Some(ErrorCode::NotAllowed));
}

/// A version-6 session's release answer carries the token its logits rank first and
/// that token's layer-0 q|k|v as the plaintext forward pass computes it, with the head on
/// either side; a version-5 session gets the answers it knows.
#[test]
fn a_release_answer_carries_the_greedy_token_and_its_first_q_k_v() {
    use crate::policy::HeadSide;
    use selene_model::forward::{apply_gain, rms_norm};
    use selene_model::sampling::argmax;
    use selene_model::{head, Linear, ProductAt, QuantLinear};

    let s = server(Limits::default());
    let (w, _) = shared();
    let c = w.config();
    // The first layer's output for a real token stands in for a released row.
    let mut x = vec![0.0; c.d_model];
    w.embed(&[3058], &mut x).unwrap();
    let row = crate::codec::release::encode_release(&x, 1, c.d_model);
    let first_qkv = |token: u32| {
        let mut e = vec![0.0; c.d_model];
        w.embed(&[token], &mut e).unwrap();
        let mut norm = vec![0.0; c.d_model];
        rms_norm(&e, c.d_model, c.rms_eps, &mut norm);
        apply_gain(&mut norm, w.attn_norm(0).unwrap());
        let mut qkv = vec![0.0; c.qkv_dim()];
        QuantLinear::new(w)
            .apply(ProductAt::new(0, LinearStage::Qkv), &norm, &mut qkv)
            .unwrap();
        qkv
    };
    for (side, protocol) in [
        (HeadSide::Server, WIRE_VERSION),
        (HeadSide::Client, WIRE_VERSION),
        (HeadSide::Server, 5),
        (HeadSide::Client, 5),
    ] {
        let mut policy = Policy::selective(30, 1);
        policy.lm_head = side;
        let mut h = hello(b"right", policy);
        if let Message::Hello(h) = &mut h {
            h.protocol = protocol;
        }
        let mut conn = s.connect();
        assert_eq!(code(&conn.handle(&frame(1, h))), None);
        let r = conn.handle(&frame(2, Message::Release { bytes: row.clone() }));
        let message = decode(&r.bytes, &Limits::default()).unwrap().message;
        match (message, side, protocol) {
            (Message::LogitsAhead { values, ahead }, HeadSide::Server, WIRE_VERSION) => {
                assert_eq!(values.len(), c.vocab_size);
                assert_eq!(ahead.token, argmax(&values));
                assert_eq!(ahead.qkv, first_qkv(ahead.token));
            }
            (Message::HiddenAhead { values, ahead }, HeadSide::Client, WIRE_VERSION) => {
                let mut logits = vec![0.0; c.vocab_size];
                head(w, &values, &mut QuantLinear::new(w), &mut logits).unwrap();
                assert_eq!(ahead.token, argmax(&logits));
                assert_eq!(ahead.qkv, first_qkv(ahead.token));
            }
            (Message::Logits { values }, HeadSide::Server, 5) => {
                assert_eq!(values.len(), c.vocab_size);
            }
            (Message::HiddenState { values }, HeadSide::Client, 5) => {
                assert_eq!(values.len(), c.d_model);
            }
            (m, side, protocol) => panic!("{side:?} at version {protocol}: {:?}", m.kind()),
        }
    }
}

/// A server holding layer 0's stages and fused matrices at the shared preset (token
/// `right`), and its `AttnOut` and `AttnGate` layouts.
fn fused_server() -> (Arc<SessionServer>, [selene_linalg::Layout; 2]) {
    let (w, m) = shared();
    let fused = PreparedModel::new(m.params(), w, 1, &mut || {})
        .unwrap()
        .with_fused(w, &mut || {})
        .unwrap();
    let layouts = [
        fused.layouts()[0][1].clone(),
        fused.fused_layouts()[0].clone(),
    ];
    let s = SessionServer::new(Arc::new(fused), w.clone(), Limits::default()).with_token(b"right");
    (Arc::new(s), layouts)
}

/// A connection to `s` with a fused selective session open (one encrypted layer).
fn open_fused(s: &Arc<SessionServer>) -> Connection {
    let mut c = s.connect();
    let policy = Policy {
        fused: true,
        ..Policy::selective(30, 1)
    };
    assert_eq!(code(&c.handle(&frame(1, hello(b"right", policy)))), None);
    c
}

/// A `Products` item takes a prefetched answer only when the prefetch is of its index,
/// layer, product and exact bytes; any other prefetch is ignored and the item computed.
/// Only a fused session offers a [`Prefetch`].
#[test]
fn a_prefetched_product_answers_only_the_item_it_was_computed_from() {
    use crate::codec::stage::Product;
    use crate::codec::wire::ProductRequest;
    use selene_model::FusedPair;

    let (w, m) = shared();
    let params = m.params().clone();
    let (s, layouts) = fused_server();
    let mut unfused = server(Limits::default()).connect();
    assert!(unfused.prefetch().is_none(), "no session");
    let r = unfused.handle(&frame(1, hello(b"right", Policy::selective(30, 1))));
    assert_eq!(code(&r), None);
    assert!(unfused.prefetch().is_none(), "an unfused session");

    let mut c = open_fused(&s);
    assert!(c.prefetch().is_some());
    let d = w.config().d_model;
    let mut client = Client::new(&params);
    let mut encrypt = |width: usize, layout| {
        let x: Vec<f32> = (0..width).map(|i| (i as f32 * 0.29).sin()).collect();
        let (input, _) = client.encode_encrypt(&x, 1, layout).unwrap();
        input.to_bytes(&params)
    };
    let items = vec![
        ProductRequest {
            layer: 0,
            product: Product::Stage(LinearStage::AttnOut),
            ciphertext: encrypt(d, &layouts[0]),
        },
        ProductRequest {
            layer: 0,
            product: Product::Fused(FusedPair::AttnGate),
            ciphertext: encrypt(2 * d, &layouts[1]),
        },
    ];
    let answers = |r: &Reply| match decode(&r.bytes, &Limits::default()).unwrap().message {
        Message::ProductResults { ciphertexts } => ciphertexts,
        m => panic!("{:?}", m.kind()),
    };
    let products = || Message::Products {
        items: items.clone(),
    };
    let computed = answers(&c.handle(&frame(2, products())));
    let marked = |index, product, input: &[u8]| Prefetched {
        index,
        layer: 0,
        product,
        input: input.to_vec(),
        output: b"prefetched".to_vec(),
    };
    let stage = Product::Stage(LinearStage::AttnOut);
    let mut other = items[0].ciphertext.clone();
    other[40] ^= 1;
    // Another index, product or input: computed, not taken.
    let ignored = vec![
        marked(1, stage, &items[0].ciphertext),
        marked(0, items[1].product, &items[0].ciphertext),
        marked(0, stage, &other),
        marked(7, stage, &items[0].ciphertext),
    ];
    let r = c.handle_prefetched(&frame(3, products()), ignored);
    assert_eq!(answers(&r), computed);
    assert_eq!(s.counters().prefetched, 0);
    // The same item: its prefetched answer is the reply's.
    let r = c.handle_prefetched(
        &frame(4, products()),
        vec![marked(0, stage, &items[0].ciphertext)],
    );
    assert_eq!(answers(&r), [b"prefetched".to_vec(), computed[1].clone()]);
    assert_eq!(s.counters().prefetched, 1);
}

/// A fused request's last product streamed while it uploaded ([`Prefetch::stream`]) is
/// finished only for the item it was started on: the reply equals the one computed
/// whole; a stream begun on other bytes, for another index, or for a product the session
/// may not stream, leaves the item to be computed whole.
#[test]
fn a_streamed_product_answers_only_the_input_it_began_on() {
    use std::sync::mpsc::channel;

    use crate::codec::stage::Product;
    use crate::codec::wire::{ProductRequest, ReadyProduct};
    use crate::server::prefetch::{EarlyItem, EarlyWork};
    use selene_model::FusedPair;

    let (w, m) = shared();
    let params = m.params().clone();
    let (s, [_, layout]) = fused_server();
    let mut c = open_fused(&s);
    let prefetch = c.prefetch().unwrap();
    let mut client = Client::new(&params);
    let d = w.config().d_model;
    let mut encrypt = |seed: f32| {
        let x: Vec<f32> = (0..2 * d).map(|i| (i as f32 * seed).sin()).collect();
        client
            .encode_encrypt(&x, 1, &layout)
            .unwrap()
            .0
            .to_bytes(&params)
    };
    let (input, other) = (encrypt(0.31), encrypt(0.17));
    let item = |index, layer| ReadyProduct {
        index,
        layer,
        product: Product::Fused(FusedPair::AttnGate),
        ciphertext: 0..input.len(),
    };
    // Streams `bytes` in four pieces 20 ms apart (a link of a few MB/s), the last one
    // left to the connection; all at once (a fast link), the stream takes what came with
    // the seed table and leaves the rest to the connection.
    let stream_at = |it: &ReadyProduct, bytes: &[u8], pause: u64| {
        let (tx, rx) = channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut at = 0;
                for cut in [100, bytes.len() / 3 + 1, bytes.len() - 10] {
                    tx.send(bytes[at..cut].to_vec()).unwrap();
                    at = cut;
                    std::thread::sleep(std::time::Duration::from_millis(pause));
                }
                drop(tx);
            });
            match prefetch.stream(it, &rx) {
                Some(EarlyItem::Streamed(s)) => Some(s),
                _ => None,
            }
        })
    };
    let stream = |it: &ReadyProduct, bytes: &[u8]| stream_at(it, bytes, 20);
    let fast = stream_at(&item(0, 0), &input, 0).unwrap();
    let st = stream(&item(0, 0), &input).unwrap();
    assert!(
        st.absorbed() > fast.absorbed(),
        "whole ciphertexts were multiplied in as they came: {} against {}",
        st.absorbed(),
        fast.absorbed()
    );
    // Layer 1 is not encrypted under this policy: nothing streams.
    assert!(stream(&item(0, 1), &input).is_none());
    // Two token groups do not stream: the item is computed whole once it is in.
    let x2: Vec<f32> = (0..4 * d).map(|i| (i as f32 * 0.23).cos()).collect();
    let two = client
        .encode_encrypt(&x2, 2, &layout)
        .unwrap()
        .0
        .to_bytes(&params);
    let it2 = ReadyProduct {
        ciphertext: 0..two.len(),
        ..item(0, 0)
    };
    let (tx, rx) = channel();
    for piece in two.chunks(two.len() / 3 + 1) {
        tx.send(piece.to_vec()).unwrap();
    }
    drop(tx);
    let Some(EarlyItem::Whole(p)) = prefetch.stream(&it2, &rx) else {
        panic!("two token groups were not computed whole");
    };
    assert_eq!((p.index, &p.input), (0, &two));

    let products = || Message::Products {
        items: vec![ProductRequest {
            layer: 0,
            product: Product::Fused(FusedPair::AttnGate),
            ciphertext: input.clone(),
        }],
    };
    let answers = |r: &Reply| match decode(&r.bytes, &Limits::default()).unwrap().message {
        Message::ProductResults { ciphertexts } => ciphertexts,
        m => panic!("{:?}", m.kind()),
    };
    let computed = answers(&c.handle(&frame(2, products())));
    let early = |streamed| EarlyWork {
        prefetched: Vec::new(),
        streamed,
    };
    // Begun on other bytes, or for another index: computed whole, the same reply.
    let streams = |it: &ReadyProduct, bytes: &[u8]| stream(it, bytes).into_iter().collect();
    let r = c.handle_early(&frame(3, products()), early(streams(&item(0, 0), &other)));
    assert_eq!(answers(&r), computed);
    let r = c.handle_early(&frame(4, products()), early(streams(&item(1, 0), &input)));
    assert_eq!(answers(&r), computed);
    assert_eq!(s.counters().streamed, 0);
    // The item it began on: finished from the stream, the same reply, however much of
    // the input the stream took.
    let r = c.handle_early(&frame(5, products()), early(vec![st]));
    assert_eq!(answers(&r), computed);
    let r = c.handle_early(&frame(6, products()), early(vec![fast]));
    assert_eq!(answers(&r), computed);
    assert_eq!(s.counters().streamed, 2);
}
