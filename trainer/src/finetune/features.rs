//! Language-model features for the task heads, computed once per (model, data set) and cached
//! on disk: pooled multi-scale embeddings, per-residue multi-scale features (f16) and the
//! contact pairs predicted by the model's contact head.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use half::f16;
use indicatif::{ProgressBar, ProgressStyle};
use plm_model::predict::mean_rows;
use plm_model::{
    DeviceSpec, EmbeddingCache, Engine, EngineOptions, LoadOptions, LongSequencePolicy,
};
use sha2::{Digest, Sha256};

/// Per-residue features of a list of proteins, stacked.
#[derive(Debug, Clone)]
pub struct ResidueFeatures {
    /// Width of a residue's feature vector.
    pub dim: usize,
    /// Row offset of each protein, plus the total at the end.
    pub offsets: Vec<usize>,
    /// `total residues × dim` values.
    pub values: Vec<f16>,
}

impl ResidueFeatures {
    /// Number of residues of protein `i`.
    pub fn len(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }

    /// Whether there are no proteins.
    pub fn is_empty(&self) -> bool {
        self.offsets.len() <= 1
    }

    /// The stacked f32 features `[Σ residues, dim]` of proteins `proteins`.
    pub fn tensor(&self, proteins: &[usize], device: &Device) -> Result<Tensor> {
        let mut data = Vec::new();
        for &p in proteins {
            let rows = &self.values[self.offsets[p] * self.dim..self.offsets[p + 1] * self.dim];
            data.extend(rows.iter().map(|v| v.to_f32()));
        }
        let n = data.len() / self.dim.max(1);
        Ok(Tensor::from_vec(data, (n, self.dim), device)?)
    }
}

/// Computes and caches features with a loaded model.
pub struct FeatureExtractor {
    engine: Engine,
    /// Language-model layers concatenated into the features.
    pub layers: Vec<i64>,
    cache_dir: PathBuf,
}

fn key(parts: &[&str], sequences: &[String]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    for s in sequences {
        h.update(s.as_bytes());
        h.update([b'\n']);
    }
    hex::encode(&h.finalize()[..12])
}

pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {pos}/{len} proteins, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

impl FeatureExtractor {
    /// Loads the model of `model_dir` on `device`; features use `layers` and are cached under
    /// `cache_dir/<fingerprint>/` (in f32 whatever the device, so a cache filled on a GPU
    /// serves a CPU run too).
    pub fn open(
        model_dir: &Path,
        layers: Vec<i64>,
        cache_dir: &Path,
        device: DeviceSpec,
    ) -> Result<Self> {
        let options = EngineOptions {
            long_sequences: LongSequencePolicy::Window,
            ..Default::default()
        };
        let engine = Engine::load(
            model_dir,
            LoadOptions {
                device,
                ..LoadOptions::default()
            },
            options,
            Arc::new(EmbeddingCache::new(0)),
        )
        .with_context(|| format!("loading {}", model_dir.display()))?;
        let cache_dir = cache_dir.join(&engine.fingerprint()[..16]);
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("creating {}", cache_dir.display()))?;
        Ok(Self {
            engine,
            layers,
            cache_dir,
        })
    }

    fn layer_args(&self) -> Vec<Option<i64>> {
        self.layers.iter().map(|&l| Some(l)).collect()
    }

    fn layer_tag(&self) -> String {
        self.layers
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `f` over chunks of sequences in length order, with a progress bar.
    fn chunked<T: Default + Clone>(
        &self,
        sequences: &[String],
        what: &str,
        mut f: impl FnMut(&[&str]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| sequences[i].len());
        let mut out = vec![T::default(); sequences.len()];
        let bar = progress(sequences.len(), what);
        // Without a terminal the bar is hidden: log every tenth instead, for background runs.
        let log = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let started = std::time::Instant::now();
        let mut next_report = sequences.len() / 10;
        let mut done = 0;
        for chunk in order.chunks(32) {
            let seqs: Vec<&str> = chunk.iter().map(|&i| sequences[i].as_str()).collect();
            for (&i, v) in chunk.iter().zip(f(&seqs)?) {
                out[i] = v;
            }
            bar.inc(chunk.len() as u64);
            done += chunk.len();
            if log && done >= next_report {
                eprintln!(
                    "{what}: {done}/{} proteins, {:.0} s",
                    sequences.len(),
                    started.elapsed().as_secs_f64()
                );
                next_report += sequences.len() / 10 + 1;
            }
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// Pooled multi-scale features (mean over residues) of each sequence.
    pub fn pooled(&self, what: &str, sequences: &[String]) -> Result<Vec<Vec<f32>>> {
        let path = self.cache_dir.join(format!(
            "pooled-{}.safetensors",
            key(&[&self.layer_tag()], sequences)
        ));
        if let Ok(t) = candle_core::safetensors::load(&path, &Device::Cpu) {
            if let Some(x) = t.get("pooled") {
                return Ok(x.to_vec2::<f32>()?);
            }
        }
        let layers = self.layer_args();
        let rows = self.chunked(sequences, what, |seqs| {
            Ok(self
                .engine
                .embed_residues(seqs, &layers)?
                .iter()
                .map(mean_rows)
                .collect())
        })?;
        let dim = rows.first().map_or(0, Vec::len);
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (rows.len(), dim), &Device::Cpu)?;
        candle_core::safetensors::save(&HashMap::from([("pooled".to_string(), t)]), &path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(rows)
    }

    /// Per-residue multi-scale features of each sequence.
    pub fn residues(&self, what: &str, sequences: &[String]) -> Result<ResidueFeatures> {
        let path = self.cache_dir.join(format!(
            "residues-{}.safetensors",
            key(&[&self.layer_tag()], sequences)
        ));
        if let Ok(t) = candle_core::safetensors::load(&path, &Device::Cpu) {
            if let (Some(v), Some(o)) = (t.get("values"), t.get("offsets")) {
                let dim = v.dim(1)?;
                return Ok(ResidueFeatures {
                    dim,
                    offsets: o
                        .to_vec1::<u32>()?
                        .into_iter()
                        .map(|x| x as usize)
                        .collect(),
                    values: v.flatten_all()?.to_vec1::<f16>()?,
                });
            }
        }
        let layers = self.layer_args();
        let matrices = self.chunked(sequences, what, |seqs| {
            Ok(self
                .engine
                .embed_residues(seqs, &layers)?
                .into_iter()
                .map(|m| {
                    (
                        m.cols,
                        m.data.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
                    )
                })
                .collect())
        })?;
        let dim = matrices.iter().map(|m| m.0).max().unwrap_or(0);
        let mut offsets = vec![0usize];
        let mut values = Vec::new();
        for (_, data) in matrices {
            offsets.push(offsets.last().copied().unwrap_or(0) + data.len() / dim.max(1));
            values.extend(data);
        }
        let total = *offsets.last().unwrap_or(&0);
        let tensors = HashMap::from([
            (
                "values".to_string(),
                Tensor::from_slice(&values, (total, dim), &Device::Cpu)?,
            ),
            (
                "offsets".to_string(),
                Tensor::from_vec(
                    offsets.iter().map(|&o| o as u32).collect::<Vec<_>>(),
                    offsets.len(),
                    &Device::Cpu,
                )?,
            ),
        ]);
        candle_core::safetensors::save(&tensors, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(ResidueFeatures {
            dim,
            offsets,
            values,
        })
    }

    /// Residue pairs `(i, j)`, `i < j`, whose predicted contact probability reaches
    /// `threshold`. Sequences longer than the model limit get no predicted contacts.
    pub fn contacts(
        &self,
        what: &str,
        sequences: &[String],
        threshold: f32,
    ) -> Result<Vec<Vec<(usize, usize)>>> {
        let path = self.cache_dir.join(format!(
            "contacts-{}.safetensors",
            key(&[&threshold.to_string()], sequences)
        ));
        if let Ok(t) = candle_core::safetensors::load(&path, &Device::Cpu) {
            if let (Some(p), Some(o)) = (t.get("pairs"), t.get("offsets")) {
                let pairs = p.to_vec2::<u32>()?;
                let offsets = o.to_vec1::<u32>()?;
                return Ok(offsets
                    .windows(2)
                    .map(|w| {
                        pairs[w[0] as usize..w[1] as usize]
                            .iter()
                            .map(|p| (p[0] as usize, p[1] as usize))
                            .collect()
                    })
                    .collect());
            }
        }
        let limit = self.engine.max_residues();
        let lists = self.chunked(sequences, what, |seqs| {
            seqs.iter()
                .map(|s| {
                    if s.len() > limit {
                        return Ok(Vec::new());
                    }
                    let m = self.engine.contacts(s)?;
                    let mut pairs = Vec::new();
                    for i in 0..m.rows {
                        for j in i + 1..m.cols {
                            if m.data[i * m.cols + j] >= threshold {
                                pairs.push((i, j));
                            }
                        }
                    }
                    Ok(pairs)
                })
                .collect()
        })?;
        let mut flat = Vec::new();
        let mut offsets = vec![0u32];
        for l in &lists {
            flat.extend(l.iter().flat_map(|&(i, j)| [i as u32, j as u32]));
            offsets.push((flat.len() / 2) as u32);
        }
        let n = flat.len() / 2;
        let tensors = HashMap::from([
            (
                "pairs".to_string(),
                Tensor::from_vec(flat, (n, 2), &Device::Cpu)?,
            ),
            (
                "offsets".to_string(),
                Tensor::from_vec(offsets.clone(), offsets.len(), &Device::Cpu)?,
            ),
        ]);
        candle_core::safetensors::save(&tensors, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(lists)
    }
}

/// Amino-acid composition (20 standard residues, then the share of others) — the baseline
/// features of the ablations.
pub fn composition(sequence: &str) -> Vec<f32> {
    const AA: &[u8; 20] = b"ACDEFGHIKLMNPQRSTVWY";
    let mut counts = vec![0f32; 21];
    for b in sequence.bytes() {
        let k = AA
            .iter()
            .position(|&a| a == b.to_ascii_uppercase())
            .unwrap_or(20);
        counts[k] += 1.0;
    }
    let n = sequence.len().max(1) as f32;
    counts.iter_mut().for_each(|c| *c /= n);
    counts
}

/// One-hot residue identities (21 columns) stacked for `proteins` — the per-residue baseline.
pub fn one_hot(sequences: &[&str], device: &Device) -> Result<Tensor> {
    const AA: &[u8; 20] = b"ACDEFGHIKLMNPQRSTVWY";
    let mut data = Vec::new();
    for s in sequences {
        for b in s.bytes() {
            let mut row = [0f32; 21];
            row[AA
                .iter()
                .position(|&a| a == b.to_ascii_uppercase())
                .unwrap_or(20)] = 1.0;
            data.extend_from_slice(&row);
        }
    }
    let n = data.len() / 21;
    Ok(Tensor::from_vec(data, (n, 21), device)?)
}
