//! `EncryptedInput::from_bytes` (the client's upload, decoded by the server): any bytes
//! decode or fail with an error; what decodes re-encodes to the same bytes. First byte:
//! the parameter set (`selene_fuzz::params`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((params, bytes)) = selene_fuzz::split(data) else {
        return;
    };
    if let Ok(input) = selene_linalg::EncryptedInput::from_bytes(bytes, params) {
        let again = input.to_bytes(params);
        assert_eq!(again, bytes, "input re-encodes differently");
        assert_eq!(input.wire_bytes(params), bytes.len());
    }
});
