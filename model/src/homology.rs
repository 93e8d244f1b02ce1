//! Homology transfer: labels of similar annotated proteins, found by [`plm_align`], and their
//! blend with the language-model heads (the DeepGOPlus recipe: `α·homology + (1−α)·model`
//! where the query has hits, the model alone where it has none).
//!
//! A *reference set* is one task's labelled training proteins with their search index: the
//! files `function_<ontology>.plmref` under a reference directory (see
//! `models/reference/README.md`), independent of any language model, so every checkpoint uses
//! the same ones.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plm_align::{Hit, Reference, SearchParams};
use serde::{Deserialize, Serialize};

use crate::error::{PlmError, Result};

const MAGIC: &str = "plm-reference-set";
const VERSION: u32 = 1;

/// How a function prediction is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Method {
    /// Homology transfer blended with the model (the model alone where nothing is similar).
    #[default]
    Combined,
    /// The language-model head only.
    Model,
    /// Homology transfer only (nothing where nothing is similar).
    Homology,
}

impl Method {
    /// Parses the SQL spelling (`combined`, `model`, `homology`).
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "combined" => Ok(Method::Combined),
            "model" => Ok(Method::Model),
            "homology" => Ok(Method::Homology),
            other => Err(PlmError::InvalidArgument(format!(
                "unknown method '{other}'; use 'combined', 'model' or 'homology'"
            ))),
        }
    }
}

/// File name of an ontology's reference set inside a reference directory.
pub fn function_file(ontology: &str) -> String {
    format!("function_{ontology}.plmref")
}

/// The stored form of a labelled reference set (gzip-compressed postcard).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    magic: String,
    version: u32,
    /// What the labels are (`ec`, `go_mf`, ...).
    task: String,
    /// Where the proteins and labels come from.
    source: String,
    /// Term identifiers.
    terms: Vec<String>,
    /// Term names, parallel to `terms`.
    names: Vec<String>,
    /// Indices into `terms` of each protein's labels (GO: propagated to the root).
    labels: Vec<Vec<u32>>,
    /// The proteins ([`plm_align::Reference::to_bytes`]).
    proteins: Vec<u8>,
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
        let stored = Stored {
            magic: MAGIC.into(),
            version: VERSION,
            task: self.task.clone(),
            source: self.source.clone(),
            terms: self.terms.clone(),
            names: self.names.clone(),
            labels: self.labels.clone(),
            proteins: self
                .proteins
                .to_bytes()
                .map_err(|e| PlmError::Internal(e.to_string()))?,
        };
        let raw = postcard::to_allocvec(&stored).map_err(|e| PlmError::Internal(e.to_string()))?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &raw)
            .and_then(|_| gz.finish())
            .and_then(|bytes| std::fs::write(path, bytes))
            .map_err(|source| PlmError::Io {
                path: path.into(),
                source,
            })
    }

    /// Reads a set written by [`FunctionReference::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| PlmError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_file_bytes(&bytes).map_err(|reason| PlmError::bad_file(path, reason))
    }

    /// Parses the bytes of a reference-set file; the error says what is wrong with them.
    pub fn from_file_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut raw = Vec::new();
        // Bounded: a corrupt or hostile file cannot inflate without limit.
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_DECOMPRESSED_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| format!("not a gzip reference set: {e}"))?;
        let stored: Stored =
            postcard::from_bytes(&raw).map_err(|e| format!("corrupt reference set: {e}"))?;
        if stored.magic != MAGIC || stored.version != VERSION {
            return Err("not a pg_plm reference set of this version".into());
        }
        let proteins = Reference::from_bytes(&stored.proteins).map_err(|e| e.to_string())?;
        if proteins.len() != stored.labels.len()
            || stored.names.len() != stored.terms.len()
            || stored
                .labels
                .iter()
                .any(|l| l.iter().any(|&t| t as usize >= stored.terms.len()))
        {
            return Err("labels do not match the proteins".into());
        }
        Ok(Self {
            task: stored.task,
            source: stored.source,
            terms: stored.terms,
            names: stored.names,
            labels: stored.labels,
            proteins,
        })
    }

    /// Similar proteins of `query`, best first (at most [`MAX_HITS`], E-value ≤ [`MAX_EVALUE`]).
    pub fn search(&self, query: &str) -> Result<Vec<Hit>> {
        let params = SearchParams {
            max_hits: MAX_HITS,
            max_evalue: MAX_EVALUE,
            ..SearchParams::default()
        };
        self.proteins
            .search(query, &params)
            .map_err(|e| PlmError::InvalidArgument(e.to_string()))
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

/// Most hits a query's labels are transferred from.
pub const MAX_HITS: usize = 30;
/// Largest E-value of a hit used for transfer.
pub const MAX_EVALUE: f64 = 1e-3;
/// Largest decompressed reference set read.
const MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;

/// How homology transfer is scored and blended with a function head, as fitted on validation
/// proteins by `plm-train homology` (`heads.json` → `blend`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    /// Weight of homology in [0, 1] where the query has hits.
    pub alpha: f32,
    /// Exponent of the hit weights of [`FunctionReference::transfer`].
    pub sharpness: f32,
    /// Whether the model answers alone for a query without hits (else nothing is predicted:
    /// for a head that measured worse than silence on validation).
    #[serde(default = "yes")]
    pub model_without_hits: bool,
}

fn yes() -> bool {
    true
}

impl Default for Blend {
    /// DeepGOPlus' choices, for heads without fitted values.
    fn default() -> Self {
        Blend {
            alpha: 0.5,
            sharpness: 1.0,
            model_without_hits: true,
        }
    }
}

/// `α·h + (1−α)·m`.
pub fn mix(model: f32, homology: f32, alpha: f32) -> f32 {
    alpha * homology + (1.0 - alpha) * model
}

/// Term scores by `method`: the model's, homology's, or their blend with weight `blend.alpha`
/// on homology where the query has any homology support and, where it has none, the model's
/// alone (or nothing, as `blend` says). Both inputs keep the true-path rule, so the blend does
/// too.
pub fn combine(
    model: &BTreeMap<String, f32>,
    homology: &BTreeMap<String, f32>,
    method: Method,
    blend: Blend,
) -> BTreeMap<String, f32> {
    let alpha = blend.alpha;
    match method {
        Method::Model => model.clone(),
        Method::Homology => homology.clone(),
        Method::Combined if homology.is_empty() && blend.model_without_hits => model.clone(),
        Method::Combined if homology.is_empty() => BTreeMap::new(),
        Method::Combined => model
            .keys()
            .chain(homology.keys())
            .map(|t| {
                let m = model.get(t).copied().unwrap_or(0.0);
                let h = homology.get(t).copied().unwrap_or(0.0);
                (t.clone(), mix(m, h, alpha))
            })
            .collect(),
    }
}

/// Reference sets loaded once per process and shared, keyed by file.
#[derive(Debug, Default)]
pub struct ReferenceCache {
    loaded: Mutex<HashMap<PathBuf, Arc<FunctionReference>>>,
}

impl ReferenceCache {
    /// The reference set of `ontology` in `dir`, or `None` when the directory has none.
    pub fn function(&self, dir: &Path, ontology: &str) -> Result<Option<Arc<FunctionReference>>> {
        let path = dir.join(function_file(ontology));
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = loaded.get(&path) {
            return Ok(Some(r.clone()));
        }
        if !path.is_file() {
            return Ok(None);
        }
        let r = Arc::new(FunctionReference::load(&path)?);
        loaded.insert(path, r.clone());
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ";
    const B: &str = "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADAL";

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

    #[test]
    fn methods_parse_and_bad_ones_are_argument_errors() {
        assert_eq!(Method::parse(" Homology").unwrap(), Method::Homology);
        let e = Method::parse("blast").unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::InvalidInput);
    }
}
