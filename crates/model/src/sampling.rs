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
        let p = self.params;
        if p.temperature == 0.0 {
            return Ok(argmax(logits));
        }
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
