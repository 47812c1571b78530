//! The audit table: JSON, markdown, and the measured figure for a given K.

use serde::{Deserialize, Serialize};

use crate::Result;

/// What the server sees in strict mode, where no plaintext is released.
pub const STRICT_MODE_NOTE: &str = "strict mode (every layer encrypted, LM head on the client): \
the server sees only CKKS ciphertexts, the token count and timing; no plaintext hidden state is \
released, so there is nothing to invert (recovery: not applicable).";

/// One measured cell: a K (layers run before the release) and a flooding sigma.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Layers run under encryption before the residual stream is released (0 = embeddings).
    pub k: usize,
    /// Standard deviation of the Gaussian flooding noise on every released value.
    pub flood_sigma: f64,
    /// Fraction of prompt tokens the exact inversion recovered.
    pub token_recovery: f64,
    /// Fraction of sensitive fields with every token recovered (`null` without fields).
    pub field_recovery: Option<f64>,
    /// Seconds of attack time per prompt token.
    pub s_per_token: f64,
    /// Fraction of tokens the probe alone ranked first.
    pub probe_top1: f64,
}

/// The whole table, serialized as `{"results":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// One row per (K, sigma), in the order measured.
    pub results: Vec<AuditRow>,
}

impl AuditReport {
    /// Pretty JSON in the published shape.
    ///
    /// # Errors
    /// [`crate::Error::Json`] if serialization fails (it cannot for finite numbers).
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parses the published JSON shape.
    ///
    /// # Errors
    /// [`crate::Error::Json`] on malformed input.
    pub fn from_json(text: &str) -> Result<Self> {
        Ok(serde_json::from_str(text)?)
    }

    /// The row measured for `k` at the flooding sigma closest to `flood_sigma`.
    pub fn lookup(&self, k: usize, flood_sigma: f64) -> Option<&AuditRow> {
        self.results.iter().filter(|r| r.k == k).min_by(|a, b| {
            (a.flood_sigma - flood_sigma)
                .abs()
                .total_cmp(&(b.flood_sigma - flood_sigma).abs())
        })
    }

    /// The table as markdown, ending with the strict-mode row.
    pub fn markdown(&self) -> String {
        let pct = |v: f64| format!("{:.1}%", 100.0 * v);
        let mut s = String::from(
            "| K | flood sigma | token recovery | field recovery | probe top-1 | s/token |\n\
             |---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.results {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.4} |\n",
                r.k,
                r.flood_sigma,
                pct(r.token_recovery),
                r.field_recovery.map_or_else(|| "-".to_owned(), pct),
                pct(r.probe_top1),
                r.s_per_token,
            ));
        }
        s.push_str("| strict | - | n/a | n/a | n/a | - |\n\n");
        s.push_str(STRICT_MODE_NOTE);
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: usize, sigma: f64, rec: f64) -> AuditRow {
        AuditRow {
            k,
            flood_sigma: sigma,
            token_recovery: rec,
            field_recovery: None,
            s_per_token: 0.5,
            probe_top1: 0.25,
        }
    }

    #[test]
    fn json_has_the_published_shape_and_round_trips() {
        let r = AuditReport {
            results: vec![row(1, 0.01, 0.99)],
        };
        let j = r.to_json().unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let o = &v["results"][0];
        assert_eq!(o["k"], 1);
        assert_eq!(o["token_recovery"], 0.99);
        assert!(o["field_recovery"].is_null());
        let keys: Vec<_> = o.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert_eq!(AuditReport::from_json(&j).unwrap(), r);
    }

    #[test]
    fn lookup_picks_the_nearest_sigma_and_markdown_has_every_row() {
        let r = AuditReport {
            results: vec![row(1, 0.0, 1.0), row(1, 0.01, 0.9), row(2, 0.0, 0.8)],
        };
        assert_eq!(r.lookup(1, 0.012).map(|x| x.token_recovery), Some(0.9));
        assert_eq!(r.lookup(2, 1.0).map(|x| x.token_recovery), Some(0.8));
        assert!(r.lookup(3, 0.0).is_none());
        let md = r.markdown();
        assert_eq!(md.lines().filter(|l| l.starts_with("| 1 ")).count(), 2);
        assert!(
            md.contains("| 1 | 0.01 | 90.0% | - | 25.0% | 0.5000 |"),
            "{md}"
        );
        assert!(md.contains("strict"));
    }
}
