//! Evaluation and training corpora, made by the repo itself (no downloads).
//!
//! - Sensitive sentences come from templates filled with a fixed seed (names, dates,
//!   diagnoses, account numbers, amounts, phone numbers, cities); each carries the byte
//!   spans of its sensitive fields so that field recovery can be scored per token.
//! - Ordinary English prose was written for this repo: `data/eval_prose.txt` (one prompt
//!   a line) for scoring and the disjoint `data/train_prose.txt` for training the probe.
//!
//! The training side uses other templates, names, cities, diagnoses and another seed.

use std::ops::Range;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::templates::{self, Pools, MONTHS};

/// Prose written for this repo to score the attacks on, one prompt a line.
pub const EVAL_PROSE: &str = include_str!("../data/eval_prose.txt");
/// Prose written for this repo to train the probe on, one paragraph a line.
pub const TRAIN_PROSE: &str = include_str!("../data/train_prose.txt");
/// Seed of the evaluation side's sensitive sentences.
pub const EVAL_SEED: u64 = 0x5e1e_2026_0008;
/// Seed of the training side's sensitive sentences.
pub const TRAIN_SEED: u64 = 0x7a41_2026_0008;
/// Sensitive sentences in the default evaluation set.
pub const EVAL_SENSITIVE: usize = 40;
/// Sensitive sentences mixed into the training text.
pub const TRAIN_SENSITIVE: usize = 160;

/// What a sensitive field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// A person's full name.
    Name,
    /// A calendar date.
    Date,
    /// A medical diagnosis.
    Diagnosis,
    /// A bank account number.
    Account,
    /// An amount of money.
    Amount,
    /// A phone number.
    Phone,
    /// A city of residence.
    City,
}

/// A sensitive field: its kind and its byte range in the sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// What the field holds.
    pub kind: FieldKind,
    /// Byte range in the prompt's text (always on character boundaries).
    pub span: Range<usize>,
}

/// One evaluation prompt and its sensitive fields (none for ordinary prose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The text as the client would type it (tokenized without BOS).
    pub text: String,
    /// Sensitive fields, in order of appearance.
    pub fields: Vec<Field>,
}

impl Prompt {
    /// A prompt without sensitive fields.
    pub fn plain(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            fields: Vec::new(),
        }
    }

    /// The text of field `i`.
    pub fn field_text(&self, field: &Field) -> &str {
        self.text.get(field.span.clone()).unwrap_or("")
    }
}

fn digits<R: Rng>(rng: &mut R, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

fn with_thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pick<'a, R: Rng>(rng: &mut R, pool: &'a [&'a str]) -> &'a str {
    pool.choose(rng).copied().unwrap_or("")
}

fn value<R: Rng>(kind: FieldKind, pools: &Pools, rng: &mut R) -> String {
    match kind {
        FieldKind::Name => format!(
            "{} {}",
            pick(rng, pools.first_names),
            pick(rng, pools.last_names)
        ),
        FieldKind::Date => {
            let (day, month, year) = (
                rng.gen_range(1..=28),
                pick(rng, &MONTHS),
                rng.gen_range(1938..=2006),
            );
            if pools.day_first {
                format!("{day} {month} {year}")
            } else {
                format!("{month} {day}, {year}")
            }
        }
        FieldKind::Diagnosis => pick(rng, pools.diagnoses).to_owned(),
        FieldKind::City => pick(rng, pools.cities).to_owned(),
        FieldKind::Account => {
            let sep = if pools.day_first { "-" } else { " " };
            [digits(rng, 4), digits(rng, 4), digits(rng, 4)].join(sep)
        }
        FieldKind::Amount => {
            let whole = rng.gen_range(12..60_000u64);
            let cents = rng.gen_range(0..100u32);
            format!(
                "{}{}.{cents:02}",
                pick(rng, pools.currencies),
                with_thousands(whole)
            )
        }
        FieldKind::Phone => {
            if pools.day_first {
                let cc = pick(rng, &["41", "33", "351", "48", "44"]);
                format!(
                    "+{cc} {} {} {} {}",
                    digits(rng, 2),
                    digits(rng, 3),
                    digits(rng, 2),
                    digits(rng, 2)
                )
            } else {
                format!(
                    "(0{}) {} {}",
                    digits(rng, 2),
                    digits(rng, 3),
                    digits(rng, 4)
                )
            }
        }
    }
}

/// Fills `template` from `pools`, recording where each field landed.
fn fill<R: Rng>(template: &str, pools: &Pools, rng: &mut R) -> Prompt {
    let mut text = String::new();
    let mut fields = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            text.push_str(&rest[open..]);
            rest = "";
            break;
        };
        match templates::kind_of(&after[..close]) {
            Some(kind) => {
                let start = text.len();
                text.push_str(&value(kind, pools, rng));
                fields.push(Field {
                    kind,
                    span: start..text.len(),
                });
            }
            None => text.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    text.push_str(rest);
    Prompt { text, fields }
}

fn sensitive(pools: &Pools, seed: u64, n: usize) -> Vec<Prompt> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| fill(pools.templates[i % pools.templates.len()], pools, &mut rng))
        .collect()
}

/// `n` sensitive evaluation sentences from the evaluation templates and [`EVAL_SEED`].
pub fn sensitive_eval(n: usize) -> Vec<Prompt> {
    sensitive(&templates::EVAL, EVAL_SEED, n)
}

/// `n` sensitive training sentences from the training templates and [`TRAIN_SEED`].
pub fn sensitive_train(n: usize) -> Vec<Prompt> {
    sensitive(&templates::TRAIN, TRAIN_SEED, n)
}

/// One prompt per non-empty line of `text`, without sensitive fields.
pub fn prompts_from_lines(text: &str) -> Vec<Prompt> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Prompt::plain)
        .collect()
}

/// The default evaluation set: [`EVAL_SENSITIVE`] sensitive sentences with every third
/// prompt taken from [`EVAL_PROSE`] instead, then the remaining prose lines.
pub fn evaluation_prompts() -> Vec<Prompt> {
    let mut prose = prompts_from_lines(EVAL_PROSE).into_iter();
    let mut out = Vec::new();
    for s in sensitive_eval(EVAL_SENSITIVE) {
        if out.len() % 3 == 2 {
            out.extend(prose.next());
        }
        out.push(s);
    }
    out.extend(prose);
    out
}

/// The probe's training documents: each paragraph of [`TRAIN_PROSE`], and the
/// [`TRAIN_SENSITIVE`] training sentences in groups of four. Each document is run as
/// its own sequence from position 0, as prompts are.
pub fn training_documents() -> Vec<String> {
    let mut docs: Vec<String> = TRAIN_PROSE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let sens = sensitive_train(TRAIN_SENSITIVE);
    docs.extend(sens.chunks(4).map(|g| {
        g.iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }));
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_point_at_their_values() {
        let p = sensitive_eval(8);
        assert_eq!(p.len(), 8);
        // The first template is "Patient {name}, born {date}, was diagnosed with {diagnosis}."
        let first = &p[0];
        assert!(first.text.starts_with("Patient "), "{}", first.text);
        let kinds: Vec<_> = first.fields.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FieldKind::Name, FieldKind::Date, FieldKind::Diagnosis]
        );
        for prompt in &p {
            for f in &prompt.fields {
                let v = prompt.field_text(f);
                assert!(
                    !v.is_empty() && !v.starts_with(' ') && !v.ends_with(' '),
                    "{v:?}"
                );
            }
        }
        let amount = &p[1].fields[0];
        assert_eq!(amount.kind, FieldKind::Amount);
        let v = p[1].field_text(amount);
        assert!(v.starts_with('$') && v.contains('.'), "{v}");
    }

    #[test]
    fn corpora_are_deterministic() {
        assert_eq!(sensitive_eval(20), sensitive_eval(20));
        assert_eq!(training_documents(), training_documents());
        assert_eq!(with_thousands(4250), "4,250");
        assert_eq!(with_thousands(12), "12");
        assert_eq!(with_thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn evaluation_and_training_corpora_are_disjoint() {
        let eval = evaluation_prompts();
        assert!(eval.len() >= 50, "{} evaluation prompts", eval.len());
        let train = training_documents().join("\n");
        let train_lower = train.to_lowercase();
        for p in &eval {
            assert!(
                !train.contains(p.text.as_str()),
                "evaluation prompt in training: {}",
                p.text
            );
        }
        // No sentence of the evaluation prose appears in the training prose.
        for line in prompts_from_lines(EVAL_PROSE) {
            for sentence in line.text.split_inclusive(". ").map(str::trim) {
                if sentence.len() > 20 {
                    assert!(!train.contains(sentence), "shared sentence: {sentence}");
                }
            }
        }
        // The sensitive values of the evaluation side never occur in the training text.
        let e = &templates::EVAL;
        for v in e
            .first_names
            .iter()
            .chain(e.last_names)
            .chain(e.cities)
            .chain(e.diagnoses)
        {
            let needle = format!(" {} ", v.to_lowercase());
            assert!(
                !train_lower.contains(&needle),
                "evaluation value {v:?} in training text"
            );
        }
        for p in &eval {
            for f in &p.fields {
                if matches!(
                    f.kind,
                    FieldKind::Account | FieldKind::Phone | FieldKind::Name
                ) {
                    assert!(!train.contains(p.field_text(f)), "{}", p.field_text(f));
                }
            }
        }
    }
}
