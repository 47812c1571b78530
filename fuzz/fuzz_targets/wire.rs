//! `selene_protocol::wire::decode` (every frame of the session protocol, kinds 1..=17,
//! read by the server from clients and by the client from the server): any bytes decode
//! or fail with an error, never a panic; what decodes re-encodes through `wire::encode`.
//! `wire::ready_products` (the server's reading of a frame's first bytes as they arrive)
//! never panics on any prefix either, and where the whole frame decodes as `Products`, it
//! finds that frame's items, each at its end; `wire::arriving_product` (the item whose
//! bytes arrive) finds the item after the ready ones, with its whole range, or nothing.
//! Every field but `Hello`'s policy is canonical, so any other frame re-encodes to the
//! input bytes; a `Hello` carries the policy as TOML, which `encode` writes in its own
//! form, so there the first re-encoding is the fixed point. First byte: the frame cap
//! (`selene_fuzz::wire_limits`).
#![no_main]

use selene_protocol::wire::{self, Message};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let limits = selene_fuzz::wire_limits(sel);
    let decoded = wire::decode(bytes, &limits);
    let items = match &decoded {
        Ok(wire::Frame {
            message: Message::Products { items },
            ..
        }) => Some(items),
        _ => None,
    };
    // Every prefix would cost a quadratic run; a few cuts and the whole frame suffice.
    for cut in [
        1,
        7,
        20,
        40,
        bytes.len() / 2,
        bytes.len().saturating_sub(1),
        bytes.len(),
    ] {
        let ready = wire::ready_products(&bytes[..cut.min(bytes.len())], &limits);
        let arriving = wire::arriving_product(&bytes[..cut.min(bytes.len())], &limits);
        let Some(items) = items else { continue };
        assert!(
            ready.len() <= items.len(),
            "more ready items than the frame has"
        );
        for (r, it) in ready.iter().zip(items.iter()) {
            assert_eq!(
                (r.layer, r.product),
                (it.layer, it.product),
                "ready item differs"
            );
            assert_eq!(&bytes[r.ciphertext.clone()], &it.ciphertext[..]);
        }
        if cut >= bytes.len() {
            assert_eq!(
                ready.len(),
                items.len(),
                "a whole frame's items are all ready"
            );
        }
        if let Some(a) = arriving {
            assert!(cut < bytes.len(), "a whole frame has no arriving item");
            assert_eq!(a.index, ready.len(), "the arriving item is not the next");
            let it = items
                .get(a.index)
                .expect("an arriving item past the frame's items");
            assert_eq!((a.layer, a.product), (it.layer, it.product));
            assert_eq!(&bytes[a.ciphertext.clone()], &it.ciphertext[..]);
        }
    }
    let Ok(frame) = decoded else {
        return;
    };
    let again = match wire::encode(&frame) {
        Ok(again) => again,
        // A `Hello` whose policy prints longer than the wire admits: `encode` refuses it
        // (the fixed point below would not decode). Every other frame encodes.
        Err(_) => {
            assert!(
                matches!(frame.message, Message::Hello(_)),
                "frame fails to encode"
            );
            return;
        }
    };
    if matches!(frame.message, Message::Hello(_)) {
        // The re-encoding may be longer than the cap: check it against its own length.
        let roomy = selene_protocol::Limits {
            max_message_bytes: usize::MAX,
            ..limits
        };
        let back = wire::decode(&again, &roomy).expect("a re-encoded Hello decodes");
        assert_eq!(
            wire::encode(&back).expect("encodes"),
            again,
            "Hello re-encoding is not a fixed point"
        );
    } else {
        // Decoding is a pure function of (bytes, limits), so `again == bytes` closes the
        // round trip without a second decode.
        assert_eq!(again, bytes, "frame re-encodes differently");
    }
});
