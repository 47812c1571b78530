//! `Layout::from_bytes` (the product layouts of the server's `Welcome`, decoded by the
//! client): any bytes decode or fail with an error, never a panic; what decodes
//! re-encodes to the same bytes. First byte: the parameter set (`selene_fuzz::params`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((params, bytes)) = selene_fuzz::split(data) else {
        return;
    };
    if let Ok(layout) = selene_linalg::Layout::from_bytes(bytes, params) {
        // Decoding is a pure function of (bytes, params): `again == bytes` closes the
        // round trip without a second decode.
        assert_eq!(layout.to_bytes(), bytes, "layout re-encodes differently");
    }
});
