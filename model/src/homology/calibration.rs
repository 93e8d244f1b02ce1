//! Calibrated probabilities for the binary tasks (interaction per pair, binding per residue):
//! Platt scaling of a score's logit, `σ(slope·logit(s) + intercept)`, fitted on validation data
//! by `plm-train homology`, one map per method. Each map is strictly increasing, so it changes no
//! ranking (AUROC and AUPR stay as they were). A calibrated score of 0.3 means that about 30 % of
//! such items are positive, which a head trained with class weights or a blend of two sources
//! does not give.

use serde::{Deserialize, Serialize};

use super::Method;

/// Scores are clamped into `[EPS, 1 − EPS]` before taking their logit.
const EPS: f64 = 1e-6;

/// One fitted Platt map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    /// Multiplies the score's logit (positive: the map keeps the order of scores).
    pub slope: f32,
    /// Added to the scaled logit.
    pub intercept: f32,
}

fn logit(score: f64) -> f64 {
    let s = score.clamp(EPS, 1.0 - EPS);
    (s / (1.0 - s)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Platt {
    /// The calibrated probability of `score` (NaN stays NaN).
    pub fn apply(self, score: f32) -> f32 {
        if score.is_nan() {
            return score;
        }
        sigmoid(f64::from(self.slope) * logit(f64::from(score)) + f64::from(self.intercept)) as f32
    }

    /// Whether the map is usable: finite, and increasing.
    pub fn is_valid(self) -> bool {
        self.slope.is_finite() && self.slope > 0.0 && self.intercept.is_finite()
    }

    /// The map minimising the log-loss of `scores` against `labels`, with Platt's smoothed
    /// targets (`(n₊+1)/(n₊+2)` and `1/(n₋+2)`) against overfitting small sets; `None` when
    /// either class is missing or the fit is not increasing (the scores carry no signal).
    pub fn fit(scores: &[f32], labels: &[bool]) -> Option<Platt> {
        let positives = labels.iter().filter(|&&l| l).count() as f64;
        let negatives = labels.len() as f64 - positives;
        if positives == 0.0 || negatives == 0.0 || scores.len() != labels.len() {
            return None;
        }
        let high = (positives + 1.0) / (positives + 2.0);
        let low = 1.0 / (negatives + 2.0);
        let points: Vec<(f64, f64)> = scores
            .iter()
            .zip(labels)
            .filter(|(s, _)| s.is_finite())
            .map(|(&s, &l)| (logit(f64::from(s)), if l { high } else { low }))
            .collect();
        // Newton's method on the two parameters, with step halving (the log-loss is convex).
        let (mut a, mut b) = (1.0f64, (positives / negatives).ln());
        let loss = |a: f64, b: f64| -> f64 {
            points
                .iter()
                .map(|&(x, t)| {
                    let z = a * x + b;
                    // log(1 + e^z) − t·z, computed stably.
                    z.max(0.0) + (-z.abs()).exp().ln_1p() - t * z
                })
                .sum()
        };
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for &(x, t) in &points {
                let p = sigmoid(a * x + b);
                let w = (p * (1.0 - p)).max(1e-12);
                ga += (p - t) * x;
                gb += p - t;
                haa += w * x * x;
                hab += w * x;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-18 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            let mut step = 1.0;
            let mut improved = false;
            while step > 1e-6 {
                let (na, nb) = (a - step * da, b - step * db);
                let next = loss(na, nb);
                if next <= current {
                    improved = (current - next) > 1e-10 * current.abs().max(1.0);
                    (a, b, current) = (na, nb, next);
                    break;
                }
                step /= 2.0;
            }
            if !improved {
                break;
            }
        }
        let fitted = Platt {
            slope: a as f32,
            intercept: b as f32,
        };
        fitted.is_valid().then_some(fitted)
    }
}

/// The calibration of each method's scores for one task (`heads.json` → `blend.<task>` →
/// `calibration`). Homology's own score (the identity-weighted share of templates that agree)
/// is reported as it is: it is evidence, and 0 means "no template", not "surely not".
///
/// Each method has one increasing map, fitted on all validation items, so calibration keeps the
/// ranking (and AUROC) of its scores. (Separate maps for items with and without homology
/// information calibrate each group better but reorder items across the groups: measured, they
/// cost 0.013 AUROC on interaction pairs of unseen proteins.)
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Calibration {
    /// For `method => 'model'` (fitted on every item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Platt>,
    /// For `method => 'combined'` (fitted on every item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<Platt>,
}

impl Calibration {
    /// Whether nothing is calibrated.
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.combined.is_none()
    }

    /// `score` of `method`, calibrated where a valid map was fitted.
    pub fn apply(&self, method: Method, score: f32) -> f32 {
        let map = match method {
            Method::Model => self.model,
            Method::Combined => self.combined,
            Method::Homology => None,
        };
        map.filter(|p| p.is_valid())
            .map_or(score, |p| p.apply(score))
    }
}

/// Expected calibration error over `bins` equal-width bins of the score: the mean over items of
/// |observed rate − mean score| of their bin. `None` without items.
pub fn expected_calibration_error(scores: &[f32], labels: &[bool], bins: usize) -> Option<f64> {
    let diagram = reliability(scores, labels, bins);
    let n: usize = diagram.iter().map(|b| b.items).sum();
    (n > 0).then(|| {
        diagram
            .iter()
            .map(|b| b.items as f64 * (b.observed - b.mean_score).abs())
            .sum::<f64>()
            / n as f64
    })
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin's score range.
    pub from: f64,
    /// Items whose score falls in the bin.
    pub items: usize,
    /// Their mean score.
    pub mean_score: f64,
    /// The fraction of them that are positive.
    pub observed: f64,
}

/// The non-empty bins of `bins` equal-width score bins over [0, 1].
pub fn reliability(scores: &[f32], labels: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (&s, &l) in scores.iter().zip(labels) {
        if !s.is_finite() {
            continue;
        }
        let s = f64::from(s).clamp(0.0, 1.0);
        let k = ((s * bins as f64) as usize).min(bins - 1);
        sums[k].0 += 1;
        sums[k].1 += s;
        sums[k].2 += usize::from(l);
    }
    sums.iter()
        .enumerate()
        .filter(|(_, s)| s.0 > 0)
        .map(|(k, &(items, total, positives))| ReliabilityBin {
            from: k as f64 / bins as f64,
            items,
            mean_score: total / items as f64,
            observed: positives as f64 / items as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Items whose true probability is `σ(3·logit(s) − 1)` for a score `s`: over-confident
    /// scores, as a head trained with class weights gives.
    fn miscalibrated(n: usize) -> (Vec<f32>, Vec<bool>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let truth = Platt {
            slope: 0.4,
            intercept: -1.0,
        };
        (0..n)
            .map(|_| {
                let s: f32 = rng.random_range(0.01..0.99);
                (s, rng.random::<f32>() < truth.apply(s))
            })
            .unzip()
    }

    #[test]
    fn fitting_recovers_the_map_and_lowers_the_calibration_error() {
        let (scores, labels) = miscalibrated(20_000);
        let p = Platt::fit(&scores, &labels).unwrap();
        assert!((p.slope - 0.4).abs() < 0.05, "{p:?}");
        assert!((p.intercept + 1.0).abs() < 0.1, "{p:?}");
        let calibrated: Vec<f32> = scores.iter().map(|&s| p.apply(s)).collect();
        let before = expected_calibration_error(&scores, &labels, 10).unwrap();
        let after = expected_calibration_error(&calibrated, &labels, 10).unwrap();
        assert!(before > 0.15 && after < 0.02, "{before} -> {after}");
        // Increasing: the order of scores (and so AUROC) is kept.
        assert!(p.apply(0.2) < p.apply(0.3) && p.apply(0.0) < p.apply(1.0));
    }

    #[test]
    fn one_class_or_no_signal_gives_no_map() {
        assert_eq!(Platt::fit(&[0.2, 0.9], &[true, true]), None);
        assert_eq!(Platt::fit(&[], &[]), None);
        // Scores that rank positives below negatives do not get a decreasing map.
        let scores: Vec<f32> = (0..200).map(|i| i as f32 / 200.0).collect();
        let labels: Vec<bool> = (0..200).map(|i| i < 100).collect();
        assert_eq!(Platt::fit(&scores, &labels), None);
    }

    #[test]
    fn calibration_applies_by_method_and_keeps_nan() {
        let c = Calibration {
            combined: Some(Platt {
                slope: 1.0,
                intercept: 1.0,
            }),
            ..Calibration::default()
        };
        assert_eq!(c.apply(Method::Model, 0.3), 0.3);
        assert_eq!(c.apply(Method::Homology, 0.3), 0.3);
        assert!(c.apply(Method::Combined, 0.5) > 0.7);
        assert!(c.apply(Method::Combined, f32::NAN).is_nan());
        let bad = Calibration {
            model: Some(Platt {
                slope: -1.0,
                intercept: 0.0,
            }),
            ..Calibration::default()
        };
        assert_eq!(bad.apply(Method::Model, 0.3), 0.3);
    }

    #[test]
    fn reliability_bins_count_every_finite_score() {
        let bins = reliability(
            &[0.05, 0.07, 0.95, f32::NAN, 1.0],
            &[false, true, true, true, true],
            10,
        );
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[0].items, 2);
        assert!((bins[0].observed - 0.5).abs() < 1e-12);
        assert_eq!(bins[1].items, 2);
        assert_eq!(expected_calibration_error(&[], &[], 10), None);
    }
}
