//! Fitting and scoring the blend of a binary predictor (interaction per pair, binding per
//! residue): the model's probability, homology's score at each hit sharpness (`None` where
//! homology knows nothing), and the truth.

use plm_model::homology::{
    combine_score, expected_calibration_error, reliability, Blend, Calibration, Evidence, Method,
    Platt,
};
use serde_json::{json, Value};

use super::{alphas, SHARPNESS};
use crate::metrics::{aupr, auroc};

/// Items scored by the model and by homology, with their labels.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The model's probability of each item.
    pub model: Vec<f32>,
    /// Homology's score of each item, for each of [`SHARPNESS`].
    pub homology: Vec<Vec<Option<f32>>>,
    /// The truth.
    pub labels: Vec<bool>,
    /// What homology can say.
    pub evidence: Evidence,
}

impl Scored {
    /// Nothing scored yet.
    pub fn new(evidence: Evidence) -> Self {
        Scored {
            model: Vec::new(),
            homology: vec![Vec::new(); SHARPNESS.len()],
            labels: Vec::new(),
            evidence,
        }
    }
}

fn sharpness_index(sharpness: f32) -> usize {
    SHARPNESS.iter().position(|&s| s == sharpness).unwrap_or(0)
}

impl Scored {
    /// Scores of `method` under `blend`.
    pub fn scores(&self, method: Method, blend: Blend) -> Vec<f32> {
        let h = &self.homology[sharpness_index(blend.sharpness)];
        self.model
            .iter()
            .zip(h)
            .map(|(&m, &h)| combine_score(m, h, method, blend, self.evidence))
            .collect()
    }

    /// Adds `other`'s items.
    pub fn append(&mut self, other: Scored) {
        self.model.extend(other.model);
        for (h, o) in self.homology.iter_mut().zip(other.homology) {
            h.extend(o);
        }
        self.labels.extend(other.labels);
    }

    /// Items homology knows something about.
    pub fn with_homology(&self) -> usize {
        self.homology[0].iter().filter(|h| h.is_some()).count()
    }
}

fn value(scores: &[f32], labels: &[bool]) -> f64 {
    auroc(scores, labels).unwrap_or(0.5)
}

/// The hit sharpness, blend rule (of `rules`) and weight best for the blend, by AUROC on
/// `validation`, searched together (AUROC of homology alone hardly depends on the sharpness,
/// the blend does); ties go to the larger weight on homology. The model's and the blend's
/// scores are then calibrated on the same items ([`calibrate`]), which keeps their ranking.
pub fn fit(validation: &Scored, rules: &[Evidence]) -> (Blend, Vec<Value>) {
    let mut tried: Vec<(Blend, f64)> = Vec::new();
    for &sharpness in &SHARPNESS {
        for &rule in rules {
            for alpha in alphas() {
                let blend = Blend {
                    alpha,
                    sharpness,
                    model_without_hits: true,
                    evidence: Some(rule),
                    calibration: Calibration::default(),
                };
                let v = value(
                    &validation.scores(Method::Combined, blend),
                    &validation.labels,
                );
                tried.push((blend, v));
            }
        }
    }
    let best = tried
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.alpha.total_cmp(&b.0.alpha)))
        .map_or_else(Blend::default, |(b, _)| b);
    // Reported: the best weight of each sharpness and rule, and the weight 0 (the model alone).
    let mut summary: Vec<Value> = Vec::new();
    for group in tried.chunks(alphas().count()) {
        if let Some((b, v)) = group.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            summary.push(json!({"sharpness": b.sharpness, "evidence": b.evidence, "best_alpha": b.alpha, "auroc": v, "auroc_model_alone": group[0].1}));
        }
    }
    (calibrate(validation, best), summary)
}

/// `blend` without calibration.
fn raw(blend: Blend) -> Blend {
    Blend {
        calibration: Calibration::default(),
        ..blend
    }
}

/// `blend` with a Platt map for the model's and for the blend's scores, each fitted on every
/// item of `validation` and kept only where it calibrates ([`checked_fit`]). The maps are
/// increasing: rankings, and so AUROC and AUPR, stay those of the raw scores.
pub fn calibrate(validation: &Scored, blend: Blend) -> Blend {
    let fitted =
        |method: Method| checked_fit(&validation.scores(method, raw(blend)), &validation.labels);
    Blend {
        calibration: Calibration {
            model: fitted(Method::Model),
            combined: fitted(Method::Combined),
        },
        ..blend
    }
}

/// A Platt map of `scores`, kept only if one fitted on every other item lowers the expected
/// calibration error of the items between (scores that are calibrated already stay as they
/// are: a map fitted on few items would only add noise); then fitted on all items.
fn checked_fit(scores: &[f32], labels: &[bool]) -> Option<Platt> {
    let half = |parity: usize| -> (Vec<f32>, Vec<bool>) {
        scores
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, (&s, &l))| (s, l))
            .unzip()
    };
    let ((fit_scores, fit_labels), (check_scores, check_labels)) = (half(0), half(1));
    let candidate = Platt::fit(&fit_scores, &fit_labels)?;
    let calibrated: Vec<f32> = check_scores.iter().map(|&s| candidate.apply(s)).collect();
    let before = expected_calibration_error(&check_scores, &check_labels, CALIBRATION_BINS)?;
    let after = expected_calibration_error(&calibrated, &check_labels, CALIBRATION_BINS)?;
    if after < before {
        Platt::fit(scores, labels)
    } else {
        None
    }
}

/// Bins of the reliability diagrams and of the expected calibration error.
const CALIBRATION_BINS: usize = 10;

/// Expected calibration error of the model's and the blend's test scores before and after
/// calibration, and the reliability diagram of the calibrated blend.
fn calibration_report(test: &Scored, blend: Blend) -> Value {
    let ece = |scores: &[f32]| expected_calibration_error(scores, &test.labels, CALIBRATION_BINS);
    let mut out = json!({"bins": CALIBRATION_BINS});
    for (key, method) in [("model", Method::Model), ("combined", Method::Combined)] {
        let calibrated = test.scores(method, blend);
        out[key] = json!({
            "ece_raw": ece(&test.scores(method, raw(blend))),
            "ece": ece(&calibrated),
            "reliability": reliability(&calibrated, &test.labels, CALIBRATION_BINS),
        });
    }
    out
}

fn metrics(scores: &[f32], labels: &[bool]) -> Value {
    json!({"auroc": auroc(scores, labels), "aupr": aupr(scores, labels)})
}

/// Test figures of the model, homology and their blend, with the naive (constant) and MMseqs2
/// nearest-neighbour baselines scored by the same code.
pub fn report(test: &Scored, blend: Blend, nearest_neighbour: &[f32]) -> Value {
    let constant = vec![
        test.labels.iter().filter(|&&l| l).count() as f32
            / test.labels.len().max(1) as f32;
        test.labels.len()
    ];
    json!({
        "items": test.labels.len(),
        "positives": test.labels.iter().filter(|&&l| l).count(),
        "with_homology": test.with_homology(),
        "blend": blend,
        "model": metrics(&test.scores(Method::Model, blend), &test.labels),
        "homology": metrics(&test.scores(Method::Homology, blend), &test.labels),
        "combined": metrics(&test.scores(Method::Combined, blend), &test.labels),
        "naive": metrics(&constant, &test.labels),
        "mmseqs2_nearest_neighbour": metrics(nearest_neighbour, &test.labels),
        "calibration": calibration_report(test, blend),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Scores whose true probability is `truth(score)`, drawn with a fixed seed.
    fn drawn(n: usize, truth: impl Fn(f32) -> f32) -> (Vec<f32>, Vec<bool>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        (0..n)
            .map(|_| {
                let s: f32 = rng.random_range(0.01..0.99);
                (s, rng.random::<f32>() < truth(s))
            })
            .unzip()
    }

    #[test]
    fn overconfident_scores_get_a_map_and_degenerate_ones_none() {
        // A head that says 0.9 where one item in two is positive, 0.1 where one in five is.
        let (scores, labels) = drawn(4000, |s| 0.2 + 0.3 * s);
        let map = checked_fit(&scores, &labels).expect("overconfident scores are recalibrated");
        assert!(map.slope < 1.0, "{map:?}");
        let calibrated: Vec<f32> = scores.iter().map(|&s| map.apply(s)).collect();
        let ece = |s: &[f32]| expected_calibration_error(s, &labels, CALIBRATION_BINS).unwrap();
        assert!(ece(&calibrated) < ece(&scores) / 3.0);
        assert_eq!(checked_fit(&scores, &vec![true; scores.len()]), None);
        assert_eq!(checked_fit(&[], &[]), None);
    }

    #[test]
    fn calibration_keeps_the_blend_s_ranking_and_calibrates_it() {
        // An overconfident model (it says 0.9 where one item in two is positive); homology
        // knows a third of the items and its vote follows the label.
        let (model, labels) = drawn(4000, |s| 0.2 + 0.3 * s);
        let informed: Vec<Option<f32>> = labels
            .iter()
            .enumerate()
            .map(|(i, &label)| (i % 3 == 0).then_some(if label { 0.7 } else { 0.3 }))
            .collect();
        let validation = Scored {
            model,
            homology: vec![informed; SHARPNESS.len()],
            labels,
            evidence: Evidence::ForAndAgainst,
        };
        let raw = Blend {
            alpha: 0.5,
            ..Blend::default()
        };
        let calibrated = calibrate(&validation, raw);
        assert!(calibrated.calibration.model.is_some());
        assert!(calibrated.calibration.combined.is_some());
        let labels = &validation.labels;
        let before = validation.scores(Method::Combined, raw);
        let after = validation.scores(Method::Combined, calibrated);
        assert_eq!(auroc(&before, labels), auroc(&after, labels));
        let ece = |s: &[f32]| expected_calibration_error(s, labels, CALIBRATION_BINS).unwrap();
        assert!(
            ece(&after) < ece(&before) / 2.0,
            "{} {}",
            ece(&after),
            ece(&before)
        );
    }
}
