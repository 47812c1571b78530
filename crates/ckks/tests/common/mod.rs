//! Shared fixtures of the end-to-end tests: keys, f64 references, precision in bits.
#![allow(dead_code)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use selene_ckks::{
    Ciphertext, Decryptor, Encoder, Encoding, Encryptor, Evaluator, GaloisKeys, Parameters,
    Plaintext, PublicKey, RelinKey, Scale, SecretKey,
};

/// Everything a test needs for one parameter set.
pub struct Kit {
    pub params: Arc<Parameters>,
    pub sk: Arc<SecretKey>,
    pub enc: Encoder,
    pub sk_enc: Encryptor,
    pub pk_enc: Encryptor,
    pub dec: Decryptor,
    pub eval: Evaluator,
    pub steps: Vec<i64>,
}

impl Kit {
    pub fn new(params: Arc<Parameters>, steps: &[i64]) -> Self {
        let sk = Arc::new(SecretKey::generate(&params));
        let pk = Arc::new(PublicKey::new(&sk));
        let rlk = Arc::new(RelinKey::new(&sk));
        let gks = Arc::new(GaloisKeys::new(&sk, steps, true));
        Self {
            enc: Encoder::new(&params).unwrap(),
            sk_enc: Encryptor::with_secret_key(sk.clone()),
            pk_enc: Encryptor::with_public_key(pk),
            dec: Decryptor::new(sk.clone()),
            eval: Evaluator::new(&params)
                .with_relin_key(rlk)
                .with_galois_keys(gks),
            params,
            sk,
            steps: steps.to_vec(),
        }
    }

    pub fn scale(&self) -> Scale {
        Scale(self.params.default_scale())
    }

    pub fn encrypt(&mut self, v: &[f64], encoding: Encoding) -> Ciphertext {
        let pt = self.encode(v, self.params.max_level(), encoding);
        self.pk_enc.encrypt(&pt)
    }

    pub fn encode(&self, v: &[f64], level: usize, encoding: Encoding) -> Plaintext {
        self.enc.encode(v, level, self.scale(), encoding).unwrap()
    }

    /// `rescale(a * b)`.
    pub fn mul(&mut self, a: &Ciphertext, b: &Ciphertext) -> Ciphertext {
        let p = self.eval.mul_relin(a, b).unwrap();
        self.eval.rescale(&p).unwrap()
    }

    /// Decrypted rotation.
    pub fn rotated(&mut self, ct: &Ciphertext, k: i64) -> Vec<f64> {
        let r = self.eval.rotate(ct, k).unwrap();
        self.decrypt(&r)
    }

    pub fn decrypt(&self, ct: &Ciphertext) -> Vec<f64> {
        self.enc.decode(&self.dec.decrypt(ct)).unwrap()
    }
}

/// Uniform values in [-1, 1] from a fixed seed.
pub fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0..=1.0)).collect()
}

/// Bits of precision: -log2 of the largest absolute error.
pub fn bits(got: &[f64], want: &[f64]) -> f64 {
    assert!(got.len() >= want.len());
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    -err.max(f64::MIN_POSITIVE).log2()
}

/// Negacyclic convolution in f64 (the coefficient-encoding product).
pub fn negacyclic(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = a.len();
    let mut c = vec![0.0; n];
    for (i, &x) in a.iter().enumerate() {
        if x == 0.0 {
            continue;
        }
        for (j, &y) in b.iter().enumerate() {
            let k = i + j;
            if k < n {
                c[k] += x * y;
            } else {
                c[k - n] -= x * y;
            }
        }
    }
    c
}

/// `m(X^g)` on coefficients in f64.
pub fn automorphism(a: &[f64], g: u64) -> Vec<f64> {
    let n = a.len();
    let mut out = vec![0.0; n];
    for (i, &x) in a.iter().enumerate() {
        let j = (i as u64 * g % (2 * n as u64)) as usize;
        if j < n {
            out[j] = x;
        } else {
            out[j - n] = -x;
        }
    }
    out
}
