//! What the fuzz targets and the seed generator share: the parameter sets the decoders
//! are fuzzed under, chosen by the first input byte.

use std::sync::{Arc, OnceLock};

use selene_ckks::{Parameters, Preset};
use selene_linalg::LinalgPreset;

/// The parameter sets: a one-prime linear-algebra preset (what the protocol ships, small
/// ring) and a three-prime engine preset (levels, several RNS rows, `dnum = 3`).
pub fn params(selector: u8) -> Option<&'static Arc<Parameters>> {
    static SETS: OnceLock<Option<[Arc<Parameters>; 2]>> = OnceLock::new();
    let sets = SETS
        .get_or_init(|| {
            Some([
                LinalgPreset::Coeff11.build().ok()?,
                Preset::Test12.build().ok()?,
            ])
        })
        .as_ref()?;
    sets.get(usize::from(selector & 1))
}

/// Splits a fuzz input into the parameter selector and the bytes to decode.
pub fn split(data: &[u8]) -> Option<(&'static Arc<Parameters>, &[u8])> {
    let (&sel, rest) = data.split_first()?;
    Some((params(sel)?, rest))
}
