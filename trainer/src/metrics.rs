//! Evaluation metrics for the task heads: ranking metrics (AUROC, AUPR), thresholded binary
//! metrics (accuracy, MCC), label-weighted precision/recall/F1 (the CLEAN protocol for EC
//! numbers) and the protein-centric Fmax of CAFA (GO terms).

use std::collections::{BTreeMap, HashSet};

/// Area under the ROC curve (ties get half credit). `None` without both classes.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties, then the Mann–Whitney U statistic.
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(r, _)| r)
        .sum();
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives as f64 * negatives as f64))
}

/// Area under the precision–recall curve as average precision (scikit-learn's definition:
/// `Σ (Rₙ − Rₙ₋₁) Pₙ` over distinct score thresholds). `None` without positives.
pub fn aupr(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut previous_recall = 0.0;
    let mut ap = 0.0;
    let mut i = 0;
    while i < order.len() {
        // Take every item sharing this score at once.
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - previous_recall) * precision;
        previous_recall = recall;
        i = j;
    }
    Some(ap)
}

/// Confusion counts at a threshold (`score >= threshold` is positive).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Confusion {
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// True negatives.
    pub tn: usize,
    /// False negatives.
    pub fn_: usize,
}

impl Confusion {
    /// Counts predictions against labels.
    pub fn new(scores: &[f32], labels: &[bool], threshold: f32) -> Self {
        let mut c = Confusion::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// Fraction correct.
    pub fn accuracy(&self) -> f64 {
        let total = self.tp + self.fp + self.tn + self.fn_;
        (self.tp + self.tn) as f64 / total.max(1) as f64
    }

    /// Matthews correlation coefficient (0 when undefined).
    pub fn mcc(&self) -> f64 {
        let (tp, fp, tn, fn_) = (
            self.tp as f64,
            self.fp as f64,
            self.tn as f64,
            self.fn_ as f64,
        );
        let denominator = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
        if denominator == 0.0 {
            0.0
        } else {
            (tp * tn - fp * fn_) / denominator
        }
    }
}

/// The threshold in `candidates` with the best MCC (chosen on validation data).
pub fn best_mcc_threshold(scores: &[f32], labels: &[bool]) -> f32 {
    (1..100)
        .map(|t| t as f32 / 100.0)
        .max_by(|&a, &b| {
            Confusion::new(scores, labels, a)
                .mcc()
                .total_cmp(&Confusion::new(scores, labels, b).mcc())
        })
        .unwrap_or(0.5)
}

/// Precision, recall and F1 averaged over labels weighted by their support in `truth` (the
/// `average='weighted'` of scikit-learn that CLEAN reports for EC numbers).
pub fn weighted_prf(truth: &[HashSet<String>], predicted: &[HashSet<String>]) -> (f64, f64, f64) {
    #[derive(Default)]
    struct Counts {
        tp: f64,
        fp: f64,
        fn_: f64,
    }
    let mut per_label: BTreeMap<&str, Counts> = BTreeMap::new();
    for (t, p) in truth.iter().zip(predicted) {
        for label in t {
            let c = per_label.entry(label).or_default();
            if p.contains(label) {
                c.tp += 1.0;
            } else {
                c.fn_ += 1.0;
            }
        }
        for label in p {
            if !t.contains(label) {
                per_label.entry(label).or_default().fp += 1.0;
            }
        }
    }
    let (mut p, mut r, mut f, mut total) = (0.0, 0.0, 0.0, 0.0);
    for c in per_label.values() {
        let support = c.tp + c.fn_;
        if support == 0.0 {
            continue;
        }
        let precision = if c.tp + c.fp > 0.0 {
            c.tp / (c.tp + c.fp)
        } else {
            0.0
        };
        let recall = c.tp / support;
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        p += support * precision;
        r += support * recall;
        f += support * f1;
        total += support;
    }
    if total == 0.0 {
        (0.0, 0.0, 0.0)
    } else {
        (p / total, r / total, f / total)
    }
}

/// Protein-centric Fmax (CAFA): for thresholds 0.01..0.99, precision is averaged over proteins
/// with at least one prediction, recall over all proteins; returns `(fmax, threshold)`.
/// `truth[i]` holds the label indices of protein `i` (all of its terms, including ones the
/// model cannot predict), `scores[i][k]` the score of label `k`.
pub fn fmax(truth: &[HashSet<usize>], scores: &[Vec<f32>]) -> (f64, f32) {
    let mut best = (0.0, 0.0f32);
    for t in 1..100 {
        let threshold = t as f32 / 100.0;
        let (mut precision_sum, mut covered, mut recall_sum, mut proteins) = (0.0, 0usize, 0.0, 0);
        for (labels, s) in truth.iter().zip(scores) {
            if labels.is_empty() {
                continue;
            }
            proteins += 1;
            let predicted: Vec<usize> = (0..s.len()).filter(|&k| s[k] >= threshold).collect();
            let hits = predicted.iter().filter(|k| labels.contains(k)).count() as f64;
            if !predicted.is_empty() {
                covered += 1;
                precision_sum += hits / predicted.len() as f64;
            }
            recall_sum += hits / labels.len() as f64;
        }
        if covered == 0 || proteins == 0 {
            continue;
        }
        let precision = precision_sum / covered as f64;
        let recall = recall_sum / proteins as f64;
        if precision + recall > 0.0 {
            let f = 2.0 * precision * recall / (precision + recall);
            if f > best.0 {
                best = (f, threshold);
            }
        }
    }
    best
}

/// Protein-centric Fmax (CAFA) over sparse scores: `truth[i]` the annotated terms of protein
/// `i`, `scores[i]` its scored terms (absent: 0). Returns (Fmax, threshold) over thresholds
/// 0.01..0.99; proteins without annotations are skipped.
pub fn fmax_sparse(truth: &[HashSet<String>], scores: &[BTreeMap<String, f32>]) -> (f64, f32) {
    const STEPS: usize = 99;
    let mut precision_sum = [0f64; STEPS];
    let mut covered = [0usize; STEPS];
    let mut recall_sum = [0f64; STEPS];
    let mut proteins = 0usize;
    for (labels, s) in truth.iter().zip(scores) {
        if labels.is_empty() {
            continue;
        }
        proteins += 1;
        let (mut predicted, mut hits) = ([0usize; STEPS], [0usize; STEPS]);
        for (term, &score) in s {
            // Thresholds t/100 with t/100 <= score.
            let top = ((score * 100.0).floor() as usize).min(STEPS);
            let hit = labels.contains(term);
            for k in 0..top {
                predicted[k] += 1;
                hits[k] += usize::from(hit);
            }
        }
        for k in 0..STEPS {
            if predicted[k] > 0 {
                covered[k] += 1;
                precision_sum[k] += hits[k] as f64 / predicted[k] as f64;
            }
            recall_sum[k] += hits[k] as f64 / labels.len() as f64;
        }
    }
    let mut best = (0.0, 0.0f32);
    for k in 0..STEPS {
        if covered[k] == 0 || proteins == 0 {
            continue;
        }
        let p = precision_sum[k] / covered[k] as f64;
        let r = recall_sum[k] / proteins as f64;
        if p + r > 0.0 {
            let f = 2.0 * p * r / (p + r);
            if f > best.0 {
                best = (f, (k + 1) as f32 / 100.0);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auroc_by_hand() {
        // Positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) = 3/4.
        let a = auroc(&[0.8, 0.6, 0.4, 0.2], &[true, false, true, false]).unwrap();
        assert!((a - 0.75).abs() < 1e-12);
        // A tie between a positive and a negative counts half.
        let a = auroc(&[0.5, 0.5], &[true, false]).unwrap();
        assert!((a - 0.5).abs() < 1e-12);
        assert!(auroc(&[0.1, 0.2], &[true, true]).is_none());
    }

    #[test]
    fn aupr_by_hand() {
        // Ranked: P(0.9) N(0.8) P(0.7): AP = 0.5·1 + 0.5·(2/3) = 0.8333.
        let a = aupr(&[0.9, 0.8, 0.7], &[true, false, true]).unwrap();
        assert!((a - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        assert!(aupr(&[0.1], &[false]).is_none());
    }

    #[test]
    fn confusion_accuracy_and_mcc() {
        let c = Confusion::new(&[0.9, 0.6, 0.4, 0.1], &[true, false, true, false], 0.5);
        assert_eq!(
            c,
            Confusion {
                tp: 1,
                fp: 1,
                tn: 1,
                fn_: 1
            }
        );
        assert_eq!(c.accuracy(), 0.5);
        assert_eq!(c.mcc(), 0.0);
        let perfect = Confusion::new(&[0.9, 0.1], &[true, false], 0.5);
        assert_eq!(perfect.mcc(), 1.0);
    }

    #[test]
    fn weighted_prf_by_hand() {
        // Label a: support 2, tp 1, fp 0 -> P 1, R 0.5, F 2/3. Label b: support 1, tp 1, fp 1 ->
        // P 0.5, R 1, F 2/3. Weighted: P (2·1 + 0.5)/3, R (1 + 1)/3, F 2/3.
        let truth = vec![set(&["a"]), set(&["a"]), set(&["b"])];
        let pred = vec![set(&["a"]), set(&["b"]), set(&["b"])];
        let (p, r, f) = weighted_prf(&truth, &pred);
        assert!((p - 2.5 / 3.0).abs() < 1e-12);
        assert!((r - 2.0 / 3.0).abs() < 1e-12);
        assert!((f - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn fmax_by_hand() {
        // Protein 0 has {0}; protein 1 has {1}. At t ≤ 0.6: predictions {0},{0,1}: precision
        // (1 + 0.5)/2 = 0.75, recall 1 → F 0.857. At t in (0.6, 0.9]: {0},{}: P 1, R 0.5 → 0.667.
        let truth: Vec<HashSet<usize>> = vec![[0].into(), [1].into()];
        let scores = vec![vec![0.9, 0.1], vec![0.7, 0.6]];
        let (f, t) = fmax(&truth, &scores);
        assert!((f - 2.0 * 0.75 / 1.75).abs() < 1e-9, "{f}");
        assert!(t <= 0.6);
    }

    #[test]
    fn sparse_fmax_matches_dense_fmax() {
        let truth_idx: Vec<HashSet<usize>> = vec![
            [0, 1].into_iter().collect(),
            [2].into_iter().collect(),
            HashSet::new(),
        ];
        let dense = vec![
            vec![0.9, 0.35, 0.2, 0.0],
            vec![0.1, 0.5, 0.72, 0.3],
            vec![0.5, 0.5, 0.5, 0.5],
        ];
        let name = |k: usize| format!("T{k}");
        let truth: Vec<HashSet<String>> = truth_idx
            .iter()
            .map(|t| t.iter().map(|&k| name(k)).collect())
            .collect();
        let sparse: Vec<BTreeMap<String, f32>> = dense
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .filter(|(_, &s)| s > 0.0)
                    .map(|(k, &s)| (name(k), s))
                    .collect()
            })
            .collect();
        let (fd, td) = fmax(&truth_idx, &dense);
        let (fs, ts) = fmax_sparse(&truth, &sparse);
        assert!((fd - fs).abs() < 1e-9, "{fd} vs {fs}");
        assert_eq!(td, ts);
    }
}
