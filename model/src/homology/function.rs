//! Function reference sets: proteins with EC numbers or GO terms, whose labels are transferred
//! to a query from its hits.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use plm_align::{Hit, Reference};
use serde::{Deserialize, Serialize};

use super::{search, store, ReferenceFile};
use crate::error::{PlmError, Result};

/// File name of an ontology's reference set inside a reference directory.
pub fn function_file(ontology: &str) -> String {
    format!("function_{ontology}.plmref")
}

/// The labels of a function reference-set file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Labels {
    /// Term identifiers.
    terms: Vec<String>,
    /// Term names, parallel to `terms`.
    names: Vec<String>,
    /// Indices into `terms` of each protein's labels (GO: propagated to the root).
    labels: Vec<Vec<u32>>,
}

/// Proteins with function labels, searchable.
#[derive(Debug)]
pub struct FunctionReference {
    /// What the labels are (`ec`, `go_mf`, ...).
    pub task: String,
    /// Where the proteins and labels come from.
    pub source: String,
    /// Term identifiers.
    pub terms: Vec<String>,
    /// Term names.
    pub names: Vec<String>,
    labels: Vec<Vec<u32>>,
    proteins: Reference,
}

/// Label scores of one query transferred from its hits.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// Score in [0, 1] of each term index with support.
    pub scores: BTreeMap<u32, f32>,
    /// For each supported term: the best hit carrying it (accession, identity).
    pub evidence: HashMap<u32, (String, f32)>,
}

impl FunctionReference {
    /// Builds a reference set from `(accession, sequence, label indices)`.
    pub fn build(
        task: &str,
        source: &str,
        terms: Vec<String>,
        names: Vec<String>,
        proteins: Vec<(String, String, Vec<u32>)>,
    ) -> Result<Self> {
        if names.len() != terms.len() {
            return Err(PlmError::Internal(
                "names and terms differ in length".into(),
            ));
        }
        if proteins
            .iter()
            .any(|(_, _, l)| l.iter().any(|&t| t as usize >= terms.len()))
        {
            return Err(PlmError::Internal("a label index is out of range".into()));
        }
        let reference =
            Reference::build(proteins.iter().map(|(id, s, _)| (id.as_str(), s.as_str())))
                .map_err(|e| PlmError::InvalidArgument(e.to_string()))?;
        Ok(Self {
            task: task.into(),
            source: source.into(),
            terms,
            names,
            labels: proteins.into_iter().map(|(_, _, l)| l).collect(),
            proteins: reference,
        })
    }

    /// Proteins in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no proteins.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Label indices of protein `i`.
    pub fn labels(&self, i: usize) -> &[u32] {
        self.labels.get(i).map_or(&[], Vec::as_slice)
    }

    /// The searchable proteins.
    pub fn proteins(&self) -> &Reference {
        &self.proteins
    }

    /// Writes the set to `path` (deterministic bytes).
    pub fn save(&self, path: &Path) -> Result<()> {
        let labels = Labels {
            terms: self.terms.clone(),
            names: self.names.clone(),
            labels: self.labels.clone(),
        };
        store::save(path, &self.task, &self.source, &labels, &self.proteins)
    }

    /// Reads a set written by [`FunctionReference::save`].
    pub fn load(path: &Path) -> Result<Self> {
        store::load(path, Self::from_file_bytes)
    }

    /// Parses the bytes of a reference-set file; the error says what is wrong with them.
    pub fn from_file_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let opened: store::Opened<Labels> =
            store::open(bytes, |t| t == "ec" || t.starts_with("go_"))?;
        let l = opened.labels;
        if opened.proteins.len() != l.labels.len()
            || l.names.len() != l.terms.len()
            || l.labels
                .iter()
                .any(|p| p.iter().any(|&t| t as usize >= l.terms.len()))
        {
            return Err("labels do not match the proteins".into());
        }
        Ok(Self {
            task: opened.task,
            source: opened.source,
            terms: l.terms,
            names: l.names,
            labels: l.labels,
            proteins: opened.proteins,
        })
    }

    /// Similar proteins of `query`, best first (at most `MAX_HITS`, E-value ≤ `MAX_EVALUE`).
    pub fn search(&self, query: &str) -> Result<Vec<Hit>> {
        search(&self.proteins, query, false)
    }

    /// DeepGOPlus' homology score, sharpened: for each term, the weights of the hits carrying
    /// it over the weights of all hits, a hit weighing `(bit score / best bit score)^sharpness`
    /// (1: DeepGOPlus; larger values trust the closest homologs more). With propagated labels
    /// a term never scores below its descendants.
    pub fn transfer(&self, hits: &[Hit], sharpness: f32) -> Transfer {
        let top = hits.iter().map(|h| h.bit_score).fold(0.0f64, f64::max);
        let weight = |h: &Hit| {
            if top > 0.0 {
                (h.bit_score.max(0.0) / top).powf(f64::from(sharpness.max(0.0)))
            } else {
                0.0
            }
        };
        let total: f64 = hits.iter().map(weight).sum();
        let mut sums: BTreeMap<u32, f64> = BTreeMap::new();
        let mut evidence: HashMap<u32, (String, f32)> = HashMap::new();
        for hit in hits {
            for &t in self.labels(hit.target_index) {
                *sums.entry(t).or_default() += weight(hit);
                // Hits come best first: the first carrying a term is its best template.
                evidence
                    .entry(t)
                    .or_insert_with(|| (hit.target_id.clone(), hit.identity as f32));
            }
        }
        let scores = if total > 0.0 {
            sums.into_iter()
                .map(|(t, s)| (t, (s / total).min(1.0) as f32))
                .collect()
        } else {
            BTreeMap::new()
        };
        Transfer { scores, evidence }
    }
}

impl ReferenceFile for FunctionReference {
    fn load(path: &Path) -> Result<Self> {
        FunctionReference::load(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::homology::fixtures::{A, B};

    fn set() -> FunctionReference {
        FunctionReference::build(
            "go_mf",
            "test",
            vec!["GO:1".into(), "GO:2".into(), "GO:3".into()],
            vec!["one".into(), "two".into(), "three".into()],
            vec![
                ("PA".into(), A.into(), vec![0, 1]),
                ("PB".into(), B.into(), vec![0, 2]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn an_exact_match_recovers_its_own_labels() {
        let r = set();
        let hits = r.search(A).unwrap();
        assert_eq!(hits[0].target_id, "PA");
        let t = r.transfer(&hits, 1.0);
        assert_eq!(t.scores.get(&1), Some(&1.0));
        assert!(!t.scores.contains_key(&2));
        assert_eq!(t.evidence[&1].0, "PA");
        assert!((t.evidence[&1].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn unrelated_queries_get_nothing() {
        let r = set();
        let hits = r.search("WWWWCCCCHHHHWWWWCCCC").unwrap();
        assert!(hits.is_empty());
        assert!(r.transfer(&hits, 1.0).scores.is_empty());
    }

    #[test]
    fn saved_sets_read_back_and_corrupt_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(function_file("go_mf"));
        let r = set();
        r.save(&path).unwrap();
        let first = std::fs::read(&path).unwrap();
        r.save(&path).unwrap();
        assert_eq!(first, std::fs::read(&path).unwrap(), "deterministic bytes");
        let back = FunctionReference::load(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.labels(1), &[0, 2]);
        std::fs::write(&path, &first[..first.len() / 2]).unwrap();
        assert!(FunctionReference::load(&path).is_err());
    }
}
