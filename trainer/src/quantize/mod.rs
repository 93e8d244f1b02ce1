//! `plm-train quantize`: install a model at a lower precision (int8 or bf16), only if it passes
//! the quality gates against the f32 model on real sequences.
//!
//! The gates (on `--sequences` proteins of `--data`, mean-pooled last layer):
//! - cosine between the two models' embeddings of each protein: mean ≥ 0.999, min ≥ 0.99;
//! - overlap of each protein's 10 nearest neighbours (cosine) among the set: mean ≥ 0.95;
//! - masked-LM perplexity (same masks) drifts by at most 0.1;
//! - with `--task-data`, every task head's metric within 1 % of f32 ([`tasks`]). A model with
//!   task heads is not quantised without it unless `--skip-task-gate` says so (recorded).
//!
//! The new directory holds the same weights file, config, tokenizer and task heads, and a
//! manifest with the precision and the gate results; its fingerprint differs from the f32
//! model's ([`plm_model::Precision::identity`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use plm_model::checkpoint::{files, read_json};
use plm_model::{
    Checkpoint, EmbeddingCache, Engine, EngineOptions, LoadOptions, Manifest, Pooling, Precision,
    TaskHeads,
};
use serde_json::{json, Value};

use crate::pretrain;

pub mod tasks;

/// Least mean cosine between f32 and quantised embeddings.
pub const MIN_MEAN_COSINE: f64 = 0.999;
/// Least cosine of any one protein.
pub const MIN_COSINE: f64 = 0.99;
/// Least mean overlap of the 10 nearest neighbours.
pub const MIN_NEIGHBOUR_OVERLAP: f64 = 0.95;
/// Largest change of the masked-LM perplexity.
pub const MAX_PERPLEXITY_DRIFT: f64 = 0.1;
/// Neighbours compared per protein.
const NEIGHBOURS: usize = 10;

/// Arguments of `plm-train quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// The f32 model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// The directory to write (must not exist).
    #[arg(long)]
    pub to: PathBuf,
    /// Target precision.
    #[arg(long, default_value = "int8")]
    pub precision: Precision,
    /// The new model's name in SQL (default: the model's name and the precision, e.g.
    /// `plm-default-int8`).
    #[arg(long)]
    pub name: Option<String>,
    /// FASTA (.gz allowed) of the gate sequences, e.g.
    /// ../shared/data/pretrain/swissprot2014_valid.fasta.gz.
    #[arg(long)]
    pub data: PathBuf,
    /// Sequences the gates use.
    #[arg(long, default_value_t = 2000)]
    pub sequences: usize,
    /// Longest crop of a sequence.
    #[arg(long, default_value_t = 1022)]
    pub max_len: usize,
    /// Seed of the crops and the perplexity masks.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The shared data directory (`function/`, `ppi/`, `binding/`): gates every task head's
    /// metric on held-out labelled data. Required when the model has task heads.
    #[arg(long)]
    pub task_data: Option<PathBuf>,
    /// Items per task of the task-head gate (proteins, pairs, or chains over all ligands).
    #[arg(long, default_value_t = 300)]
    pub task_items: usize,
    /// Install a model with task heads without gating them (recorded in the manifest).
    #[arg(long)]
    pub skip_task_gate: bool,
}

/// Quantises, gates and writes the model; fails (writing nothing) when a gate fails.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    ensure!(
        !args.precision.is_f32(),
        "--precision f32 is the model itself; choose int8 or bf16"
    );
    ensure!(
        !(args.skip_task_gate && args.task_data.is_some()),
        "--task-data gates the task heads and --skip-task-gate skips that gate: give one of them"
    );
    ensure!(
        !args.to.exists(),
        "{} exists; choose a new directory",
        args.to.display()
    );
    let source = Checkpoint::open(&args.model)
        .with_context(|| format!("opening {}", args.model.display()))?;
    ensure!(
        source.precision().is_f32(),
        "{} is already {}; quantise its f32 model",
        args.model.display(),
        source.precision().as_str()
    );
    let staging = staging_dir(&args.to)?;
    let result = write_and_gate(args, &source, &staging);
    match result {
        Ok(report) => {
            std::fs::rename(&staging, &args.to)
                .with_context(|| format!("publishing {}", args.to.display()))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Err(e) => {
            // Best effort: the error being reported matters more than a leftover directory.
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// A fresh sibling directory of `to` to build the model in.
fn staging_dir(to: &Path) -> Result<PathBuf> {
    let name = to
        .file_name()
        .with_context(|| format!("{} has no directory name", to.display()))?;
    let parent = to.parent().filter(|p| !p.as_os_str().is_empty());
    let staging = parent
        .unwrap_or(Path::new("."))
        .join(format!(".{}.partial", name.to_string_lossy()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    Ok(staging)
}

fn write_and_gate(args: &QuantizeArgs, source: &Checkpoint, staging: &Path) -> Result<Value> {
    copy_model_files(&source.dir, staging)?;
    let mut manifest = source.describe();
    manifest.name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", source.name(), args.precision.as_str()));
    manifest.precision = args.precision;
    write_manifest(staging, &manifest)?;

    let sequences = pretrain::load_validation(
        &args.data.clone().into(),
        args.sequences,
        args.max_len,
        args.seed,
    )
    .with_context(|| format!("reading {}", args.data.display()))?;
    ensure!(
        sequences.len() > NEIGHBOURS,
        "{} gave {} sequences; the gates need more than {NEIGHBOURS}",
        args.data.display(),
        sequences.len()
    );
    let heads = TaskHeads::open(&source.dir, &Device::Cpu)
        .with_context(|| format!("loading the task heads of {}", source.dir.display()))?;
    let task_sets = match (&heads, &args.task_data) {
        (Some(heads), Some(data)) => Some(
            tasks::TaskSets::load(data, heads, args.task_items, args.seed)
                .with_context(|| format!("reading the task data in {}", data.display()))?,
        ),
        (Some(_), None) if !args.skip_task_gate => bail!(
            "{} has task heads: give --task-data DIR (the shared data directory) so that their metrics are gated, or --skip-task-gate to install it without (recorded in the manifest)",
            args.model.display()
        ),
        _ => None,
    };
    let started = Instant::now();
    let full = load(&source.dir)?;
    let quantised = load(staging)?;
    let gates = measure_gates(&full, &quantised, &sequences, args.seed)?;
    let task_gate = match (&heads, &task_sets) {
        (Some(heads), Some(sets)) => {
            Some(tasks::TaskGate::measure(&full, &quantised, heads, sets)?)
        }
        _ => None,
    };
    let task_report = match (&heads, &task_gate) {
        (_, Some(gate)) => gate.to_json(),
        (Some(_), None) => json!("skipped (--skip-task-gate)"),
        (None, None) => json!("no task heads"),
    };
    let report = json!({
        "model": manifest.name,
        "precision": args.precision.as_str(),
        "from": {"name": source.name(), "fingerprint": source.fingerprint},
        "fingerprint": quantised.fingerprint(),
        "data": args.data.display().to_string(),
        "sequences": sequences.len(),
        "seed": args.seed,
        "gates": gates.to_json(),
        "task_gate": task_report,
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    let mut failures = gates.failures();
    failures.extend(task_gate.iter().flat_map(tasks::TaskGate::failures));
    if !failures.is_empty() {
        bail!(
            "the {} model fails its quality gates ({}); nothing was written:\n{}",
            args.precision.as_str(),
            failures.join("; "),
            serde_json::to_string_pretty(&report)?
        );
    }
    record_in_manifest(staging, &report)?;
    Ok(report)
}

/// Copies every file of the model directory (weights, config, tokenizer, task heads, card);
/// the manifest is written afterwards.
fn copy_model_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let path = entry.path();
        if path.is_file() && entry.file_name() != files::MANIFEST {
            std::fs::copy(&path, to.join(entry.file_name()))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(files::MANIFEST);
    std::fs::write(&path, serde_json::to_string_pretty(manifest)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Adds the gate report to the manifest's provenance (`training.quantization`).
fn record_in_manifest(dir: &Path, report: &Value) -> Result<()> {
    let mut manifest: Manifest = read_json(&dir.join(files::MANIFEST))?;
    if !manifest.training.is_object() {
        manifest.training = json!({});
    }
    manifest.training["quantization"] = report.clone();
    write_manifest(dir, &manifest)
}

fn load(dir: &Path) -> Result<Engine> {
    Engine::load(
        dir,
        LoadOptions::default(),
        EngineOptions::default(),
        // Interaction pairs share proteins: embed each once.
        Arc::new(EmbeddingCache::new(256 << 20)),
    )
    .with_context(|| format!("loading {}", dir.display()))
}

/// The measured gate values.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    pub mean_cosine: f64,
    pub min_cosine: f64,
    pub neighbour_overlap: f64,
    pub perplexity_f32: f64,
    pub perplexity: f64,
}

impl Gates {
    /// The gates that fail, described.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.mean_cosine < MIN_MEAN_COSINE {
            out.push(format!(
                "mean cosine {:.5} < {MIN_MEAN_COSINE}",
                self.mean_cosine
            ));
        }
        if self.min_cosine < MIN_COSINE {
            out.push(format!("min cosine {:.5} < {MIN_COSINE}", self.min_cosine));
        }
        if self.neighbour_overlap < MIN_NEIGHBOUR_OVERLAP {
            out.push(format!(
                "top-{NEIGHBOURS} neighbour overlap {:.4} < {MIN_NEIGHBOUR_OVERLAP}",
                self.neighbour_overlap
            ));
        }
        let drift = (self.perplexity - self.perplexity_f32).abs();
        if drift.is_nan() || drift > MAX_PERPLEXITY_DRIFT {
            out.push(format!(
                "perplexity drift {drift:.4} > {MAX_PERPLEXITY_DRIFT}"
            ));
        }
        out
    }

    fn to_json(&self) -> Value {
        json!({
            "embedding_cosine": {"mean": self.mean_cosine, "min": self.min_cosine,
                "required": {"mean": MIN_MEAN_COSINE, "min": MIN_COSINE}},
            "neighbour_overlap": {"top": NEIGHBOURS, "mean": self.neighbour_overlap,
                "required": MIN_NEIGHBOUR_OVERLAP},
            "perplexity": {"f32": self.perplexity_f32, "quantised": self.perplexity,
                "drift": (self.perplexity - self.perplexity_f32).abs(),
                "allowed": MAX_PERPLEXITY_DRIFT},
            "passed": self.failures().is_empty(),
        })
    }
}

/// Embeds `sequences` with both models and measures every gate.
pub fn measure_gates(
    full: &Engine,
    quantised: &Engine,
    sequences: &[String],
    seed: u64,
) -> Result<Gates> {
    let refs: Vec<&str> = sequences.iter().map(String::as_str).collect();
    let a = normalised(full.embed(&refs, None, Pooling::Mean)?);
    let b = normalised(quantised.embed(&refs, None, Pooling::Mean)?);
    let cosines: Vec<f64> = a.iter().zip(&b).map(|(x, y)| dot(x, y)).collect();
    let mean_cosine = cosines.iter().sum::<f64>() / cosines.len() as f64;
    let min_cosine = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    let neighbour_overlap = neighbour_overlap(&a, &b, NEIGHBOURS);
    let perplexity = |engine: &Engine| {
        pretrain::perplexity(
            engine.model(),
            engine.tokenizer(),
            sequences,
            16_384,
            seed,
            &Device::Cpu,
        )
    };
    Ok(Gates {
        mean_cosine,
        min_cosine,
        neighbour_overlap,
        perplexity_f32: perplexity(full)?,
        perplexity: perplexity(quantised)?,
    })
}

fn normalised(rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.into_iter()
        .map(|mut r| {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|v| *v /= norm);
            r
        })
        .collect()
}

fn dot(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(a, b)| f64::from(a * b)).sum()
}

/// Mean fraction of each row's `k` nearest neighbours (by cosine, itself excluded) in `a`
/// that are also among its `k` nearest in `b`.
pub fn neighbour_overlap(a: &[Vec<f32>], b: &[Vec<f32>], k: usize) -> f64 {
    use rayon::prelude::*;
    let top = |rows: &[Vec<f32>], i: usize| -> Vec<usize> {
        let mut scored: Vec<(f64, usize)> = rows
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(j, r)| (dot(&rows[i], r), j))
            .collect();
        scored.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        scored.into_iter().take(k).map(|(_, j)| j).collect()
    };
    let total: f64 = (0..a.len())
        .into_par_iter()
        .map(|i| {
            let (ta, tb) = (top(a, i), top(b, i));
            ta.iter().filter(|j| tb.contains(j)).count() as f64 / k as f64
        })
        .sum();
    total / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_overlap_is_one_for_the_same_space_and_falls_when_neighbours_change() {
        let a: Vec<Vec<f32>> = (0..12)
            .map(|i| vec![(i as f32 * 0.3).cos(), (i as f32 * 0.3).sin()])
            .collect();
        assert_eq!(neighbour_overlap(&a, &a, 3), 1.0);
        let mut b = a.clone();
        b.reverse();
        let shuffled: Vec<Vec<f32>> = (0..12).map(|i| b[(i * 5) % 12].clone()).collect();
        assert!(neighbour_overlap(&a, &shuffled, 3) < 1.0);
    }

    #[test]
    fn gates_name_every_failure() {
        let ok = Gates {
            mean_cosine: 0.9995,
            min_cosine: 0.995,
            neighbour_overlap: 0.97,
            perplexity_f32: 10.0,
            perplexity: 10.05,
        };
        assert!(ok.failures().is_empty());
        let bad = Gates {
            mean_cosine: 0.99,
            min_cosine: 0.9,
            neighbour_overlap: 0.5,
            perplexity_f32: 10.0,
            perplexity: f64::NAN,
        };
        assert_eq!(bad.failures().len(), 4);
    }
}
