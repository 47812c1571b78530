//! `GaloisKey::decode`: any bytes decode or fail with an error, never a panic; what decodes
//! re-encodes to the same bytes. First byte: the parameter set (`selene_fuzz::params`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((params, bytes)) = selene_fuzz::split(data) else {
        return;
    };
    if let Ok(key) = selene_ckks::GaloisKey::decode(bytes, params) {
        let again = key.encode();
        assert_eq!(again, bytes, "key re-encodes differently");
        let back = selene_ckks::GaloisKey::decode(&again, params).expect("round trip");
        assert_eq!(back.encode(), again);
    }
});
