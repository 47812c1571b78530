//! The whole audit: train the probes, release every prompt's flooded states at each K,
//! attack them, and tabulate.

use std::ops::Range;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selene_model::tokenizer::Tokenizer;
use selene_model::Weights;

use crate::corpus::{training_documents, Prompt};
use crate::dense::DenseLinear;
use crate::inversion::{invert, InversionConfig};
use crate::metrics::{PromptScore, Tally};
use crate::noise::check_sigma;
use crate::probe::{EmbeddingTable, ProbeTrainer, Similarity};
use crate::report::{AuditReport, AuditRow};
use crate::view::{clean_states, AttackerView, DEFAULT_FLOOD_SIGMA};
use crate::{Error, Result};

/// The K values of the published table.
pub const DEFAULT_LAYERS: [usize; 7] = [0, 1, 2, 4, 8, 16, 29];
/// Relative ridge penalty (times the mean per-dimension variance sum of the states).
pub const DEFAULT_LAMBDA_REL: f64 = 1e-3;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// K values (layers before the release).
    pub layers: Vec<usize>,
    /// Flooding sigmas.
    pub sigmas: Vec<f64>,
    /// Search knobs of the exact inversion.
    pub inversion: InversionConfig,
    /// Relative ridge penalty of the probe.
    pub lambda_rel: f64,
    /// How the probe ranks tokens.
    pub similarity: Similarity,
    /// Seed of the flooding noise.
    pub seed: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            layers: DEFAULT_LAYERS.to_vec(),
            sigmas: vec![0.0, DEFAULT_FLOOD_SIGMA],
            inversion: InversionConfig::default(),
            lambda_rel: DEFAULT_LAMBDA_REL,
            similarity: Similarity::Cosine,
            seed: 0x5e1e_a0d1,
        }
    }
}

/// A prompt with its token ids and each token's byte range in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPrompt {
    /// The prompt and its fields.
    pub prompt: Prompt,
    /// Token ids (no BOS).
    pub tokens: Vec<u32>,
    /// Byte range of each token in `prompt.text`.
    pub spans: Vec<Range<usize>>,
}

/// Byte ranges of `ids` in the text they encode (byte-level BPE: the tokens' bytes
/// concatenate to the text).
///
/// # Errors
/// Model errors for unknown ids.
pub fn token_spans(tok: &Tokenizer, ids: &[u32]) -> Result<Vec<Range<usize>>> {
    let mut at = 0;
    ids.iter()
        .map(|&id| {
            let len = tok.token_bytes(id)?.len();
            at += len;
            Ok(at - len..at)
        })
        .collect()
}

/// Tokenizes prompts and checks that their token bytes spell the text.
///
/// # Errors
/// [`Error::EmptyPrompt`] for a prompt without tokens; [`Error::BadSpan`] if the tokens
/// do not cover the text or a field lies outside it; model errors.
pub fn tokenize(tok: &Tokenizer, prompts: &[Prompt]) -> Result<Vec<TokenizedPrompt>> {
    prompts
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let tokens = tok.encode(&p.text)?;
            if tokens.is_empty() {
                return Err(Error::EmptyPrompt { index });
            }
            let spans = token_spans(tok, &tokens)?;
            let len = p.text.len();
            let end = spans.last().map_or(0, |s| s.end);
            if end != len {
                return Err(Error::BadSpan { start: 0, end, len });
            }
            if let Some(f) = p
                .fields
                .iter()
                .find(|f| f.span.end > len || f.span.start >= f.span.end)
            {
                return Err(Error::BadSpan {
                    start: f.span.start,
                    end: f.span.end,
                    len,
                });
            }
            Ok(TokenizedPrompt {
                prompt: p.clone(),
                tokens,
                spans,
            })
        })
        .collect()
}

/// Progress of a running audit, for a progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Training documents run through the model so far.
    Training {
        /// Documents done.
        done: usize,
        /// Documents in all.
        total: usize,
    },
    /// Prompts attacked so far, over every (K, sigma) cell.
    Attacking {
        /// Current K.
        k: usize,
        /// Current sigma.
        sigma: f64,
        /// Prompt attacks done in all cells.
        done: usize,
        /// Prompt attacks in all.
        total: usize,
    },
    /// A (K, sigma) cell is finished (lets a caller save partial tables).
    Cell(AuditRow),
}

/// Position-0 training samples: every `FIRST_STRIDE`-th vocabulary id (a spread over the
/// whole vocabulary, special tokens skipped) and the first token of each training
/// document.
const FIRST_STRIDE: usize = 16;
/// Candidates per batch when making position-0 samples.
const FIRST_BATCH: usize = 512;

fn first_position_tokens(w: &Weights, tok: &Tokenizer, docs: &[String]) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = (0..w.config().vocab_size as u32)
        .step_by(FIRST_STRIDE)
        .filter(|&id| !tok.is_special(id))
        .collect();
    for d in docs {
        ids.extend(tok.encode(d)?.first());
    }
    Ok(ids)
}

/// Trains the probes for `layers` on the repo's training corpus.
///
/// # Errors
/// Model errors; [`Error::LayerOutOfRange`].
pub fn train_probes(
    w: &Weights,
    tok: &Tokenizer,
    dense: &mut DenseLinear,
    emb: &EmbeddingTable,
    layers: &[usize],
    progress: &mut dyn FnMut(Progress),
) -> Result<ProbeTrainer> {
    let docs = training_documents();
    let mut trainer = ProbeTrainer::new(layers, w.config().d_model);
    let firsts = first_position_tokens(w, tok, &docs)?;
    let chunks: Vec<&[u32]> = firsts.chunks(FIRST_BATCH).collect();
    let total = docs.len() + chunks.len();
    for (i, doc) in docs.iter().enumerate() {
        trainer.add_document(w, dense, emb, &tok.encode(doc)?)?;
        progress(Progress::Training { done: i + 1, total });
    }
    for (i, chunk) in chunks.iter().enumerate() {
        trainer.add_first_positions(w, dense, emb, chunk)?;
        progress(Progress::Training {
            done: docs.len() + i + 1,
            total,
        });
    }
    Ok(trainer)
}

/// Runs the audit on `prompts` and returns one row per (K, sigma).
///
/// # Errors
/// [`Error::InvalidSigma`], [`Error::LayerOutOfRange`], tokenization and model errors.
pub fn run_audit(
    w: &Weights,
    tok: &Tokenizer,
    prompts: &[Prompt],
    cfg: &AuditConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<AuditReport> {
    let c = w.config();
    for &s in &cfg.sigmas {
        check_sigma(s)?;
    }
    if let Some(&k) = cfg.layers.iter().find(|&&k| k > c.n_layers) {
        return Err(Error::LayerOutOfRange {
            k,
            n_layers: c.n_layers,
        });
    }
    let max_k = cfg.layers.iter().copied().max().unwrap_or(0);
    let prompts = tokenize(tok, prompts)?;
    let emb = EmbeddingTable::from_weights(w)?;
    let mut dense = DenseLinear::new(w, max_k)?;
    let trainer = train_probes(w, tok, &mut dense, &emb, &cfg.layers, progress)?;
    tracing::info!(tokens = trainer.rows(), "probe training corpus");
    let clean: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| clean_states(w, &p.tokens, &cfg.layers))
        .collect::<Result<_>>()?;
    let total = cfg.layers.len() * cfg.sigmas.len() * prompts.len();
    let mut done = 0;
    let mut report = AuditReport::default();
    // Sigma-major order: an interrupted run still has whole sigma rows across K.
    for (si, &sigma) in cfg.sigmas.iter().enumerate() {
        for (ki, &k) in cfg.layers.iter().enumerate() {
            let probe = trainer.probe(k, cfg.lambda_rel, sigma, cfg.similarity)?;
            let mut tally = Tally::default();
            let mut tried = 0usize;
            for (pi, (p, states)) in prompts.iter().zip(&clean).enumerate() {
                let seed = cfg.seed ^ ((ki as u64) << 48 | (si as u64) << 32 | pi as u64);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let view = AttackerView::from_clean(&states[ki], c.d_model, k, sigma, &mut rng)?;
                let inv = invert(w, &mut dense, &probe, &emb, &view, &cfg.inversion)?;
                tried += inv.tried.iter().sum::<usize>();
                tally.add(&PromptScore {
                    truth: &p.tokens,
                    recovered: &inv.tokens,
                    probe_guess: &inv.probe_guess,
                    token_spans: &p.spans,
                    fields: &p.prompt.fields,
                    seconds: inv.seconds,
                })?;
                done += 1;
                progress(Progress::Attacking {
                    k,
                    sigma,
                    done,
                    total,
                });
            }
            let row = tally.row(k, sigma);
            tracing::info!(
                k,
                sigma,
                tokens = tally.tokens,
                candidates_per_token = tried as f64 / tally.tokens.max(1) as f64,
                ?row,
                "audit cell"
            );
            progress(Progress::Cell(row.clone()));
            report.results.push(row);
        }
    }
    report
        .results
        .sort_by(|a, b| a.k.cmp(&b.k).then(a.flood_sigma.total_cmp(&b.flood_sigma)));
    Ok(report)
}
