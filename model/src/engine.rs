//! Batched inference: validation, length bucketing, long-sequence windows, pooling and caching.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::batching::plan_batches;
use crate::cache::{CacheKey, EmbeddingCache};
use crate::checkpoint::Checkpoint;
use crate::config::EsmConfig;
use crate::device::DeviceSpec;
use crate::error::{PlmError, Result};
use crate::esm::{EsmForMaskedLM, ForwardOptions};
use crate::pooling::{max_rows, mean_rows, Pooling};
use crate::tokenizer::{clean_sequences, ProteinTokenizer};
use crate::window::{merge_windows, plan_windows};

/// What to do with sequences longer than the model limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LongSequencePolicy {
    /// Refuse them with [`PlmError::SequenceTooLong`].
    Error,
    /// Embed overlapping windows and average the per-residue outputs.
    Window,
}

impl FromStr for LongSequencePolicy {
    type Err = PlmError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "window" | "windows" => Ok(Self::Window),
            other => Err(PlmError::InvalidArgument(format!(
                "unknown long-sequence policy '{other}' (valid: error, window)"
            ))),
        }
    }
}

/// Residues whose per-residue states pooled embedding holds at once (see [`Engine::embed`]).
pub const POOLING_CHUNK_RESIDUES: usize = 1 << 16;

/// Consecutive runs of `sequences` of about `budget` residues each (a longer sequence is a
/// run of its own).
fn residue_chunks(sequences: &[String], budget: usize) -> Vec<&[String]> {
    let mut chunks = Vec::new();
    let (mut start, mut residues) = (0, 0);
    for (i, s) in sequences.iter().enumerate() {
        if i > start && residues + s.len() > budget {
            chunks.push(&sequences[start..i]);
            (start, residues) = (i, 0);
        }
        residues += s.len();
    }
    if start < sequences.len() {
        chunks.push(&sequences[start..]);
    }
    chunks
}

/// Tunables of an [`Engine`].
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Token budget of one batch, padding included.
    pub max_tokens_per_batch: usize,
    /// Policy for sequences over the limit.
    pub long_sequences: LongSequencePolicy,
    /// Residues of one pass (and so the window length); `None` or a larger value means the
    /// model's own limit.
    pub max_residues: Option<usize>,
    /// Longest sequence accepted under either policy; `None`: no limit beyond the policy's.
    pub max_length: Option<usize>,
    /// Residues shared by neighbouring windows.
    pub window_overlap: usize,
    /// Compute threads (0: all cores).
    pub threads: usize,
    /// Called on the calling thread between batches; `true` stops the work, which then fails
    /// with [`PlmError::Cancelled`]. (In a PostgreSQL backend the check raises the query cancel
    /// itself, as PostgreSQL errors do, and never returns `true`.)
    pub interrupt_check: Option<fn() -> bool>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_tokens_per_batch: 8192,
            long_sequences: LongSequencePolicy::Error,
            max_residues: None,
            max_length: None,
            window_overlap: 256,
            threads: 0,
            interrupt_check: None,
        }
    }
}

/// Cache kind of contact maps.
const CONTACTS_KIND: &str = "contacts";

/// Cache kind of per-residue states of `layers`, e.g. `residues:2,6`.
fn layers_kind(prefix: &str, layers: &[usize]) -> String {
    let list: Vec<String> = layers.iter().map(usize::to_string).collect();
    format!("{prefix}:{}", list.join(","))
}

/// A row-major matrix of f32.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows × cols` values.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix of `cols` columns (a row count that does not divide evenly is truncated).
    pub fn with_cols(data: Vec<f32>, cols: usize) -> Self {
        Self {
            rows: data.len() / cols.max(1),
            cols,
            data,
        }
    }

    /// A square matrix (`n²` values).
    pub fn square(data: Vec<f32>) -> Self {
        let n = (data.len() as f64).sqrt().round() as usize;
        Self {
            rows: n,
            cols: n,
            data,
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// What one pass over a set of sequences should compute.
#[derive(Debug, Clone, Default)]
struct Request {
    layers: Vec<usize>,
    contacts: bool,
    logits: bool,
}

/// Per-sequence outputs of one pass.
#[derive(Debug, Clone, Default)]
struct SequenceOutput {
    /// Per requested layer: `(residues × hidden)`.
    residues: Vec<Vec<f32>>,
    /// Per requested layer: the `<cls>` vector.
    cls: Vec<Vec<f32>>,
    /// `(residues × residues)` contact probabilities.
    contacts: Option<Vec<f32>>,
    /// `(residues+2) × vocab` logits (not available for windowed sequences).
    logits: Option<Vec<f32>>,
}

/// One piece of work: a whole sequence or one window of it.
struct Piece {
    owner: usize,
    start: usize,
    residues: String,
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
    device_spec: DeviceSpec,
    dtype: DType,
    cache: Arc<EmbeddingCache>,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.loaded.name)
            .field("fingerprint", &self.loaded.checkpoint.fingerprint)
            .field("device", &self.loaded.device_spec)
            .field("dtype", &self.loaded.dtype)
            .finish()
    }
}

impl Engine {
    /// Opens and loads a checkpoint directory.
    pub fn load(
        dir: impl AsRef<Path>,
        device: DeviceSpec,
        dtype: DType,
        options: EngineOptions,
        cache: Arc<EmbeddingCache>,
    ) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir)?;
        Self::from_checkpoint(checkpoint, device, dtype, options, cache)
    }

    /// Loads the weights of an opened checkpoint.
    pub fn from_checkpoint(
        checkpoint: Checkpoint,
        device_spec: DeviceSpec,
        dtype: DType,
        options: EngineOptions,
        cache: Arc<EmbeddingCache>,
    ) -> Result<Self> {
        let device = device_spec.open()?;
        let dtype = if device.is_cpu() && dtype == DType::F16 {
            // candle's CPU kernels have no fast f16 path; bf16 and f32 are supported.
            DType::F32
        } else {
            dtype
        };
        let model = checkpoint.load_model(&device, dtype)?;
        let mut builder =
            rayon::ThreadPoolBuilder::new().thread_name(|i| format!("plm-compute-{i}"));
        if options.threads > 0 {
            builder = builder.num_threads(options.threads);
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
                device_spec,
                dtype,
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
        self.loaded.device_spec
    }

    /// Precision of the weights.
    pub fn dtype(&self) -> DType {
        self.loaded.dtype
    }

    /// The options this handle's calls run under.
    pub fn options(&self) -> EngineOptions {
        self.options
    }

    /// A handle on the same loaded model whose calls run under `options` (the thread count
    /// is the loaded one's: it only applies at load).
    pub fn with_options(&self, options: EngineOptions) -> Engine {
        Engine {
            loaded: self.loaded.clone(),
            options: EngineOptions {
                threads: self.options.threads,
                ..options
            },
        }
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
        let limit = self.max_residues();
        let overlap = options.window_overlap.min(limit / 2);
        let mut pieces = Vec::new();
        for (owner, seq) in cleaned.iter().enumerate() {
            if let Some(cap) = options.max_length.filter(|&cap| seq.len() > cap) {
                return Err(PlmError::SequenceOverLimit {
                    length: seq.len(),
                    limit: cap,
                });
            }
            if seq.len() <= limit {
                pieces.push(Piece {
                    owner,
                    start: 0,
                    residues: seq.clone(),
                });
                continue;
            }
            if options.long_sequences == LongSequencePolicy::Error || request.logits {
                return Err(PlmError::SequenceTooLong {
                    length: seq.len(),
                    limit,
                });
            }
            for start in plan_windows(seq.len(), limit, overlap) {
                pieces.push(Piece {
                    owner,
                    start,
                    residues: seq[start..start + limit].to_string(),
                });
            }
        }
        let lengths: Vec<usize> = pieces.iter().map(|p| p.residues.len()).collect();
        let mut piece_outputs: Vec<Option<SequenceOutput>> =
            (0..pieces.len()).map(|_| None).collect();
        for batch in plan_batches(&lengths, options.max_tokens_per_batch) {
            if options.interrupt_check.is_some_and(|stop| stop()) {
                return Err(PlmError::Cancelled);
            }
            let seqs: Vec<&str> = batch.iter().map(|&i| pieces[i].residues.as_str()).collect();
            let outs = self
                .loaded
                .pool
                .install(|| self.run_batch(&seqs, request))?;
            for (i, out) in batch.into_iter().zip(outs) {
                piece_outputs[i] = Some(out);
            }
        }
        self.merge_pieces(cleaned, &pieces, piece_outputs, request)
    }

    /// Combines the outputs of windows into one output per sequence.
    fn merge_pieces(
        &self,
        cleaned: &[String],
        pieces: &[Piece],
        mut outputs: Vec<Option<SequenceOutput>>,
        request: &Request,
    ) -> Result<Vec<SequenceOutput>> {
        let h = self.hidden_size();
        let mut by_owner: Vec<Vec<usize>> = vec![Vec::new(); cleaned.len()];
        for (i, p) in pieces.iter().enumerate() {
            by_owner[p.owner].push(i);
        }
        let mut merged = Vec::with_capacity(cleaned.len());
        for (owner, idxs) in by_owner.into_iter().enumerate() {
            if idxs.len() == 1 {
                merged.push(outputs[idxs[0]].take().unwrap_or_default());
                continue;
            }
            let len = cleaned[owner].len();
            let parts: Vec<(usize, SequenceOutput)> = idxs
                .iter()
                .map(|&i| (pieces[i].start, outputs[i].take().unwrap_or_default()))
                .collect();
            let mut out = SequenceOutput::default();
            for l in 0..request.layers.len() {
                let blocks: Vec<(usize, &[f32])> = parts
                    .iter()
                    .map(|(s, o)| (*s, o.residues[l].as_slice()))
                    .collect();
                out.residues.push(merge_windows(len, h, &blocks));
                let cls: Vec<f32> = parts
                    .iter()
                    .flat_map(|(_, o)| o.cls[l].iter().copied())
                    .collect();
                out.cls.push(mean_rows(&cls, h));
            }
            if request.contacts {
                out.contacts = Some(merge_contact_windows(len, &parts));
            }
            merged.push(out);
        }
        Ok(merged)
    }

    /// One forward pass over a batch of sequences that fit the limit.
    fn run_batch(&self, seqs: &[&str], request: &Request) -> Result<Vec<SequenceOutput>> {
        let tokenizer = self.tokenizer();
        let pad = tokenizer.special().pad;
        let encoded = seqs
            .iter()
            .map(|s| tokenizer.encode_clean(s))
            .collect::<Result<Vec<_>>>()?;
        let t = encoded.iter().map(Vec::len).max().unwrap_or(2);
        let b = encoded.len();
        let mut ids = vec![pad; b * t];
        let mut mask = vec![0u32; b * t];
        for (row, e) in encoded.iter().enumerate() {
            ids[row * t..row * t + e.len()].copy_from_slice(e);
            mask[row * t..row * t + e.len()]
                .iter_mut()
                .for_each(|m| *m = 1);
        }
        let ids = Tensor::from_vec(ids, (b, t), &self.loaded.device)?;
        let mask = Tensor::from_vec(mask, (b, t), &self.loaded.device)?;
        let mut layers = request.layers.clone();
        layers.sort_unstable();
        layers.dedup();
        let out = self.loaded.model.forward(
            &ids,
            &mask,
            &ForwardOptions {
                layers: layers.clone(),
                logits: request.logits,
                contacts: request.contacts,
            },
        )?;
        let h = self.hidden_size();
        let hidden: Vec<Vec<f32>> = request
            .layers
            .iter()
            .map(|l| {
                let tensor = out
                    .layer(*l)
                    .ok_or_else(|| PlmError::Internal(format!("layer {l} not computed")))?;
                to_host_vec(tensor)
            })
            .collect::<Result<_>>()?;
        let contacts = out.contacts.as_ref().map(to_host_vec).transpose()?;
        let logits = out.logits.as_ref().map(to_host_vec).transpose()?;
        let vocab = self.config().vocab_size;
        let mut results = Vec::with_capacity(b);
        for (row, seq) in seqs.iter().enumerate() {
            let n = seq.len();
            let mut o = SequenceOutput::default();
            for data in &hidden {
                let base = row * t * h;
                o.cls.push(data[base..base + h].to_vec());
                o.residues.push(data[base + h..base + (n + 1) * h].to_vec());
            }
            if let Some(c) = &contacts {
                let tc = t - 2;
                let mut m = Vec::with_capacity(n * n);
                for i in 0..n {
                    let start = row * tc * tc + i * tc;
                    m.extend_from_slice(&c[start..start + n]);
                }
                o.contacts = Some(m);
            }
            if let Some(lg) = &logits {
                let base = row * t * vocab;
                o.logits = Some(lg[base..base + (n + 2) * vocab].to_vec());
            }
            results.push(o);
        }
        Ok(results)
    }
}

/// Copies a tensor to host memory as a flat f32 vector.
fn to_host_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Places per-layer `(rows × h)` matrices side by side into `(rows × h·layers)`.
fn interleave_layers(per_layer: &[Vec<f32>], h: usize) -> Vec<f32> {
    if per_layer.len() == 1 {
        return per_layer[0].clone();
    }
    let rows = per_layer.first().map_or(0, |m| m.len() / h);
    let mut out = Vec::with_capacity(rows * h * per_layer.len());
    for r in 0..rows {
        for m in per_layer {
            out.extend_from_slice(&m[r * h..(r + 1) * h]);
        }
    }
    out
}

/// Averages contact maps of overlapping windows; pairs never in one window get 0.
fn merge_contact_windows(len: usize, parts: &[(usize, SequenceOutput)]) -> Vec<f32> {
    let mut sum = vec![0f32; len * len];
    let mut count = vec![0u16; len * len];
    for (start, o) in parts {
        let Some(c) = &o.contacts else { continue };
        let w = (c.len() as f64).sqrt().round() as usize;
        for i in 0..w {
            for j in 0..w {
                let (gi, gj) = (start + i, start + j);
                if gi < len && gj < len {
                    sum[gi * len + gj] += c[i * w + j];
                    count[gi * len + gj] += 1;
                }
            }
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(s, c)| if *c > 0 { s / *c as f32 } else { 0.0 })
        .collect()
}
