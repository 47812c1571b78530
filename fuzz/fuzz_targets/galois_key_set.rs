//! `decode_galois_keys` (the key set a client uploads for packed outputs): any bytes
//! decode or fail with an error, never a panic; what decodes holds exactly the expected
//! elements, each key re-encoding to the bytes it came from. First byte: the parameter set
//! (`selene_fuzz::params`); the expected elements are `selene_fuzz::PACK_ELEMENTS`'s.
#![no_main]

use selene_protocol::codec::keys::{decode_galois_keys, encode_galois_keys};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((params, bytes)) = selene_fuzz::split(data) else {
        return;
    };
    let expected = selene_fuzz::pack_elements(params);
    if let Ok(keys) = decode_galois_keys(bytes, params, &expected) {
        let mut got: Vec<u64> = keys.elements().collect();
        got.sort_unstable();
        let mut want = expected.clone();
        want.sort_unstable();
        assert_eq!(got, want, "decoded elements differ from the expected ones");
        // Key order on the wire is free; the canonical encoding decodes to the same keys.
        let again = encode_galois_keys(&keys);
        let back = decode_galois_keys(&again, params, &expected).expect("re-encoding decodes");
        assert_eq!(
            encode_galois_keys(&back),
            again,
            "key set re-encodes differently"
        );
    }
});
