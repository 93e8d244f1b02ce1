//! `plm-train finetune`: fits the contact head and the task heads (function, interaction,
//! binding sites) on a language model's frozen features, evaluates each on held-out data with
//! baselines, and writes one deployable directory (the model, `heads.json`,
//! `heads.safetensors`, `results.md`).

pub mod binding;
pub mod contact;
pub mod contrastive;
pub mod features;
pub mod function;
pub mod ppi;
pub mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use clap::Args;
use plm_model::checkpoint::{files, read_json, write_json};
use plm_model::heads::{
    BindingHeadConfig, FunctionHeadConfig, HeadsConfig, PpiHeadConfig, TaskHeads,
};
use plm_model::neighbours::NeighbourHeadConfig;
use plm_model::{DeviceSpec, Manifest};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use train::HeadTraining;

use crate::storage::{self, Location};

/// Arguments of `plm-train finetune`.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct FinetuneArgs {
    /// Language-model checkpoint directory (not modified): a path, or s3://bucket/prefix
    /// (downloaded into the staging directory, `PLM_TRAIN_STAGING`).
    #[arg(long)]
    pub model: Location,
    /// The task data directory (`function/`, `ppi/`, `binding/`; layout in the README,
    /// "Task heads").
    #[arg(long)]
    pub data: PathBuf,
    /// Output directory: a copy of the model with the trained heads.
    #[arg(long)]
    pub out: PathBuf,
    /// Tasks, comma-separated: contacts, ec, go, ppi, binding.
    #[arg(
        long,
        default_value = "contacts,ec,go,ppi,binding",
        value_delimiter = ','
    )]
    pub tasks: Vec<String>,
    /// Feature cache directory (default: OUT/../.feature-cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Language-model layers concatenated into the features (negative: from the end).
    #[arg(
        long,
        default_value = "-3,-1",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub layers: Vec<i64>,
    /// Hidden width of the function and interaction heads.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// GNN layers of the binding-site head.
    #[arg(long, default_value_t = 2)]
    pub gnn_layers: usize,
    /// Predicted-contact probability that makes a graph edge.
    #[arg(long, default_value_t = 0.3)]
    pub contact_threshold: f32,
    /// Proteins drawn from each GO file (18,000 each).
    #[arg(long, default_value_t = 4000)]
    pub go_proteins: usize,
    /// Minimum training proteins for a GO term to get an output.
    #[arg(long, default_value_t = 20)]
    pub go_min_count: usize,
    /// Human and fly pairs drawn for the cross-species test.
    #[arg(long, default_value_t = 1500)]
    pub cross_species_pairs: usize,
    /// Guo yeast pairs drawn for the 5-fold cross-validation (11,188 in the file).
    #[arg(long, default_value_t = usize::MAX)]
    pub guo_pairs: usize,
    /// Proteins drawn from each binding-site training and test file (all when larger than the
    /// file).
    #[arg(long, default_value_t = usize::MAX)]
    pub binding_proteins: usize,
    /// Most epochs of the function and interaction heads.
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Most epochs of the binding-site head.
    #[arg(long, default_value_t = 6)]
    pub binding_epochs: usize,
    /// Epochs of the contact regression.
    #[arg(long, default_value_t = 2)]
    pub contact_epochs: usize,
    /// Also train the ablation variants (baselines) of the binding-site head.
    #[arg(long)]
    pub ablations: bool,
    /// Seed of splits, subsets and shuffles.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the heads the model already has and replace only those of `--tasks` (their
    /// homology blends are dropped: re-run `plm-train homology` for them).
    #[arg(long)]
    pub update: bool,
}

impl FinetuneArgs {
    fn head_training(&self) -> HeadTraining {
        HeadTraining {
            epochs: self.epochs,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-2,
            patience: 4,
            seed: self.seed,
        }
    }

    fn work_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(|| {
            self.out
                .parent()
                .unwrap_or(Path::new("."))
                .join(".feature-cache")
        })
    }
}

/// A trained head with its configuration and measured metrics.
pub struct TaskOutput {
    name: String,
    varmap: VarMap,
    metrics: serde_json::Value,
    function: Option<FunctionHeadConfig>,
    ppi: Option<PpiHeadConfig>,
    binding: Option<BindingHeadConfig>,
    neighbours: Option<(NeighbourHeadConfig, Tensor)>,
}

impl TaskOutput {
    fn function(
        name: &str,
        config: FunctionHeadConfig,
        varmap: VarMap,
        metrics: serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            varmap,
            metrics,
            function: Some(config),
            ppi: None,
            binding: None,
            neighbours: None,
        }
    }
    fn neighbours(
        name: &str,
        config: NeighbourHeadConfig,
        bank: Tensor,
        varmap: VarMap,
        metrics: serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            varmap,
            metrics,
            function: None,
            ppi: None,
            binding: None,
            neighbours: Some((config, bank)),
        }
    }
    fn ppi(config: PpiHeadConfig, varmap: VarMap, metrics: serde_json::Value) -> Self {
        Self {
            name: "ppi".into(),
            varmap,
            metrics,
            function: None,
            ppi: Some(config),
            binding: None,
            neighbours: None,
        }
    }
    fn binding(config: BindingHeadConfig, varmap: VarMap, metrics: serde_json::Value) -> Self {
        Self {
            name: "binding".into(),
            varmap,
            metrics,
            function: None,
            ppi: None,
            binding: Some(config),
            neighbours: None,
        }
    }
    fn prefix(&self) -> String {
        if self.function.is_some() {
            format!("function.{}.", self.name)
        } else if self.neighbours.is_some() {
            format!("neighbours.{}.", self.name)
        } else {
            format!("{}.", self.name)
        }
    }
}

/// The settings (`FinetuneArgs` as JSON) of the finetune run that last trained the head of
/// `task` (`ec`, `go`, `ppi`, `binding`), from a model's `heads.json` metrics: the last
/// `--update` run that named it (`finetune_updates`), else the run that trained them all
/// (`finetune`). Which proteins a head saw follows from them.
pub fn trained_by<'a>(metrics: &'a serde_json::Value, task: &str) -> &'a serde_json::Value {
    let retrained = |run: &&serde_json::Value| {
        run["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|t| t == task))
    };
    metrics["finetune_updates"]
        .as_array()
        .and_then(|runs| runs.iter().rev().find(retrained))
        .unwrap_or(&metrics["finetune"])
}

/// Rows `idx` of a feature table as a `[len, dim]` tensor.
pub fn rows_tensor(x: &[Vec<f32>], idx: &[usize]) -> Result<Tensor> {
    let dim = x.first().map_or(0, Vec::len);
    let flat: Vec<f32> = idx.iter().flat_map(|&i| x[i].iter().copied()).collect();
    Ok(Tensor::from_vec(flat, (idx.len(), dim), &Device::Cpu)?)
}

/// Seeded split of `0..n` into (train, validation) with `fraction` for validation.
pub fn split_validation(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed));
    let v = ((n as f64) * fraction).round() as usize;
    let mut val = idx[..v].to_vec();
    let mut train = idx[v..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

fn copy_model(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for name in [
        files::CONFIG,
        files::WEIGHTS,
        files::TOKENIZER,
        files::VOCAB,
        files::MANIFEST,
        "MODEL_CARD.md",
    ] {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// The heads configuration `--update` starts from, checked before any training: the model
/// must have heads, read from the same layers (or the kept heads would get other inputs).
fn heads_to_update(model_dir: &Path, layers: &[i64]) -> Result<HeadsConfig> {
    let config: HeadsConfig = read_json(&model_dir.join(plm_model::heads::files::CONFIG))
        .with_context(|| format!("--update: {} has no heads to update", model_dir.display()))?;
    if config.feature_layers != layers {
        bail!(
            "--update: the model's heads read layers {:?}, not --layers {:?}",
            config.feature_layers,
            layers
        );
    }
    Ok(config)
}

/// Removes from `config` the heads that `outputs` replace, and returns the weights and
/// metrics of the heads of `model_dir` that stay (for `--update`).
fn existing_heads(
    model_dir: &Path,
    config: &mut HeadsConfig,
    outputs: &[TaskOutput],
) -> Result<(
    HashMap<String, Tensor>,
    serde_json::Map<String, serde_json::Value>,
)> {
    use plm_model::heads::files as head_files;
    let weights = model_dir.join(head_files::WEIGHTS);
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .with_context(|| format!("reading {}", weights.display()))?;
    let mut metrics = match config.metrics.get("results") {
        Some(serde_json::Value::Object(m)) => m.clone(),
        _ => serde_json::Map::new(),
    };
    for o in outputs {
        let name = o.name.as_str();
        config.function.remove(name);
        config.neighbours.remove(name);
        let blend_prefix = format!("{name}_");
        config
            .blend
            .retain(|k, _| k != name && !k.starts_with(blend_prefix.as_str()));
        metrics.remove(name);
        match name {
            "ppi" => config.ppi = None,
            "binding" => config.binding = None,
            _ => {}
        }
        let prefixes = [
            format!("function.{name}."),
            format!("neighbours.{name}."),
            format!("{name}."),
        ];
        tensors.retain(|k, _| !prefixes.iter().any(|p| k.starts_with(p.as_str())));
        eprintln!("--update: replacing the {name} head (its homology blend, if any, is dropped)");
    }
    Ok((tensors, metrics))
}

/// The model's `results.json` (which also holds what `plm-train homology` and
/// `interface-prior` measured) with the entries of `fresh` (the heads' metrics after the
/// update); the homology results of the `replaced` heads no longer describe them and are
/// dropped.
fn updated_results(
    model_dir: &Path,
    fresh: serde_json::Value,
    replaced: &[String],
) -> Result<serde_json::Value> {
    let path = model_dir.join("results.json");
    let mut all: serde_json::Map<String, serde_json::Value> = if path.is_file() {
        read_json(&path)?
    } else {
        serde_json::Map::new()
    };
    if let serde_json::Value::Object(m) = fresh {
        all.extend(m);
    }
    if let Some(serde_json::Value::Object(h)) = all.get_mut("homology") {
        h.retain(|k, _| !replaced.contains(k));
    }
    Ok(serde_json::Value::Object(all))
}

/// Runs `plm-train finetune`.
pub fn run(args: FinetuneArgs, device: DeviceSpec) -> Result<()> {
    const KNOWN: [&str; 5] = ["contacts", "ec", "go", "ppi", "binding"];
    for t in &args.tasks {
        if !KNOWN.contains(&t.as_str()) {
            bail!("unknown task '{t}' (valid: {})", KNOWN.join(", "));
        }
    }
    if !args.data.join("function").is_dir() {
        bail!(
            "{} does not look like the shared data directory (no function/)",
            args.data.display()
        );
    }
    let model_dir = storage::local_model_dir(&args.model, 0)
        .with_context(|| format!("fetching {}", args.model))?;
    plm_model::Checkpoint::open(&model_dir).with_context(|| format!("opening {}", args.model))?;
    if let (Ok(a), Ok(b)) = (model_dir.canonicalize(), args.out.canonicalize()) {
        if a == b {
            bail!(
                "--out {} is the model directory itself; write to a new directory (it is replaced)",
                args.out.display()
            );
        }
    }
    let to_update = if args.update {
        Some(heads_to_update(&model_dir, &args.layers)?)
    } else {
        None
    };
    copy_model(&model_dir, &args.out)?;
    let wants = |t: &str| args.tasks.iter().any(|x| x == t);
    let mut contact_metrics = serde_json::Value::Null;
    if wants("contacts") {
        contact_metrics = contact::run(&args, &args.out, &device.open()?)?;
    }
    let fx =
        features::FeatureExtractor::open(&args.out, args.layers.clone(), &args.work_dir(), device)?;
    let mut outputs = Vec::new();
    if wants("ec") {
        outputs.push(function::run_ec(&args, &fx)?);
    }
    if wants("go") {
        let graph = function::read_go_graph(&args.data)?;
        for o in ["mf", "bp", "cc"] {
            outputs.push(function::run_go(&args, &fx, o, &graph)?);
        }
    }
    if wants("ppi") {
        outputs.push(ppi::run(&args, &fx)?);
    }
    if wants("binding") {
        outputs.push(binding::run(&args, &fx)?);
    }
    let replaced: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
    let mut config = to_update.unwrap_or_else(|| HeadsConfig {
        version: 1,
        feature_layers: args.layers.clone(),
        ..Default::default()
    });
    let (mut tensors, mut metrics) = if args.update {
        existing_heads(&model_dir, &mut config, &outputs)?
    } else {
        (HashMap::new(), serde_json::Map::new())
    };
    if !contact_metrics.is_null() {
        metrics.insert("contacts".into(), contact_metrics);
    }
    for o in outputs {
        let prefix = o.prefix();
        for (k, v) in crate::model_init::vars_by_name(&o.varmap)? {
            tensors.insert(format!("{prefix}{k}"), v.as_tensor().detach());
        }
        metrics.insert(o.name.clone(), o.metrics);
        if let Some(c) = o.function {
            config.function.insert(o.name.clone(), c);
        }
        if o.ppi.is_some() {
            config.ppi = o.ppi;
        }
        if o.binding.is_some() {
            config.binding = o.binding;
        }
        if let Some((c, bank)) = o.neighbours {
            tensors.insert(format!("neighbours.{}.bank", o.name), bank);
            config.neighbours.insert(o.name.clone(), c);
        }
    }
    // Provenance: an update keeps the run that trained the other heads and appends its own.
    config.metrics = if args.update {
        let mut updates = match config.metrics.get("finetune_updates") {
            Some(serde_json::Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        updates.push(serde_json::to_value(&args)?);
        serde_json::json!({
            "results": metrics,
            "finetune": config.metrics.get("finetune").cloned().unwrap_or_default(),
            "finetune_updates": updates,
        })
    } else {
        serde_json::json!({ "results": metrics, "finetune": &args })
    };
    TaskHeads::save(&args.out, &config, &tensors)?;
    // The manifest lists the heads; the loader is the proof that the directory is deployable.
    let manifest_path = args.out.join(files::MANIFEST);
    let mut manifest: Manifest = if manifest_path.is_file() {
        read_json(&manifest_path)?
    } else {
        Manifest::default()
    };
    manifest.heads = config.head_names();
    write_json(&manifest_path, &manifest)?;
    plm_model::Checkpoint::open(&args.out)?;
    TaskHeads::open(&args.out, &Device::Cpu)?.context("heads were not written")?;
    let mut results = config.metrics["results"].clone();
    if args.update {
        results = updated_results(&model_dir, results, &replaced)?;
    }
    let report = serde_json::to_string_pretty(&results)?;
    std::fs::write(args.out.join("results.json"), &report).context("writing results.json")?;
    eprintln!(
        "wrote {} with heads: {}",
        args.out.display(),
        config.head_names().join(", ")
    );
    Ok(())
}
