//! Scoring: exact token recovery, sensitive-field recovery, probe top-1 and time.
//!
//! A field counts as recovered when every token that overlaps its byte span was
//! recovered exactly (a name split over three tokens needs all three).

use std::ops::Range;

use crate::corpus::Field;
use crate::report::AuditRow;
use crate::{Error, Result};

/// What one attack run produced on one prompt, with the truth to score it against.
#[derive(Debug, Clone)]
pub struct PromptScore<'a> {
    /// The prompt's true token ids.
    pub truth: &'a [u32],
    /// Token ids the exact inversion recovered.
    pub recovered: &'a [u32],
    /// The probe's top-1 guess per position.
    pub probe_guess: &'a [u32],
    /// Byte range of each token in the prompt's text.
    pub token_spans: &'a [Range<usize>],
    /// The prompt's sensitive fields.
    pub fields: &'a [Field],
    /// Wall-clock seconds the inversion took.
    pub seconds: f64,
}

/// True when every token overlapping `span` is correct.
pub fn field_recovered(
    span: &Range<usize>,
    token_spans: &[Range<usize>],
    correct: &[bool],
) -> bool {
    token_spans
        .iter()
        .zip(correct)
        .filter(|(t, _)| t.start < span.end && span.start < t.end)
        .all(|(_, &ok)| ok)
}

/// Running totals over the prompts of one (K, sigma) cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Tokens scored.
    pub tokens: usize,
    /// Tokens the exact inversion recovered.
    pub tokens_recovered: usize,
    /// Tokens the probe ranked first correctly.
    pub probe_hits: usize,
    /// Sensitive fields scored.
    pub fields: usize,
    /// Sensitive fields fully recovered.
    pub fields_recovered: usize,
    /// Seconds spent by the exact inversion.
    pub seconds: f64,
}

impl Tally {
    /// Adds one prompt's outcome.
    ///
    /// # Errors
    /// [`Error::Shape`] when the per-token arrays differ in length.
    pub fn add(&mut self, s: &PromptScore<'_>) -> Result<()> {
        let n = s.truth.len();
        for (what, got) in [
            ("recovered tokens", s.recovered.len()),
            ("probe guesses", s.probe_guess.len()),
            ("token spans", s.token_spans.len()),
        ] {
            if got != n {
                return Err(Error::Shape {
                    what,
                    expected: n,
                    got,
                });
            }
        }
        let correct: Vec<bool> = s
            .truth
            .iter()
            .zip(s.recovered)
            .map(|(a, b)| a == b)
            .collect();
        self.tokens += n;
        self.tokens_recovered += correct.iter().filter(|&&c| c).count();
        self.probe_hits += s
            .truth
            .iter()
            .zip(s.probe_guess)
            .filter(|(a, b)| a == b)
            .count();
        self.fields += s.fields.len();
        self.fields_recovered += s
            .fields
            .iter()
            .filter(|f| field_recovered(&f.span, s.token_spans, &correct))
            .count();
        self.seconds += s.seconds;
        Ok(())
    }

    /// The table row for this cell; field recovery is `None` when no prompt had fields.
    pub fn row(&self, k: usize, flood_sigma: f64) -> AuditRow {
        let rate = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        AuditRow {
            k,
            flood_sigma,
            token_recovery: rate(self.tokens_recovered, self.tokens),
            field_recovery: (self.fields > 0).then(|| rate(self.fields_recovered, self.fields)),
            s_per_token: if self.tokens == 0 {
                0.0
            } else {
                self.seconds / self.tokens as f64
            },
            probe_top1: rate(self.probe_hits, self.tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::FieldKind;

    #[test]
    fn hand_made_case_scores_as_counted_by_hand() {
        // Text "Ann Lee paid 12" as tokens "Ann"," Lee"," paid"," 1","2" (spans below);
        // fields: name 0..7 (tokens 0,1), amount 13..15 (tokens 3,4).
        let spans = [0..3, 3..7, 7..12, 12..14, 14..15];
        let fields = [
            Field {
                kind: FieldKind::Name,
                span: 0..7,
            },
            Field {
                kind: FieldKind::Amount,
                span: 13..15,
            },
        ];
        let truth = [10, 11, 12, 13, 14];
        // Token 4 wrong: the amount is not recovered, the name is.
        let recovered = [10, 11, 12, 13, 99];
        let probe = [10, 0, 12, 0, 0];
        let mut t = Tally::default();
        t.add(&PromptScore {
            truth: &truth,
            recovered: &recovered,
            probe_guess: &probe,
            token_spans: &spans,
            fields: &fields,
            seconds: 2.0,
        })
        .unwrap();
        // A second prompt without fields, all right, 3 tokens, 1 s.
        t.add(&PromptScore {
            truth: &[1, 2, 3],
            recovered: &[1, 2, 3],
            probe_guess: &[1, 2, 3],
            token_spans: &[0..1, 1..2, 2..3],
            fields: &[],
            seconds: 1.0,
        })
        .unwrap();
        let row = t.row(4, 0.01);
        assert_eq!((row.k, row.flood_sigma), (4, 0.01));
        assert!((row.token_recovery - 7.0 / 8.0).abs() < 1e-12);
        assert_eq!(row.field_recovery, Some(0.5));
        assert!((row.probe_top1 - 5.0 / 8.0).abs() < 1e-12);
        assert!((row.s_per_token - 3.0 / 8.0).abs() < 1e-12);
    }

    #[test]
    fn field_overlap_counts_partial_tokens() {
        // A token " 1" (12..14) overlaps a field starting at 13: it must be right too.
        assert!(!field_recovered(
            &(13..15),
            &[12..14, 14..15],
            &[false, true]
        ));
        assert!(field_recovered(
            &(13..15),
            &[0..12, 12..14, 14..15],
            &[false, true, true]
        ));
        let mut t = Tally::default();
        let err = t.add(&PromptScore {
            truth: &[1, 2],
            recovered: &[1],
            probe_guess: &[1, 2],
            token_spans: &[0..1, 1..2],
            fields: &[],
            seconds: 0.0,
        });
        assert!(matches!(
            err,
            Err(Error::Shape {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert_eq!(t.row(0, 0.0).field_recovery, None);
    }
}
