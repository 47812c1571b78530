//! `decode_release` (the selective-mode release the server decodes): any bytes decode or
//! fail with an error; what decodes re-encodes to the same bytes. First byte: the model
//! width `d` (1..=64; the real one, 576, is covered by the seeds' shape only).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&d, bytes)) = data.split_first() else {
        return;
    };
    let d = usize::from(d % 64) + 1;
    if let Ok(v) = selene_protocol::decode_release(bytes, d) {
        assert_eq!(v.len() % d, 0);
        let again = selene_protocol::encode_release(&v, v.len() / d, d);
        assert_eq!(again, bytes, "release re-encodes differently");
    }
});
