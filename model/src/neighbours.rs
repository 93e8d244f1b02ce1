//! Nearest-neighbour label transfer (the approach behind CLEAN and FANTASIA): a bank of pooled
//! embeddings of annotated training proteins; a query takes the labels of its nearest entries,
//! each scored by the cosine similarity of the closest entry carrying it. A bank may live in a
//! learned [`Projection`] of the features (CLEAN's supervised contrastive embedding), where
//! proteins that share a label sit close together.

use candle_core::{Device, Module, Result as CandleResult, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
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
    /// The learned space of the bank, when there is one (absent: the features themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionConfig>,
}

impl NeighbourHeadConfig {
    /// Width of the bank's rows: the projection's output, or the features'.
    pub fn bank_dim(&self) -> usize {
        self.projection
            .as_ref()
            .map_or(self.input_dim, |p| p.output)
    }
}

/// Shape of a [`Projection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionConfig {
    /// Width of the hidden layer.
    pub hidden: usize,
    /// Width of the space the bank lives in.
    pub output: usize,
}

/// A two-layer MLP `output(gelu(hidden(x)))` that maps pooled features into the space of a
/// neighbour bank; trained so that proteins sharing a label are near (cosine) and others far.
#[derive(Debug, Clone)]
pub struct Projection {
    hidden: Linear,
    output: Linear,
}

impl Projection {
    /// Loads `hidden` and `output` linear layers for features of width `input_dim`.
    pub fn load(vb: VarBuilder, input_dim: usize, config: &ProjectionConfig) -> CandleResult<Self> {
        Ok(Self {
            hidden: linear(input_dim, config.hidden, vb.pp("hidden"))?,
            output: linear(config.hidden, config.output, vb.pp("output"))?,
        })
    }

    /// Projected rows `[B, output]` of features `[B, input_dim]` (not normalised).
    pub fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        self.output.forward(&self.hidden.forward(x)?.gelu_erf()?)
    }
}

/// A loaded bank.
#[derive(Debug, Clone)]
pub struct NeighbourHead {
    bank: Vec<f32>,
    dim: usize,
    k: usize,
    entry_labels: Vec<Vec<u32>>,
    n_labels: usize,
    projection: Option<Projection>,
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
    /// Loads the `bank` tensor (`entries × bank_dim`, any float type) and the projection, if
    /// the bank has one.
    pub fn load(vb: VarBuilder, config: &NeighbourHeadConfig) -> CandleResult<Self> {
        let entries = config.entry_labels.len();
        let projection = config
            .projection
            .as_ref()
            .map(|p| Projection::load(vb.pp("projection"), config.input_dim, p))
            .transpose()?;
        let bank = vb
            .get((entries, config.bank_dim()), "bank")?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut head = Self {
            bank,
            dim: config.bank_dim(),
            k: config.k.max(1),
            entry_labels: config.entry_labels.clone(),
            n_labels: config.terms.labels.len(),
            projection,
        };
        for row in head.bank.chunks_exact_mut(head.dim.max(1)) {
            normalise(row);
        }
        Ok(head)
    }

    /// Label scores of pooled features `x`.
    pub fn scores(&self, x: &[f32]) -> CandleResult<Vec<f32>> {
        let mut q = match &self.projection {
            Some(p) => p
                .forward(&Tensor::from_slice(x, (1, x.len()), &Device::Cpu)?)?
                .squeeze(0)?
                .to_vec1::<f32>()?,
            None => x.to_vec(),
        };
        normalise(&mut q);
        Ok(label_scores(
            &self.bank,
            self.dim,
            &self.entry_labels,
            &q,
            self.n_labels,
            self.k,
        ))
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

    #[test]
    fn a_projected_bank_is_searched_in_the_projection() {
        use candle_core::DType;
        use candle_nn::VarMap;
        let config = NeighbourHeadConfig {
            input_dim: 5,
            k: 1,
            terms: TermVocabulary {
                labels: vec!["1.1.1.1".into(), "2.7.11.1".into(), "3.1.1.1".into()],
                names: vec![String::new(); 3],
                ancestors: vec![],
            },
            entry_labels: vec![vec![0], vec![1], vec![2]],
            projection: Some(ProjectionConfig {
                hidden: 8,
                output: 3,
            }),
        };
        assert_eq!(config.bank_dim(), 3);
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let projection =
            Projection::load(vb.pp("projection"), 5, config.projection.as_ref().unwrap()).unwrap();
        // The bank holds the projections of three feature rows.
        let features = Tensor::randn(0f32, 1.0, (3, 5), &Device::Cpu).unwrap();
        let bank = projection.forward(&features).unwrap();
        map.data()
            .lock()
            .unwrap()
            .insert("bank".into(), candle_core::Var::from_tensor(&bank).unwrap());
        let head = NeighbourHead::load(vb, &config).unwrap();
        let rows = features.to_vec2::<f32>().unwrap();
        for (entry, row) in rows.iter().enumerate() {
            let s = head.scores(row).unwrap();
            // Each entry's own features find it (similarity 1), and k = 1 gives no other label.
            assert!((s[entry] - 1.0).abs() < 1e-5, "{entry}: {s:?}");
            assert_eq!(s.iter().filter(|&&v| v > 0.0).count(), 1, "{s:?}");
        }
        // A bank of the wrong width for the projection is an error, not a silent mismatch.
        let wrong = NeighbourHeadConfig {
            projection: Some(ProjectionConfig {
                hidden: 8,
                output: 4,
            }),
            ..config
        };
        let map = VarMap::new();
        map.data()
            .lock()
            .unwrap()
            .insert("bank".into(), candle_core::Var::from_tensor(&bank).unwrap());
        assert!(NeighbourHead::load(
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
            &wrong
        )
        .is_err());
    }
}
