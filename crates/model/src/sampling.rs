//! Choosing the next token from logits: greedy, or seeded sampling with temperature,
//! top-k and top-p (nucleus; Holtzman et al., ICLR 2020).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// How to pick tokens. `temperature == 0` means greedy (the other fields are ignored).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature, `>= 0`; 0 is greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`, in `(0, 1]`.
    pub top_p: f32,
    /// Seed of the ChaCha8 stream: equal seeds give equal samples.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A seeded token sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    order: Vec<u32>,
    probs: Vec<f64>,
}

/// Index of the largest logit (the first one on ties); 0 for an empty slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// A sampler with validated parameters.
    ///
    /// # Errors
    /// [`Error::BadSampling`] for a negative or non-finite temperature or a `top_p`
    /// outside `(0, 1]`.
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        if !(params.temperature.is_finite() && params.temperature >= 0.0) {
            return Err(Error::BadSampling {
                name: "temperature",
                value: params.temperature.into(),
                reason: "must be finite and >= 0",
            });
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(Error::BadSampling {
                name: "top_p",
                value: params.top_p.into(),
                reason: "must be in (0, 1]",
            });
        }
        Ok(Sampler {
            params,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            order: Vec::new(),
            probs: Vec::new(),
        })
    }

    /// Picks a token id from `logits`.
    ///
    /// # Errors
    /// [`Error::Empty`] for empty logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Empty { what: "logits" });
        }
        if self.params.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let keep = self.candidates(logits);
        let mass: f64 = self.probs[..keep].iter().sum();
        let mut u = self.rng.gen::<f64>() * mass;
        for (j, q) in self.probs[..keep].iter().enumerate() {
            if u < *q {
                return Ok(self.order[j]);
            }
            u -= q;
        }
        Ok(self.order[keep - 1])
    }

    /// Checks a drafted token against `logits`: returns the token to emit and whether
    /// it is the draft. Greedy: the argmax, accepted when equal. Sampling: the
    /// speculative-sampling rule (Leviathan, Kalman and Matias, ICML 2023, section 2.3;
    /// Chen et al. 2023, algorithm 2) with a draft distribution that is a point mass on
    /// `draft`: accept with probability `p(draft)`, else draw from `p` with `draft`
    /// removed and renormalized, the residual `max(0, p - q)`. The emitted token is
    /// then distributed exactly as [`Sampler::sample`]'s.
    ///
    /// # Errors
    /// [`Error::Empty`] for empty logits.
    pub fn verify(&mut self, logits: &[f32], draft: u32) -> Result<(u32, bool)> {
        if logits.is_empty() {
            return Err(Error::Empty { what: "logits" });
        }
        if self.params.temperature == 0.0 {
            let best = argmax(logits);
            return Ok((best, best == draft));
        }
        let keep = self.candidates(logits);
        let mass: f64 = self.probs[..keep].iter().sum();
        let q_draft = self.order[..keep]
            .iter()
            .position(|&i| i == draft)
            .map_or(0.0, |j| self.probs[j]);
        if self.rng.gen::<f64>() * mass < q_draft {
            return Ok((draft, true));
        }
        let rest = mass - q_draft;
        let mut u = self.rng.gen::<f64>() * rest;
        let mut last = None;
        for (j, q) in self.probs[..keep].iter().enumerate() {
            if self.order[j] == draft {
                continue;
            }
            last = Some(self.order[j]);
            if u < *q {
                return Ok((self.order[j], false));
            }
            u -= q;
        }
        // Rounding, or a draft holding all the mass (then accepted above unless u hit
        // the boundary): the last candidate that is not the draft, else the draft.
        Ok(last.map_or((draft, true), |t| (t, false)))
    }

    /// Fills `order` with the candidate ids by decreasing logit (top-k cut) and `probs`
    /// with their unnormalized softmax weights at the temperature; returns how many the
    /// nucleus (top-p) keeps. Requires a temperature above 0 and non-empty logits.
    fn candidates(&mut self, logits: &[f32]) -> usize {
        let p = self.params;
        // Candidates by decreasing logit (NaN last), cut to top-k.
        self.order.clear();
        self.order.extend(0..logits.len() as u32);
        let key = |i: &u32| logits[*i as usize];
        let k = if p.top_k == 0 {
            logits.len()
        } else {
            p.top_k.min(logits.len())
        };
        if k < logits.len() {
            self.order
                .select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)));
            self.order.truncate(k);
        }
        self.order
            .sort_unstable_by(|a, b| key(b).total_cmp(&key(a)));
        // Softmax at temperature in f64 over the candidates.
        let t = f64::from(p.temperature);
        let max = f64::from(key(&self.order[0]));
        self.probs.clear();
        self.probs.extend(
            self.order
                .iter()
                .map(|i| ((f64::from(key(i)) - max) / t).exp()),
        );
        let total: f64 = self.probs.iter().sum();
        // Nucleus: the shortest prefix whose mass reaches top_p.
        let mut keep = self.probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (j, q) in self.probs.iter().enumerate() {
                acc += q / total;
                if acc >= f64::from(p.top_p) {
                    keep = j + 1;
                    break;
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]).unwrap(), 1);
    }

    #[test]
    fn seeded_sampling_is_deterministic_and_follows_the_distribution() {
        let logits = [0.0f32, (2.0f32).ln(), 0.0, f32::NEG_INFINITY];
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, seed)).unwrap();
            (0..4000)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        let counts = draw(9).iter().fold([0usize; 4], |mut c, &i| {
            c[i as usize] += 1;
            c
        });
        // Expected 1000 / 2000 / 1000 / 0; 4 sigma is about 110.
        assert!((counts[1] as i64 - 2000).abs() < 130, "{counts:?}");
        assert!((counts[0] as i64 - 1000).abs() < 110, "{counts:?}");
        assert_eq!(counts[3], 0);
    }

    #[test]
    fn verified_drafts_keep_the_sampling_distribution() {
        // p = softmax([0, ln 2, 0, ln 4]) = 1/8, 2/8, 1/8, 4/8. Whatever the draft, the
        // emitted token must follow p (speculative sampling's guarantee); 4 sigma of a
        // count out of 16000 is at most 4 * sqrt(16000 / 4) = 253.
        let logits = [0.0f32, (2.0f32).ln(), 0.0, (4.0f32).ln()];
        for draft in [0u32, 1, 3, 7] {
            let mut s = Sampler::new(params(1.0, 0, 1.0, 11 + u64::from(draft))).unwrap();
            let mut counts = [0i64; 4];
            let mut accepted = 0i64;
            for _ in 0..16_000 {
                let (tok, ok) = s.verify(&logits, draft).unwrap();
                counts[tok as usize] += 1;
                accepted += i64::from(ok);
                assert_eq!(ok, tok == draft);
            }
            let expected = [2000i64, 4000, 2000, 8000];
            for (c, e) in counts.iter().zip(expected) {
                assert!((c - e).abs() < 253, "draft {draft}: {counts:?}");
            }
            // Acceptance happens with probability p(draft).
            let p_draft = expected.get(draft as usize).copied().unwrap_or(0);
            assert!(
                (accepted - p_draft).abs() < 253,
                "draft {draft}: {accepted}"
            );
        }
        // Greedy: the argmax, accepted only when it is the draft.
        let mut g = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(g.verify(&logits, 3).unwrap(), (3, true));
        assert_eq!(g.verify(&logits, 1).unwrap(), (3, false));
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(params(1.0, 2, 1.0, 1)).unwrap();
        assert!((0..500).all(|_| s.sample(&logits).unwrap() < 2));
        // p(0) = 0.64, p(0)+p(1) = 0.88 >= 0.8: tokens 0 and 1 only.
        let mut s = Sampler::new(params(1.0, 0, 0.8, 1)).unwrap();
        assert!((0..500).all(|_| s.sample(&logits).unwrap() < 2));
        let mut s = Sampler::new(params(1.0, 0, 0.5, 1)).unwrap();
        assert!((0..100).all(|_| s.sample(&logits).unwrap() == 0));
        assert!(Sampler::new(params(-1.0, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 0.0, 0)).is_err());
    }
}
