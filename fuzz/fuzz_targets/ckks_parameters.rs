//! `Parameters::new` on a literal read from the bytes (user or peer parameters): any
//! literal builds or fails with an error, never a panic; what builds rebuilds from its
//! own literal to the same fingerprint. Byte layout: log N, log scale, dnum (0 = none),
//! flags (bit 0: no security check; bits 1-7: the gadget's log base, 0 = none), then the
//! prime sizes, Q first, up to a zero byte, then P.
#![no_main]

use selene_ckks::{Parameters, ParametersLiteral, Security};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [log_n, log_scale, dnum, flags, rest @ ..] = data else {
        return;
    };
    // Prime generation and NTT tables cost grow with N and the prime count: keep each run
    // short. Rings of 2^14..2^16 are valid but take 50-200 ms each (the fuzzer drifts to
    // them and slows 100x) and run no code 2^13 does not; sizes above 2^16 still go in
    // (they must be refused).
    if rest.len() > 24 || (14..=16).contains(log_n) {
        return;
    }
    let mut parts = rest.splitn(2, |&b| b == 0);
    let log_q: Vec<u32> = parts
        .next()
        .unwrap_or(&[])
        .iter()
        .map(|&b| u32::from(b))
        .collect();
    let log_p: Vec<u32> = parts
        .next()
        .unwrap_or(&[])
        .iter()
        .map(|&b| u32::from(b))
        .collect();
    let lit = ParametersLiteral {
        log_n: u32::from(*log_n),
        log_q,
        log_p,
        log_scale: u32::from(*log_scale),
        dnum: (*dnum != 0).then_some(usize::from(*dnum)),
        gadget_log_base: (flags >> 1 != 0).then_some(u32::from(flags >> 1)),
        security: if flags & 1 == 0 {
            Security::Hes128
        } else {
            Security::DangerousNoSecurityCheck
        },
    };
    if let Ok(p) = Parameters::new(&lit) {
        let again = Parameters::new(p.literal()).expect("a built set rebuilds");
        assert_eq!(again.fingerprint(), p.fingerprint());
    }
});
