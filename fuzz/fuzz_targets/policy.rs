//! `Policy::from_toml` (a policy file, or one sent at session setup): any text parses and
//! validates or fails with an error; what parses prints back to TOML that parses to the
//! same policy.
#![no_main]

use selene_protocol::Policy;

/// SmolLM2's layer count.
const LAYERS: usize = 30;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::from_toml(text, LAYERS) {
        let again = p.to_toml().expect("a valid policy prints");
        let back = Policy::from_toml(&again, LAYERS).expect("round trip");
        assert_eq!(back, p);
    }
});
