//! `EncryptedOutput::from_bytes` (the server's answer, decoded by the client): any bytes
//! decode or fail with an error; what decodes re-encodes, and the re-encoding decodes to
//! the same value (the last byte of a packed row may carry ignored padding bits, so the
//! first re-encoding, not the input, is the fixed point). First byte: the parameter set.
#![no_main]

use selene_linalg::EncryptedOutput;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((params, bytes)) = selene_fuzz::split(data) else {
        return;
    };
    if let Ok(out) = EncryptedOutput::from_bytes(bytes, params) {
        let once = out.to_bytes();
        assert_eq!(once.len(), bytes.len(), "re-encoding changes the length");
        assert_eq!(out.wire_bytes(), once.len());
        let back = EncryptedOutput::from_bytes(&once, params).expect("round trip");
        assert_eq!(back.to_bytes(), once);
        for i in 0..out.ciphertexts() {
            assert_eq!(back.switched(i), out.switched(i));
        }
    }
});
