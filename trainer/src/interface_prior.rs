//! `plm-train interface-prior`: fits the protein-interface prior of supplied structures
//! ([`plm_model::surface`]) and its blend with a model's binding GNN.
//!
//! - the regression: every resolved residue of GraphPPIS Train_335 (the chains the GNN was
//!   trained on), geometry from the experimental structures' C-alpha pairs;
//! - the blend weight: a third of GraphPPIS Test_60's chains drawn at random (seed), by
//!   AUROC, as `plm-train homology` fits its blends on a third of each test file;
//! - the report: the other two thirds, the GNN on the native contact graph alone, the prior
//!   alone and the blend, written to `results.json` (`interface_prior`) and the prior into
//!   `heads.json`, which `plm_binding_sites` applies whenever a structure is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use plm_model::predict::{model_binding_scores, ContactSource};
use plm_model::surface::{ChainGeometry, InterfacePrior, FEATURES};
use plm_model::{EmbeddingCache, Engine, EngineOptions, LoadOptions, TaskHeads};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::finetune::features::progress;
use crate::metrics::{aupr, auroc};
use crate::taskdata::{read_ca_pairs, read_residue_labels, ResidueLabels};

/// Arguments of `plm-train interface-prior`.
#[derive(Debug, Clone, Args)]
pub struct InterfacePriorArgs {
    /// Model directory with a binding-site head (updated in place: `heads.json`,
    /// `results.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// The shared data directory (`binding/graphppis/`).
    #[arg(long)]
    pub data: PathBuf,
    /// Seed of the validation third of Test_60.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Report only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The ligand column the prior is fitted for.
const LIGAND: &str = "PPI";

/// A labelled chain with its geometry.
struct Chain {
    labels: ResidueLabels,
    geometry: ChainGeometry,
}

/// The chains of a GraphPPIS set with their native geometry; chains without one are skipped.
fn read_set(dir: &Path, set: &str) -> Result<Vec<Chain>> {
    let labels = read_residue_labels(&dir.join(format!("{set}.fa")))?;
    let mut pairs = read_ca_pairs(&dir.join(format!("{set}_contacts.tsv.gz")))?;
    let mut chains = Vec::with_capacity(labels.len());
    for l in labels {
        let key = l.id.replace('_', "");
        let Some(p) = pairs.remove(&key).or_else(|| pairs.remove(&l.id)) else {
            continue;
        };
        let length = l.sequence.len();
        if let Some(&(i, j, _)) = p.iter().find(|&&(i, j, _)| i >= length || j >= length) {
            bail!(
                "{set}: {}: contact ({i}, {j}) beyond its {length} residues",
                l.id
            );
        }
        chains.push(Chain {
            geometry: ChainGeometry::from_pairs(length, p),
            labels: l,
        });
    }
    if chains.is_empty() {
        bail!("{set}: no chain has contacts");
    }
    Ok(chains)
}

/// Per-residue scores of a set of chains: the GNN, the prior (where resolved) and labels.
#[derive(Default)]
struct Scored {
    model: Vec<f32>,
    prior: Vec<Option<f32>>,
    labels: Vec<bool>,
}

impl Scored {
    fn blend(&self, alpha: f32) -> Vec<f32> {
        self.model
            .iter()
            .zip(&self.prior)
            .map(|(&m, p)| p.map_or(m, |p| alpha * p + (1.0 - alpha) * m))
            .collect()
    }

    fn metrics(&self, scores: &[f32]) -> Value {
        json!({
            "auroc": auroc(scores, &self.labels),
            "aupr": aupr(scores, &self.labels),
        })
    }
}

/// Scores `chains` with the GNN on their native contact graphs and with `prior`.
fn score(
    engine: &Engine,
    heads: &TaskHeads,
    prior: &InterfacePrior,
    chains: &[&Chain],
    what: &str,
) -> Result<Scored> {
    let mut out = Scored::default();
    let bar = progress(chains.len(), what);
    for chain in chains {
        let seq = &chain.labels.sequence;
        let model = model_binding_scores(
            engine,
            Some(heads),
            seq,
            ContactSource::Geometry(&chain.geometry),
        )?
        .into_iter()
        .find(|(l, _)| l == LIGAND)
        .map(|(_, v)| v)
        .with_context(|| format!("the binding head has no {LIGAND} column"))?;
        out.model.extend(model);
        out.prior.extend(
            chain
                .geometry
                .features()?
                .iter()
                .map(|f| f.as_ref().map(|f| prior.score(f))),
        );
        out.labels.extend(&chain.labels.labels);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Fits the prior and its blend, reports them, and writes them into the model directory.
pub fn run(args: &InterfacePriorArgs) -> Result<()> {
    let dir = args.data.join("binding/graphppis");
    let train = read_set(&dir, "Train_335")?;
    let (mut rows, mut labels): (Vec<[f32; FEATURES]>, Vec<bool>) = (Vec::new(), Vec::new());
    for chain in &train {
        for (f, &y) in chain.geometry.features()?.iter().zip(&chain.labels.labels) {
            if let Some(f) = f {
                rows.push(*f);
                labels.push(y);
            }
        }
    }
    let prior = InterfacePrior::fit(&rows, &labels)?;
    println!(
        "fitted on {} resolved residues of {} Train_335 chains ({} interface)",
        rows.len(),
        train.len(),
        labels.iter().filter(|&&y| y).count()
    );

    let engine = Engine::load(
        &args.model,
        LoadOptions::default(),
        EngineOptions::default(),
        Arc::new(EmbeddingCache::new(64 << 20)),
    )
    .with_context(|| format!("loading {}", args.model.display()))?;
    let mut heads = TaskHeads::open(&args.model, &candle_core::Device::Cpu)?
        .with_context(|| format!("{} has no task heads", args.model.display()))?;
    // The GNN alone: the prior this command replaces must not take part.
    heads.config.interface_prior = None;

    let test = read_set(&dir, "Test_60")?;
    let mut order: Vec<usize> = (0..test.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let cut = test.len() / 3;
    let pick = |idx: &[usize]| -> Vec<&Chain> { idx.iter().map(|&i| &test[i]).collect() };
    let validation = score(&engine, &heads, &prior, &pick(&order[..cut]), "validation")?;
    let tested = score(&engine, &heads, &prior, &pick(&order[cut..]), "test")?;

    let mut best = (0.0f32, f64::MIN);
    for step in 0..=20 {
        let alpha = step as f32 / 20.0;
        let a = auroc(&validation.blend(alpha), &validation.labels).unwrap_or(0.5);
        if a > best.1 + 1e-9 {
            best = (alpha, a);
        }
    }
    let prior = prior.with_alpha(best.0);
    let report = json!({
        "protocol": format!(
            "regression on every resolved residue of GraphPPIS Train_335 (native C-alpha geometry); blend weight by AUROC on {cut} of Test_60's {} chains drawn at random (seed {}); tested on the other {}; the GNN on each chain's native contact graph",
            test.len(), args.seed, test.len() - cut
        ),
        "alpha": best.0,
        "validation_auroc": best.1,
        "residues": tested.labels.len(),
        "positives": tested.labels.iter().filter(|&&y| y).count(),
        "model": tested.metrics(&tested.model),
        "prior": tested.metrics(&tested.blend(1.0)),
        "combined": tested.metrics(&tested.blend(best.0)),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if args.dry_run {
        return Ok(());
    }
    crate::model_dir::update_heads_and_results(
        &args.model,
        |config| config.interface_prior = Some(prior),
        |results| {
            results.insert("interface_prior".into(), report);
        },
    )
}
