//! A supervised contrastive projection of frozen pooled features (CLEAN's recipe for EC
//! numbers): a small MLP trained so that proteins sharing a label are close in cosine
//! similarity and the rest of the batch is far, then searched as a neighbour bank.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use plm_model::neighbours::{Projection, ProjectionConfig};
use rand::{Rng, SeedableRng};

use super::rows_tensor;
use super::train::{train_head, HeadTraining, TrainReport};

/// Temperature of the contrastive softmax. CLEAN's SupCon-Hard uses 0.1 on ESM-1b; on
/// `plm-default`'s features 0.2 with a learning rate of 1e-4 scored best on the EC validation
/// split of the choices tried (0.05, 0.1, 0.2, 0.3 × 1e-3, 3e-4, 1e-4).
pub const TEMPERATURE: f64 = 0.2;

/// AdamW learning rate of the projection (the MLP heads use 1e-3, which overfits here).
pub const LEARNING_RATE: f64 = 1e-4;

/// A trained projection, its variables (named `projection.*`) and the training record.
pub struct FittedProjection {
    /// The variables, for saving under the head's prefix.
    pub varmap: VarMap,
    /// The loaded projection.
    pub projection: Projection,
    /// Epochs, losses and the kept epoch.
    pub report: TrainReport,
}

/// Trains a projection of `x` on the items `train` (labels `y`); `validate` scores a candidate
/// projection (higher is better) and decides the epoch kept. Each batch of anchors is joined
/// by one random partner per anchor that shares a label with it, so that most anchors have a
/// positive (labels carried by a single training item give none and serve only as negatives).
pub fn fit(
    what: &str,
    x: &[Vec<f32>],
    y: &[Vec<usize>],
    train: &[usize],
    config: &ProjectionConfig,
    training: &HeadTraining,
    mut validate: impl FnMut(&Projection) -> Result<f64>,
) -> Result<FittedProjection> {
    let varmap = VarMap::new();
    let input_dim = x.first().map_or(0, Vec::len);
    let projection = Projection::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp("projection"),
        input_dim,
        config,
    )?;
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in train {
        for &l in &y[i] {
            members.entry(l).or_default().push(i);
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(training.seed ^ 0xc1ea);
    let training = HeadTraining {
        lr: LEARNING_RATE,
        ..training.clone()
    };
    let report = train_head(
        what,
        &varmap,
        &training,
        train.len(),
        |batch| {
            let anchors: Vec<usize> = batch.iter().map(|&b| train[b]).collect();
            let mut items = anchors.clone();
            for &anchor in &anchors {
                let partners: Vec<usize> = y[anchor]
                    .iter()
                    .flat_map(|l| &members[l])
                    .copied()
                    .filter(|&p| p != anchor)
                    .collect();
                if !partners.is_empty() {
                    items.push(partners[rng.random_range(0..partners.len())]);
                }
            }
            let z = projection.forward(&rows_tensor(x, &items)?)?;
            let labels: Vec<&[usize]> = items.iter().map(|&i| y[i].as_slice()).collect();
            supervised_contrastive_loss(&z, &labels, TEMPERATURE)
        },
        || validate(&projection),
    )?;
    eprintln!(
        "{what}: kept epoch {} (validation {:.3})",
        report.best_epoch, report.best_validation
    );
    Ok(FittedProjection {
        varmap,
        projection,
        report,
    })
}

/// Projected rows `idx` of `x`, each of unit length.
pub fn project(projection: &Projection, x: &[Vec<f32>], idx: &[usize]) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(512) {
        let rows = projection
            .forward(&rows_tensor(x, chunk)?)?
            .to_vec2::<f32>()
            .context("projecting features")?;
        for mut row in rows {
            plm_model::neighbours::normalise(&mut row);
            out.push(row);
        }
    }
    Ok(out)
}

/// Supervised contrastive loss (Khosla et al. 2020, "L_out"): for each row `i` with at least
/// one positive (another row sharing a label), the mean over its positives `p` of
/// `−log softmax_{j≠i}(zᵢ·zⱼ/τ)[p]` on unit-length rows; averaged over those rows.
pub fn supervised_contrastive_loss(
    z: &Tensor,
    labels: &[&[usize]],
    temperature: f64,
) -> Result<Tensor> {
    let n = labels.len();
    let norm = z
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-6, f64::MAX)?;
    let z = z.broadcast_div(&norm)?;
    let logits = (z.matmul(&z.t()?)? / temperature)?;
    // A row is never its own candidate: −∞ would make 0·(−∞) NaN below, so a large negative.
    let mut diagonal = vec![0f32; n * n];
    let mut positives = vec![0f32; n * n];
    let mut weights = vec![0f32; n];
    for i in 0..n {
        diagonal[i * n + i] = -1e4;
        let count = (0..n)
            .filter(|&j| j != i && labels[i].iter().any(|l| labels[j].contains(l)))
            .inspect(|&j| positives[i * n + j] = 1.0)
            .count();
        if count > 0 {
            for j in 0..n {
                positives[i * n + j] /= count as f32;
            }
            weights[i] = 1.0;
        }
    }
    let anchors = weights.iter().sum::<f32>().max(1.0);
    let logits = (logits + Tensor::from_vec(diagonal, (n, n), &Device::Cpu)?)?;
    let log_prob = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let per_anchor = (log_prob * Tensor::from_vec(positives, (n, n), &Device::Cpu)?)?.sum(1)?;
    let weighted = (per_anchor * Tensor::from_vec(weights, n, &Device::Cpu)?)?.sum_all()?;
    Ok((weighted.neg()? / anchors as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(rows: &[[f32; 2]], labels: &[&[usize]]) -> f32 {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let z = Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap();
        supervised_contrastive_loss(&z, labels, 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn matches_the_definition_on_three_rows() {
        // Rows 0 and 1 share label 7; row 2 has no positive and is only a negative.
        let rows = [[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]];
        let got = loss(&rows, &[&[7], &[7, 9], &[3]]);
        // Unit rows: z0 = (1, 0), z1 = (0.6, 0.8), z2 = (0, 1); τ = 1.
        let (s01, s02, s12) = (0.6f32, 0.0f32, 0.8f32);
        let anchor0 = -(s01 - (s01.exp() + s02.exp()).ln());
        let anchor1 = -(s01 - (s01.exp() + s12.exp()).ln());
        let want = (anchor0 + anchor1) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn is_lower_when_positives_are_together() {
        let labels: [&[usize]; 4] = [&[0], &[0], &[1], &[1]];
        let together = loss(&[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]], &labels);
        let apart = loss(&[[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]], &labels);
        assert!(together < apart, "{together} {apart}");
        // No row with a positive: nothing to learn, and no NaN.
        assert_eq!(loss(&[[1.0, 0.0], [0.0, 1.0]], &[&[0], &[1]]), 0.0);
    }
}
