//! The measured leakage table shipped with the binary, for `selene run
//! --encrypted-layers K` to print the figure for the policy a user chose.
//!
//! `data/measured.json` is a copy of `docs/audit.json` (a test keeps them equal); it is
//! produced by the command recorded in `docs/audit.md`.

use crate::report::{AuditReport, AuditRow};
use crate::Result;

/// The shipped table, as JSON (`{"results":[...]}`).
pub const MEASURED_JSON: &str = include_str!("../data/measured.json");

/// The shipped table.
///
/// # Errors
/// [`crate::Error::Json`] if the shipped file is malformed (a test guards against it).
pub fn measured() -> Result<AuditReport> {
    AuditReport::from_json(MEASURED_JSON)
}

/// The measured row for `k` encrypted layers at the flooding sigma closest to
/// `flood_sigma`. For a K that was not measured, the row of the largest measured K
/// below it (fewer encrypted layers; its `k` field says which). `None` when nothing at
/// or below K was measured.
///
/// # Errors
/// As [`measured`].
pub fn measured_leak(k: usize, flood_sigma: f64) -> Result<Option<AuditRow>> {
    let table = measured()?;
    let at = table.results.iter().map(|r| r.k).filter(|&m| m <= k).max();
    Ok(at.and_then(|m| table.lookup(m, flood_sigma)).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_parses_and_equals_the_docs_copy() {
        let shipped = measured().unwrap();
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/audit.json"
        ))
        .unwrap();
        assert_eq!(AuditReport::from_json(&docs).unwrap(), shipped);
    }

    #[test]
    fn lookup_falls_back_to_the_largest_measured_k_below() {
        let table = measured().unwrap();
        if let Some(first) = table.results.first() {
            let got = measured_leak(first.k, first.flood_sigma).unwrap().unwrap();
            assert_eq!(got.k, first.k);
            let max_k = table.results.iter().map(|r| r.k).max().unwrap();
            assert_eq!(measured_leak(max_k + 100, 0.0).unwrap().unwrap().k, max_k);
        }
    }
}
