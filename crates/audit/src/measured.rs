//! The measured leakage tables shipped with the binary, one per audited model, for
//! `selene run --encrypted-layers K` (and the OpenAI endpoint) to print the figure for
//! the policy a user chose on the model they chose.
//!
//! Each `data/measured*.json` is a copy of its `docs/audit*.json` (a test keeps them
//! equal); both are produced by the commands recorded in `docs/audit.md`.

use selene_model::store::{KnownModel, QWEN_CODER_05B, SMOLLM2};

use crate::report::{AuditReport, AuditRow};
use crate::Result;

/// One audited model's shipped table.
#[derive(Debug)]
pub struct Measured {
    /// The model the audit measured (its store name is `model.name`).
    pub model: &'static KnownModel,
    /// The `docs/` file the table is a copy of, relative to the repository.
    pub docs_file: &'static str,
    /// The table, as JSON (`{"results":[...]}`).
    pub json: &'static str,
}

/// Every shipped table: SmolLM2 (the full audit) and Qwen2.5-Coder-0.5B (K <= 8).
pub static TABLES: [Measured; 2] = [
    Measured {
        model: &SMOLLM2,
        docs_file: "docs/audit.json",
        json: MEASURED_JSON,
    },
    Measured {
        model: &QWEN_CODER_05B,
        docs_file: "docs/audit_qwen2.5-coder-0.5b.json",
        json: include_str!("../data/measured_qwen2.5-coder-0.5b.json"),
    },
];

/// SmolLM2's table, as JSON (the first audit).
const MEASURED_JSON: &str = include_str!("../data/measured.json");

/// Two tables are the same when they are copies of the same docs file.
impl PartialEq for Measured {
    fn eq(&self, other: &Self) -> bool {
        self.docs_file == other.docs_file
    }
}

impl Eq for Measured {}

impl Measured {
    /// The table.
    ///
    /// # Errors
    /// [`crate::Error::Json`] if the shipped file is malformed (a test guards against it).
    pub fn report(&self) -> Result<AuditReport> {
        AuditReport::from_json(self.json)
    }

    /// The measured row for `k` encrypted layers at the flooding sigma closest to
    /// `flood_sigma`. For a K that was not measured, the row of the largest measured K
    /// below it (fewer encrypted layers; its `k` field says which). `None` when nothing
    /// at or below K was measured.
    ///
    /// # Errors
    /// As [`Measured::report`].
    pub fn leak(&self, k: usize, flood_sigma: f64) -> Result<Option<AuditRow>> {
        let table = self.report()?;
        let at = table.results.iter().map(|r| r.k).filter(|&m| m <= k).max();
        Ok(at.and_then(|m| table.lookup(m, flood_sigma)).cloned())
    }
}

/// The shipped table of the model whose client-bundle fingerprint is `hex` (lowercase),
/// or `None` when the audit did not measure it.
pub fn for_fingerprint(hex: &str) -> Option<&'static Measured> {
    TABLES.iter().find(|t| t.model.fingerprint == Some(hex))
}

/// The store names of every audited model, for messages about the others.
pub fn audited_models() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.model.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tables_parse_and_equal_their_docs_copies() {
        for t in &TABLES {
            let shipped = t.report().unwrap();
            assert!(!shipped.results.is_empty(), "{}", t.model.name);
            let docs = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(t.docs_file),
            )
            .unwrap();
            assert_eq!(
                AuditReport::from_json(&docs).unwrap(),
                shipped,
                "{}",
                t.model.name
            );
        }
    }

    #[test]
    fn tables_are_found_by_their_models_fingerprints_only() {
        for t in &TABLES {
            let hex = t.model.fingerprint.unwrap();
            assert_eq!(for_fingerprint(hex).unwrap().model.name, t.model.name);
        }
        assert!(for_fingerprint(&"0".repeat(64)).is_none());
        let big = selene_model::store::QWEN_CODER_15B.fingerprint.unwrap();
        assert!(for_fingerprint(big).is_none());
    }

    #[test]
    fn lookup_falls_back_to_the_largest_measured_k_below() {
        for t in &TABLES {
            let table = t.report().unwrap();
            if let Some(first) = table.results.first() {
                let got = t.leak(first.k, first.flood_sigma).unwrap().unwrap();
                assert_eq!(got.k, first.k);
                let max_k = table.results.iter().map(|r| r.k).max().unwrap();
                assert_eq!(t.leak(max_k + 100, 0.0).unwrap().unwrap().k, max_k);
            }
        }
    }
}
