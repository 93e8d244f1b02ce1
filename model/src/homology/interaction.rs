//! Interaction reference sets: proteins and their known interacting pairs, for *interolog*
//! transfer (Walhout et al. 2000; Yu et al. 2004): two query proteins are predicted to
//! interact when homologs of each are a known interacting pair, with a score that falls with
//! the distance of those homologs.

use std::collections::HashMap;
use std::path::Path;

use plm_align::{Hit, Reference};

use super::{search, store, ReferenceFile};
use crate::error::{PlmError, Result};

/// File name of the interaction reference set inside a reference directory.
pub fn interaction_file() -> &'static str {
    "interaction.plmref"
}

const TASK: &str = "ppi";

/// Proteins with known interactions, searchable.
#[derive(Debug)]
pub struct InteractionReference {
    /// Where the proteins and pairs come from.
    pub source: String,
    pairs: Vec<(u32, u32)>,
    /// Sorted interaction partners of each protein.
    partners: Vec<Vec<u32>>,
    proteins: Reference,
}

/// Interolog evidence for one query pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Interolog {
    /// In [0, 1]: the best product of the two homologs' similarities (identity × query
    /// coverage, raised to the sharpness) over known interacting pairs; 0 when both proteins
    /// have homologs but no pair of them is known to interact.
    pub score: f32,
    /// The known interacting pair behind the score (accessions), when there is one.
    pub templates: Option<(String, String)>,
}

impl InteractionReference {
    /// Builds a set from `(accession, sequence)` and interacting pairs of indices into it.
    pub fn build(
        source: &str,
        proteins: &[(String, String)],
        pairs: &[(u32, u32)],
    ) -> Result<Self> {
        if pairs
            .iter()
            .any(|&(a, b)| a as usize >= proteins.len() || b as usize >= proteins.len())
        {
            return Err(PlmError::Internal("a pair index is out of range".into()));
        }
        let reference = Reference::build(proteins.iter().map(|(id, s)| (id.as_str(), s.as_str())))
            .map_err(|e| PlmError::InvalidArgument(e.to_string()))?;
        let mut pairs: Vec<(u32, u32)> = pairs.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        pairs.sort_unstable();
        pairs.dedup();
        Ok(Self::assemble(source.into(), pairs, reference))
    }

    fn assemble(source: String, pairs: Vec<(u32, u32)>, proteins: Reference) -> Self {
        let mut partners = vec![Vec::new(); proteins.len()];
        for &(a, b) in &pairs {
            partners[a as usize].push(b);
            if a != b {
                partners[b as usize].push(a);
            }
        }
        partners.iter_mut().for_each(|p| p.sort_unstable());
        Self {
            source,
            pairs,
            partners,
            proteins,
        }
    }

    /// Proteins in the set.
    pub fn len(&self) -> usize {
        self.partners.len()
    }

    /// Whether the set has no proteins.
    pub fn is_empty(&self) -> bool {
        self.partners.is_empty()
    }

    /// Known interacting pairs.
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// Writes the set to `path` (deterministic bytes).
    pub fn save(&self, path: &Path) -> Result<()> {
        // Labels: the interacting pairs, as indices into the proteins, each `(a, b)`, `a <= b`.
        store::save(path, TASK, &self.source, &self.pairs, &self.proteins)
    }

    /// Parses the bytes of an interaction reference-set file.
    pub fn from_file_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let opened: store::Opened<Vec<(u32, u32)>> = store::open(bytes, |t| t == TASK)?;
        let n = opened.proteins.len();
        if opened.labels.iter().any(|&(a, b)| a > b || b as usize >= n) {
            return Err("pairs do not match the proteins".into());
        }
        Ok(Self::assemble(
            opened.source,
            opened.labels,
            opened.proteins,
        ))
    }

    /// Similar proteins of `query`, best first.
    pub fn search(&self, query: &str) -> Result<Vec<Hit>> {
        search(&self.proteins, query, false)
    }

    /// Interolog evidence for the pair whose proteins have hits `hits_a` and `hits_b`; `None`
    /// when either has none (nothing is known about the pair).
    pub fn interolog(&self, hits_a: &[Hit], hits_b: &[Hit], sharpness: f32) -> Option<Interolog> {
        if hits_a.is_empty() || hits_b.is_empty() {
            return None;
        }
        let weight = |h: &Hit| {
            (h.identity * h.query_coverage)
                .clamp(0.0, 1.0)
                .powf(f64::from(sharpness.max(0.0)))
        };
        let mut best_b: HashMap<u32, (f64, &Hit)> = HashMap::new();
        for h in hits_b {
            let w = weight(h);
            let entry = best_b.entry(h.target_index as u32).or_insert((w, h));
            if w > entry.0 {
                *entry = (w, h);
            }
        }
        let mut best: Option<(f64, &Hit, &Hit)> = None;
        for ha in hits_a {
            let wa = weight(ha);
            if best.is_some_and(|(s, _, _)| wa <= s) {
                continue; // hits_b weights are at most 1
            }
            for p in self.partners.get(ha.target_index).into_iter().flatten() {
                if let Some(&(wb, hb)) = best_b.get(p) {
                    if best.is_none_or(|(s, _, _)| wa * wb > s) {
                        best = Some((wa * wb, ha, hb));
                    }
                }
            }
        }
        Some(match best {
            Some((s, ha, hb)) => Interolog {
                score: s as f32,
                templates: Some((ha.target_id.clone(), hb.target_id.clone())),
            },
            None => Interolog {
                score: 0.0,
                templates: None,
            },
        })
    }
}

impl ReferenceFile for InteractionReference {
    fn load(path: &Path) -> Result<Self> {
        store::load(path, Self::from_file_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::homology::fixtures::{A, B};
    const C: &str = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG";

    fn set() -> InteractionReference {
        let proteins =
            [("PA", A), ("PB", B), ("PC", C)].map(|(i, s)| (i.to_string(), s.to_string()));
        InteractionReference::build("test", &proteins, &[(1, 0)]).unwrap()
    }

    #[test]
    fn a_known_pair_transfers_to_itself_and_its_homologs() {
        let r = set();
        let (a, b) = (r.search(A).unwrap(), r.search(B).unwrap());
        let i = r.interolog(&a, &b, 1.0).unwrap();
        assert!((i.score - 1.0).abs() < 1e-6, "{i:?}");
        assert_eq!(i.templates, Some(("PA".into(), "PB".into())));
        // Symmetric.
        assert_eq!(r.interolog(&b, &a, 1.0).unwrap().score, i.score);
        // A point mutant of A still transfers, a little less.
        let mutant = A.replacen("AYIAK", "AWIAK", 1);
        let m = r.interolog(&r.search(&mutant).unwrap(), &b, 1.0).unwrap();
        assert!(m.score < 1.0 && m.score > 0.9, "{m:?}");
        assert!(
            r.interolog(&r.search(&mutant).unwrap(), &b, 8.0)
                .unwrap()
                .score
                < m.score
        );
    }

    #[test]
    fn homologs_without_a_known_interaction_score_zero_and_unknown_proteins_nothing() {
        let r = set();
        let (a, c) = (r.search(A).unwrap(), r.search(C).unwrap());
        let i = r.interolog(&a, &c, 1.0).unwrap();
        assert_eq!(i.score, 0.0);
        assert_eq!(i.templates, None);
        let none = r.search("WWWWCCCCHHHHWWWWCCCC").unwrap();
        assert!(r.interolog(&a, &none, 1.0).is_none());
    }

    #[test]
    fn saved_sets_read_back_and_bad_pairs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(interaction_file());
        set().save(&path).unwrap();
        let back = InteractionReference::load(&path).unwrap();
        assert_eq!((back.len(), back.pair_count()), (3, 1));
        let proteins = [("PA".to_string(), A.to_string())];
        assert!(InteractionReference::build("t", &proteins, &[(0, 1)]).is_err());
        let bytes = std::fs::read(&path).unwrap();
        assert!(super::super::FunctionReference::from_file_bytes(&bytes).is_err());
    }
}
