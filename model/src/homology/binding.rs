//! Binding-site reference sets: protein chains with their binding residues per ligand type,
//! transferred to a query through its alignments to them (the template-based half of COACH /
//! S-SITE): each query residue aligned to template residues gets the share of those templates
//! (weighted by similarity) that bind the ligand there.

use std::path::Path;

use plm_align::{Hit, Reference};
use serde::{Deserialize, Serialize};

use super::{search, store, ReferenceFile};
use crate::error::{PlmError, Result};

/// File name of the binding-site reference set inside a reference directory.
pub fn binding_file() -> &'static str {
    "binding.plmref"
}

const TASK: &str = "binding";

/// Labels of one chain: for each ligand type it is annotated for, the sorted 0-based positions
/// of its binding residues (an annotated ligand with no positions: binds nowhere).
pub type ChainLabels = Vec<(u16, Vec<u32>)>;

/// The labels of a binding reference-set file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Labels {
    ligands: Vec<String>,
    labels: Vec<ChainLabels>,
}

/// Chains with binding residues, searchable.
#[derive(Debug)]
pub struct BindingReference {
    /// Where the chains and labels come from.
    pub source: String,
    /// Ligand types.
    pub ligands: Vec<String>,
    labels: Vec<ChainLabels>,
    proteins: Reference,
}

/// Binding scores of one query transferred from its hits.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingTransfer {
    /// For each ligand of the set, for each query residue: the similarity-weighted share of
    /// aligned template residues that bind the ligand; `None` where no template annotated for
    /// the ligand covers the residue.
    pub scores: Vec<Vec<Option<f32>>>,
}

fn valid(labels: &[ChainLabels], ligands: usize, lengths: impl Fn(usize) -> usize) -> bool {
    labels.iter().enumerate().all(|(i, chain)| {
        chain.iter().all(|(l, positions)| {
            (*l as usize) < ligands
                && positions.windows(2).all(|w| w[0] < w[1])
                && positions.last().is_none_or(|&p| (p as usize) < lengths(i))
        })
    })
}

impl BindingReference {
    /// Builds a set from `(accession, sequence, labels)`.
    pub fn build(
        source: &str,
        ligands: Vec<String>,
        chains: Vec<(String, String, ChainLabels)>,
    ) -> Result<Self> {
        if !valid(
            &chains.iter().map(|c| c.2.clone()).collect::<Vec<_>>(),
            ligands.len(),
            |i| chains[i].1.len(),
        ) {
            return Err(PlmError::Internal(
                "binding labels out of range or unsorted".into(),
            ));
        }
        let proteins = Reference::build(chains.iter().map(|(id, s, _)| (id.as_str(), s.as_str())))
            .map_err(|e| PlmError::InvalidArgument(e.to_string()))?;
        Ok(Self {
            source: source.into(),
            ligands,
            labels: chains.into_iter().map(|c| c.2).collect(),
            proteins,
        })
    }

    /// Chains in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no chains.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Chains annotated for ligand `l`.
    pub fn annotated(&self, l: usize) -> usize {
        self.labels
            .iter()
            .filter(|c| c.iter().any(|(x, _)| *x as usize == l))
            .count()
    }

    /// Writes the set to `path` (deterministic bytes).
    pub fn save(&self, path: &Path) -> Result<()> {
        let labels = Labels {
            ligands: self.ligands.clone(),
            labels: self.labels.clone(),
        };
        store::save(path, TASK, &self.source, &labels, &self.proteins)
    }

    /// Parses the bytes of a binding reference-set file.
    pub fn from_file_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let opened: store::Opened<Labels> = store::open(bytes, |t| t == TASK)?;
        let (l, proteins) = (opened.labels, opened.proteins);
        if proteins.len() != l.labels.len()
            || !valid(&l.labels, l.ligands.len(), |i| proteins.sequence_len(i))
        {
            return Err("labels do not match the chains".into());
        }
        Ok(Self {
            source: opened.source,
            ligands: l.ligands,
            labels: l.labels,
            proteins,
        })
    }

    /// Similar chains of `query`, best first, with their aligned positions.
    pub fn search(&self, query: &str) -> Result<Vec<Hit>> {
        search(&self.proteins, query, true)
    }

    /// Per-residue scores of a query of `length` residues from its `hits` (found by
    /// [`BindingReference::search`]), each hit weighing `identity^sharpness`.
    pub fn transfer(&self, length: usize, hits: &[Hit], sharpness: f32) -> BindingTransfer {
        let mut bound = vec![vec![0f64; length]; self.ligands.len()];
        let mut covered = vec![vec![0f64; length]; self.ligands.len()];
        for hit in hits {
            let w = hit
                .identity
                .clamp(0.0, 1.0)
                .powf(f64::from(sharpness.max(0.0)));
            let Some(chain) = self.labels.get(hit.target_index) else {
                continue;
            };
            for (l, positions) in chain {
                let l = *l as usize;
                for &(q, t) in &hit.pairs {
                    let q = q as usize;
                    if q >= length {
                        continue;
                    }
                    covered[l][q] += w;
                    if positions.binary_search(&t).is_ok() {
                        bound[l][q] += w;
                    }
                }
            }
        }
        let scores = bound
            .iter()
            .zip(&covered)
            .map(|(b, c)| {
                b.iter()
                    .zip(c)
                    .map(|(b, c)| (*c > 0.0).then(|| (b / c).min(1.0) as f32))
                    .collect()
            })
            .collect();
        BindingTransfer { scores }
    }
}

impl ReferenceFile for BindingReference {
    fn load(path: &Path) -> Result<Self> {
        store::load(path, Self::from_file_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::homology::fixtures::{A, B};

    fn set() -> BindingReference {
        BindingReference::build(
            "test",
            vec!["ZN".into(), "DNA".into()],
            vec![
                ("PA".into(), A.into(), vec![(0, vec![3, 4, 10])]),
                ("PB".into(), B.into(), vec![(0, vec![]), (1, vec![0])]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_template_transfers_its_residues_through_the_alignment() {
        let r = set();
        // The query is A with five residues in front: positions shift by five.
        let query = format!("GGGGG{A}");
        let hits = r.search(&query).unwrap();
        assert_eq!(hits[0].target_id, "PA");
        let t = r.transfer(query.len(), &hits, 1.0);
        let zn = &t.scores[0];
        assert_eq!(zn[8], Some(1.0));
        assert_eq!(zn[15], Some(1.0));
        assert_eq!(zn[9], Some(1.0));
        assert_eq!(zn[10], Some(0.0));
        assert_eq!(zn[0], None, "not aligned");
        // PA is not annotated for DNA: no information, not a negative.
        assert!(t.scores[1].iter().all(Option::is_none));
    }

    #[test]
    fn unrelated_queries_get_nothing_and_files_round_trip() {
        let r = set();
        let q = "WWWWCCCCHHHHWWWWCCCC";
        let t = r.transfer(q.len(), &r.search(q).unwrap(), 1.0);
        assert!(t.scores.iter().flatten().all(Option::is_none));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(binding_file());
        r.save(&path).unwrap();
        let back = BindingReference::load(&path).unwrap();
        assert_eq!(
            (back.len(), back.annotated(0), back.annotated(1)),
            (2, 2, 1)
        );
        let bad = BindingReference::build(
            "t",
            vec!["ZN".into()],
            vec![("PA".into(), "MKT".into(), vec![(0, vec![5])])],
        );
        assert!(bad.is_err());
    }
}
