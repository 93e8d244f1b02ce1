//! Nearest-neighbour label transfer (the approach behind CLEAN and FANTASIA): a bank of pooled
//! embeddings of annotated training proteins; a query takes the labels of its nearest entries,
//! each scored by the cosine similarity of the closest entry carrying it.

use candle_core::Result as CandleResult;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::heads::TermVocabulary;

/// `heads.json` entry of a neighbour head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourHeadConfig {
    /// Width of the pooled features.
    pub input_dim: usize,
    /// Neighbours consulted.
    pub k: usize,
    /// The terms scored.
    #[serde(flatten)]
    pub terms: TermVocabulary,
    /// Label indices of each bank entry (rows of the `bank` tensor).
    pub entry_labels: Vec<Vec<u32>>,
}

/// A loaded bank.
#[derive(Debug, Clone)]
pub struct NeighbourHead {
    bank: Vec<f32>,
    dim: usize,
    k: usize,
    entry_labels: Vec<Vec<u32>>,
    n_labels: usize,
}

/// Scales `v` to unit length (zero vectors stay zero).
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 1e-12 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Label scores of one unit-length `query` against a bank of unit-length rows: each label
/// scores the (non-negative) similarity of the most similar of the `k` nearest entries that
/// carry it; labels of no neighbour score 0.
pub fn label_scores(
    bank: &[f32],
    dim: usize,
    entry_labels: &[Vec<u32>],
    query: &[f32],
    n_labels: usize,
    k: usize,
) -> Vec<f32> {
    let mut sims: Vec<(f32, usize)> = bank
        .chunks_exact(dim.max(1))
        .enumerate()
        .map(|(e, row)| (row.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), e))
        .collect();
    let k = k.min(sims.len());
    if k == 0 {
        return vec![0.0; n_labels];
    }
    sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut scores = vec![0f32; n_labels];
    for &(sim, e) in &sims[..k] {
        for &l in &entry_labels[e] {
            if let Some(s) = scores.get_mut(l as usize) {
                *s = s.max(sim.max(0.0));
            }
        }
    }
    scores
}

impl NeighbourHead {
    /// Loads the `bank` tensor (`entries × input_dim`, any float type).
    pub fn load(vb: VarBuilder, config: &NeighbourHeadConfig) -> CandleResult<Self> {
        let entries = config.entry_labels.len();
        let bank = vb
            .get((entries, config.input_dim), "bank")?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut head = Self {
            bank,
            dim: config.input_dim,
            k: config.k.max(1),
            entry_labels: config.entry_labels.clone(),
            n_labels: config.terms.labels.len(),
        };
        for row in head.bank.chunks_exact_mut(head.dim.max(1)) {
            normalise(row);
        }
        Ok(head)
    }

    /// Label scores of pooled features `x`.
    pub fn scores(&self, x: &[f32]) -> Vec<f32> {
        let mut q = x.to_vec();
        normalise(&mut q);
        label_scores(
            &self.bank,
            self.dim,
            &self.entry_labels,
            &q,
            self.n_labels,
            self.k,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_entries_give_their_labels_scored_by_similarity() {
        // Three entries in 2-D: along x (labels 0, 1), along y (label 2), diagonal (label 1).
        let mut bank = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        for row in bank.chunks_exact_mut(2) {
            normalise(row);
        }
        let labels = vec![vec![0, 1], vec![2], vec![1]];
        let mut q = vec![1.0, 0.1];
        normalise(&mut q);
        let s = label_scores(&bank, 2, &labels, &q, 3, 2);
        // k = 2: the x entry (sim ≈ 0.995) and the diagonal (≈ 0.778); not the y entry.
        assert!((s[0] - 0.995).abs() < 1e-3, "{s:?}");
        assert!((s[1] - 0.995).abs() < 1e-3, "{s:?}");
        assert_eq!(s[2], 0.0);
        let s1 = label_scores(&bank, 2, &labels, &q, 3, 1);
        assert_eq!(s1[2], 0.0);
        assert!(s1[0] > 0.99);
        // Opposite direction: similarities are clamped at zero.
        let s = label_scores(&bank, 2, &labels, &[-1.0, 0.0], 3, 3);
        assert!(s.iter().all(|&v| v == 0.0), "{s:?}");
    }
}
