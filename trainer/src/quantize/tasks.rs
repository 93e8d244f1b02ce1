//! The task-head gate of `plm-train quantize --task-data DIR`: every task head of the model is
//! scored with the f32 and the quantised model on the same labelled proteins, held out from the
//! heads' training, through the served prediction code; the quantised model's metric must stay
//! within [`MAX_RELATIVE_DROP`] of the f32 one.
//!
//! - GO terms: protein-centric Fmax of the head alone on proteins outside the head's training
//!   subset (`go_proteins`, `seed` of the finetune run that last trained it, `heads.json` →
//!   `metrics.finetune` or `metrics.finetune_updates`);
//! - EC numbers: Fmax on CLEAN's NEW-392 enzymes;
//! - interactions: AUROC on D-SCRIPT yeast pairs whose two proteins the head never saw;
//! - binding sites: AUROC over the residues of each ligand's test chains (graph from the
//!   model's predicted contacts).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use plm_model::predict::{self, ContactSource};
use plm_model::tokenizer::clean_sequence;
use plm_model::{Engine, TaskHeads};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::finetune::binding::label_files;
use crate::finetune::features::progress;
use crate::finetune::function::read_go_graph;
use crate::finetune::ppi::YeastSplit;
use crate::metrics::{auroc, fmax_sparse};
use crate::reference::propagated_go;
use crate::taskdata::{self, LabeledProtein, ResidueLabels};

/// Largest relative drop of a task metric from f32.
pub const MAX_RELATIVE_DROP: f64 = 0.01;

/// Labelled held-out items of every task the model has a head for.
pub struct TaskSets {
    /// Proteins and their (propagated) terms, by ontology.
    function: Vec<(String, Vec<LabeledProtein>)>,
    /// Pairs of sequences and whether they interact.
    ppi: Vec<(String, String, bool)>,
    /// Test chains by ligand.
    binding: Vec<(String, Vec<ResidueLabels>)>,
    /// What was left out, and why.
    notes: Vec<String>,
}

impl TaskSets {
    /// Draws up to `per_task` items of each task `heads` answers from the shared data
    /// directory `data`, with `seed`.
    pub fn load(data: &Path, heads: &TaskHeads, per_task: usize, seed: u64) -> Result<Self> {
        let metrics = &heads.config.metrics;
        let go_run = crate::finetune::trained_by(metrics, "go");
        let ppi_seed = crate::finetune::trained_by(metrics, "ppi")["seed"].as_u64();
        let mut sets = Self {
            function: Vec::new(),
            ppi: Vec::new(),
            binding: Vec::new(),
            notes: Vec::new(),
        };
        let ontologies: Vec<&String> = heads
            .config
            .function
            .keys()
            .chain(heads.config.neighbours.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let shuffled = |mut v: Vec<LabeledProtein>| {
            v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            v.truncate(per_task);
            v
        };
        for ontology in ontologies {
            let proteins = if ontology == "ec" {
                taskdata::read_ec(&data.join("function/ec/test_new392.tsv"))?
            } else if let Some(o) = ontology.strip_prefix("go_") {
                let (Some(trained), Some(head_seed)) =
                    (go_run["go_proteins"].as_u64(), go_run["seed"].as_u64())
                else {
                    sets.notes.push(format!("{ontology}: heads.json does not record which proteins the head was trained on (metrics.finetune.go_proteins, seed)"));
                    continue;
                };
                held_out_go(data, o, trained as usize, head_seed)?
            } else {
                sets.notes
                    .push(format!("{ontology}: no labelled data known for this head"));
                continue;
            };
            if proteins.is_empty() {
                sets.notes.push(format!(
                    "{ontology}: no labelled protein outside the head's training data"
                ));
                continue;
            }
            sets.function.push((ontology.clone(), shuffled(proteins)));
        }
        if heads.ppi.is_some() {
            match ppi_seed {
                Some(head_seed) => {
                    let mut pairs = unseen_yeast_pairs(data, head_seed)?;
                    pairs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
                    pairs.truncate(per_task);
                    sets.ppi = pairs;
                }
                None => sets.notes.push(
                    "ppi: heads.json does not record the finetune seed (which proteins the head saw)"
                        .into(),
                ),
            }
        }
        if let Some(config) = &heads.config.binding {
            let chains_per_ligand = per_task.div_ceil(config.ligands.len().max(1)).max(1);
            for ligand in &config.ligands {
                let (_, test_file) = label_files(ligand);
                let mut chains: Vec<ResidueLabels> =
                    taskdata::read_residue_labels(&data.join(test_file))?
                        .into_iter()
                        .filter_map(|mut c| {
                            c.sequence = clean_sequence(&c.sequence).ok()?;
                            (c.sequence.len() == c.labels.len() && c.sequence.len() <= 1000)
                                .then_some(c)
                        })
                        .collect();
                chains.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
                chains.truncate(chains_per_ligand);
                sets.binding.push((ligand.clone(), chains));
            }
        }
        Ok(sets)
    }

    /// Whether there is anything to score.
    pub fn is_empty(&self) -> bool {
        self.function.is_empty() && self.ppi.is_empty() && self.binding.is_empty()
    }
}

/// GO proteins of ontology `o` outside the `trained` proteins finetune drew with `seed`, with
/// their terms as the heads see them (propagated, roots removed).
fn held_out_go(data: &Path, o: &str, trained: usize, seed: u64) -> Result<Vec<LabeledProtein>> {
    let graph = read_go_graph(data)?;
    let raw = taskdata::read_go(&data.join(format!("function/go/{o}_18000.tsv")))?;
    let seen: HashSet<String> = taskdata::seeded_subset(&raw, trained, seed)
        .into_iter()
        .map(|p| p.id)
        .collect();
    Ok(raw
        .iter()
        .zip(propagated_go(&raw, &graph))
        .filter(|(p, l)| !seen.contains(&p.id) && !l.is_empty())
        .map(|(p, l)| LabeledProtein {
            id: p.id.clone(),
            sequence: p.sequence.clone(),
            labels: l.into_iter().collect(),
        })
        .collect())
}

/// D-SCRIPT yeast pairs whose two proteins finetune held out from the head, as sequences.
fn unseen_yeast_pairs(data: &Path, seed: u64) -> Result<Vec<(String, String, bool)>> {
    let yeast = YeastSplit::read(data, seed)?;
    Ok(yeast
        .pairs
        .iter()
        .filter(|p| yeast.unseen(p))
        .map(|&(a, b, l)| (yeast.sequences[a].clone(), yeast.sequences[b].clone(), l))
        .collect())
}

/// Each head's metric (see the module docs) with `engine`, by name (`go_mf`, `ppi`,
/// `binding_ZN`, ...). `label` names the model in the progress bars.
pub fn metrics(
    engine: &Engine,
    heads: &TaskHeads,
    sets: &TaskSets,
    label: &str,
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for (ontology, proteins) in &sets.function {
        let mut truth = Vec::new();
        let mut scores = Vec::new();
        let bar = progress(proteins.len(), &format!("{label} {ontology}"));
        for p in bar.wrap_iter(proteins.iter()) {
            let (s, _) = predict::model_function_scores(engine, Some(heads), &p.sequence, ontology)
                .with_context(|| format!("{ontology} head on {}", p.id))?;
            truth.push(p.labels.iter().cloned().collect::<HashSet<_>>());
            scores.push(s);
        }
        bar.finish_and_clear();
        out.insert(ontology.clone(), fmax_sparse(&truth, &scores).0);
    }
    if !sets.ppi.is_empty() {
        let a: Vec<&str> = sets.ppi.iter().map(|p| p.0.as_str()).collect();
        let b: Vec<&str> = sets.ppi.iter().map(|p| p.1.as_str()).collect();
        let scores = predict::ppi_head_scores(
            heads,
            &predict::pooled_features(engine, heads, &a)?,
            &predict::pooled_features(engine, heads, &b)?,
        )?;
        let labels: Vec<bool> = sets.ppi.iter().map(|p| p.2).collect();
        if let Some(v) = auroc(&scores, &labels) {
            out.insert("ppi".into(), v);
        }
    }
    for (ligand, chains) in &sets.binding {
        let (mut scores, mut labels) = (Vec::new(), Vec::new());
        let bar = progress(chains.len(), &format!("{label} binding {ligand}"));
        for chain in bar.wrap_iter(chains.iter()) {
            let by_ligand = predict::model_binding_scores(
                engine,
                Some(heads),
                &chain.sequence,
                ContactSource::Predicted,
            )
            .with_context(|| format!("binding head on {}", chain.id))?;
            if let Some((_, s)) = by_ligand.into_iter().find(|(l, _)| l == ligand) {
                scores.extend(s);
                labels.extend(&chain.labels);
            }
        }
        bar.finish_and_clear();
        if let Some(v) = auroc(&scores, &labels) {
            out.insert(format!("binding_{ligand}"), v);
        }
    }
    Ok(out)
}

/// The task metrics of both models.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskGate {
    /// The f32 model's metrics.
    pub full: BTreeMap<String, f64>,
    /// The quantised model's metrics.
    pub quantised: BTreeMap<String, f64>,
    /// Items per task, and what was left out.
    pub notes: Vec<String>,
}

impl TaskGate {
    /// Scores both models on `sets`.
    pub fn measure(
        full: &Engine,
        quantised: &Engine,
        heads: &TaskHeads,
        sets: &TaskSets,
    ) -> Result<Self> {
        let mut notes = sets.notes.clone();
        for (ontology, proteins) in &sets.function {
            notes.push(format!("{ontology}: {} proteins", proteins.len()));
        }
        if !sets.ppi.is_empty() {
            notes.push(format!("ppi: {} pairs", sets.ppi.len()));
        }
        for (ligand, chains) in &sets.binding {
            notes.push(format!("binding_{ligand}: {} chains", chains.len()));
        }
        Ok(Self {
            full: metrics(full, heads, sets, "f32")?,
            quantised: metrics(quantised, heads, sets, "quantised")?,
            notes,
        })
    }

    /// The heads whose metric dropped by more than [`MAX_RELATIVE_DROP`], described.
    pub fn failures(&self) -> Vec<String> {
        self.full
            .iter()
            .filter_map(|(name, &f)| {
                let q = self.quantised.get(name).copied().unwrap_or(f64::NAN);
                let drop = (f - q) / f.abs().max(f64::EPSILON);
                (drop.is_nan() || drop > MAX_RELATIVE_DROP)
                    .then(|| format!("{name} {q:.4} vs {f:.4} at f32 ({:+.2}%)", -100.0 * drop))
            })
            .collect()
    }

    /// The report kept in the manifest.
    pub fn to_json(&self) -> Value {
        let heads: serde_json::Map<String, Value> = self
            .full
            .iter()
            .map(|(name, &f)| {
                let q = self.quantised.get(name).copied();
                (name.clone(), json!({"f32": f, "quantised": q}))
            })
            .collect();
        json!({
            "metrics": heads,
            "max_relative_drop": MAX_RELATIVE_DROP,
            "notes": self.notes,
            "passed": self.failures().is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_above_one_percent_fails_and_a_gain_passes() {
        let gate = TaskGate {
            full: [
                ("go_mf".into(), 0.50),
                ("ppi".into(), 0.80),
                ("binding_ZN".into(), 0.70),
            ]
            .into(),
            quantised: [
                ("go_mf".into(), 0.496),
                ("ppi".into(), 0.79),
                ("binding_ZN".into(), 0.75),
            ]
            .into(),
            notes: Vec::new(),
        };
        let failures = gate.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("ppi 0.7900 vs 0.8000"),
            "{failures:?}"
        );
        assert_eq!(gate.to_json()["passed"], false);
        let missing = TaskGate {
            quantised: BTreeMap::new(),
            ..gate
        };
        assert_eq!(missing.failures().len(), 3);
    }
}
