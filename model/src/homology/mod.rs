//! Homology transfer: labels of similar annotated proteins, found by [`plm_align`], and their
//! blend with the language-model heads (the DeepGOPlus recipe: `α·homology + (1−α)·model`
//! where the query has hits, the model alone where it has none).
//!
//! A *reference set* is one task's labelled training proteins with their search index, stored
//! under a reference directory (see `models/reference/README.md`) and independent of any
//! language model, so every checkpoint uses the same ones:
//! - [`FunctionReference`] (`function_<ontology>.plmref`): terms of each protein;
//! - [`InteractionReference`] (`interaction.plmref`): known interacting pairs, for interolog
//!   transfer;
//! - [`BindingReference`] (`binding.plmref`): binding residues per ligand, transferred
//!   through alignments.

mod binding;
mod calibration;
mod function;
mod interaction;
mod store;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plm_align::{Hit, Reference, SearchParams};
use serde::{Deserialize, Serialize};

use crate::error::{PlmError, Result};

pub use binding::{binding_file, BindingReference, BindingTransfer};
pub use calibration::{
    expected_calibration_error, reliability, Calibration, Platt, ReliabilityBin,
};
pub use function::{function_file, FunctionReference, Transfer};
pub use interaction::{interaction_file, InteractionReference, Interolog};

/// How a prediction is made.
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
                "unknown method '{other}'; use 'combined', 'model' or 'homology' (a model is named with model => '...')"
            ))),
        }
    }
}

/// Most hits a query's labels are transferred from.
pub const MAX_HITS: usize = 30;
/// Largest E-value of a hit used for transfer.
pub const MAX_EVALUE: f64 = 1e-3;

/// Similar proteins of `query` in `proteins`, best first (at most [`MAX_HITS`], E-value ≤
/// [`MAX_EVALUE`]); `with_pairs` also returns the aligned positions.
fn search(proteins: &Reference, query: &str, with_pairs: bool) -> Result<Vec<Hit>> {
    let params = SearchParams {
        max_hits: MAX_HITS,
        max_evalue: MAX_EVALUE,
        with_pairs,
        ..SearchParams::default()
    };
    proteins
        .search(query, &params)
        .map_err(|e| PlmError::InvalidArgument(e.to_string()))
}

/// How homology transfer is scored and blended with a head, as fitted on validation data by
/// `plm-train homology` (`heads.json` → `blend`, keyed by task: `ec`, `go_mf`, ..., `ppi`,
/// `binding_<ligand>`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    /// Weight of homology in [0, 1] where the query has hits.
    pub alpha: f32,
    /// Exponent of the hit weights (larger values trust the closest homologs more).
    pub sharpness: f32,
    /// Whether the model answers alone for a query without hits (else nothing is predicted:
    /// for a head that measured worse than silence on validation).
    #[serde(default = "yes")]
    pub model_without_hits: bool,
    /// How homology and the model are blended for a single score, where fitted (`None`: the
    /// task's own rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Maps the scores of single-score tasks (interaction, binding) to calibrated
    /// probabilities, where fitted.
    #[serde(default, skip_serializing_if = "Calibration::is_empty")]
    pub calibration: Calibration,
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
            evidence: None,
            calibration: Calibration::default(),
        }
    }
}

/// `α·h + (1−α)·m`.
pub fn mix(model: f32, homology: f32, alpha: f32) -> f32 {
    alpha * homology + (1.0 - alpha) * model
}

/// What homology evidence can say about one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// For and against (binding residues: a template residue that does not bind is evidence
    /// that the aligned query residue does not either): `α·h + (1−α)·m`.
    ForAndAgainst,
    /// Only for (interologs: known interactomes are far from complete, so homologs not known
    /// to interact are no evidence that the query pair does not): the noisy-OR
    /// `1 − (1−m)·(1−α·h)`, which never lowers the model's score.
    OnlyFor,
}

/// One score by `method`: the model's, homology's (`None`: no homology information, scored 0),
/// or their blend (as `blend.evidence` says, else as the task's `evidence` rule) where homology
/// has information and the model's alone where it has none; calibrated as `blend.calibration`
/// says (one increasing map per method: the blend without homology information is the model's
/// score through the blend's map, so it ranks as `model` does but need not equal it).
pub fn combine_score(
    model: f32,
    homology: Option<f32>,
    method: Method,
    blend: Blend,
    evidence: Evidence,
) -> f32 {
    raw_score(model, homology, method, blend, evidence)
        .map_or(0.0, |raw| blend.calibration.apply(method, raw))
}

/// [`combine_score`] before calibration; `None` where the blend predicts nothing (no homology
/// information and a model that does not answer alone), which stays 0 uncalibrated.
fn raw_score(
    model: f32,
    homology: Option<f32>,
    method: Method,
    blend: Blend,
    evidence: Evidence,
) -> Option<f32> {
    match (method, homology) {
        (Method::Model, _) => Some(model),
        (Method::Homology, h) => Some(h.unwrap_or(0.0)),
        (Method::Combined, Some(h)) => Some(match blend.evidence.unwrap_or(evidence) {
            Evidence::ForAndAgainst => mix(model, h, blend.alpha),
            Evidence::OnlyFor => 1.0 - (1.0 - model) * (1.0 - blend.alpha * h),
        }),
        (Method::Combined, None) => blend.model_without_hits.then_some(model),
    }
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
                (t.clone(), mix(m, h, blend.alpha))
            })
            .collect(),
    }
}

/// A reference-set file kind the [`ReferenceCache`] can hold.
pub trait ReferenceFile: Send + Sync + Sized + 'static {
    /// Reads the file at `path`.
    fn load(path: &Path) -> Result<Self>;
}

/// Reference sets loaded once per process and shared, keyed by file.
#[derive(Debug, Default)]
pub struct ReferenceCache {
    loaded: Mutex<HashMap<PathBuf, Arc<dyn Any + Send + Sync>>>,
}

impl ReferenceCache {
    /// The set stored as `file` in `dir`, or `None` when the directory has none.
    pub fn get<T: ReferenceFile>(&self, dir: &Path, file: &str) -> Result<Option<Arc<T>>> {
        let path = dir.join(file);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = loaded.get(&path) {
            return Ok(Some(r.clone().downcast::<T>().map_err(|_| {
                PlmError::Internal(format!("{} loaded as another kind", path.display()))
            })?));
        }
        if !path.is_file() {
            return Ok(None);
        }
        let r = Arc::new(T::load(&path)?);
        loaded.insert(path, r.clone());
        Ok(Some(r))
    }

    /// The function reference set of `ontology` in `dir`.
    pub fn function(&self, dir: &Path, ontology: &str) -> Result<Option<Arc<FunctionReference>>> {
        self.get(dir, &function_file(ontology))
    }

    /// The interaction reference set in `dir`.
    pub fn interaction(&self, dir: &Path) -> Result<Option<Arc<InteractionReference>>> {
        self.get(dir, interaction_file())
    }

    /// The binding-site reference set in `dir`.
    pub fn binding(&self, dir: &Path) -> Result<Option<Arc<BindingReference>>> {
        self.get(dir, binding_file())
    }
}

/// The reference-set file of a prediction task (`ec`, `go_mf`, `go_bp`, `go_cc`, `ppi`,
/// `binding`).
pub fn task_reference_file(task: &str) -> Result<String> {
    match task {
        "ppi" => Ok(interaction_file().into()),
        "binding" => Ok(binding_file().into()),
        t if crate::heads::ONTOLOGIES.contains(&t) => Ok(function_file(t)),
        other => Err(PlmError::InvalidArgument(format!(
            "unknown task '{other}'; use ec, go_mf, go_bp, go_cc, ppi or binding"
        ))),
    }
}

/// What the answers of the model in `model_dir` for `task` depend on besides its
/// language-model weights: the SHA-256 (hex) of the digests of its task heads (`heads.json`,
/// `heads.safetensors`) and of the task's reference set in `reference_dir`, a missing file
/// counting as absent. New heads or reference sets installed under the same model name change
/// it; synced prediction columns record it with their values.
pub fn task_fingerprint(model_dir: &Path, reference_dir: &Path, task: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    let files = [
        model_dir.join(crate::heads::files::CONFIG),
        model_dir.join(crate::heads::files::WEIGHTS),
        reference_dir.join(task_reference_file(task)?),
    ];
    let mut hasher = Sha256::new();
    for file in &files {
        let digest = if file.is_file() {
            crate::checkpoint::sha256_file(file)?
        } else {
            "absent".into()
        };
        hasher.update(digest.as_bytes());
        hasher.update(b"\n");
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Unrelated test proteins shared by the reference-set tests.
#[cfg(test)]
mod fixtures {
    pub const A: &str = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ";
    pub const B: &str = "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADAL";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_fingerprints_follow_the_heads_and_the_task_reference_set() {
        let model = tempfile::tempdir().unwrap();
        let refs = tempfile::tempdir().unwrap();
        let fp = |task| task_fingerprint(model.path(), refs.path(), task).unwrap();
        let bare = fp("go_mf");
        assert_eq!(bare.len(), 64);
        assert_eq!(bare, fp("ppi"), "no heads and no reference sets anywhere");
        std::fs::write(model.path().join(crate::heads::files::CONFIG), "{}").unwrap();
        let with_heads = fp("go_mf");
        assert_ne!(with_heads, bare);
        std::fs::write(refs.path().join(function_file("go_mf")), "set").unwrap();
        let with_reference = fp("go_mf");
        assert_ne!(with_reference, with_heads);
        assert_eq!(
            fp("go_bp"),
            with_heads,
            "another ontology's set does not count"
        );
        assert_eq!(fp("go_mf"), with_reference, "stable while nothing changes");
        std::fs::write(
            model.path().join(crate::heads::files::CONFIG),
            "{\"blend\": {}}",
        )
        .unwrap();
        assert_ne!(fp("go_mf"), with_reference, "a refitted heads.json");
        let e = task_fingerprint(model.path(), refs.path(), "kinase").unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::InvalidInput);
    }

    #[test]
    fn methods_parse_and_bad_ones_are_argument_errors() {
        assert_eq!(Method::parse(" Homology").unwrap(), Method::Homology);
        let e = Method::parse("plm-default").unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::InvalidInput);
        assert!(e.to_string().contains("model => '...'"), "{e}");
    }

    #[test]
    fn one_score_by_method() {
        let b = Blend {
            alpha: 0.25,
            ..Blend::default()
        };
        let both = Evidence::ForAndAgainst;
        assert_eq!(
            combine_score(0.8, Some(0.0), Method::Combined, b, both),
            0.6
        );
        assert_eq!(combine_score(0.8, None, Method::Combined, b, both), 0.8);
        assert_eq!(combine_score(0.8, None, Method::Homology, b, both), 0.0);
        assert_eq!(combine_score(0.8, Some(1.0), Method::Model, b, both), 0.8);
        let silent = Blend {
            model_without_hits: false,
            ..b
        };
        assert_eq!(
            combine_score(0.8, None, Method::Combined, silent, both),
            0.0
        );
        // Supporting evidence only raises the model's score.
        let only = Evidence::OnlyFor;
        assert_eq!(
            combine_score(0.8, Some(0.0), Method::Combined, b, only),
            0.8
        );
        assert!((combine_score(0.6, Some(0.8), Method::Combined, b, only) - 0.68).abs() < 1e-6);
        // A fitted rule overrides the task's.
        let fitted = Blend {
            evidence: Some(Evidence::ForAndAgainst),
            ..b
        };
        assert_eq!(
            combine_score(0.8, Some(0.0), Method::Combined, fitted, only),
            0.6
        );
    }

    #[test]
    fn calibrated_blends_use_their_method_s_map() {
        let map = |slope, intercept| Some(Platt { slope, intercept });
        let calibrated = Blend {
            alpha: 0.5,
            calibration: Calibration {
                model: map(0.5, -1.0),
                combined: map(2.0, 0.5),
            },
            ..Blend::default()
        };
        let both = Evidence::ForAndAgainst;
        let sigma_of = |x: f64| 1.0 / (1.0 + (-x).exp());
        let near = |got: f32, want: f64| (f64::from(got) - want).abs() < 1e-5;
        let logit = |p: f64| (p / (1.0 - p)).ln();
        let model = combine_score(0.8, None, Method::Model, calibrated, both);
        assert!(near(model, sigma_of(0.5 * logit(0.8) - 1.0)), "{model}");
        // With homology information, 0.8 mixed with 0.4 is 0.6; without, the model's score:
        // both through the blend's map.
        let blended = combine_score(0.8, Some(0.4), Method::Combined, calibrated, both);
        assert!(near(blended, sigma_of(2.0 * logit(0.6) + 0.5)), "{blended}");
        let alone = combine_score(0.8, None, Method::Combined, calibrated, both);
        assert!(near(alone, sigma_of(2.0 * logit(0.8) + 0.5)), "{alone}");
        // Homology's vote is evidence, reported as it is.
        assert_eq!(
            combine_score(0.8, Some(0.4), Method::Homology, calibrated, both),
            0.4
        );
    }
}
