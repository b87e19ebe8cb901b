//! Log-probabilities from raw logits, computed by `ar`, and the fingerprints the probes
//! compare.
//!
//! The metric is today's formula, now evaluated in the trusted process: for each position,
//! `log p(target) = logit[target] − logsumexp(logits)`, with every column the model
//! returned in the normaliser (extra columns beyond the vocabulary can only take mass
//! away), then `bpb = Σ nats / (ln 2 · Σ bytes)` over targets with a non-zero byte length
//! (`BpbAccumulator`). The log-sum-exp subtracts the maximum, takes each term with the
//! kernels' vectorised f32 `exp` (≈ 1 ulp; a libm f64 `exp` per logit was a fifth of `ar`'s
//! scoring time) and sums in f64, so the result agrees with the in-process f32
//! `log_softmax` to well within 1e-6 bpb.
//!
//! A fingerprint of one position is its log-sum-exp plus the raw logits of the target and
//! of a few witness ids drawn by `ar`: enough to tell two answers apart when a leak moves
//! the distribution, small enough to keep for every probed row at the h100 vocabulary.

use rayon::prelude::*;

use super::ScoreError;

/// Witness ids per position in a fingerprint.
pub const WITNESSES: usize = 6;

/// log-sum-exp of one position's logits; an error names a non-finite value.
fn logsumexp(logits: &[f32]) -> Result<f64, f32> {
    let mut max = f32::NEG_INFINITY;
    for &v in logits {
        if !v.is_finite() {
            return Err(v);
        }
        max = max.max(v);
    }
    Ok(max as f64 + kernels::exp_sum(logits, max).ln())
}

/// `log p(target)` at every position of an answer `[positions, width]`.
pub fn target_logprobs(values: &[f32], width: usize, targets: &[u32]) -> Result<Vec<f32>, ScoreError> {
    values
        .par_chunks(width)
        .zip(targets.par_iter())
        .map(|(logits, &t)| {
            let lse = logsumexp(logits).map_err(non_finite)?;
            let logit = *logits.get(t as usize).ok_or_else(|| {
                ScoreError::Model(format!("the model returned {width} logits; target id {t} is beyond them"))
            })?;
            Ok((logit as f64 - lse) as f32)
        })
        .collect()
}

fn non_finite(v: f32) -> ScoreError {
    ScoreError::Model(format!("the model returned a non-finite logit ({v}): NaN or inf in its output"))
}

/// What is kept of one position to compare a later answer against.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// `log p` of the target and of each witness id, in that order.
    pub logp: [f32; WITNESSES + 1],
}

/// Fingerprints of every position of one row: `values` is `[seq, width]`, `targets` the
/// ids whose log-probability is kept first, `witnesses` the same few ids everywhere.
pub fn fingerprints(
    values: &[f32],
    width: usize,
    targets: &[u32],
    witnesses: &[u32; WITNESSES],
) -> Result<Vec<Fingerprint>, ScoreError> {
    values
        .chunks(width)
        .zip(targets)
        .map(|(logits, &t)| {
            let lse = logsumexp(logits).map_err(non_finite)?;
            let mut logp = [0f32; WITNESSES + 1];
            for (slot, id) in logp.iter_mut().zip(std::iter::once(t).chain(witnesses.iter().copied())) {
                *slot = (*logits.get(id as usize).unwrap_or(&f32::NEG_INFINITY) as f64 - lse) as f32;
            }
            Ok(Fingerprint { logp })
        })
        .collect()
}

/// Largest absolute difference between two fingerprints.
pub fn distance(a: &Fingerprint, b: &Fingerprint) -> f32 {
    a.logp.iter().zip(&b.logp).map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() }).fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_uniform_logits_give_log_one_over_width() {
        let values = vec![3.0f32; 2 * 8];
        let lp = target_logprobs(&values, 8, &[1, 7]).unwrap();
        for v in lp {
            assert!((v as f64 + (8f64).ln()).abs() < 1e-6, "{v}");
        }
    }

    #[test]
    fn test_non_finite_logits_and_out_of_range_targets_are_errors() {
        let mut values = vec![0.0f32; 4];
        values[2] = f32::NAN;
        assert!(matches!(target_logprobs(&values, 4, &[0]), Err(ScoreError::Model(_))));
        assert!(target_logprobs(&[0.0; 4], 4, &[9]).is_err());
    }

    #[test]
    fn test_fingerprint_distance_sees_a_shifted_distribution() {
        let w = [0, 1, 2, 3, 4, 5];
        let a: Vec<f32> = (0..16).map(|i| i as f32 * 0.1).collect();
        let mut b = a.clone();
        b[9] += 2.0;
        let fa = fingerprints(&a, 16, &[9], &w).unwrap();
        let fb = fingerprints(&b, 16, &[9], &w).unwrap();
        assert_eq!(distance(&fa[0], &fa[0]), 0.0);
        assert!(distance(&fa[0], &fb[0]) > 1.0);
    }
}
