//! Batched inference: the public API of a loaded model (pooled and per-residue embeddings,
//! contacts, logits) with validation, caching, long-sequence windows and length bucketing.
//!
//! - `options`: what a model is loaded with and what each call runs under;
//! - `plan`: pure planning (pieces, windows, merges);
//! - `execute`: one batch through the network;
//! - `matrix`: the matrices it answers with.

mod execute;
mod matrix;
mod options;
mod plan;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::batching::plan_batches;
use crate::cache::{CacheKey, EmbeddingCache};
use crate::checkpoint::Checkpoint;
use crate::config::EsmConfig;
use crate::device::DeviceSpec;
use crate::error::{PlmError, Result};
use crate::esm::EsmForMaskedLM;
use crate::pooling::{max_rows, mean_rows, Pooling};
use crate::tokenizer::{clean_sequences, ProteinTokenizer};
use execute::{run_batch, Request, SequenceOutput};
pub use matrix::Matrix;
pub use options::{EngineOptions, LoadOptions, LongSequencePolicy};
use plan::{interleave_layers, merge_pieces, plan_pieces, residue_chunks};

/// Residues whose per-residue states pooled embedding holds at once (see [`Engine::embed`]).
pub const POOLING_CHUNK_RESIDUES: usize = 1 << 16;

/// Cache kind of contact maps.
const CONTACTS_KIND: &str = "contacts";

/// Cache kind of per-residue states of `layers`, e.g. `residues:2,6`.
fn layers_kind(prefix: &str, layers: &[usize]) -> String {
    let list: Vec<String> = layers.iter().map(usize::to_string).collect();
    format!("{prefix}:{}", list.join(","))
}

/// A loaded model ready for inference, with the options its calls run under.
///
/// Cloning is cheap and shares the loaded model, cache and threads; [`Engine::with_options`]
/// gives a handle with other per-call options (policy for long sequences, batch budget,
/// interrupt check), so concurrent callers never write settings into a shared engine.
#[derive(Clone)]
pub struct Engine {
    loaded: Arc<Loaded>,
    options: EngineOptions,
}

/// What loading a checkpoint produced.
struct Loaded {
    name: String,
    checkpoint: Checkpoint,
    model: EsmForMaskedLM,
    device: Device,
    /// As loaded (the dtype the one actually used).
    load: LoadOptions,
    cache: Arc<EmbeddingCache>,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.loaded.name)
            .field("fingerprint", &self.loaded.checkpoint.fingerprint)
            .field("load", &self.loaded.load)
            .finish()
    }
}

impl Engine {
    /// Opens and loads a checkpoint directory; calls run under `options` (see
    /// [`Engine::with_options`] for handles with others).
    pub fn load(
        dir: impl AsRef<Path>,
        load: LoadOptions,
        options: EngineOptions,
        cache: Arc<EmbeddingCache>,
    ) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir)?;
        Self::from_checkpoint(checkpoint, load, options, cache)
    }

    /// Loads the weights of an opened checkpoint.
    pub fn from_checkpoint(
        checkpoint: Checkpoint,
        load: LoadOptions,
        options: EngineOptions,
        cache: Arc<EmbeddingCache>,
    ) -> Result<Self> {
        let device = load.device.open()?;
        let dtype = if device.is_cpu() && load.dtype == DType::F16 {
            // candle's CPU kernels have no fast f16 path; bf16 and f32 are supported.
            DType::F32
        } else {
            load.dtype
        };
        let model = checkpoint.load_model(&device, dtype)?;
        let mut builder =
            rayon::ThreadPoolBuilder::new().thread_name(|i| format!("plm-compute-{i}"));
        if load.threads > 0 {
            builder = builder.num_threads(load.threads);
        }
        let pool = builder
            .build()
            .map_err(|e| PlmError::Internal(format!("cannot start compute threads: {e}")))?;
        Ok(Self {
            loaded: Arc::new(Loaded {
                name: checkpoint.name(),
                checkpoint,
                model,
                device,
                load: LoadOptions { dtype, ..load },
                cache,
                pool,
            }),
            options,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.loaded.name
    }

    /// SHA-256 of the weights.
    pub fn fingerprint(&self) -> &str {
        &self.loaded.checkpoint.fingerprint
    }

    /// The checkpoint this engine was loaded from.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.loaded.checkpoint
    }

    /// Model configuration.
    pub fn config(&self) -> &EsmConfig {
        self.loaded.model.config()
    }

    /// The loaded network.
    pub fn model(&self) -> &EsmForMaskedLM {
        &self.loaded.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ProteinTokenizer {
        &self.loaded.checkpoint.tokenizer
    }

    /// Device the model lives on.
    pub fn device_spec(&self) -> DeviceSpec {
        self.loaded.load.device
    }

    /// Precision of the weights.
    pub fn dtype(&self) -> DType {
        self.loaded.load.dtype
    }

    /// The options this handle's calls run under.
    pub fn options(&self) -> EngineOptions {
        self.options
    }

    /// A handle on the same loaded model whose calls run under `options`.
    pub fn with_options(&self, options: EngineOptions) -> Engine {
        Engine {
            loaded: self.loaded.clone(),
            options,
        }
    }

    /// What the model was loaded with (the dtype the one in use).
    pub fn load_options(&self) -> LoadOptions {
        self.loaded.load
    }

    /// The shared cache.
    pub fn cache(&self) -> &Arc<EmbeddingCache> {
        &self.loaded.cache
    }

    /// Width of the embeddings.
    pub fn hidden_size(&self) -> usize {
        self.config().hidden_size
    }

    /// Number of transformer blocks (valid layers are `0..=num_layers`).
    pub fn num_layers(&self) -> usize {
        self.config().num_hidden_layers
    }

    /// Residues one pass accepts.
    pub fn max_residues(&self) -> usize {
        let model_max = self.config().max_residues();
        self.options()
            .max_residues
            .map_or(model_max, |m| m.clamp(1, model_max))
    }

    /// Resolves a layer index: `None` is the last layer, negative values count from the end
    /// (`-1` is the last), `0` is the embedding layer.
    pub fn resolve_layer(&self, layer: Option<i64>) -> Result<usize> {
        let n = self.num_layers() as i64;
        let l = layer.unwrap_or(n);
        let resolved = if l < 0 { n + 1 + l } else { l };
        if (0..=n).contains(&resolved) {
            Ok(resolved as usize)
        } else {
            Err(PlmError::InvalidArgument(format!(
                "layer {l} out of range for model '{}' with {n} layers (valid: 0..={n}, or -1..=-{})",
                self.loaded.name,
                n + 1
            )))
        }
    }

    /// Pooled embeddings of `sequences` from `layer` (see [`Engine::resolve_layer`]).
    pub fn embed(
        &self,
        sequences: &[&str],
        layer: Option<i64>,
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>> {
        let layer = self.resolve_layer(layer)?;
        let kind = format!("pooled:{}:{layer}", pooling.as_str());
        self.cached(sequences, &kind, |cleaned| {
            // Pooled a chunk at a time, so that per-residue states of a long list are never
            // all held at once (results do not depend on batch neighbours).
            let mut pooled = Vec::with_capacity(cleaned.len());
            for chunk in residue_chunks(cleaned, POOLING_CHUNK_RESIDUES) {
                let outputs = self.compute(
                    chunk,
                    &Request {
                        layers: vec![layer],
                        ..Default::default()
                    },
                )?;
                pooled.extend(outputs.into_iter().map(|o| match pooling {
                    Pooling::Mean => mean_rows(&o.residues[0], self.hidden_size()),
                    Pooling::Max => max_rows(&o.residues[0], self.hidden_size()),
                    Pooling::Cls => o.cls[0].clone(),
                }));
            }
            Ok(pooled)
        })
    }

    /// Per-residue features `(residues × (hidden · layers))` of each sequence: the requested
    /// layers' hidden states side by side (multi-scale features).
    pub fn embed_residues(
        &self,
        sequences: &[&str],
        layers: &[Option<i64>],
    ) -> Result<Vec<Matrix>> {
        let layers = self.resolve_layers(layers)?;
        let kind = layers_kind("residues", &layers);
        let h = self.hidden_size();
        let cols = h * layers.len();
        let flat = self.cached(sequences, &kind, |cleaned| {
            let outputs = self.compute(
                cleaned,
                &Request {
                    layers: layers.clone(),
                    ..Default::default()
                },
            )?;
            Ok(outputs
                .into_iter()
                .map(|o| interleave_layers(&o.residues, h))
                .collect())
        })?;
        Ok(flat
            .into_iter()
            .map(|data| Matrix::with_cols(data, cols))
            .collect())
    }

    /// Contact probabilities `(residues × residues)` of one sequence.
    pub fn contacts(&self, sequence: &str) -> Result<Matrix> {
        self.require_contact_head()?;
        let flat = self.cached(&[sequence], CONTACTS_KIND, |cleaned| {
            let outputs = self.compute(
                cleaned,
                &Request {
                    contacts: true,
                    ..Default::default()
                },
            )?;
            Ok(outputs
                .into_iter()
                .map(|o| o.contacts.unwrap_or_default())
                .collect())
        })?;
        Ok(Matrix::square(flat.into_iter().next().unwrap_or_default()))
    }

    /// The per-residue features of `layers` (as [`Engine::embed_residues`]) and the contact map
    /// (as [`Engine::contacts`]) of one sequence from one pass: the contact head reads every
    /// block's attention, so the hidden states come with it, and a binding-site query needs
    /// both. The features come from the attention-returning path, which may differ from
    /// [`Engine::embed_residues`]' in the last bits, so they are cached under a kind of their
    /// own: the answer never depends on which function ran first.
    pub fn residues_and_contacts(
        &self,
        sequence: &str,
        layers: &[Option<i64>],
    ) -> Result<(Matrix, Matrix)> {
        self.require_contact_head()?;
        let layers = self.resolve_layers(layers)?;
        let features_kind = layers_kind("residues-with-contacts", &layers);
        let cleaned = clean_sequences(&[sequence])?;
        let key = |kind: &str| self.cache_key(kind, &cleaned[0]);
        let cached = (
            self.loaded.cache.get(&key(&features_kind)),
            self.loaded.cache.get(&key(CONTACTS_KIND)),
        );
        let (features, contacts) = match cached {
            (Some(f), Some(c)) => (f, c),
            _ => {
                let request = Request {
                    layers: layers.clone(),
                    contacts: true,
                    ..Default::default()
                };
                let output = self
                    .compute(&cleaned, &request)?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let f: Arc<[f32]> = interleave_layers(&output.residues, self.hidden_size()).into();
                let c: Arc<[f32]> = output.contacts.unwrap_or_default().into();
                self.loaded.cache.put(key(&features_kind), f.clone());
                self.loaded.cache.put(key(CONTACTS_KIND), c.clone());
                (f, c)
            }
        };
        Ok((
            Matrix::with_cols(features.to_vec(), self.hidden_size() * layers.len()),
            Matrix::square(contacts.to_vec()),
        ))
    }

    /// Resolves layer arguments (none: the last layer).
    fn resolve_layers(&self, layers: &[Option<i64>]) -> Result<Vec<usize>> {
        if layers.is_empty() {
            Ok(vec![self.resolve_layer(None)?])
        } else {
            layers.iter().map(|l| self.resolve_layer(*l)).collect()
        }
    }

    fn require_contact_head(&self) -> Result<()> {
        if self.loaded.model.has_contact_head() {
            Ok(())
        } else {
            Err(PlmError::MissingHead {
                model: self.loaded.name.clone(),
                head: "contact".into(),
            })
        }
    }

    /// Masked-language-model logits `((residues+2) × vocab)` per sequence, `<cls>` and `<eos>`
    /// rows included. Sequences must fit the model limit.
    pub fn logits(&self, sequences: &[&str]) -> Result<Vec<Matrix>> {
        if !self.loaded.model.has_lm_head() {
            return Err(PlmError::MissingHead {
                model: self.loaded.name.clone(),
                head: "language-model".into(),
            });
        }
        let cleaned = clean_sequences(sequences)?;
        for c in &cleaned {
            if c.len() > self.max_residues() {
                return Err(PlmError::SequenceTooLong {
                    length: c.len(),
                    limit: self.max_residues(),
                });
            }
        }
        let vocab = self.config().vocab_size;
        let outputs = self.compute(
            &cleaned,
            &Request {
                logits: true,
                ..Default::default()
            },
        )?;
        Ok(outputs
            .into_iter()
            .map(|o| {
                let data = o.logits.unwrap_or_default();
                Matrix {
                    rows: data.len() / vocab,
                    cols: vocab,
                    data,
                }
            })
            .collect())
    }

    /// The cache key of `kind` output of a cleaned sequence under this model.
    fn cache_key(&self, kind: &str, sequence: &str) -> CacheKey {
        CacheKey {
            fingerprint: self.loaded.checkpoint.fingerprint.clone(),
            kind: kind.to_string(),
            sequence: sequence.to_string(),
        }
    }

    /// Serves what the cache holds and computes the rest once per distinct sequence.
    fn cached(
        &self,
        sequences: &[&str],
        kind: &str,
        compute: impl FnOnce(&[String]) -> Result<Vec<Vec<f32>>>,
    ) -> Result<Vec<Vec<f32>>> {
        let cleaned = clean_sequences(sequences)?;
        let key = |s: &str| self.cache_key(kind, s);
        let mut results: Vec<Option<Arc<[f32]>>> = cleaned
            .iter()
            .map(|s| self.loaded.cache.get(&key(s)))
            .collect();
        let mut missing: Vec<String> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (s, r) in cleaned.iter().zip(&results) {
            if r.is_none() && !seen.contains_key(s.as_str()) {
                seen.insert(s, missing.len());
                missing.push(s.clone());
            }
        }
        if !missing.is_empty() {
            let computed: Vec<Arc<[f32]>> = compute(&missing)?.into_iter().map(Arc::from).collect();
            for (s, v) in missing.iter().zip(&computed) {
                self.loaded.cache.put(key(s), v.clone());
            }
            for (s, r) in cleaned.iter().zip(results.iter_mut()) {
                if r.is_none() {
                    *r = Some(computed[seen[s.as_str()]].clone());
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.map(|v| v.to_vec()).unwrap_or_default())
            .collect())
    }

    /// Runs cleaned sequences through the model in length-bucketed batches.
    fn compute(&self, cleaned: &[String], request: &Request) -> Result<Vec<SequenceOutput>> {
        let options = self.options();
        let pieces = plan_pieces(cleaned, self.max_residues(), &options, request)?;
        let lengths: Vec<usize> = pieces.iter().map(|p| p.residues.len()).collect();
        let mut piece_outputs: Vec<SequenceOutput> = (0..pieces.len())
            .map(|_| SequenceOutput::default())
            .collect();
        for batch in plan_batches(&lengths, options.max_tokens_per_batch) {
            if options.interrupt_check.is_some_and(|stop| stop()) {
                return Err(PlmError::Cancelled);
            }
            let seqs: Vec<&str> = batch.iter().map(|&i| pieces[i].residues.as_str()).collect();
            let loaded = &self.loaded;
            let outs = loaded.pool.install(|| {
                run_batch(
                    &loaded.model,
                    self.tokenizer(),
                    &loaded.device,
                    &seqs,
                    request,
                )
            })?;
            for (i, out) in batch.into_iter().zip(outs) {
                piece_outputs[i] = out;
            }
        }
        let sequence_lengths: Vec<usize> = cleaned.iter().map(String::len).collect();
        Ok(merge_pieces(
            &sequence_lengths,
            &pieces,
            piece_outputs,
            request,
            self.hidden_size(),
        ))
    }
}
