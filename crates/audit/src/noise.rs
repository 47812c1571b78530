//! Gaussian flooding noise, as the client adds it to every value it releases.
//!
//! The protocol floods a decrypted release with Gaussian noise so that the released
//! values hide the CKKS decryption error (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022,
//! Section 4). The audit adds the same noise to what the attacker sees.

use rand::Rng;

use crate::{Error, Result};

/// Checks that `sigma` is a usable standard deviation.
///
/// # Errors
/// [`Error::InvalidSigma`] when `sigma` is negative, NaN or infinite.
pub fn check_sigma(sigma: f64) -> Result<()> {
    if sigma.is_finite() && sigma >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidSigma { sigma })
    }
}

/// Draws one standard normal sample with the Box-Muller transform
/// (Box and Muller, Ann. Math. Statist. 1958).
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Adds independent N(0, sigma^2) noise to every value of `values`.
///
/// # Errors
/// [`Error::InvalidSigma`] for a negative or non-finite `sigma`.
pub fn flood<R: Rng + ?Sized>(values: &mut [f32], sigma: f64, rng: &mut R) -> Result<()> {
    check_sigma(sigma)?;
    if sigma == 0.0 {
        return Ok(());
    }
    for v in values {
        *v += (sigma * standard_normal(rng)) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn flood_has_the_requested_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut v = vec![0f32; 200_000];
        flood(&mut v, 0.5, &mut rng).unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        // Standard error of the mean is 0.5/sqrt(2e5) ~ 1.1e-3; of the variance ~ 7.9e-4.
        assert!(mean.abs() < 6e-3, "mean {mean}");
        assert!((var - 0.25).abs() < 5e-3, "variance {var}");
    }

    #[test]
    fn zero_sigma_changes_nothing_and_bad_sigma_is_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = vec![1.5f32; 8];
        flood(&mut v, 0.0, &mut rng).unwrap();
        assert!(v.iter().all(|&x| x == 1.5));
        assert!(matches!(
            flood(&mut v, -1.0, &mut rng),
            Err(Error::InvalidSigma { .. })
        ));
        assert!(matches!(
            flood(&mut v, f64::NAN, &mut rng),
            Err(Error::InvalidSigma { .. })
        ));
    }
}
