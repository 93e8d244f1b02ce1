//! Running one request on a [`ModelRegistry`]: the single code path behind both the
//! in-backend engine and the shared worker, so that both give the same results.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plm_model::heads::binding_blend_key;
use plm_model::homology::{Blend, Method, ReferenceCache};
use plm_model::predict::{self, ContactSource};
use plm_model::tokenizer::clean_sequences;
use plm_model::{LoadOptions, PlmError, Result, TaskHeads};

use crate::limits;
use crate::protocol::{ModelRef, Output, RequestSettings, Task};
use crate::registry::{LoadedModel, ModelRegistry};

/// Process-level knobs that do not change results.
#[derive(Debug, Clone, Copy)]
pub struct ExecOptions {
    /// Token budget of one engine batch.
    pub max_tokens_per_batch: usize,
    /// Compute threads of a newly loaded engine (0: all cores).
    pub threads: usize,
    /// Most memory one request may need, bytes (see [`limits`]).
    pub max_request_bytes: usize,
    /// Called between batches on the calling thread (query cancel in a backend).
    pub interrupt_check: Option<fn() -> bool>,
}

/// The reference sets of this process, loaded on first use and kept.
fn references() -> &'static ReferenceCache {
    static CACHE: OnceLock<ReferenceCache> = OnceLock::new();
    CACHE.get_or_init(ReferenceCache::default)
}

/// Where the reference sets of the model in `model_dir` are: `reference/` beside the model
/// directories (`models/reference` of the repository, installed next to the models).
pub fn reference_dir(model_dir: &Path) -> PathBuf {
    model_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join(REFERENCE_DIR)
}

/// Name of the directory of reference sets beside the model directories.
pub const REFERENCE_DIR: &str = "reference";

/// The fitted blend of task `key` (`heads.json` → `blend`), or the default.
fn blend_for(heads: Option<&TaskHeads>, key: &str) -> Blend {
    heads.map_or_else(Blend::default, |h| h.config.blend_for(key))
}

/// The model of `model`, loaded into `registry` on first use, once `task`'s estimated memory
/// and answer size are known to stay under the limits (see [`limits`]): what would not fit is
/// refused before anything is allocated for it.
fn load_for(
    registry: &ModelRegistry,
    model: &ModelRef,
    settings: &RequestSettings,
    task: &Task,
    options: &ExecOptions,
) -> Result<LoadedModel> {
    let engine_options =
        settings.engine_options(options.max_tokens_per_batch, options.interrupt_check);
    let load = LoadOptions {
        device: model.device,
        threads: options.threads,
        ..LoadOptions::default()
    };
    let loaded = registry.get(&model.dir, &model.name, load, engine_options)?;
    limits::check(
        task,
        &limits::Shape::of(&loaded.engine, options.max_tokens_per_batch),
        settings,
        options.max_request_bytes,
    )?;
    Ok(loaded)
}

/// The checks a request must pass as a whole before any part of it is computed: those of
/// [`load_for`] and, for embedding tasks, that every sequence is a protein sequence (an error
/// names the failing one's place in the request). The executor runs them before computing a
/// bulk request in slices, whose own checks only see one slice.
pub fn admit(
    registry: &ModelRegistry,
    model: &ModelRef,
    settings: &RequestSettings,
    task: &Task,
    options: &ExecOptions,
) -> Result<()> {
    load_for(registry, model, settings, task, options)?;
    if let Some(sequences) = task.embedding_sequences() {
        let sequences: Vec<&str> = sequences.iter().map(String::as_str).collect();
        clean_sequences(&sequences)?;
    }
    Ok(())
}

/// Computes `task` with the model `model`, loading it into `registry` on first use, after
/// checking that its estimated memory stays under `options.max_request_bytes`.
pub fn execute(
    registry: &ModelRegistry,
    model: &ModelRef,
    settings: &RequestSettings,
    task: &Task,
    options: &ExecOptions,
) -> Result<Output> {
    let loaded = load_for(registry, model, settings, task, options)?;
    let engine = &loaded.engine;
    let heads = loaded.heads.as_deref();
    Ok(match task {
        Task::Embed {
            sequences,
            layer,
            pooling,
        } => {
            let seqs: Vec<&str> = sequences.iter().map(String::as_str).collect();
            Output::Vectors(engine.embed(&seqs, *layer, *pooling)?)
        }
        Task::EmbedResidues { sequences, layers } => {
            let seqs: Vec<&str> = sequences.iter().map(String::as_str).collect();
            Output::Matrices(engine.embed_residues(&seqs, layers)?)
        }
        Task::Contacts { sequence } => Output::Matrices(vec![engine.contacts(sequence)?]),
        Task::Function {
            sequence,
            ontology,
            top_k,
            min_score,
            method,
        } => {
            let query = predict::FunctionQuery {
                ontology,
                method: *method,
                top_k: *top_k as usize,
                min_score: *min_score,
            };
            let ontology = predict::check_ontology(ontology)?;
            let reference = match method {
                Method::Model => None,
                _ => references().function(&reference_dir(&model.dir), &ontology)?,
            };
            let blend = blend_for(heads, &ontology);
            Output::Functions(predict::predict_function(
                engine,
                heads,
                reference.as_deref(),
                sequence,
                query,
                blend,
            )?)
        }
        Task::Ppi { pairs, method } => {
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let reference = match method {
                Method::Model => None,
                _ => references().interaction(&reference_dir(&model.dir))?,
            };
            Output::Scores(predict::predict_ppi(
                engine,
                heads,
                reference.as_deref(),
                &pairs,
                *method,
                blend_for(heads, "ppi"),
            )?)
        }
        Task::BindingSites {
            sequence,
            ligand,
            threshold,
            structure,
            chain,
            method,
        } => {
            let source = match (structure, chain) {
                (Some(text), chain) => ContactSource::Structure {
                    text,
                    chain: chain.as_deref(),
                },
                (None, Some(_)) => {
                    return Err(PlmError::InvalidArgument(
                        "chain => selects a chain of structure =>; without a structure the contact graph is predicted from the sequence".into(),
                    ))
                }
                (None, None) => ContactSource::Predicted,
            };
            let reference = match method {
                Method::Model => None,
                _ => references().binding(&reference_dir(&model.dir))?,
            };
            let query = predict::BindingQuery {
                ligand: ligand.as_deref(),
                threshold: *threshold,
                source,
                method: *method,
            };
            Output::Sites(predict::predict_binding_sites(
                engine,
                heads,
                reference.as_deref(),
                sequence,
                query,
                &|l| blend_for(heads, &binding_blend_key(l)),
            )?)
        }
    })
}
