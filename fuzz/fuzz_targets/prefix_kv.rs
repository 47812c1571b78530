//! `PrefixKv::from_bytes` (`SELP`: the public prefix's keys and values the server sends
//! the client): any bytes decode or fail with an error, never a panic; what decodes
//! re-encodes to the same bytes. Model shape: SmolLM2-135M's (`selene_fuzz::smollm2_config`,
//! no model file needed), with a 4-position limit (`selene_fuzz::PREFIX_MAX_POSITIONS`).
#![no_main]

use std::sync::OnceLock;

use selene_model::Config;
use selene_protocol::{PrefixKv, PrefixLimits};

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(selene_fuzz::smollm2_config)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = PrefixLimits {
        max_positions: selene_fuzz::PREFIX_MAX_POSITIONS,
    };
    if let Ok(kv) = PrefixKv::from_bytes(data, config(), &limits) {
        assert!(kv.positions() <= limits.max_positions);
        assert!(kv.layers().end <= config().n_layers);
        // Decoding is a pure function of (bytes, config, limits): `again == data` closes
        // the round trip without a second decode.
        assert_eq!(kv.to_bytes(), data, "prefix re-encodes differently");
    }
});
