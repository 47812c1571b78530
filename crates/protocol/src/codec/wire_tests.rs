//! Round trips and rejections of the wire format.

use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        max_message_bytes: 1 << 20,
        ..Limits::default()
    }
}

fn samples() -> Vec<Frame> {
    let hello = Message::Hello(Hello {
        protocol: WIRE_VERSION,
        token: b"tok".to_vec(),
        policy: Policy::selective(30, 4),
        params_fingerprint: [7; 8],
        context: 2048,
        eval_keys: vec![EvalKey {
            kind: 1,
            bytes: vec![1, 2, 3],
        }],
    });
    let welcome = Message::Welcome(Welcome {
        session_id: 9,
        model: ModelFacts {
            layers: 30,
            d_model: 576,
            vocab: 49152,
            fingerprint: [3; 32],
        },
        limits: SessionLimits {
            max_message_bytes: 1 << 26,
            max_requests: 5,
            idle_timeout_ms: 6,
            lifetime_ms: 7,
        },
        layouts: vec![vec![1; 10], vec![2; 4]],
    });
    [
        hello,
        welcome,
        Message::Product {
            layer: 3,
            stage: LinearStage::GateUp,
            ciphertext: vec![5; 33],
        },
        Message::ProductResult {
            ciphertext: vec![6; 12],
        },
        Message::Release { bytes: vec![1; 20] },
        Message::Logits {
            values: vec![1.5, -2.0],
        },
        Message::HiddenState { values: vec![0.25] },
        Message::Close,
        Message::error(ErrorCode::BadRequestId, "replayed"),
        Message::Products {
            items: vec![
                ProductRequest {
                    layer: 2,
                    product: Product::Stage(LinearStage::AttnOut),
                    ciphertext: vec![7; 9],
                },
                ProductRequest {
                    layer: 2,
                    product: Product::Fused(selene_model::FusedPair::AttnGate),
                    ciphertext: vec![8; 3],
                },
                ProductRequest {
                    layer: 29,
                    product: Product::Fused(selene_model::FusedPair::DownQkv),
                    ciphertext: vec![],
                },
            ],
        },
        Message::ProductResults {
            ciphertexts: vec![vec![1; 4], vec![], vec![2; 7]],
        },
        Message::LogitsAhead {
            values: vec![1.5, -2.0, 0.0],
            ahead: Ahead {
                token: 1,
                qkv: vec![0.5; 5],
            },
        },
        Message::HiddenAhead {
            values: vec![0.25],
            ahead: Ahead {
                token: 49151,
                qkv: vec![],
            },
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, message)| Frame {
        request_id: i as u64 + 1,
        message,
    })
    .collect()
}

#[test]
fn every_kind_round_trips() {
    for f in samples() {
        let bytes = encode(&f).unwrap();
        assert_eq!(decode(&bytes, &limits()).unwrap(), f);
    }
}

#[test]
fn each_kind_travels_under_its_one_version() {
    for f in samples() {
        let bytes = encode(&f).unwrap();
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        let expected = match f.message.kind() {
            Kind::Products | Kind::ProductResults => FUSED_WIRE_VERSION,
            Kind::LogitsAhead | Kind::HiddenAhead => AHEAD_WIRE_VERSION,
            _ => MIN_WIRE_VERSION,
        };
        assert_eq!(version, expected, "{:?}", f.message.kind());
        // Under any other version the frame does not decode (one encoding per frame).
        for v in MIN_WIRE_VERSION..=WIRE_VERSION + 1 {
            let mut other = bytes.clone();
            other[8..10].copy_from_slice(&v.to_le_bytes());
            assert_eq!(
                decode(&other, &limits()).is_ok(),
                v == version,
                "version {v}"
            );
        }
    }
    let too_many = Message::Products {
        items: vec![
            ProductRequest {
                layer: 0,
                product: Product::Stage(LinearStage::Qkv),
                ciphertext: vec![],
            };
            MAX_BATCH_PRODUCTS + 1
        ],
    };
    let frame = Frame {
        request_id: 1,
        message: too_many,
    };
    assert!(encode(&frame).is_err());
}

#[test]
fn truncations_trailing_bytes_and_flipped_headers_are_rejected() {
    for f in samples() {
        let bytes = encode(&f).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &limits()).is_err(), "{f:?} cut {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long, &limits()).is_err());
        // Every bit of length, magic and version matters.
        for byte in 0..10 {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[byte] ^= 1 << bit;
                assert!(decode(&b, &limits()).is_err(), "byte {byte} bit {bit}");
            }
        }
        // A flipped kind bit is refused or reads as another kind, never as this frame
        // (two kinds share the byte-string payload: ProductResult and Release).
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[10] ^= 1 << bit;
            if let Ok(g) = decode(&b, &limits()) {
                assert_ne!(g.message.kind(), f.message.kind(), "kind bit {bit}");
            }
        }
    }
}

#[test]
fn oversized_length_is_rejected_before_reading_the_body() {
    let l = limits();
    let big = (l.max_message_bytes as u32 + 1).to_le_bytes();
    assert!(matches!(
        body_len(big, &l),
        Err(Error::FrameTooLarge { len, max }) if len == l.max_message_bytes + 1 && max == l.max_message_bytes
    ));
    // A 4-byte frame announcing 4 GiB: refused without allocating.
    assert!(matches!(
        decode(&u32::MAX.to_le_bytes(), &l),
        Err(Error::FrameTooLarge { .. })
    ));
    // Inner lengths beyond the bytes present are refused too.
    let mut f = encode(&Frame {
        request_id: 1,
        message: Message::Release { bytes: vec![0; 8] },
    })
    .unwrap();
    f[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&f, &l), Err(Error::Wire { .. })));
    // A kind whose payload is missing does not decode.
    let mut f = encode(&Frame {
        request_id: 1,
        message: Message::Close,
    })
    .unwrap();
    f[10] = Kind::PublicPrefix as u8;
    assert!(decode(&f, &l).is_err());
}

proptest! {
    #[test]
    fn products_and_floats_round_trip(
        id in any::<u64>(),
        layer in any::<u32>(),
        stage in 0usize..4,
        ct in proptest::collection::vec(any::<u8>(), 0..300),
        values in proptest::collection::vec(-1e30f32..1e30, 0..64),
    ) {
        for message in [
            Message::Product { layer, stage: ENCRYPTED_STAGES[stage], ciphertext: ct.clone() },
            Message::Logits { values: values.clone() },
            Message::Release { bytes: ct.clone() },
            Message::HiddenAhead {
                values: values.clone(),
                ahead: Ahead { token: layer, qkv: values.iter().rev().copied().collect() },
            },
        ] {
            let f = Frame { request_id: id, message };
            prop_assert_eq!(decode(&encode(&f).unwrap(), &limits()).unwrap(), f);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes, &limits());
        // With a valid header in front, the payload decoder sees the garbage.
        let versions = [MIN_WIRE_VERSION, FUSED_WIRE_VERSION, AHEAD_WIRE_VERSION];
        for (kind, version) in (1u8..=17).flat_map(|k| versions.map(|v| (k, v))) {
            let mut f = Vec::new();
            f.extend_from_slice(&((bytes.len() + HEADER_BYTES - 4) as u32).to_le_bytes());
            f.extend_from_slice(&MAGIC);
            f.extend_from_slice(&version.to_le_bytes());
            f.push(kind);
            f.extend_from_slice(&1u64.to_le_bytes());
            f.extend_from_slice(&bytes);
            let _ = decode(&f, &limits());
            let _ = ready_products(&f, &limits());
            let _ = arriving_product(&f, &limits());
        }
    }

    #[test]
    fn ready_products_are_the_items_whole_in_every_prefix(
        id in any::<u64>(),
        items in proptest::collection::vec(
            (any::<u32>(), 0u8..6, proptest::collection::vec(any::<u8>(), 0..120)),
            0..=MAX_BATCH_PRODUCTS,
        ),
    ) {
        let items: Vec<ProductRequest> = items
            .into_iter()
            .map(|(layer, p, ciphertext)| ProductRequest {
                layer,
                product: Product::from_byte(p).unwrap(),
                ciphertext,
            })
            .collect();
        let f = encode(&Frame { request_id: id, message: Message::Products { items: items.clone() } })
            .unwrap();
        for cut in 0..=f.len() {
            let ready = ready_products(&f[..cut], &limits());
            // Exactly the items whose last byte is in the prefix, in order, as decoded.
            let whole = ready.iter().take_while(|r| r.ciphertext.end <= cut).count();
            prop_assert_eq!(whole, ready.len());
            for (r, it) in ready.iter().zip(&items) {
                prop_assert_eq!((r.layer, r.product), (it.layer, it.product));
                prop_assert_eq!(&f[r.ciphertext.clone()], &it.ciphertext[..]);
            }
            let next_end = ready.last().map_or(HEADER_BYTES + 4, |r| r.ciphertext.end)
                + 9
                + items.get(ready.len()).map_or(0, |it| it.ciphertext.len());
            prop_assert!(ready.len() == items.len() || next_end > cut, "{} of {} at {cut}", ready.len(), items.len());
            prop_assert_eq!(ready.iter().map(|r| r.index).collect::<Vec<_>>(), (0..ready.len()).collect::<Vec<_>>());
            // The item whose bytes arrive: found exactly when every earlier item is
            // whole and its own header is in but not all its bytes.
            let arriving = arriving_product(&f[..cut], &limits());
            let next = ready.len();
            let start = ready.last().map_or(HEADER_BYTES + 4, |r| r.ciphertext.end) + 9;
            let range = items.get(next).map(|it| start..start + it.ciphertext.len());
            let expect = range.clone().filter(|r| r.start <= cut && cut < r.end);
            prop_assert_eq!(arriving.as_ref().map(|a| a.ciphertext.clone()), expect.clone());
            if let Some(a) = arriving {
                prop_assert_eq!(a.index, next);
                prop_assert_eq!((a.layer, a.product), (items[next].layer, items[next].product));
            }
        }
    }
}

#[test]
fn ready_products_finds_nothing_in_other_kinds_or_refused_headers() {
    let l = limits();
    for f in samples() {
        let bytes = encode(&f).unwrap();
        if !matches!(f.message, Message::Products { .. }) {
            assert!(
                ready_products(&bytes, &l).is_empty(),
                "{:?}",
                f.message.kind()
            );
        }
    }
    let products = encode(&Frame {
        request_id: 3,
        message: Message::Products {
            items: vec![ProductRequest {
                layer: 1,
                product: Product::Stage(LinearStage::Down),
                ciphertext: vec![9; 40],
            }],
        },
    })
    .unwrap();
    assert_eq!(ready_products(&products, &l).len(), 1);
    // A frame over the limit, another version, bad magic or a product byte of 6.
    let small = Limits {
        max_message_bytes: 20,
        ..l.clone()
    };
    assert!(ready_products(&products, &small).is_empty());
    for (at, value) in [(8, 6u8), (4, b'X'), (4 + 4 + 2 + 1 + 8 + 4 + 4, 6)] {
        let mut bad = products.clone();
        bad[at] = value;
        assert!(ready_products(&bad, &l).is_empty(), "byte {at} = {value}");
        assert!(decode(&bad, &l).is_err(), "byte {at} = {value}");
    }
}

#[test]
fn hello_whose_policy_prints_too_long_is_not_encoded() {
    // Found by the `wire` fuzz target while the preset was a free string: a policy of
    // 3,000 tabs in a literal string parsed from a 3 KB Hello, but printed as 6 KB of
    // `\t` escapes, which `decode` refuses. The preset is now a name from a fixed list, so
    // that text is no policy, and the longest a policy prints (the digits of its numbers)
    // stays far below the bound; `encode` keeps its check all the same.
    let text = format!(
        "version = 1\npreset = '{}'\nencrypted_layers = 30\n",
        "\t".repeat(3000)
    );
    assert!(text.len() <= MAX_POLICY_BYTES);
    assert!(matches!(
        Policy::parse_toml(&text),
        Err(Error::PolicyParse { .. })
    ));
    for sigma in [f64::MAX, -5e-324] {
        let policy = Policy {
            version: u32::MAX,
            // TOML integers are i64.
            encrypted_layers: i64::MAX as usize,
            pad_to: Some(i64::MAX as usize),
            release: Some(crate::policy::ReleasePolicy {
                flood_sigma: crate::policy::FloodSigma::Fixed(sigma),
                max_per_session: i64::MAX as u64,
            }),
            ..Policy::strict(30)
        };
        let printed = policy.to_toml().unwrap().len();
        assert!(printed < MAX_POLICY_BYTES / 4, "{printed}");
        let frame = Frame {
            request_id: 1,
            message: Message::Hello(Hello {
                protocol: WIRE_VERSION,
                token: Vec::new(),
                policy,
                params_fingerprint: [0; 8],
                context: 8,
                eval_keys: Vec::new(),
            }),
        };
        assert!(encode(&frame).is_ok());
    }
}

#[test]
fn fuzz_seeds_of_the_kinds_after_version_1_decode_and_re_encode() {
    // The `wire` target's seeds (first byte: its frame cap selector, 64 * (s + 1)).
    for seed in [
        &include_bytes!("../../../../fuzz/seeds/wire/14_Products")[..],
        &include_bytes!("../../../../fuzz/seeds/wire/15_ProductResults")[..],
        &include_bytes!("../../../../fuzz/seeds/wire/16_LogitsAhead")[..],
        &include_bytes!("../../../../fuzz/seeds/wire/17_HiddenAhead")[..],
    ] {
        let (sel, bytes) = seed.split_first().unwrap();
        let limits = Limits {
            max_message_bytes: 64 * (usize::from(*sel) + 1),
            ..Limits::default()
        };
        let frame = decode(bytes, &limits).unwrap();
        assert!(frame.message.kind().version() > MIN_WIRE_VERSION);
        assert_eq!(encode(&frame).unwrap(), bytes);
    }
}
