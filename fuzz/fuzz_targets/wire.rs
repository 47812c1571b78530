//! `selene_protocol::wire::decode` (every frame of the session protocol, kinds 1..=15,
//! read by the server from clients and by the client from the server): any bytes decode
//! or fail with an error, never a panic; what decodes re-encodes through `wire::encode`.
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
    let Ok(frame) = wire::decode(bytes, &limits) else {
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
