//! `Server::stream`, `feed` and `finish` (the server's reading of an upload while its
//! bytes arrive): on any bytes cut anywhere, never a panic, and the streamed product is
//! the one `Server::apply` gives `EncryptedInput::from_bytes` of the whole bytes; it is
//! refused exactly where that is refused (but for several token groups, which do not
//! stream). First byte: the spacing of the cuts; the product is
//! `selene_fuzz::stream_matrix`'s.
#![no_main]

use selene_linalg::{EncryptedInput, Server};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let Some((params, m)) = selene_fuzz::stream_matrix() else {
        return;
    };
    let server = Server::new(params);
    let whole = EncryptedInput::from_bytes(bytes, params)
        .and_then(|x| server.apply(m, &x))
        .map(|y| y.to_bytes());
    let step = usize::from(sel) * 37 + 1;
    let streamed = (|| {
        let Some(mut s) = server.stream(m, bytes.len())? else {
            return Ok(None);
        };
        let mut at = 0;
        for cut in (1..bytes.len()).step_by(step).take(64) {
            server.feed(m, &mut s, &bytes[at..cut])?;
            at = cut;
        }
        server.finish(m, s, bytes).map(|y| Some(y.to_bytes()))
    })();
    match (whole, streamed) {
        (Ok(a), Ok(Some(b))) => assert_eq!(a, b, "the streamed product differs"),
        (Err(e), Ok(Some(_))) => panic!("the stream took an input apply refuses: {e}"),
        // Several token groups do not stream; anything else apply takes must.
        (Ok(_), Err(selene_linalg::Error::NotStreamable { .. })) => {}
        (Ok(_), Err(e)) => panic!("the stream refused an input apply takes: {e}"),
        _ => {}
    }
});
