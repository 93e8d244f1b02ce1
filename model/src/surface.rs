//! The protein-interface prior of a supplied structure.
//!
//! Residues in protein–protein interfaces sit on the surface, in exposed patches. How buried a
//! residue is can be read from C-alpha geometry alone: how many C-alpha atoms lie within 8, 10,
//! 12 and 14 Å of its own (a half-sphere-exposure-like count), the same counts averaged over
//! its spatial neighbourhood (patches), and how far it is from a chain end. A logistic
//! regression over these ([`InterfacePrior`]), fitted on interface labels of experimental
//! structures, scores every residue the structure resolves; `plm_binding_sites` blends it with
//! the GNN's protein-interface scores when a structure is given.

use serde::{Deserialize, Serialize};

use crate::error::{PlmError, Result};
use crate::structure::ChainTrace;

/// Radii (Å) of the neighbour counts.
pub const RADII: [f32; 4] = [8.0, 10.0, 12.0, 14.0];

/// Radius (Å) of the neighbourhood the counts are averaged over.
const PATCH_RADIUS: f32 = 10.0;

/// Residues from a chain end beyond which the terminus feature saturates.
const TERMINUS_SPAN: f32 = 20.0;

/// Features per residue: four counts, four patch means, terminus distance, log chain length.
pub const FEATURES: usize = 2 * RADII.len() + 2;

/// A C-alpha pair closer than the largest radius: residue indices (0-based) and distance in Å.
pub type CaPair = (usize, usize, f32);

/// The C-alpha geometry of a chain as far as the features need it: pairs under the largest
/// radius, by sequence position, and which positions the structure resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainGeometry {
    /// Residues of the sequence.
    pub length: usize,
    /// C-alpha pairs under the largest feature radius (and any longer ones asked for), each
    /// once.
    pub pairs: Vec<CaPair>,
    /// Whether each position has coordinates.
    pub resolved: Vec<bool>,
}

impl ChainGeometry {
    /// The geometry of a structure's chain whose residues were mapped to sequence positions
    /// with [`crate::structure::map_to_sequence`], keeping pairs up to `radius` Å or the
    /// largest feature radius, whichever is larger (a residue graph may need longer contacts
    /// than the features).
    pub fn from_trace(
        length: usize,
        trace: &ChainTrace,
        mapping: &[Option<usize>],
        radius: f64,
    ) -> Self {
        let mapped: Vec<(usize, usize)> = mapping
            .iter()
            .enumerate()
            .filter_map(|(k, m)| m.filter(|&p| p < length).map(|p| (k, p)))
            .collect();
        let mut resolved = vec![false; length];
        let mut pairs = Vec::new();
        let feature_radius = f64::from(RADII[RADII.len() - 1]);
        for (a, &(ka, pa)) in mapped.iter().enumerate() {
            resolved[pa] = true;
            for &(kb, pb) in &mapped[a + 1..] {
                let d = trace.distance(ka, kb);
                if (d < feature_radius || d <= radius) && pa != pb {
                    pairs.push((pa, pb, d as f32));
                }
            }
        }
        Self {
            length,
            pairs,
            resolved,
        }
    }

    /// The geometry given by C-alpha pairs under 14 Å (as in GraphPPIS' contact files): a
    /// residue in no pair has no coordinates (a resolved one always has its chain neighbours
    /// at 3.8 Å).
    pub fn from_pairs(length: usize, pairs: Vec<CaPair>) -> Self {
        let mut resolved = vec![false; length];
        for &(i, j, _) in &pairs {
            for k in [i, j] {
                if let Some(r) = resolved.get_mut(k) {
                    *r = true;
                }
            }
        }
        Self {
            length,
            pairs,
            resolved,
        }
    }

    /// The pairs closer than `cutoff` Å, for a residue graph.
    pub fn contacts(&self, cutoff: f64) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.pairs
            .iter()
            .filter(move |&&(_, _, d)| f64::from(d) <= cutoff)
            .map(|&(i, j, _)| (i, j))
    }

    /// [`residue_features`] of this chain.
    pub fn features(&self) -> Result<Vec<Option<[f32; FEATURES]>>> {
        residue_features(self.length, &self.pairs, &self.resolved)
    }
}

/// The geometric features of each residue of a chain of `length` residues from its C-alpha
/// pairs under 14 Å (`pairs`, each once, in any order); `resolved[i]` says whether residue `i`
/// has coordinates. Unresolved residues get `None`.
pub fn residue_features(
    length: usize,
    pairs: &[CaPair],
    resolved: &[bool],
) -> Result<Vec<Option<[f32; FEATURES]>>> {
    if resolved.len() != length {
        return Err(PlmError::Internal(format!(
            "{} resolved flags for {length} residues",
            resolved.len()
        )));
    }
    let mut counts = vec![[0f32; RADII.len()]; length];
    let mut patch: Vec<Vec<usize>> = (0..length).map(|i| vec![i]).collect();
    for &(i, j, d) in pairs {
        if i >= length || j >= length || i == j || !d.is_finite() {
            return Err(PlmError::Internal(format!(
                "C-alpha pair ({i}, {j}, {d}) outside a chain of {length} residues"
            )));
        }
        for (r, &radius) in RADII.iter().enumerate() {
            if d < radius {
                counts[i][r] += 1.0;
                counts[j][r] += 1.0;
            }
        }
        if d < PATCH_RADIUS {
            patch[i].push(j);
            patch[j].push(i);
        }
    }
    let log_length = (length.max(1) as f32).ln();
    Ok((0..length)
        .map(|i| {
            if !resolved[i] {
                return None;
            }
            let mut f = [0f32; FEATURES];
            f[..RADII.len()].copy_from_slice(&counts[i]);
            let members = &patch[i];
            for r in 0..RADII.len() {
                let sum: f32 = members.iter().map(|&k| counts[k][r]).sum();
                f[RADII.len() + r] = sum / members.len() as f32;
            }
            let from_end = i.min(length - 1 - i) as f32;
            f[2 * RADII.len()] = from_end.min(TERMINUS_SPAN) / TERMINUS_SPAN;
            f[2 * RADII.len() + 1] = log_length;
            Some(f)
        })
        .collect())
}

/// Logistic regression over standardised [`residue_features`], with the weight of its score
/// in the blend with the GNN. Stored in `heads.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfacePrior {
    /// Feature means of the training residues.
    pub mean: Vec<f32>,
    /// Feature standard deviations of the training residues.
    pub scale: Vec<f32>,
    /// Weights over standardised features.
    pub weights: Vec<f32>,
    /// Intercept.
    pub bias: f32,
    /// Weight of the prior in `α·prior + (1−α)·GNN` on resolved residues.
    pub alpha: f32,
    /// The binding-head ligand columns it applies to (protein interfaces: `PPI`).
    pub ligands: Vec<String>,
}

impl InterfacePrior {
    /// Fits the regression by full-batch gradient descent on `features` and 0/1 `labels`
    /// (deterministic); `alpha` starts at 1 (see [`InterfacePrior::with_alpha`]).
    pub fn fit(features: &[[f32; FEATURES]], labels: &[bool]) -> Result<Self> {
        if features.is_empty() || features.len() != labels.len() {
            return Err(PlmError::InvalidArgument(format!(
                "{} feature rows and {} labels",
                features.len(),
                labels.len()
            )));
        }
        let n = features.len() as f64;
        let mut mean = [0f64; FEATURES];
        let mut var = [0f64; FEATURES];
        for f in features {
            for k in 0..FEATURES {
                mean[k] += f64::from(f[k]) / n;
            }
        }
        for f in features {
            for k in 0..FEATURES {
                var[k] += (f64::from(f[k]) - mean[k]).powi(2) / n;
            }
        }
        let scale: Vec<f64> = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
        let x: Vec<[f64; FEATURES]> = features
            .iter()
            .map(|f| std::array::from_fn(|k| (f64::from(f[k]) - mean[k]) / scale[k]))
            .collect();
        let (mut w, mut b) = ([0f64; FEATURES], 0f64);
        for _ in 0..2000 {
            let (mut gw, mut gb) = ([0f64; FEATURES], 0f64);
            for (xi, &yi) in x.iter().zip(labels) {
                let z: f64 = b + xi.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>();
                let err = 1.0 / (1.0 + (-z).exp()) - f64::from(u8::from(yi));
                gb += err;
                for k in 0..FEATURES {
                    gw[k] += err * xi[k];
                }
            }
            b -= 0.5 * gb / n;
            for k in 0..FEATURES {
                w[k] -= 0.5 * gw[k] / n;
            }
        }
        Ok(Self {
            mean: mean.iter().map(|&v| v as f32).collect(),
            scale: scale.iter().map(|&v| v as f32).collect(),
            weights: w.iter().map(|&v| v as f32).collect(),
            bias: b as f32,
            alpha: 1.0,
            ligands: vec!["PPI".to_string()],
        })
    }

    /// The same regression blended with weight `alpha`.
    pub fn with_alpha(self, alpha: f32) -> Self {
        Self { alpha, ..self }
    }

    /// Whether the stored values make a usable prior (right widths, finite, α in `[0, 1]`).
    pub fn is_valid(&self) -> bool {
        [&self.mean, &self.scale, &self.weights]
            .iter()
            .all(|v| v.len() == FEATURES && v.iter().all(|x| x.is_finite()))
            && self.scale.iter().all(|&s| s > 0.0)
            && self.bias.is_finite()
            && (0.0..=1.0).contains(&self.alpha)
    }

    /// The interface probability of a residue with features `f`.
    pub fn score(&self, f: &[f32; FEATURES]) -> f32 {
        let z: f32 = self.bias
            + f.iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.weights)
                .map(|(((x, m), s), w)| (x - m) / s * w)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }

    /// `α·prior + (1−α)·model` on resolved residues, `model` elsewhere.
    pub fn blend(&self, model: &[f32], features: &[Option<[f32; FEATURES]>]) -> Vec<f32> {
        model
            .iter()
            .zip(features)
            .map(|(&m, f)| match f {
                Some(f) => self.alpha * self.score(f) + (1.0 - self.alpha) * m,
                None => m,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact "core" of residues 0..6 all within 6 Å of each other, and residues 6..10
    /// strung out 20 Å apart (exposed).
    fn toy() -> (usize, Vec<CaPair>) {
        let mut pairs = Vec::new();
        for i in 0..6 {
            for j in i + 1..6 {
                pairs.push((i, j, 6.0));
            }
        }
        pairs.push((5, 6, 9.0));
        (10, pairs)
    }

    #[test]
    fn buried_residues_count_more_neighbours_than_exposed_ones() {
        let (n, pairs) = toy();
        let mut resolved = vec![true; n];
        resolved[9] = false;
        let f = residue_features(n, &pairs, &resolved).unwrap();
        let core = f[2].unwrap();
        let exposed = f[8].unwrap();
        assert_eq!(core[0], 5.0, "five neighbours within 8 Å");
        assert_eq!(exposed[..RADII.len()], [0.0; 4]);
        assert_eq!(f[6].unwrap()[..RADII.len()], [0.0, 1.0, 1.0, 1.0]);
        assert!(f[9].is_none(), "unresolved residues have no features");
        assert_eq!(core[2 * RADII.len()], 2.0 / TERMINUS_SPAN);
        assert!(residue_features(n, &[(0, 12, 5.0)], &resolved).is_err());
        assert!(residue_features(n, &pairs, &resolved[..3]).is_err());
    }

    #[test]
    fn the_fitted_prior_ranks_exposed_residues_higher_and_blends_only_where_resolved() {
        let (n, pairs) = toy();
        let resolved = vec![true; n];
        let f: Vec<[f32; FEATURES]> = residue_features(n, &pairs, &resolved)
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        let labels: Vec<bool> = (0..n).map(|i| i >= 6).collect();
        let prior = InterfacePrior::fit(&f, &labels).unwrap().with_alpha(0.5);
        assert!(prior.is_valid());
        assert!(prior.score(&f[8]) > prior.score(&f[2]));
        let model = vec![0.2; 3];
        let features = vec![Some(f[8]), None, Some(f[2])];
        let blended = prior.blend(&model, &features);
        assert_eq!(blended[1], 0.2);
        assert!((blended[0] - (0.5 * prior.score(&f[8]) + 0.1)).abs() < 1e-6);
        let broken = InterfacePrior {
            alpha: 2.0,
            ..prior.clone()
        };
        assert!(!broken.is_valid());
        assert!(InterfacePrior::fit(&f, &labels[..3]).is_err());
    }
}
